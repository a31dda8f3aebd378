"""A sweep's results as sweep.json, JUnit XML, one self-contained HTML page and summary.md.

All three are rendered from the same sweep dict (the content of sweep.json),
which is built from the journal's per-machine records plus each bundle's
report.json.  The HTML has inline CSS and SVG only, so it can be mailed or
attached as one file; bundle links are relative to the sweep directory.
"""

from __future__ import annotations

import datetime as _dt
import functools
import html
import json
import re
import statistics
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from ..errors import VERDICT_EXIT, Exit, KexectestError
from ..fsutil import write_atomic
from ..output.timechart import HOST, TARGET, MIXED, Row, chart, fmt_us, step_time
from .sweep_markdown import summary_md
from .sweep_matrix import CSS as MATRIX_CSS, STATUS_CLASS, device_facts, matrix

FORMAT = "kexectest-sweep/1"
# worst last: the sweep's exit code is the code of its worst machine
# every verdict (errors.Verdict) plus the sweep's own "error", least to most severe;
# tests/test_sweep_report.py checks that none is missing
SEVERITY = ["completed", "failed-steps", "no-output", "garbled", "reset", "hung",
            "died-before-handoff", "died-in-handoff", "infrastructure-error", "error",
            "interrupted"]
_KEEP_STEP = ("index", "id", "title", "int", "function", "status", "result", "reason",
              "target_us", "device")
_KEEP_CAUSE = ("step", "index", "drive", "status", "device", "sentence", "suggestion")
OTHER_GROUP = "other"  # a step whose payload names no group (an ELF before step groups)


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


def _bundle_file(out_dir: Path, bundle: str | None, name: str) -> str | None:
    return f"{bundle}/{name}" if bundle and (out_dir / bundle / name).exists() else None


def machine_entry(out_dir: Path, rec: dict) -> dict:
    """One machine of sweep.json: the journal's finish record plus its report.json essentials
    (each step with its time on the target, its BIOS concern and its anchor in summary.html)."""
    from ..output.report import clock_note, step_anchor

    bundle = rec.get("bundle")
    report = _read_report(out_dir, bundle) or {}
    groups = step_groups(out_dir, bundle)
    steps = []
    for i, s in enumerate(report.get("steps") or []):
        step = {k: s.get(k) for k in _KEEP_STEP}
        if step["index"] is None:
            step["index"] = i
        step["seconds"] = step_seconds(s)
        step["group"] = groups.get(str(step["id"])) or OTHER_GROUP
        step["anchor"] = step_anchor(step)
        steps.append(step)
    summary = _bundle_file(out_dir, bundle, "summary.md")
    return {
        "lab": _lab_of(out_dir, bundle),
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
        "page": _bundle_file(out_dir, bundle, "summary.html"),
        "memory_map": _bundle_file(out_dir, bundle, "memory-map.svg"),
        "clock": clock_note(report) if report.get("steps") else None,
        "tarball": rec.get("tarball"),
        "place": rec.get("place"),
        "power": rec.get("power", []),
        "signature": report.get("signature") or _fallback_signature(rec),
        "hang": report.get("hang"),
        "causes": [{k: c.get(k) for k in _KEEP_CAUSE} for c in report.get("causes") or ()],
        "steps": steps,
        "e820": report.get("e820") or [],
        "payload": report.get("payload"),
        "baseline": _baseline(report.get("baseline")),
    }


def _lab_of(out_dir: Path, bundle: str | None) -> dict | None:
    """A lab run's shape, loader, requested guest drivers and kernel release (environment.json
    `lab`), which the interference findings pair machines by; None for hardware or without the
    file."""
    if not bundle:
        return None
    try:
        lab = json.loads((out_dir / bundle / "environment.json").read_text()).get("lab")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(lab, dict) or not isinstance(lab.get("machine"), dict):
        return None
    drivers = lab.get("drivers") if isinstance(lab.get("drivers"), dict) else {}
    kernel = lab.get("kernel") if isinstance(lab.get("kernel"), dict) else {}
    return {"shape": lab["machine"], "loader": lab.get("loader"),
            "drivers": list(drivers.get("requested") or ()), "kernel": kernel.get("release")}


