"""`kexectest bisect LAB.toml MACHINE --step STEP`: the probes live, the culprit at the end."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..errors import Exit, KexectestError
from ..fsutil import internal_error

_STYLE = {"fail": "red", "pass": "green", "unresolved": "yellow"}


class _View:
    """The probes so far and the one running, as a rich table or as plain lines."""

    def __init__(self, console: Console, live: bool, quiet: bool):
        self.console, self.live, self.quiet = console, live, quiet
        self.lock = threading.Lock()
        self.rows: list = []  # Probe objects, finished or read back
        self.running: tuple[list[str], float] | None = None
        self.detail = ""

    def event(self, kind: str, info) -> None:
        with self.lock:
            if kind == "start":
                self.running, self.detail = (info, time.monotonic()), ""
            elif kind == "probe":
                self.rows.append(info)
                self.running = None
            elif kind == "infrastructure":
                self.detail = f"infrastructure: {info[1]}"
            elif kind == "log":
                self.detail = str(info)
        if self.live or self.quiet:
            return
        if kind == "start":
            self.console.print(f"probe: {','.join(info) or 'no drivers'} ...", markup=False,
                               highlight=False, soft_wrap=True)
        elif kind == "probe":
            self.console.print(f"probe: {','.join(info.drivers) or 'no drivers'}: "
                               f"{info.outcome} (step {info.step_status}, {info.verdict})"
                               + (" (from the journal)" if info.resumed else ""),
                               markup=False, highlight=False, soft_wrap=True)
        elif kind == "infrastructure":
            self.console.print(f"probe: {','.join(info[0]) or 'no drivers'}: {info[1]}",
                               markup=False, highlight=False, soft_wrap=True)

    def table(self, title: str) -> Table:
        t = Table(title=title, title_justify="left")
        for col in ("#", "drivers", "outcome", "step", "verdict", "s"):
            t.add_column(col, no_wrap=col != "drivers")
        with self.lock:
            for i, p in enumerate(self.rows, 1):
                t.add_row(str(i), ",".join(p.drivers) or "(none)",
                          f"[{_STYLE.get(p.outcome, 'white')}]{p.outcome}[/]",
                          p.step_status or "-", p.verdict,
                          "journal" if p.resumed else f"{p.seconds:.0f}")
            if self.running is not None:
                drivers, t0 = self.running
                t.add_row(str(len(self.rows) + 1), ",".join(drivers) or "(none)",
                          "[bold cyan]running[/]", self.detail[:60], "",
                          f"{time.monotonic() - t0:.0f}")
        return t


@click.command()
@click.argument("lab_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("machine")
@click.option("--step", required=True, metavar="STEP",
              help="The payload step that fails (its id, e.g. read-chs, or its number).")
@click.option("--drivers", default=None, metavar="A,B,...",
              help="The drivers to bisect (default: the machine's qemu.drivers).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The bisect's directory: probes and journal (default: "
                   "bisects/MACHINE-STEP); the same command again resumes from it.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"step", "culprit", "probes"} as JSON at the end.')
@click.option("--quiet", is_flag=True, help="No live view; only the result.")
def bisect(lab_file, machine, step, drivers, out_dir, as_json, quiet):
    """Find the smallest set of MACHINE's guest drivers that still makes STEP fail: delta
    debugging, each probe a full lab run through real kexec.  An interrupted bisect resumes
    from its journal.  Exit status: 0 with a culprit, 21 when the full set does not fail."""
    from .. import payload as pl
    from ..fleet.bisect import Bisect
    from ..fleet.labfile import load_lab
    from ..fleet.sweep import _call_virtual
    from ..lab.qemu import kill_all

    m = load_lab(lab_file).machine(machine)
    elf = Path(m.load["payload"]) if m.load.get("payload") else pl.ensure_built()
    image = pl.PayloadImage.open(elf)
    step_id = image.steps[image.step_index(step)].name
    wanted = ([d.strip() for d in drivers.split(",") if d.strip()] if drivers is not None
              else list(m.drivers))
    out_dir = out_dir or Path("bisects") / f"{m.name}-{step_id}"
    console = Console(stderr=as_json)
    live_ok = console.is_terminal and not quiet
    view = _View(console, live_ok, quiet)
    command_line = ["kexectest", "bisect", *sys.argv[2:]]

    def run_probe(probe_machine, out):
        return _call_virtual(probe_machine, out, None, command_line,
                             log=lambda msg: view.event("log", msg))

    job = Bisect(m, step_id, wanted, out_dir, run_probe, on_event=view.event)
    result: dict = {}

    def go():
        try:
            result["done"] = job.run()
        except KexectestError as exc:
            result["error"] = exc
        except Exception as exc:  # a bug: one line with exit 70, never a verdict's code
            result["error"] = internal_error(exc)

    def on_signal(signum, frame):
        kill_all()
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    worker = threading.Thread(target=go, daemon=True)
    title = f"kexectest bisect: {step_id} on {m.name}"
    try:
        worker.start()
        if live_ok:
            with Live(view.table(title), console=console, refresh_per_second=4) as live:
                while worker.is_alive():
                    worker.join(0.25)
                    live.update(view.table(title))
        else:
            while worker.is_alive():
                worker.join(0.25)
    except KeyboardInterrupt:
        click.echo(f"kexectest: interrupted; the same command resumes from {out_dir}", err=True)
        sys.stdout.flush()
        os._exit(int(Exit.INTERRUPTED))  # the worker may sit in a serial read: do not join it
    if "error" in result:
        raise result["error"]
    done = result["done"]
    if as_json:
        click.echo(json.dumps(done.to_json(), indent=2))
    else:
        click.echo(done.one_line())
        if done.suggestion():
            click.echo(done.suggestion())


def register(group: click.Group) -> None:
    group.add_command(bisect)
