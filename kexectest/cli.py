"""The `kexectest` command: one click group, one module of commands per concern."""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__
from .errors import Exit, KexectestError

# Each module defines click commands and a `register(group)` function.
COMMAND_MODULES = [
    "kexectest.commands.run",
    "kexectest.commands.payload",
    "kexectest.commands.load",
    "kexectest.commands.sweep",
    "kexectest.commands.lab",
    "kexectest.commands.report",
]

EXIT_HELP = "\n".join(
    f"  {int(code):3d}  {code.name.lower().replace('_', '-')}" for code in Exit
)


class _Group(click.Group):
    """Turns KexectestError into one line on stderr and its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KexectestError as exc:
            click.echo(f"kexectest: error: {exc}", err=True)
            sys.exit(int(exc.code))
        except KeyboardInterrupt:
            click.echo("kexectest: interrupted", err=True)
            sys.exit(int(Exit.INTERRUPTED))


@click.group(cls=_Group, epilog="Exit status:\n\n\b\n" + EXIT_HELP)
@click.version_option(__version__, prog_name="kexectest")
def main():
    """Does the BIOS still work after kexec?  Build the real-mode test payload,
    load it through kexec, collect its serial trace, and report where it hung."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)
