"""A sweep's results as sweep.json, JUnit XML and one self-contained HTML page.

All three are rendered from the same sweep dict (the content of sweep.json),
which is built from the journal's per-machine records plus each bundle's
report.json.  The HTML has inline CSS and SVG only, so it can be mailed or
attached as one file; bundle links are relative to the sweep directory.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import statistics
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from ..errors import VERDICT_EXIT, Exit, KexectestError
from ..fsutil import write_atomic

FORMAT = "kexectest-sweep/1"
# worst last: the sweep's exit code is the code of its worst machine
# every verdict (errors.Verdict) plus the sweep's own "error", least to most severe;
# tests/test_sweep_report.py checks that none is missing
SEVERITY = ["completed", "failed-steps", "no-output", "garbled", "reset", "hung",
            "died-before-handoff", "died-in-handoff", "infrastructure-error", "error",
            "interrupted"]
STATUS_CLASS = {"ok": "ok", "error": "err", "hung": "hung", "unknown": "unk", "skipped": "skip",
                "not-reached": "nr"}
_KEEP_STEP = ("index", "id", "title", "int", "function", "status", "result")


def step_seconds(step: dict) -> float | None:
    """A step's duration, whatever the analysis calls it (None when unknown)."""
    for key in ("seconds", "duration", "duration_s", "elapsed"):
        v = step.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    t0, t1 = step.get("t_begin", step.get("t0")), step.get("t_end", step.get("t1"))
    if isinstance(t0, (int, float)) and isinstance(t1, (int, float)):
        return float(t1) - float(t0)
    return None


def _read_report(out_dir: Path, bundle: str | None) -> dict | None:
    if not bundle:
        return None
    try:
        return json.loads((out_dir / bundle / "report.json").read_text())
    except (OSError, ValueError):
        return None


def machine_entry(out_dir: Path, rec: dict) -> dict:
    """One machine of sweep.json: the journal's finish record plus its report.json essentials."""
    report = _read_report(out_dir, rec.get("bundle")) or {}
    steps = []
    for i, s in enumerate(report.get("steps") or []):
        step = {k: s.get(k) for k in _KEEP_STEP}
        if step["index"] is None:
            step["index"] = i
        step["seconds"] = step_seconds(s)
        steps.append(step)
    bundle = rec.get("bundle")
    summary = f"{bundle}/summary.md" if bundle and (out_dir / bundle / "summary.md").exists() else None
    return {
        "name": rec["machine"],
        "kind": rec.get("kind", "hardware"),
        "tags": rec.get("tags", []),
        "verdict": rec.get("verdict", "error"),
        "exit_code": rec.get("exit_code", int(Exit.BAD_INPUT)),
        "one_line": rec.get("one_line", ""),
        "error": rec.get("error"),
        "attempts": rec.get("attempts", 1),
        "seconds": rec.get("seconds"),
        "bundle": bundle,
        "summary": summary,
        "tarball": rec.get("tarball"),
        "place": rec.get("place"),
        "power": rec.get("power", []),
        "signature": report.get("signature") or _fallback_signature(rec),
        "hang": report.get("hang"),
        "steps": steps,
        "e820": report.get("e820") or [],
        "payload": report.get("payload"),
    }


def _fallback_signature(rec: dict) -> dict | None:
    if rec.get("verdict") == "completed":
        return None
    v = rec.get("verdict", "error")
    return {"id": f"{v}:{rec.get('exit_code')}", "title": f"{v}: {(rec.get('error') or v)[:80]}"}


def worst(verdicts) -> str:
    vs = list(verdicts) or ["completed"]
    return max(vs, key=lambda v: SEVERITY.index(v) if v in SEVERITY else len(SEVERITY))


def build_sweep(out_dir: Path, lab: dict, records: list[dict], started: float,
                finished: float) -> dict:
    machines = [machine_entry(out_dir, r) for r in records]
    counts: dict[str, int] = defaultdict(int)
    for m in machines:
        counts[m["verdict"]] += 1
    if all(m["verdict"] == "completed" for m in machines):
        code = 0
    else:
        bad = max(machines, key=lambda m: SEVERITY.index(m["verdict"])
                  if m["verdict"] in SEVERITY else len(SEVERITY))
        code = bad["exit_code"] if bad["verdict"] == "error" else int(VERDICT_EXIT.get(
            bad["verdict"], bad["exit_code"]))
    iso = lambda t: _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "format": FORMAT, "lab": lab, "started": iso(started), "finished": iso(finished),
        "seconds": round(finished - started, 3), "exit_code": int(code),
        "worst": worst(m["verdict"] for m in machines), "counts": dict(counts),
        "machines": machines,
    }


def load_sweep(directory: Path) -> dict:
    path = Path(directory) / "sweep.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KexectestError(f"{directory}: not a sweep directory (no sweep.json)",
                             Exit.BAD_INPUT) from None
    except (OSError, ValueError) as exc:
        raise KexectestError(f"{path}: unreadable: {exc}", Exit.BAD_INPUT) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise KexectestError(f"{path}: not a kexectest sweep.json", Exit.BAD_INPUT)
    return data


