"""report.json, summary.md and the terminal rendering of one Analysis.

Rendering only: the analysis decides, this module words it.  The rich Console is made at the
edge (the command) and passed in.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from rich.markup import escape

from .. import __version__
from ..analysis.model import Analysis
from ..fsutil import write_atomic
from .baseline_md import baseline_section

_MARK = {"ok": "ok", "error": "ERROR", "hung": "HUNG", "skipped": "skipped", "not-reached": "-",
         "unknown": "UNKNOWN"}
_COLOUR = {"ok": "green", "error": "yellow", "hung": "bold red", "skipped": "dim", "not-reached": "dim",
           "unknown": "magenta"}
_QUOTED = ("no-output", "garbled", "died-before-handoff", "died-in-handoff", "infrastructure-error",
           "interrupted")
_PHASES = {"before-handoff": "Kernel trouble before the hand-off",
           "handoff": "Kernel trouble during the hand-off (after its hand-off line, before any payload line)",
           "after-payload": "Kernel trouble after the payload"}
_STOPS = {"timeout": "silence timeout (measured on the live console)", "eof": "console lost (end of stream)",
          "lost": "console lost (connection broke)", "max-time": "overall time limit (cut short)",
          "interrupted": "interrupted (Ctrl-C)", "replay": "a saved log, replayed",
          "stage-failed": "a stage failed before the test ran", "final": "the payload's done line",
          "reset": "a reset", "command-failed": "the trigger command failed"}


def report_dict(analysis: Analysis, baseline: dict | None = None) -> dict:
    """report.json's content: the analysis, and the POST baseline comparison when there is one."""
    d = analysis.to_dict()
    if baseline is not None:
        d["baseline"] = baseline
    return d


def write_report_json(analysis: Analysis, path: Path | str, baseline: dict | None = None) -> Path:
    """Atomically (temporary name, then rename); an OSError is one line (fsutil)."""
    path = Path(path)
    write_atomic(path, json.dumps(report_dict(analysis, baseline), indent=1, default=str) + "\n")
    return path


def short_result(step: dict, width: int = 70) -> str:
    """One readable cell for a step's result."""
    if step.get("reason") and step["status"] != "ok":
        return step["reason"][:width]
    r = step.get("result") or {}
    if r.get("supported") is False:
        s = "not supported by this firmware" + (f" (AH={r['ah']:02X}h)" if isinstance(r.get("ah"), int) else "")
    elif "entries" in r:
        s = f"{r.get('count', len(r['entries']))} entries"
    elif "drives" in r:
        parts = []
        for dr, v in r["drives"].items():
            v = {k: x for k, x in v.items() if k != "status" and not isinstance(x, (dict, list))}
            parts.append(f"{dr}: " + ", ".join(f"{k}={x}" for k, x in list(v.items())[:4]))
        s = "; ".join(parts)
    else:
        s = ", ".join(f"{k}={v}" for k, v in r.items() if not isinstance(v, (dict, list)))
        if "preferred_mode" in r:
            pm = r["preferred_mode"]
            s += f", preferred={pm['width']}x{pm['height']}"
    return s if len(s) <= width else s[: width - 3] + "..."


def step_anchor(step: dict) -> str:
    """The anchor of a step in summary.md and summary.html (`step-041-edd-params`): sweep
    matrix cells link to it."""
    idx = step.get("index")
    return f"step-{idx:03d}-{step.get('id')}" if isinstance(idx, int) else f"step-{step.get('id')}"


def clock_note(d: dict) -> str:
    """How the step times were measured, from the payload's `state tsc` line."""
    tsc = (d.get("state") or {}).get("tsc") or {}
    khz = tsc.get("khz")
    if isinstance(khz, int) and khz > 0:
        latch = tsc.get("latch")
        span = f" over {latch / 1193.182:.1f} ms of PIT channel 2" if isinstance(latch, int) else ""
        return (f"Times measured on the target: its TSC at {khz / 1000:.3f} MHz, calibrated "
                f"against the PIT{span}")
    host = "Times are host time stamps only (they say little about the calls themselves): "
    if str(tsc.get("present")) == "0":
        return host + "the target's CPU has no TSC (CPUID), so it timed nothing"
    if tsc:
        return host + "the TSC's calibration failed (the PIT never ended its count)"
    return host + "the payload printed no calibration (one that does not time its calls)"