def _baseline(b: dict | None) -> dict | None:
    """A baseline run's differences from POST by step (report.json `baseline`), for the marks."""
    if not isinstance(b, dict):
        return None
    by_step: dict[str, list[str]] = {}
    for d in b.get("differences") or []:
        by_step.setdefault(str(d.get("step")), []).append(
            f"{d.get('field')}: {d.get('post')} at POST, {d.get('after_kexec')} after kexec")
    return {"differences": len(b.get("differences") or []), "steps": by_step,
            "refused": b.get("refused")}


@functools.lru_cache(maxsize=64)
def _groups_of(path: str, mtime: float) -> dict[str, str]:
    from ..payload.image import PayloadImage

    try:
        return {st.name: st.group for st in PayloadImage.open(path).steps if st.group}
    except KexectestError:
        return {}


def step_groups(out_dir: Path, bundle: str | None) -> dict[str, str]:
    """Step id -> BIOS concern (the GROUP lines of payloads/steps.S), from the payload ELF the
    machine ran (its bundle's payload.elf), else the default payload; {} without either."""
    from ..payload.build import ensure_built

    candidates = [out_dir / bundle / "payload.elf"] if bundle else []
    for path in candidates:
        if path.is_file():
            got = _groups_of(str(path), path.stat().st_mtime)
            if got:
                return got
    try:
        elf = ensure_built()
    except KexectestError:
        return {}
    return _groups_of(str(elf), elf.stat().st_mtime)


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
             "html": out_dir / "report.html", "md": out_dir / "summary.md"}
    write_atomic(paths["json"], json.dumps(sweep, indent=2, sort_keys=False) + "\n")
    write_atomic(paths["junit"], junit_xml(sweep))
    write_atomic(paths["html"], html_report(sweep, out_dir))
    write_atomic(paths["md"], summary_md(sweep))
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
            us, _src = step_time(s)  # the target's time where it gave one
            sc = ET.SubElement(suite, "testcase", classname=f"kexectest.{m['name']}", name=name,
                               time=f"{(us or 0) / 1e6:.6f}")
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
td.c.post{box-shadow:inset 0 0 0 2px #1565c0}
.postmark{box-shadow:inset 0 0 0 2px #1565c0;padding:0 6px}
code{font-size:12px} .small{font-size:12px;color:#555}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def badge(verdict: str) -> str:
    return f'<span class="v v-{_e(verdict)}">{_e(verdict)}</span>'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}{MATRIX_CSS}</style></head>\n<body>\n{body}"
            "\n</body></html>\n")


def _links(m: dict) -> str:
    links = []
    if m.get("page"):
        links.append(f'<a href="{_e(m["page"])}">page</a>')
    if m.get("summary"):
        links.append(f'<a href="{_e(m["summary"])}">summary</a>')
    if m.get("tarball"):
        links.append(f'<a href="{_e(m["tarball"])}">bundle</a>')
    return " ".join(links)


def _matrix(machines: list[dict]) -> str:
    return matrix(machines, _links, badge)


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
                     f"</code>{_group_causes(ms)}</li>")
    return f'<ul id="failures">{"".join(items)}</ul>'


def _group_causes(machines: list[dict]) -> str:
    """The devices behind a group's failed or hung calls: each distinct cause once, with the
    machines it was found on (one signature can hold machines whose disks sit on different
    controllers)."""
    seen: dict[str, tuple[dict, list[str]]] = {}
    for m in machines:
        for c in m.get("causes") or ():
            seen.setdefault(str(c.get("sentence")), (c, []))[1].append(m["name"])
    if not seen:
        return ""
    rows = []
    for c, names in seen.values():
        d = c.get("device")
        if d:
            facts = device_facts(d)
            attrs = f' data-bdf="{_e(d["bdf"])}" data-driver="{_e(d["linux_driver"] or "")}"'
        else:
            facts, attrs = "device not known", ' data-bdf=""'
        where = f'{c.get("step")}' + (f', drive {c["drive"]}h' if c.get("drive") else "")
        rows.append(f'<li class="cause"{attrs}><b>{_e(where)}</b> ({_e(c.get("status"))}): '
                    f'{_e(facts)}'
                    f'<br>{_e(c.get("sentence"))} <span class="small">'
                    f'({_e(", ".join(names))})</span></li>')
    return f'<ul class="causes">{"".join(rows)}</ul>'