def write_reports(out_dir: Path, sweep: dict) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "sweep.json", "junit": out_dir / "junit.xml",
             "html": out_dir / "report.html"}
    write_atomic(paths["json"], json.dumps(sweep, indent=2, sort_keys=False) + "\n")
    write_atomic(paths["junit"], junit_xml(sweep))
    write_atomic(paths["html"], html_report(sweep))
    return paths


# ---------------------------------------------------------------- JUnit

def junit_xml(sweep: dict) -> str:
    """One testsuite per machine: a testcase for the machine's verdict and one per step."""
    root = ET.Element("testsuites", name=f"kexectest sweep {sweep['lab'].get('name', '')}")
    totals = defaultdict(int)
    for m in sweep["machines"]:
        suite = ET.SubElement(root, "testsuite", name=m["name"])
        counts = defaultdict(int)
        case = ET.SubElement(suite, "testcase", classname=f"kexectest.{m['name']}", name="verdict",
                             time=f"{m.get('seconds') or 0:.3f}")
        counts["tests"] += 1
        line = m["one_line"] or m["verdict"]
        if m["verdict"] == "error":
            ET.SubElement(case, "error", message=line, type="error").text = m.get("error") or line
            counts["errors"] += 1
        elif m["verdict"] != "completed":
            ET.SubElement(case, "failure", message=line, type=m["verdict"]).text = line
            counts["failures"] += 1
        for s in m["steps"]:
            name = f"{s['index']:03d} {s['id']}" if isinstance(s["index"], int) else str(s["id"])
            sc = ET.SubElement(suite, "testcase", classname=f"kexectest.{m['name']}", name=name,
                               time=f"{s.get('seconds') or 0:.3f}")
            counts["tests"] += 1
            status = s.get("status")
            if status == "hung":
                ET.SubElement(sc, "failure", message=line, type="hung").text = line
                counts["failures"] += 1
            elif status == "error":
                res = json.dumps(s.get("result"), sort_keys=True)[:500]
                ET.SubElement(sc, "failure", message=f"{s['id']} returned an error",
                              type="error").text = res
                counts["failures"] += 1
            elif status in ("skipped", "not-reached"):
                ET.SubElement(sc, "skipped", message=status)
                counts["skipped"] += 1
        for key in ("tests", "failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
            totals[key] += counts[key]
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 5px}
table.matrix td.c{width:14px;min-width:14px;padding:0;height:20px}
table.matrix th.s{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;
  font-size:11px;padding:3px 0;white-space:nowrap}