def step_time_text(step: dict) -> str:
    """A step's time for a table cell: the target's, or the host's marked as such."""
    from .timechart import HOST, fmt_us, step_time

    us, src = step_time(step)
    if us is None:
        return ""
    return fmt_us(us) + (" (host)" if src == HOST else "")


def _time_section(d: dict, limit: int = 8) -> list[str]:
    """Where the time went: the longest steps, as the target measured them."""
    from .timechart import HOST, fmt_us, step_time

    timed = [(us, src, s) for s in d["steps"] for us, src in [step_time(s)] if us]
    if not timed:
        return []
    timed.sort(key=lambda x: -x[0])
    total = sum(us for us, _src, _s in timed)
    out = ["", "### Where the time went", "", clock_note(d)
           + ("; steps marked (host) have host time only" if any(src == HOST for _u, src, _s in timed)
              and not all(src == HOST for _u, src, _s in timed) else "") + ".", ""]
    out += [f"- `{s['index']:03d}` `{s['id']}` ({_md_cell(s.get('title', ''))}): {fmt_us(us)}"
            + (" (host)" if src == HOST else "") + f", {100 * us / total:.0f} %"
            for us, src, s in timed[:limit]]
    if len(timed) > limit:
        rest = sum(us for us, _src, _s in timed[limit:])
        out.append(f"- {len(timed) - limit} more steps: {fmt_us(rest)} together")
    return out


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_summary_md(analysis: Analysis, environment: dict | None = None,
                      baseline: dict | None = None) -> str:
    """Paste-ready for any tracker (with the POST baseline's section when there is one)."""
    from .memmap_svg import memory_maps

    env = environment or {}
    d = analysis.to_dict()
    maps = [m.name for m in memory_maps(d, (ln.text for ln in analysis.lines)) if m.ranges]
    out = [f"## kexectest: {d['verdict']}", "", f"**{d['summary']}**", ""]
    loc = d["hang"] or d["reset"]
    if loc and loc.get("step"):
        idx = loc.get("index")
        num = f"{idx:03d}" if isinstance(idx, int) else "?"
        out += [f"- step: `{num}` `{loc['step']}` ({loc.get('title')}), {loc.get('call')}"]
        if loc.get("note"):
            out.append(f"- note: {loc['note']}")
        if loc.get("silence_s") is not None and loc.get("measured", True):
            out.append(f"- silence: {loc['silence_s']:.1f} s")
        elif loc.get("silence_s") is not None:
            out.append(f"- the capture ended {loc['silence_s']:.1f} s after the last byte "
                       "(not a measured silence)")
        if loc.get("definite") is False:
            out.append("- not definite: the intact trace does not pin the stop here")
    if d["stop_reason"] in _STOPS:
        out.append(f"- capture ended by: {_STOPS[d['stop_reason']]}")
    out += _causes_section(d)
    if d["hang"] or d["reset"] or d["verdict"] in _QUOTED:
        ctx = analysis.context(before=12, after=0) if not d["reset"] else \
            analysis.context(d["reset"].get("line_index"), before=10, after=1)
        if ctx:
            out += ["", "Last lines:", "", "```", *ctx, "```"]
    for h in d.get("hints") or []:
        out.append(f"- hint: {h}")
    for phase, heading in _PHASES.items():
        blocks = [t for t in d["kernel_trouble"] if t.get("phase", "before-handoff") == phase]
        if blocks:
            out += ["", f"### {heading}", ""]
        for t in blocks:
            out += [f"{t['kind']}{' (fatal)' if t['fatal'] else ''}: {t['title']}", "", "```", *t["block"], "```", ""]
    if d["handoff"].get("purgatory"):
        out += ["", "### kexec-tools purgatory on the console", "", "```", *d["handoff"]["purgatory"], "```"]
    out += _damage_section(d)
    if d["findings"]:
        out += ["", "### Machine state at entry", ""] + [f"- {f['text']}" for f in d["findings"]]
    if d["steps"]:
        # what went wrong first, in full; every step behind a fold trackers render (<details>)
        bad = [s for s in d["steps"] if s["status"] in ("error", "hung")]
        if bad:
            out += ["", "### Steps that failed", ""] + _step_table(bad)
        unknown = [s for s in d["steps"] if s["status"] == "unknown"]
        if unknown:
            out += ["", f"### Steps the trace cannot tell ({len(unknown)} unknown: damaged or lost lines)", ""]
            out += _step_table(unknown[:20]) + (["", f"... and {len(unknown) - 20} more"] if len(unknown) > 20 else [])
        counts = {}
        for s in d["steps"]:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        tally = ", ".join(f"{n} {st}" for st, n in counts.items())
        out += ["", f"<details><summary>All {len(d['steps'])} steps ({tally})</summary>", ""]
        out += _step_table(d["steps"], anchors=True) + ["", "</details>"]
        out += _time_section(d)
    out += _devices_section(d)
    ba = d["before_after"]
    if ba.get("available"):
        out += ["", "### Before kexec / after kexec", ""]
        if ba["differences"]:
            out += [f"- {x}" for x in ba["differences"]]
        else:
            out.append("- no differences (E820 map, base memory, drives)")
    out += _handoff_params_section(d)
    out += baseline_section(baseline)
    if maps:
        out += ["", f"Memory maps as a picture: [memory-map.svg](memory-map.svg) ({', '.join(maps)}"
                    " side by side, differences marked); the whole report as a page: "
                    "[summary.html](summary.html)."]
    if d["e820"]:
        out += ["", "### E820 map (payload)", "", "```"]
        out += [f"{e['base']:016X}-{e['base'] + e['length'] - 1:016X} {e.get('type_name', e['type'])}"
                for e in d["e820"]]
        out.append("```")
    fw = ba.get("firmware") or {}
    out += ["", "### Identity", ""]
    if fw:
        out.append("- machine/firmware: " + ", ".join(f"{k}={v}" for k, v in fw.items()))
    if ba.get("kernel"):
        out.append("- kernel: " + ", ".join(f"{k}={v}" for k, v in ba["kernel"].items()))
    p = d["payload"]
    out.append(f"- payload: version {p.get('version')}, build id {p.get('build_id')}"
               + (f", sha256 {env['payload_sha256']}" if env.get("payload_sha256") else ""))
    out.append(f"- kexectest {__version__}; trace source: {d['source']}")
    out.append(f"- signature: `{d['signature'].get('id')}` {d['signature'].get('title')}")
    t = d["timing"]
    if t.get("payload_s") is not None:
        out.append(f"- payload trace: {t['payload_bytes']} bytes in {t['payload_s']:.3f} s "
                   f"(wire time at {t['baud']} baud: {t['wire_s']:.3f} s)")
    out += _run_section(env)
    command = env.get("command") or (shlex.join(env["command_line"]) if env.get("command_line") else None)
    if command:
        out += ["", "Command:", "", "```", command, "```"]
    return "\n".join(out) + "\n"


