"""`kexectest sweep LAB.toml` and `kexectest compare OLD NEW`: the live matrix lives here, at the edge."""

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
from ..fsutil import internal_error, write_atomic
from ..fleet.labfile import load_lab
from ..fleet.sweep import STAGES, MachineState, Progress, Sweep, SweepOptions
from ..lab.qemu import kill_all

_STYLE = {"completed": "green", "failed-steps": "yellow", "hung": "red", "reset": "magenta",
          "no-output": "bright_black", "garbled": "yellow", "died-before-handoff": "red",
          "died-in-handoff": "red", "infrastructure-error": "bright_black",
          "interrupted": "bright_black", "error": "red"}


def _matrix(progress: Progress) -> Table:
    t = Table(title="kexectest sweep", title_justify="left", expand=False)
    t.add_column("machine", no_wrap=True)
    for st in STAGES[1:]:
        t.add_column(st, no_wrap=True)
    now = time.time()
    with progress.lock:
        states = list(progress.states.values())
    for s in states:
        cur = STAGES.index(s.stage) if s.stage in STAGES else 0
        cells = []
        for i, st in enumerate(STAGES[1:], start=1):
            if st == "verdict" and s.verdict:
                cells.append(f"[{_STYLE.get(s.verdict, 'white')}]{s.verdict}[/]"
                             + (" (resumed)" if s.resumed else ""))
            elif i == cur:
                extra = s.detail if st in ("payload", "power") else ""
                secs = f" {now - s.started:.0f}s" if s.started else ""
                cells.append(f"[bold cyan]> {extra or st}[/]{secs}")
            elif i < cur and st != "power":
                cells.append("[green]ok[/]")
            else:
                cells.append("")
        t.add_row(s.name if s.stage != "queued" else f"[dim]{s.name} (queued)[/]", *cells)
    return t


def _plain(console: Console):
    def listener(st: MachineState, changed: bool) -> None:
        if changed or st.stage == "power":
            text = st.verdict and f"{st.verdict}: {st.one_line}" or st.detail or ""
            console.print(f"{st.name}: {st.stage} {text}".rstrip(), markup=False, highlight=False)
    return listener


def _on_signal(sweep: Sweep):
    def handler(signum, frame):
        sweep.stopping.set()
        kill_all()  # QEMU guests of virtual machines: a machine's worker may be blocked on one
        raise KeyboardInterrupt
    return handler


@click.command()
@click.argument("lab_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--only", "only", default=None, metavar="TAGS",
              help="Comma-separated tags or machine names; default: every machine.")
@click.option("--jobs", type=click.IntRange(1, 1024), default=None,
              help="Machines at once (default: CPU cores for QEMU machines, all for hardware).")
@click.option("--retries", type=click.IntRange(0, 20), default=None,
              help="Retries of a hung or dead machine (overrides the lab file).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sweep directory (default: sweeps/LAB-YYYYmmdd-HHMMSS).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out; finished machines are kept.")
@click.option("--quiet", is_flag=True, help="No live view; only the final line.")
def sweep(lab_file, only, jobs, retries, out_dir, resume, quiet):
    """Run the payload on every machine of LAB_FILE at once; write sweep.json, junit.xml and
    report.html into the sweep directory.  Exit status: the worst machine's verdict code."""
    lab = load_lab(lab_file)
    machines = lab.select(only)
    if out_dir is None:
        if resume:
            raise KexectestError("--resume needs --out DIR (the sweep to continue)", Exit.USAGE)
        out_dir = Path("sweeps") / f"{lab.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    console = Console(stderr=False)
    live_ok = console.is_terminal and not quiet
    progress = Progress(machines, None if live_ok or quiet else _plain(console))
    opts = SweepOptions(lab=lab, machines=machines, out_dir=out_dir, jobs=jobs, retries=retries,
                        resume=resume, command_line=["kexectest", "sweep", *sys.argv[2:]])
    runner = Sweep(opts, progress)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal(runner))
    result: dict = {}

    def go():
        result["sweep"] = runner.run()

    try:
        if live_ok:
            with Live(_matrix(progress), console=console, refresh_per_second=4) as live:
                worker = threading.Thread(target=lambda: _guard(go, result), daemon=True)
                worker.start()
                while worker.is_alive():
                    worker.join(0.25)
                    live.update(_matrix(progress))
        else:
            worker = threading.Thread(target=lambda: _guard(go, result), daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(0.25)
    except KeyboardInterrupt:
        runner.stopping.set()
        if runner.journal is not None:
            runner.journal.write("interrupted")
        click.echo(f"kexectest: interrupted; continue with: kexectest sweep {lab_file} "
                   f"--out {out_dir} --resume", err=True)
        sys.stdout.flush()
        os._exit(int(Exit.INTERRUPTED))  # worker threads may sit in serial reads: do not join them
    if "error" in result:
        raise result["error"]
    s = result["sweep"]
    counts = ", ".join(f"{n} {v}" for v, n in s["counts"].items())
    click.echo(f"sweep: {len(s['machines'])} machines: {counts}; report: {out_dir / 'report.html'}")
    sys.exit(int(s["exit_code"]))


def _guard(fn, result: dict) -> None:
    try:
        fn()
    except KexectestError as exc:
        result["error"] = exc
    except Exception as exc:  # a bug: one line with exit 70 by the CLI, never a lab-stage code
        result["error"] = internal_error(exc)


@click.command()
@click.argument("old", type=click.Path(file_okay=False, path_type=Path))
@click.argument("new", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the differences as a self-contained HTML page.")
def compare(old, new, as_json, html_path):
    """What changed from sweep OLD to sweep NEW: new failures, fixes, changed verdicts,
    changed firmware answers (E820 maps, step results)."""
    from ..fleet.compare import compare as do_compare
    from ..fleet.compare import render_html, render_text

    res = do_compare(old, new)
    if html_path is not None:
        write_atomic(html_path, render_html(res))
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        render_text(res, Console())


def register(group: click.Group) -> None:
    group.add_command(sweep)
    group.add_command(compare)
