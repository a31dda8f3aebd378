"""`kexectest load`: run on the machine under test; patch, snapshot, preflight, load, (exec)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from .. import payload as pl
from ..errors import Exit, KexectestError
from ..fsutil import is_no_space
from ..payload.options import config_kwargs
from ..target import loader, snapshot
from .payload import config_options


def _warn(msg: str) -> None:
    click.echo(f"kexectest: warning: {msg}", err=True)


@click.command("load")
@click.argument("payload", required=False, type=click.Path(path_type=Path))
@click.option("--via", type=click.Choice(["syscall", "kexec-tools"]), default="syscall",
              show_default=True, help="Raw kexec_load (no purgatory) or kexec-tools' elf-x86.")
@config_options
@click.option("--exec", "do_exec", is_flag=True,
              help="Jump into the payload now (ends the running system).  Always needs --yes: "
                   "without it --exec refuses, at a terminal and without one (ssh without a "
                   "tty, cron, < /dev/null) alike.")
@click.option("--yes", is_flag=True, help="Confirm --exec.")
@click.option("--no-snapshot", is_flag=True, help="Do not print the KTSNAP before-snapshot.")
def load_cmd(payload, via, do_exec, yes, no_snapshot, **options):
    """Load the payload for kexec on THIS machine (as root); with --exec, start it.

    --exec ends the running system: it always needs --yes."""
    if do_exec and not yes:
        how = "" if sys.stdin.isatty() else " (and there is no terminal here to ask at)"
        raise KexectestError(f"--exec ends the running system: add --yes to confirm{how}",
                             Exit.USAGE)
    src = Path(payload) if payload else pl.ensure_built()
    try:
        tmpdir = tempfile.mkdtemp(prefix="kexectest-load-")
    except OSError as exc:
        raise KexectestError(f"cannot make a temporary directory for the patched payload: "
                             f"{exc.strerror} (set TMPDIR to a writable directory)",
                             Exit.NO_SPACE if is_no_space(exc) else Exit.BAD_INPUT) from None
    try:
        patched = pl.patch(src, Path(tmpdir) / "kexec_test.elf", **config_kwargs(options))
        img = pl.PayloadImage.open(patched)
        errors = [m for lvl, m in img.checks() if lvl == "error"]
        if errors:
            raise KexectestError(f"{src}: {errors[0]}", Exit.PAYLOAD_LIMITS)
        if not no_snapshot:
            for line in snapshot.snapshot_lines():
                click.echo(line)
            sys.stdout.flush()
        facts = loader.read_facts()
        segs = loader.image_segments(img)
        problems = loader.preflight(facts, segs if via == "syscall" else None, via)
        for level, msg in problems:
            if level == "warning":
                _warn(msg)
        errs = [m for lvl, m in problems if lvl == "error"]
        if errs:
            raise KexectestError(errs[0], Exit.KEXEC_REFUSED)
        if via == "syscall":
            entry = loader.entry_for(img)
            loader.kexec_load(entry, segs, facts)
            nseg = len(segs)
        else:
            entry = img.e_entry
            loader.load_kexec_tools(patched)
            nseg = len(img.segments)
        click.echo(f"loaded {nseg} segment(s), entry {entry:#x}, via {via}"
                   f" (payload {img.build_id or img.sha256[:16]})")
        if do_exec:
            click.echo(f"KTLOAD exec entry={entry:#x} via={via}")
            sys.stdout.flush()
            sys.stderr.flush()
            if via == "syscall":
                loader.reboot_kexec()
            else:
                loader.exec_kexec_tools()
    finally:
        for f in Path(tmpdir).iterdir():
            f.unlink()
        os.rmdir(tmpdir)


def register(group: click.Group) -> None:
    group.add_command(load_cmd)