def _handoff_params_section(d: dict) -> list[str]:
    """What the loader's boot_params page told the payload against what the BIOS answered."""
    hp = d.get("handoff_params")
    if not hp:
        return []
    where = f"boot_params page at {hp['address']:#x}"
    if hp.get("loader"):
        where += f", filled by {hp['loader']} (protocol {hp.get('protocol')})"
    out = ["", "### Hand-off vs firmware", "", f"The {where}, field by field against the "
           "BIOS's answers in this run:", ""]
    out += [f"- problem: {p}" for p in hp.get("problems") or []]
    if hp.get("fields"):
        out += ["", "| field | the page (kernel) | the BIOS | |", "|---|---|---|---|"]
        for r in hp["fields"]:
            mark = {True: "same", False: "**differs**", None: ""}[r["same"]]
            out.append(f"| {r['field']} | {r['kernel']} | {r['firmware'] or '-'} | {mark} |")
    diffs = hp.get("differences") or []
    if diffs:
        out += ["", f"Differences ({len(diffs)}):", ""]
        out += [f"- {x['class']}: {x['field']}: the page {x['kernel']}, the BIOS "
                f"{x['firmware']} -- {x['why']}" for x in diffs]
    elif hp.get("readable"):
        out += ["", "No differences."]
    return out


def _cause_head(c: dict) -> str:
    idx = f"{c['index']:03d} " if isinstance(c.get("index"), int) else ""
    drive = f", drive {c['drive']}h" if c.get("drive") else ""
    return f"{idx}{c['step']} ({c['status']}{drive})"


def _causes_section(d: dict) -> list[str]:
    """Why each failed or hung call failed, as far as the run's evidence tells: the device,
    the Linux driver that held it, bus mastering before and after, and what is missing."""
    causes = d.get("causes") or []
    if not causes:
        return []
    out = ["", "### Why: the device behind the call", ""]
    for c in causes:
        out.append(f"- `{_cause_head(c)}`: {_md_cell(c['sentence'])}")
        out.append(f"  - evidence: {_md_cell(c['evidence'])}")
        if c.get("suggestion"):
            out.append(f"  - what would make the BIOS work: {_md_cell(c['suggestion'])}")
        out += [f"  - missing: {_md_cell(m)}" for m in c.get("missing") or ()]
    return out


