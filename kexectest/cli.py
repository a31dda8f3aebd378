"""The `kexectest` command: one click group, one module of commands per concern."""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__
from .errors import Exit, KexectestError

# Each module defines click commands and a `register(group)` function.  Modules are
# imported only when one of their commands runs: `kexectest load` starts on the
# machine under test (in the virtual lab: over a 9p share), where every import costs.
COMMANDS = {
    "build": "kexectest.commands.payload",
    "inspect": "kexectest.commands.payload",
    "load": "kexectest.commands.load",
    "run": "kexectest.commands.run",
    "report": "kexectest.commands.report",
    "lab": "kexectest.commands.lab",
    "sweep": "kexectest.commands.sweep",
    "compare": "kexectest.commands.sweep",
}

EXIT_HELP = "\n".join(
    f"  {int(code):3d}  {code.name.lower().replace('_', '-')}" for code in Exit
)


class _Group(click.Group):
    """Loads command modules lazily; turns KexectestError into one line on stderr
    and its exit code."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        holder = click.Group()
        importlib.import_module(module).register(holder)
        return holder.commands.get(name)

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

