"""The `kexectest` command: one click group, one module of commands per concern."""

from __future__ import annotations

import importlib
import os
import sys

import click

from . import __version__
from .errors import Exit, KexectestError
from .fsutil import internal_error, is_no_space, os_error

# Each module defines click commands and a `register(group)` function.  Modules are
# imported only when one of their commands runs: `kexectest load` starts on the
# machine under test (in the virtual lab: over a 9p share), where every import costs.
COMMANDS = {
    "build": "kexectest.commands.payload",
    "inspect": "kexectest.commands.payload",
    "load": "kexectest.commands.load",
    "pack": "kexectest.commands.pack",
    "run": "kexectest.commands.run",
    "report": "kexectest.commands.report",
    "lab": "kexectest.commands.lab",
    "sweep": "kexectest.commands.sweep",
    "compare": "kexectest.commands.sweep",
    "bisect": "kexectest.commands.bisect",
}

EXIT_HELP = "\n".join(
    f"  {int(code):3d}  {code.name.lower().replace('_', '-')}" for code in Exit
)


class _Group(click.Group):
    """Loads command modules lazily; turns every failure into one line on stderr and its exit
    code: KexectestError its own, an OSError that escaped its handler its file's (a full disk
    is 18), and anything else -- a bug in kexectest -- Exit.INTERNAL (70) with the traceback
    saved for the bug report; never a traceback on the terminal, never a verdict's code."""

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
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except BrokenPipeError:  # the reader of our output went away (`| head`): not an error
            os._exit(128 + 13)
        except OSError as exc:  # one that escaped its handler: still one line
            if is_no_space(exc):
                err = os_error(exc.filename or "a file", exc)
            elif exc.filename is not None:
                err = os_error(exc.filename, exc, "access")
            else:
                err = internal_error(exc)
            click.echo(f"kexectest: error: {err}", err=True)
            sys.exit(int(err.code))
        except Exception as exc:
            err = internal_error(exc)
            click.echo(f"kexectest: error: {err}", err=True)
            sys.exit(int(err.code))


@click.group(cls=_Group, epilog="Exit status:\n\n\b\n" + EXIT_HELP)
@click.version_option(__version__, prog_name="kexectest")
def main():
    """Does the BIOS still work after kexec?  Build the real-mode test payload,
    load it through kexec, collect its serial trace, and report where it hung."""

