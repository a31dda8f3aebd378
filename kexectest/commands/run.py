"""`kexectest run --serial URL`: capture one run from the machine under test and bundle it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from ..capture.push import REAL_MODE
from ..capture.session import RunOptions, run_session
from ..errors import VERDICT_EXIT
from ..payload.options import CONFIG_OPTION_NAMES
from ..target.load import VIAS
from .payload import config_options_without

EPILOG = (
    "Serial URLs: a device path (/dev/ttyUSB0), socket://HOST:PORT (ser2net raw, QEMU), "
    "rfc2217://HOST:PORT (ser2net telnet; ign_set_control is added), loop://.\n\n"
    "Modes: passive (no --login/--command/--ssh: just listen; the silence clock starts "
    "now), serial (--login/--password-env/--prompt, then --command over the same console), "
    "ssh (--ssh USER@HOST --command CMD while the console is captured).  With --push nothing "
    "need be installed on the target: the target agent and the payload are sent through the "
    "console (after --login) or over --ssh, checked there, and run (Python 3.6+ or, without "
    "Python, a shell and kexec-tools; docs/target-agent.md); the payload options below go to "
    "it.  The password is read from the environment variable named by --password-env or "
    "asked for; it never appears in any file.\n\n"
    "Exit status by verdict:\n\n\b\n"
    + "\n".join(f"  {int(code):3d}  {name}" for name, code in VERDICT_EXIT.items())
    + "\n\n\b\n   14  serial console cannot be opened\n   16  login / prompt stage failed\n"
    "   18  no space left: the console read so far is kept, the bundle written as far as the "
    "space allows\n   20  the command failed on the target\n"
    "   70  internal error (a bug in kexectest: please report it)"
)


@click.command("run", epilog=EPILOG)
@click.option("--serial", "serial_url", required=True, metavar="URL",
              help="Console of the machine under test: device path or pyserial URL.")
@click.option("--baud", type=click.IntRange(50, 4_000_000), default=115200, show_default=True)
@click.option("--parity", type=click.Choice(["N", "E", "O"], case_sensitive=False), default="N",
              show_default=True)
@click.option("--rtscts", is_flag=True, help="RTS/CTS hardware flow control.")
@click.option("--xonxoff", is_flag=True, help="XON/XOFF software flow control.")
@click.option("--login", metavar="USER", help="Log in on the console as USER.")
@click.option("--password-env", metavar="VAR",
              help="Environment variable holding the login password (else: prompt).")
@click.option("--prompt", default=r"[#$] ?$", show_default=True, metavar="REGEX",
              help="Shell prompt regular expression.")
@click.option("--command", metavar="CMD",
              help="Command that triggers kexec, e.g. 'kexectest load ... --exec --yes'.")
@click.option("--ssh", metavar="USER@HOST", help="Run --command over ssh instead of the console.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="OPTION",
              help="Pass -o OPTION to ssh (Port=2222, IdentityFile=KEY, ...); repeatable.")
@click.option("--push", is_flag=True,
              help="Send the target agent and the payload to the target and run them there "
                   "(through the console, or with --ssh over ssh): nothing installed needed.")
@click.option("--push-agent", type=click.Choice(["auto", "python", "shell"]), default="auto",
              show_default=True,
              help="With --push: the Python agent where Python 3.6+ is (auto), or the shell "
                   "agent (kexec-tools).")
@click.option("--via", type=click.Choice([*VIAS, REAL_MODE]), default=None,
              help="With --push: the agent's loader (real-mode: kexec-tools-bzimage with its "
                   "real-mode entry) [default: syscall where Python is, else kexec-tools].")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds of silence after hand-off that mean a hang.")
@click.option("--max-time", type=click.FloatRange(0.1), default=None,
              help="Overall time limit in seconds.")
@click.option("--login-timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
              help="Seconds to reach the shell prompt.")
@click.option("--payload", "payload_elf", type=click.Path(path_type=Path), default=None,
              help="The payload ELF that runs (names the steps, goes into the bundle).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("kexectest-runs"), show_default=True, help="Where bundles go.")
@click.option("--redact", is_flag=True,
              help="Remove host names, IP/MAC addresses and serial numbers from the bundle.")
@click.option("--quiet", is_flag=True, help="Only the verdict line and the bundle path.")
@click.option("--json", "json_output", is_flag=True, help="Print report.json on stdout.")
@config_options_without("baud")  # --baud is the console's, and the pushed payload's too
def run_cmd(serial_url, baud, parity, rtscts, xonxoff, login, password_env, prompt, command,
            ssh, ssh_options, push, push_agent, via, timeout, max_time, login_timeout,
            payload_elf, out_dir, redact, quiet, json_output, **options):
    """Capture the payload's trace from the machine under test and write a bug-report bundle.

    Stops on the payload's last line, a reset, --timeout seconds of silence, --max-time, a lost
    console or Ctrl-C; always writes the bundle (directory and .tar.gz) under --out."""
    opts = RunOptions(
        serial_url=serial_url, baud=baud, parity=parity.upper(), rtscts=rtscts, xonxoff=xonxoff,
        login=login, password_env=password_env, prompt=prompt, command=command, ssh=ssh,
        ssh_options=["-o" + o for o in ssh_options], push=push, push_agent=push_agent, via=via,
        load_options=_push_options(push, baud, options), timeout=timeout, overall_timeout=max_time, login_timeout=login_timeout,
        out_dir=out_dir, payload_elf=payload_elf, redact=redact, quiet=quiet,
        json_output=json_output, command_line=["kexectest", *sys.argv[1:]])
    console = Console(stderr=json_output, highlight=False)
    finish(run_session(opts, console), json_output)


def _push_options(push: bool, baud: int, options: dict) -> dict:
    """The payload options of a push; without --push they would do nothing: refuse them."""
    given = {k: v for k, v in options.items() if k in CONFIG_OPTION_NAMES and v not in (None, ())}
    if given and not push:
        names = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
        raise click.UsageError(f"{names}: payload options go to a pushed agent (--push); "
                               "for an installed kexectest put them in --command")
    return {**given, "baud": baud} if push else {}


def finish(result, json_output: bool) -> None:
    """The end of every command that ran a session: the verdict line (or report.json), the
    bundle's path, and the verdict's exit status."""
    if json_output:
        click.echo(json.dumps(result.analysis.to_dict(), indent=2))
        click.echo(f"bundle: {result.tarball}", err=True)
    else:
        click.echo(result.analysis.one_line())
        click.echo(f"bundle: {result.tarball}")
    sys.exit(result.exit_code)


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