def _yes_no(v) -> str:
    return {True: "on", False: "off"}.get(v, "?")


def _devices_section(d: dict) -> list[str]:
    """Every PCI function: the Linux driver and command register before kexec (the snapshot),
    the command register after it (the payload's scan)."""
    dev = d.get("devices") or {}
    table = dev.get("table") or []
    out = []
    if table:
        out += ["", "### PCI functions: Linux before kexec, the BIOS after", "",
                "| B/D/F | id | class | Linux driver | command before | command after "
                "| bus master before -> after |", "|---|---|---|---|---|---|---|"]
        for r in table:
            drv = r["linux_driver"] or ("none" if "linux" in r["seen_by"] else "?")
            out.append(f"| {r['bdf']} | {r['vendor'] or '?'}:{r['device'] or '?'} | "
                       f"{_md_cell(r['class'])} | {_md_cell(drv)} | {r['cmd_before'] or '?'} | "
                       f"{r['cmd_after'] or '?'} | {_yes_no(r['bus_master_before'])} -> "
                       f"{_yes_no(r['bus_master_after'])} |")
    if dev.get("missing") and (table or d.get("causes")):
        out += ["", "Device evidence missing from this run:", ""]
        out += [f"- {m}" for m in dev["missing"]]
    return out


def _damage_section(d: dict) -> list[str]:
    """How much of the evidence was damaged, and the first damaged lines, quoted."""
    g = d.get("damage") or {}
    if not (g.get("lines") or g.get("gaps") or g.get("unknown_steps")):
        return []
    kinds = ", ".join(f"{g[k]} {k.replace('_', ' ')}" for k in ("bad_checksum", "malformed", "unparsed",
                                                                "noise", "scrubbed") if g.get(k))
    out = ["", "### Damaged evidence (never read as the firmware's answer)", "",
           f"- damaged lines: {g.get('lines', 0)}" + (f" ({kinds})" if kinds else ""),
           f"- breaks in the step sequence (where a line was lost or damaged): {g.get('gaps', 0)}",
           f"- steps unknown: {g.get('unknown_steps', 0)}"]
    if g.get("duplicated"):
        out.append(f"- lines repeated by the wire (read once): {g['duplicated']}")
    if g.get("trailing"):
        out.append("- the trace ends in damaged lines: where it stopped is unknown")
    if g.get("quoted"):
        out += ["", "```", *g["quoted"], "```"]
    return out


def _step_table(steps: list[dict], anchors: bool = False) -> list[str]:
    """The steps as a table; with `anchors`, each row carries its step's anchor (the table of
    all steps: links from the sweep report land on the row)."""
    rows = ["| # | step | call | status | time | result |", "|---|---|---|---|---|---|"]
    for s in steps:
        anchor = f'<a id="{step_anchor(s)}"></a>' if anchors else ""
        rows.append(f"| {s['index']:03d} | {s['id']} | {anchor}{_md_cell(s.get('call', ''))} | "
                    f"{_MARK.get(s['status'], s['status'])} | {step_time_text(s)} | "
                    f"{_md_cell(short_result(s))} |")
    return rows


