"""`kexectest load`: run on the machine under test; patch, snapshot, preflight, load, (exec).

The work is target/load.py's, shared with the target agent (`kexectest-agent.py load`, whose
options target/agent.py makes from the same tables)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import payload as pl
from ..target.load import SWITCHES, VALUES, VIA_HELP, VIAS, confirm_exec, print_snapshot, run_load
from .payload import config_options


def _switches(func):
    for flag, param, text in reversed(SWITCHES):
        func = click.option(flag, param, is_flag=True, help=text)(func)
    for flag, param, text in reversed(VALUES):
        func = click.option(flag, param, default=None, help=text)(func)
    return func


@click.command("load")
@click.argument("payload", required=False, type=click.Path(path_type=Path))
@click.option("--via", type=click.Choice(list(VIAS)), default="syscall",
              show_default=True, help=VIA_HELP)
@config_options
@_switches
def load_cmd(payload, via, do_exec, yes, no_snapshot, snapshot_only, dry_run, real_mode,
             cmdline, initrd, **options):
    """Load the payload for kexec on THIS machine (as root); with --exec, start it.

    --exec ends the running system: it always needs --yes."""
    if snapshot_only:
        print_snapshot()
        return
    confirm_exec(do_exec, yes)
    src = Path(payload) if payload else pl.ensure_built()
    run_load(src, via=via, options=options, do_exec=do_exec, print_block=not no_snapshot,
             dry_run=dry_run, cmdline=cmdline, initrd=initrd, real_mode=real_mode)


def register(group: click.Group) -> None:
    group.add_command(load_cmd)
