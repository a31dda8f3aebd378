"""`kexectest report LOG...`: replay saved logs through the same analysis as a live run."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from ..analysis.replay import analyze_log
from ..errors import VERDICT_EXIT
from ..fsutil import make_dirs, write_atomic
from ..output.bundle import write_pages
from ..output.report import report_dict, render_summary_md, render_terminal, write_report_json


@click.command("report")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write report.json, summary.md, summary.html and memory-map.svg here (one "
                   "sub-directory per log when several).")
@click.option("--payload", "payload_elf", type=click.Path(path_type=Path, dir_okay=False),
              help="The payload ELF the trace came from (step names, build-id check).")
@click.option("--all-steps", is_flag=True, help="Also list steps never reached.")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), metavar="POST",
              help="Compare against the POST baseline: POST is a capture of the payload booted "
                   "from its disk or ISO image (a bundle directory, its tarball or a log), the "
                   "one argument after it the capture after kexec (the same forms).  Every step "
                   "whose status or decoded answer differs is listed; values that change by "
                   "nature are left out by rule.")
def report_cmd(logs, as_json, out_dir, payload_elf, all_steps, baseline_path):
    """Analyse saved console logs: a raw capture, the collector's timestamped console.log
    (`+SECONDS<TAB>text` lines), or text pasted from an email; classic kexec_test transcripts too.
    Exit status is the verdict's (of the worst log when several)."""
    from rich.console import Console

    payload = None
    if payload_elf is not None:
        from ..payload.image import PayloadImage
        payload = PayloadImage.open(payload_elf)
    console = Console(highlight=False, soft_wrap=False)
    if baseline_path is not None:
        if len(logs) != 1:
            raise click.UsageError("--baseline POST takes one capture after it: "
                                   "kexectest report --baseline POST KEXEC")
        _report_baseline(baseline_path, logs[0], payload, as_json, out_dir, all_steps, console)
    codes = []
    for path in logs:
        a = analyze_log(path, payload)
        codes.append(int(VERDICT_EXIT[a.verdict]))
        if out_dir is not None:
            d = out_dir / path.stem if len(logs) > 1 else out_dir
            make_dirs(d)
            write_report_json(a, d / "report.json")
            env = {"log": str(path), "command": shlex.join(["kexectest", *sys.argv[1:]])}
            write_atomic(d / "summary.md", render_summary_md(a, env))
            write_pages(d, a.to_dict(), (ln.text for ln in a.lines))
        if as_json:
            click.echo(json.dumps(a.to_dict(), indent=1, default=str))
        else:
            if len(logs) > 1:
                console.print(f"[bold]{path}[/]")
            render_terminal(a, console, all_steps=all_steps)
            if out_dir is not None:
                console.print(f"report: {d / 'report.json'}")
    sys.exit(max(codes))


def _report_baseline(post_path, kexec_path, payload, as_json, out_dir, all_steps, console):
    """`report --baseline POST KEXEC`: the after-kexec report with the differences from POST."""
    from rich.markup import escape

    from ..analysis import baseline as bl
    from ..analysis.saved import load
    from ..output.baseline_md import baseline_section

    saved = [load(path, payload) for path in (post_path, kexec_path)]
    post, kexec = (bl.Capture(s.analysis.to_dict(), str(path), s.environment,
                              bl.pci_functions(s.analysis.lines))
                   for s, path in zip(saved, (post_path, kexec_path)))
    result = bl.compare(post, kexec)
    a = saved[1].analysis
    if out_dir is not None:
        make_dirs(out_dir)
        write_report_json(a, out_dir / "report.json", baseline=result)
        env = {"log": str(kexec_path), "command": shlex.join(["kexectest", *sys.argv[1:]])}
        write_atomic(out_dir / "summary.md", render_summary_md(a, env, baseline=result))
    if as_json:
        click.echo(json.dumps(report_dict(a, result), indent=1, default=str))
    else:
        render_terminal(a, console, all_steps=all_steps)
        for line in baseline_section(result):
            console.print(escape(line))
        if out_dir is not None:
            console.print(f"report: {out_dir / 'report.json'}")
    sys.exit(int(VERDICT_EXIT[a.verdict]))


def register(group: click.Group) -> None:
    group.add_command(report_cmd)
