"""The target agent's command line: `kexectest-agent.py snapshot` and `kexectest-agent.py load`.

The agent is `kexectest load` for a machine that has only a Python 3.6+ interpreter: one file
that `kexectest pack` makes from the target-side modules (target/pack.py).  Its options are
made from the same tables as `kexectest load`'s (payload/options.py's OPTIONS and
target/load.py's SWITCHES), argparse standing in for click; every failure is one line on
stderr and the exit code of errors.Exit, as the `kexectest` command's are.

Standard library only and Python 3.6 syntax: the agent carries this module.
"""

import argparse
import os
import sys

from .. import __version__
from ..errors import Exit, KexectestError
from ..payload.options import OPTIONS, parse_number
from .load import NO_SPACE_ERRNOS, SWITCHES, VALUES, VIA_HELP, VIAS, confirm_exec, print_snapshot, run_load

PROG = "kexectest-agent.py"


def _port(text: str) -> int:
    try:
        return parse_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0x3f8 or 1016)")


# argparse's side of each kind of payload option (the options themselves: payload/options.py)
_KIND_ARGS = {
    "int": dict(type=int, metavar="INTEGER"),
    "port": dict(type=_port, metavar="INT"),
    "step": dict(metavar="STEP"),
    "steps": dict(action="append", metavar="STEP"),
}


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit 2, as click's are."""

    def error(self, message):
        self.exit(int(Exit.USAGE), f"kexectest: error: {message} (see {self.prog} --help)\n")


def build_parser(default_payload=None) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="kexectest's target agent: the 'before' snapshot "
                     "and the payload's load on the machine under test, with nothing installed "
                     "but Python 3.6 or later.")
    parser.add_argument("--version", action="version", version=f"kexectest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{snapshot,load}")
    sub.required = True
    sub.add_parser("snapshot", help="Print the KTSNAP before-snapshot and exit.")
    load = sub.add_parser("load", help="Patch, snapshot, preflight and load the payload (as "
                          "root); with --exec --yes, start it.",
                          description="Load the payload for kexec on THIS machine (as root); "
                          "with --exec, start it.  --exec ends the running system: it always "
                          "needs --yes.")
    load.add_argument("payload", nargs="?", default=default_payload,
                      help="Payload ELF" + (f" [default: {default_payload}]"
                                            if default_payload else ""))
    load.add_argument("--via", choices=VIAS, default="syscall",
                      help=VIA_HELP + " [default: syscall]")
    for o in OPTIONS:
        if o.kind == "switch":
            load.add_argument(o.cli, dest=o.name, action="store_true", default=None,
                              help=o.help_line)
            load.add_argument("--no-" + o.cli[2:], dest=o.name, action="store_false",
                              default=None, help=argparse.SUPPRESS)
        else:
            load.add_argument(o.cli, dest=o.name, default=None, help=o.help_line,
                              **_KIND_ARGS[o.kind])
    for flag, param, text in SWITCHES:
        load.add_argument(flag, dest=param, action="store_true", help=text)
    for flag, param, text in VALUES:
        load.add_argument(flag, dest=param, default=None, help=text)
    return parser


def _run(args) -> None:
    if args.command == "snapshot" or args.snapshot_only:
        print_snapshot()
        return
    confirm_exec(args.do_exec, args.yes)
    if not args.payload:
        raise KexectestError("no payload: give the payload ELF (kexec_test.elf)", Exit.USAGE)
    options = {o.name: getattr(args, o.name) for o in OPTIONS}
    run_load(args.payload, via=args.via, options=options, do_exec=args.do_exec,
             print_block=not args.no_snapshot, dry_run=args.dry_run, real_mode=args.real_mode,
             **{param: getattr(args, param) for _flag, param, _text in VALUES})


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def main(argv=None, default_payload=None) -> int:
    """Run the agent; returns the exit status (never raises, never prints a traceback)."""
    try:
        _run(build_parser(default_payload).parse_args(argv))
        return 0
    except KexectestError as exc:
        sys.stderr.write(f"kexectest: error: {exc}\n")
        return int(exc.code)
    except KeyboardInterrupt:
        sys.stderr.write("kexectest: interrupted\n")
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:  # the reader of our output went away: not an error
        os._exit(128 + 13)
    except OSError as exc:
        code = Exit.NO_SPACE if exc.errno in NO_SPACE_ERRNOS else Exit.BAD_INPUT
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"kexectest: error: {where}{exc.strerror or exc}\n")
        return int(code)
    except Exception as exc:  # a bug in the agent: one line, where it happened
        sys.stderr.write(f"kexectest: error: internal error in the target agent: "
                         f"{type(exc).__name__}: {exc}{_where(exc)} (a bug in kexectest: "
                         "please report it)\n")
        return int(Exit.INTERNAL)
