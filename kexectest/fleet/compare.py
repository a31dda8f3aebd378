"""What changed between two sweeps: new failures, fixes, changed verdicts and firmware answers.

Works on sweep.json alone (it carries each machine's steps and E820 map), so
old sweep directories whose bundles were archived can still be compared.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .sweep_report import _e, badge, load_sweep, page

_BAD = {"ok", "skipped"}


def _key(entry: dict) -> tuple:
    return (entry.get("base"), entry.get("length"), entry.get("type"))


def _fmt_e820(entry: dict) -> str:
    b, n, t = entry.get("base"), entry.get("length"), entry.get("type")
    if isinstance(b, int) and isinstance(n, int):
        return f"{b:#014x}+{n:#x} type {t}"
    return f"{b}+{n} type {t}"


def e820_diff(old: list[dict], new: list[dict]) -> dict:
    o, n = {_key(e): e for e in old}, {_key(e): e for e in new}
    return {"removed": [_fmt_e820(o[k]) for k in o if k not in n],
            "added": [_fmt_e820(n[k]) for k in n if k not in o]}


def step_changes(old: list[dict], new: list[dict]) -> list[dict]:
    """Steps (matched by id) whose status or result differs."""
    o = {s["id"]: s for s in old}
    out = []
    for s in new:
        p = o.get(s["id"])
        if p is None:
            out.append({"step": s["id"], "old": None, "new": s.get("status")})
            continue
        if p.get("status") != s.get("status") or p.get("result") != s.get("result"):
            out.append({"step": s["id"], "old_status": p.get("status"),
                        "new_status": s.get("status"), "old_result": p.get("result"),
                        "new_result": s.get("result")})
    return out


def compare(old_dir: Path, new_dir: Path) -> dict:
    old, new = load_sweep(old_dir), load_sweep(new_dir)
    om = {m["name"]: m for m in old["machines"]}
    nm = {m["name"]: m for m in new["machines"]}
    result = {"old": str(old_dir), "new": str(new_dir), "new_failures": [], "fixes": [],
              "changed_verdicts": [], "firmware_changes": [],
              "only_old": sorted(set(om) - set(nm)), "only_new": sorted(set(nm) - set(om))}
    for name in sorted(set(om) & set(nm)):
        a, b = om[name], nm[name]
        va, vb = a["verdict"], b["verdict"]
        if va != vb:
            item = {"machine": name, "old": va, "new": vb, "one_line": b.get("one_line", "")}
            if va == "completed":
                result["new_failures"].append(item)
            elif vb == "completed":
                result["fixes"].append(item)
            else:
                result["changed_verdicts"].append(item)
        e = e820_diff(a.get("e820") or [], b.get("e820") or [])
        steps = step_changes(a.get("steps") or [], b.get("steps") or [])
        # an E820 step's raw registers repeat the map; list it only once, as the map
        steps = [s for s in steps if s["step"] != "e820" or not (e["added"] or e["removed"])]
        if e["added"] or e["removed"] or steps:
            result["firmware_changes"].append({"machine": name, "e820": e, "steps": steps})
    return result


def render_text(res: dict, console: Console) -> None:
    console.print(f"[bold]compare[/bold] {res['old']} -> {res['new']}")
    for title, key, style in (("New failures", "new_failures", "red"), ("Fixes", "fixes", "green"),
                              ("Changed verdicts", "changed_verdicts", "yellow")):
        if not res[key]:
            continue
        t = Table(title=title, title_style=f"bold {style}", title_justify="left")
        for col in ("machine", "old", "new", "now"):
            t.add_column(col)
        for item in res[key]:
            t.add_row(item["machine"], item["old"], item["new"], item["one_line"])
        console.print(t)
    for fc in res["firmware_changes"]:
        console.print(f"[bold]Firmware answers changed on {fc['machine']}[/bold]")
        for e in fc["e820"]["removed"]:
            console.print(f"  e820 - {e}")
        for e in fc["e820"]["added"]:
            console.print(f"  e820 + {e}")
        for s in fc["steps"]:
            if "old_status" in s:
                console.print(f"  {s['step']}: {s['old_status']} -> {s['new_status']}"
                              + ("" if s["old_result"] == s["new_result"] else
                                 f"  {json.dumps(s['old_result'])} -> {json.dumps(s['new_result'])}"),
                              markup=False, highlight=False)
            else:
                console.print(f"  {s['step']}: new step ({s['new']})", markup=False)
    if res["only_old"]:
        console.print(f"Only in old: {', '.join(res['only_old'])}", markup=False)
    if res["only_new"]:
        console.print(f"Only in new: {', '.join(res['only_new'])}", markup=False)
    if not any(res[k] for k in ("new_failures", "fixes", "changed_verdicts", "firmware_changes",
                                "only_old", "only_new")):
        console.print("No differences.")


def render_html(res: dict) -> str:
    parts = [f"<h1>kexectest compare</h1><p class='small'>{_e(res['old'])} &rarr; {_e(res['new'])}</p>"]
    for title, key, cls in (("New failures", "new_failures", "new"), ("Fixes", "fixes", "fixed"),
                            ("Changed verdicts", "changed_verdicts", "")):
        rows = "".join(f'<tr class="{cls}" data-machine="{_e(i["machine"])}"><th>{_e(i["machine"])}'
                       f'</th><td>{badge(i["old"])}</td><td>{badge(i["new"])}</td><td class="small">'
                       f'{_e(i["one_line"])}</td></tr>' for i in res[key])
        body = (f'<table id="{key}">'
                f"<tr><th>machine</th><th>old</th><th>new</th><th>now</th></tr>"
                f"{rows}</table>") if rows else "<p>None.</p>"
        parts.append(f"<h2>{title}</h2>{body}")
    parts.append("<h2>Firmware answers changed</h2>")
    if not res["firmware_changes"]:
        parts.append("<p>None.</p>")
    for fc in res["firmware_changes"]:
        lines = [f"- e820 {x}" for x in fc["e820"]["removed"]]
        lines += [f"+ e820 {x}" for x in fc["e820"]["added"]]
        for s in fc["steps"]:
            if "old_status" in s:
                lines.append(f"~ {s['step']}: {s['old_status']} -> {s['new_status']} "
                             f"{json.dumps(s['old_result'])} -> {json.dumps(s['new_result'])}")
            else:
                lines.append(f"+ {s['step']}: new step ({s['new']})")
        parts.append(f"<h3>{_e(fc['machine'])}</h3><pre>{_e(chr(10).join(lines))}</pre>")
    return page("kexectest compare", "".join(parts))