.ok{background:#4caf50}.err{background:#ff9800}.hung{background:#e53935}.skip{background:#bbb}
.nr{background:#eee}.none{background:#fff}
.unk{background:repeating-linear-gradient(45deg,#bbb 0 3px,#fff 3px 6px)}
.v{padding:1px 6px;border-radius:3px;color:#fff;white-space:nowrap}
.v-completed{background:#2e7d32}.v-failed-steps{background:#ef6c00}.v-hung{background:#c62828}
.v-reset{background:#6a1b9a}.v-no-output{background:#455a64}.v-garbled{background:#795548}
.v-died-before-handoff{background:#b71c1c}.v-died-in-handoff{background:#880e4f}
.v-infrastructure-error{background:#546e7a}.v-interrupted{background:#757575}
.v-error{background:#37474f}
.new{background:#ffebee}.fixed{background:#e8f5e9}
code{font-size:12px} .small{font-size:12px;color:#555}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def badge(verdict: str) -> str:
    return f'<span class="v v-{_e(verdict)}">{_e(verdict)}</span>'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _columns(machines: list[dict]) -> list[tuple[int, str]]:
    cols: dict[tuple[int, str], None] = {}
    for m in machines:
        for s in m["steps"]:
            cols[(s["index"] if isinstance(s["index"], int) else 0, str(s["id"]))] = None
    return sorted(cols)


def _matrix(machines: list[dict]) -> str:
    cols = _columns(machines)
    head = "".join(f'<th class="s" title="{_e(i)} {_e(sid)}">{i:03d} {_e(sid)}</th>'
                   for i, sid in cols)
    rows = []
    for m in machines:
        by = {(s["index"], str(s["id"])): s for s in m["steps"]}
        links = []
        if m.get("summary"):
            links.append(f'<a href="{_e(m["summary"])}">summary</a>')
        if m.get("tarball"):
            links.append(f'<a href="{_e(m["tarball"])}">bundle</a>')
        cells = []
        if not m["steps"]:
            cells.append(f'<td class="none small" colspan="{max(len(cols), 1)}">'
                         f'{_e(m["one_line"] or m.get("error") or m["verdict"])}</td>')
        for key in (cols if m["steps"] else []):
            s = by.get(key)
            if s is None:
                cells.append('<td class="c none"></td>')
                continue
            st = s.get("status") or "not-reached"
            tip = f'{key[0]:03d} {key[1]}: {st}'
            if s.get("seconds") is not None:
                tip += f' ({s["seconds"]:.3f} s)'
            cells.append(f'<td class="c {STATUS_CLASS.get(st, "none")}" data-status="{_e(st)}" '
                         f'title="{_e(tip)}"></td>')
        rows.append(f'<tr data-machine="{_e(m["name"])}" data-verdict="{_e(m["verdict"])}">'
                    f'<th style="text-align:left">{_e(m["name"])}</th><td>{badge(m["verdict"])}'
                    f'</td><td class="small">{" ".join(links)}</td>{"".join(cells)}</tr>')
    legend = " ".join(f'<span class="{c}" style="padding:0 6px">{_e(s)}</span>'
                      for s, c in STATUS_CLASS.items())
    return (f'<p class="small">{legend}</p><table class="matrix" id="matrix"><thead><tr>'
            f"<th>machine</th><th>verdict</th><th>bundle</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def group_failures(machines: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Failures grouped by signature, biggest group first."""
    groups: dict[str, tuple[dict, list[dict]]] = {}
    for m in machines:
        if m["verdict"] == "completed":
            continue
        sig = m.get("signature") or {"id": m["verdict"], "title": m["verdict"]}
        groups.setdefault(str(sig.get("id")), (sig, []))[1].append(m)
    return sorted(groups.values(), key=lambda g: (-len(g[1]), str(g[0].get("id"))))


def _failures(machines: list[dict]) -> str:
    groups = group_failures(machines)
    if not groups:
        return "<p>No failures.</p>"
    items = []
    for sig, ms in groups:
        verdicts = sorted({m["verdict"] for m in ms})
        what = "/".join(verdicts)
        head = (f"same {what} on {len(ms)} machines" if len(ms) > 1 else f"{what} on 1 machine")
        names = ", ".join(_e(m["name"]) for m in ms)
        items.append(f'<li class="sig" data-count="{len(ms)}"><b>{_e(head)}</b>: '
                     f'{_e(sig.get("title") or sig.get("id"))}<br><span class="small">{names}'
                     f'</span><br><code>{_e(ms[0]["one_line"] or ms[0].get("error") or "")}'
                     f"</code></li>")
    return f'<ul id="failures">{"".join(items)}</ul>'


def _timing_svg(machines: list[dict]) -> str:
    per: dict[tuple[int, str], list[float]] = defaultdict(list)
    for m in machines:
        for s in m["steps"]:
            if s.get("seconds") is not None:
                per[(s["index"] if isinstance(s["index"], int) else 0, str(s["id"]))].append(
                    s["seconds"])
    if not per:
        return '<p class="small">No step timings in the reports.</p>'
    rows = sorted(per)
    med = {k: statistics.median(v) for k, v in per.items()}
    top = max(max(v) for v in per.values()) or 1.0
    width, label, rh = 520, 200, 16
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="timing" width="{label + width + 90}" '
             f'height="{rh * len(rows) + 10}" font-size="11" font-family="sans-serif">']
    for n, key in enumerate(rows):
        y = 5 + n * rh
        w = max(1.0, med[key] / top * width)
        parts.append(f'<text x="{label - 4}" y="{y + 11}" text-anchor="end">{key[0]:03d} '
                     f'{_e(key[1])}</text><rect x="{label}" y="{y + 2}" width="{w:.1f}" '
                     f'height="{rh - 4}" fill="#5c6bc0"><title>{_e(key[1])}: median '
                     f'{med[key]:.4f} s over {len(per[key])} machines</title></rect>')
        for v in per[key]:
            parts.append(f'<circle cx="{label + v / top * width:.1f}" cy="{y + rh / 2}" r="2" '
                         f'fill="#222"/>')
        parts.append(f'<text x="{label + w + 4:.1f}" y="{y + 11}">{med[key]:.3f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(sweep: dict) -> str:
    ms = sweep["machines"]
    counts = " ".join(f"{badge(v)} {n}" for v, n in sorted(
        sweep["counts"].items(), key=lambda kv: SEVERITY.index(kv[0]) if kv[0] in SEVERITY else 99))
    lab = sweep["lab"].get("name", "")
    body = (f"<h1>kexectest sweep: {_e(lab)}</h1>"
            f'<p>{len(ms)} machines, {counts}<br><span class="small">{_e(sweep["started"])} .. '
            f'{_e(sweep["finished"])} ({sweep["seconds"]:.1f} s), exit code '
            f'{sweep["exit_code"]}</span></p>'
            f"<h2>Machine x step</h2>{_matrix(ms)}"
            f"<h2>Failures by signature</h2>{_failures(ms)}"
            f"<h2>Time per step</h2>{_timing_svg(ms)}")
    return page(f"kexectest sweep {lab}", body)