def _interference(machines: list[dict]) -> str:
    """The pairs of configurations that show what makes a BIOS service work (fleet/
    interference.py); nothing when the sweep has none."""
    from .interference import findings

    got = findings(machines)
    if not got:
        return ""
    items = "".join(f'<li class="finding" data-machine="{_e(f["machine"])}" '
                    f'data-answers-on="{_e(f["answers_on"])}">{_e(f["sentence"])}</li>'
                    for f in got)
    return f'<h2>What makes the BIOS work, measured</h2><ul id="interference">{items}</ul>'


def time_rows(machines: list[dict]) -> list[Row]:
    """One chart row per step: the median of the machines' times (each the target's where it
    gave one, else the host's), every machine's time as a dot."""
    per: dict[tuple[int, str], list[tuple[str, float, str]]] = defaultdict(list)
    for m in machines:
        for s in m["steps"]:
            us, src = step_time(s)
            if us is not None:
                key = (s["index"] if isinstance(s["index"], int) else 0, str(s["id"]))
                per[key].append((m["name"], us, src))
    rows = []
    for (i, sid), got in sorted(per.items()):
        values = [us for _n, us, _s in got]
        srcs = {src for _n, _us, src in got}
        src = TARGET if srcs == {TARGET} else HOST if srcs == {HOST} else MIXED
        med = statistics.median(values)
        tip = (f"{i:03d} {sid}: median {fmt_us(med)} over {len(got)} machines; "
               + ", ".join(f"{n} {fmt_us(us)}{' (host)' if s == HOST else ''}" for n, us, s in got))
        rows.append(Row(f"{i:03d} {sid}", med, src, values if len(values) > 1 else [], tip))
    return rows


def _timing_svg(machines: list[dict]) -> str:
    clocks = sorted({m["clock"] for m in machines if m.get("clock")})
    note = clocks[0] if len(clocks) == 1 else ""
    return chart(time_rows(machines), note=note)


_SVG_START = '<svg xmlns="http://www.w3.org/2000/svg" class="kt-memmap"'
_SVG_REFUSED = re.compile(r"(?i)<script|<foreignobject|\bon\w+\s*=|href|<!entity|<\?xml-stylesheet")


def _memory_map(out_dir: Path | None, m: dict) -> str | None:
    """A machine's memory-map.svg, to inline: only the picture kexectest draws (it starts as
    memmap_svg writes it, and holds nothing that runs or fetches)."""
    if out_dir is None or not m.get("memory_map"):
        return None
    try:
        text = (Path(out_dir) / m["memory_map"]).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith(_SVG_START) or _SVG_REFUSED.search(text) or len(text) > 2_000_000:
        return None
    return text


def _memory_maps(out_dir: Path | None, machines: list[dict]) -> str:
    items = []
    for m in machines:
        svg = _memory_map(out_dir, m)
        if svg is None:
            continue
        differs = 'class="diff"' in svg
        items.append(f'<figure class="mm" style="margin:0" data-machine="{_e(m["name"])}"><figcaption><b>'
                     f'{_e(m["name"])}</b>{" - the maps differ" if differs else ""} '
                     f'(<a href="{_e(m["memory_map"])}">memory-map.svg</a>)</figcaption>{svg}</figure>')
    if not items:
        return '<p class="small">No memory map in the bundles.</p>'
    return f'<div id="memory-maps" style="display:flex;flex-wrap:wrap;gap:12px">{"".join(items)}</div>'


def html_report(sweep: dict, out_dir: Path | None = None) -> str:
    """The page; with `out_dir` (the sweep directory) each bundle's memory map is inlined."""
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
            f"{_interference(ms)}"
            f"<h2>Time per step</h2>{_timing_svg(ms)}"
            f"<h2>Memory maps</h2>{_memory_maps(out_dir, ms)}")
    return page(f"kexectest sweep {lab}", body)