def _run_section(env: dict) -> list[str]:
    """How the run was made, in a few readable lines (everything is in environment.json)."""
    if not env:
        return []
    out = ["", "### Run", ""]
    if env.get("collector_host") or env.get("python"):
        out.append(f"- collector: {env.get('collector_host', '?')}, python {env.get('python', '?')}, "
                   f"{env.get('platform', '')}".rstrip(", "))
    ser = env.get("serial") or {}
    if ser:
        flow = " ".join(x for x in ("rtscts" if ser.get("rtscts") else "",
                                    "xonxoff" if ser.get("xonxoff") else "") if x)
        out.append(f"- serial: `{ser.get('url')}` at {ser.get('baud')} baud, parity {ser.get('parity')}"
                   + (f", {flow}" if flow else ""))
    tgt = env.get("target") or {}
    if env.get("mode"):
        how = env["mode"]
        if tgt.get("login"):
            how += f", login {tgt['login']}"
        if tgt.get("ssh"):
            how += f", ssh {tgt['ssh']}"
        if tgt.get("command"):
            how += f", command `{tgt['command']}`"
        out.append(f"- target driven by: {how}")
    lab = env.get("lab") or {}
    if lab:
        m = lab.get("machine") or {}
        out.append(f"- virtual lab: {m.get('machine')} {m.get('memory')} MiB, {m.get('smp')} CPU, "
                   f"{m.get('disks')} disk(s)"
                   + (f" on {lab['disk_bus']}" if lab.get("disk_bus") else "")
                   + f", {lab.get('accel')}, loader {lab.get('loader')}")
        drv = lab.get("drivers") or {}
        if drv.get("loaded"):
            out.append(f"- guest modules loaded before kexec: {', '.join(drv['loaded'])} "
                       f"(asked for: {', '.join(drv['requested'])})")
    t, stop = env.get("timings") or {}, env.get("stop") or {}
    if t or stop:
        bits = [f"{env.get('bytes')} bytes, {env.get('lines')} lines" if env.get("bytes") is not None else ""]
        if t.get("handoff_s") is not None:
            bits.append(f"hand-off at {t['handoff_s']:.1f} s")
        if t.get("ended_s") is not None:
            bits.append(f"ended at {t['ended_s']:.1f} s")
        if stop.get("reason"):
            bits.append(f"stopped by {stop['reason']}" + (f" ({stop['detail']})" if stop.get("detail") else ""))
        out.append("- capture: " + ", ".join(b for b in bits if b))
    if env.get("error"):
        out.append(f"- error: {env['error']}")
    return out


def render_terminal(analysis: Analysis, console, *, all_steps: bool = False) -> None:
    """The one-line verdict and a table of steps, on a rich Console.  Everything the trace
    carries is escaped: a quoted line is text, never rich markup."""
    from rich.table import Table

    d = analysis.to_dict()
    style = {"completed": "green", "failed-steps": "yellow", "garbled": "magenta",
             "interrupted": "magenta"}.get(d["verdict"], "red")
    head = d["summary"] if d["summary"].startswith(d["verdict"]) else f"{d['verdict']}: {d['summary']}"
    console.print(f"[bold {style}]{escape(head)}[/]", highlight=False)
    for c in d.get("causes") or []:
        console.print(f"[red]cause:[/] {escape(_cause_head(c))}: {escape(c['sentence'])}",
                      highlight=False)
        console.print(f"  [dim]evidence: {escape(c['evidence'])}[/]", highlight=False)
        for m in c.get("missing") or ():
            console.print(f"  [dim]missing: {escape(m)}[/]", highlight=False)
    for t in d["kernel_trouble"]:
        when = "during hand-off" if t.get("phase") == "handoff" else "before hand-off"
        console.print(f"[yellow]kernel {escape(t['kind'])}[/] {when}: {escape(t['title'])}", highlight=False)
    for line in d["handoff"].get("purgatory") or []:
        console.print(f"[yellow]purgatory:[/] {escape(line)}", highlight=False)
    g = d.get("damage") or {}
    if g.get("lines") or g.get("gaps"):
        console.print(f"[magenta]damage:[/] {g.get('lines', 0)} damaged lines, {g.get('gaps', 0)} gaps, "
                      f"{g.get('unknown_steps', 0)} steps unknown"
                      + ("; the trace ends in damaged lines" if g.get("trailing") else ""), highlight=False)
    for f in d["findings"]:
        console.print(f"[yellow]state:[/] {escape(f['text'])}", highlight=False)
    for x in d["before_after"].get("differences", []):
        console.print(f"[yellow]before/after:[/] {escape(x)}", highlight=False)
    for h in d.get("hints") or []:
        console.print(f"hint: {escape(h)}", highlight=False)
    if not d["steps"]:
        return
    table = Table(box=None, pad_edge=False)
    for col, w in (("#", 3), ("step", 16), ("call", 16), ("status", 11)):
        table.add_column(col, no_wrap=True, min_width=w)
    table.add_column("result", no_wrap=True, overflow="ellipsis")
    shown = 0
    for s in d["steps"]:
        if not all_steps and s["status"] == "not-reached" and shown and d["verdict"] != "completed":
            continue
        shown += 1
        c = _COLOUR.get(s["status"], "white")
        table.add_row(f"{s['index']:03d}", escape(s["id"]), escape(s.get("call", "")),
                      f"[{c}]{escape(s['status'])}[/]", escape(short_result(s, 60)))
    console.print(table)
