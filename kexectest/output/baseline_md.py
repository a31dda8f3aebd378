"""summary.md's "Against the POST baseline" section: report.json's `baseline` in words.

Steps that were not reached after kexec are shown as one range, not one row each: the hang
above already names where the trace stopped.
"""

from __future__ import annotations

import json


def _value(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def baseline_section(baseline: dict | None) -> list[str]:
    """Markdown lines for the section (empty without a baseline)."""
    if not baseline:
        return []
    post = baseline.get("post") or {}
    via = f", booted via {post['via']}" if post.get("via") else ""
    out = ["", "### Against the POST baseline", "",
           f"- POST capture: {baseline.get('source')} ({post.get('verdict')}{via})"]
    if baseline.get("refused"):
        return out + [f"- not compared: {baseline['refused']}"]
    diffs = baseline.get("differences") or []
    unreached = [d for d in diffs if d["field"] == "status" and d["after_kexec"] == "not-reached"
                 and d["post"] != "not-reached"]
    rows = [d for d in diffs if d not in unreached]
    if not diffs:
        out.append("- no differences: every step answered after kexec as it did at POST")
    else:
        steps = {d["step"] for d in diffs}
        out.append(f"- {len(diffs)} difference(s) in {len(steps)} step(s)")
    if unreached:
        out.append(f"- not reached after kexec: {len(unreached)} step(s), "
                   f"{unreached[0]['step']} .. {unreached[-1]['step']}")
    if rows:
        out += ["", "| step | field | at POST | after kexec |", "|---|---|---|---|"]
        out += [f"| {_cell(d['step'])} | {_cell(d['field'])} | {_cell(_value(d['post']))} | "
                f"{_cell(_value(d['after_kexec']))} |" for d in rows]
    left = baseline.get("left_out") or []
    if left:
        out += ["", "Left out by rule (they change by nature): "
                + "; ".join(f"{x['rule']} ({x['fields']}: {x['why']})" for x in left)]
    return out
