"""`kexectest pack [-o DIR]`: the agents, the payload and a runner, for copying by hand to a
machine under test that has nothing of kexectest installed (docs/target-agent.md)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import payload as pl
from ..target.pack import write_pack
from .payload import config_options


@click.command("pack")
@click.argument("payload", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kexectest-pack"), show_default=True,
              help="Directory to write (made if missing; its pack files are replaced).")
@config_options
def pack_cmd(payload, out_dir, **options):
    """Write DIR/kexectest-agent.py (Python 3.6+, standard library only), DIR/kexectest-agent.sh
    (sh + coreutils/busybox + kexec-tools), DIR/kexec_test.elf with the payload options patched
    in, DIR/run.sh and DIR/SHA256SUMS.  Copy DIR to the machine under test and run, as root,
    `sh DIR/run.sh`: it checks the copy and kexecs into the payload."""
    src = Path(payload) if payload else pl.ensure_built()
    files = write_pack(out_dir, src, options)
    for path in files:
        click.echo(str(path))


def register(group: click.Group) -> None:
    group.add_command(pack_cmd)
