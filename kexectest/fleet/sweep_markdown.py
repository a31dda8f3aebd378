"""A sweep as Markdown (summary.md): the configuration x BIOS concern table, and the causes.

The same cells as the HTML matrix (fleet/sweep_matrix.py: one column per BIOS concern, a
cell its worst step), in text that goes into an issue, a mail or docs/: a failing cell says
its steps and the device and driver behind the first of them, from the run's own evidence
(steps[].device, causes).  Concerns that answered on every machine are one line, not
columns.
"""

from __future__ import annotations

from .sweep_matrix import FAILING, device_facts, device_label, failing_device, groups, worst


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell(m: dict, steps: list[tuple[int, str]]) -> str:
    by = {(s["index"], str(s["id"])): s for s in m["steps"]}
    mine = [by[k] for k in steps if k in by]
    st = worst(s.get("status") for s in mine)
    bad = [s for s in mine if s.get("status") in FAILING]
    if not bad:
        return st if st != "none" else ""
    dev = failing_device(m, bad)
    names = ", ".join(f'{s["id"]} {s.get("status")}' for s in bad[:3])
    more = f" +{len(bad) - 3}" if len(bad) > 3 else ""
    where = f': {dev.get("bdf")} held by {device_label(dev)}' if dev and dev.get(
        "linux_driver") else f': {dev.get("bdf")}, no Linux driver' if dev else ""
    return f"**{st}** {names}{more}{where}"


def summary_md(sweep: dict) -> str:
    ms = sweep["machines"]
    gs = groups(ms)
    failing = [(g, st) for g, st in gs
               if any(s.get("status") in FAILING for m in ms for s in m["steps"]
                      if str(s.get("group") or "other") == g)]
    quiet = [g for g, _st in gs if g not in {f for f, _ in failing}]
    counts = ", ".join(f"{n} {v}" for v, n in sweep["counts"].items())
    lab = sweep["lab"].get("name", "")
    out = [f"# kexectest sweep: {lab}", "",
           f"{len(ms)} machines ({counts}), {sweep['seconds']:.0f} s wall time "
           f"({sweep['started']} .. {sweep['finished']}), exit code {sweep['exit_code']}.", ""]
    head = ["configuration", "verdict", *(g for g, _ in failing)]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for m in ms:
        verdict = m["verdict"]
        if m["steps"]:
            cells = [_cell(m, st) for _g, st in failing]
        else:  # no trace: what the run said instead, in the row
            verdict += f': {m["one_line"] or m.get("error") or ""}'.rstrip(": ")
            cells = [""] * len(failing)
        out.append("| " + " | ".join(_md(x) for x in [m["name"], verdict, *cells]) + " |")
    out.append("")
    if quiet:
        answered = [g for g in quiet if all(
            s.get("status") in ("ok", "skipped") for m in ms for s in m["steps"]
            if str(s.get("group") or "other") == g)]
        if answered:
            out.append(f"Every step of {', '.join(answered)} answered on every machine that "
                       "reached it.")
            out.append("")
    causes: dict[str, tuple[dict, dict, dict]] = {}  # sentence -> (cause, steps, machines)
    for m in ms:
        for c in m.get("causes") or ():
            got = causes.setdefault(str(c.get("sentence")), (c, {}, {}))
            got[1][str(c.get("step"))] = None
            got[2][m["name"]] = None
    if causes:
        out += ["## Causes, as the runs found them", ""]
        for c, steps, machines in causes.values():
            d = c.get("device")
            names = list(machines)
            where = ", ".join(steps) + (f', drive {c["drive"]}h' if c.get("drive") else "")
            facts = device_facts(d) if d else "device not known"
            out.append(f"- **{_md(where)}** ({c.get('status')}): {_md(facts)}. "
                       f"{_md(c.get('sentence'))} ({', '.join(names)})")
            if c.get("suggestion"):
                out.append(f"  - what would make the BIOS work: {_md(c['suggestion'])}")
        out.append("")
    from .interference import findings

    measured = findings(ms)
    if measured:
        out += ["## What makes the BIOS work, measured", ""]
        out += [f"- {_md(f['sentence'])}" for f in measured]
        out.append("")
    return "\n".join(out)
