"""summary.html: one run's report as a page a browser shows (the bundle's, beside summary.md).

Why a page as well as summary.md: a browser shows a .md file as plain text, so the sweep
report's cells need a page with an anchor per step to link to, and the time chart and the
memory-map picture need a page to be drawn in.  One self-contained file: inline CSS and SVG,
no script, nothing fetched.  Everything from the trace is escaped.
"""

from __future__ import annotations

import html

from .report import clock_note, short_result, step_anchor, step_time_text
from .timechart import Row, chart, step_time

NAME = "summary.html"
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1300px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;
  vertical-align:top} td.r{max-width:520px;overflow-wrap:anywhere}
tr:target{outline:3px solid #3f51b5}
.ok{background:#c8e6c9}.error{background:#ffe0b2}.hung{background:#ffcdd2}.skipped{background:#eee}
.not-reached{color:#888}.unknown{background:#e1bee7}
code{font-size:12px} .small{font-size:12px;color:#555} .num{font-variant-numeric:tabular-nums}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def time_rows(steps: list[dict]) -> list[Row]:
    """One chart row per step that carries a time (the target's, else the host's)."""
    rows = []
    for s in steps:
        us, src = step_time(s)
        if us is not None:
            rows.append(Row(f"{s['index']:03d} {s['id']}", us, src))
    return rows


def render(report: dict, memory_map_svg: str | None = None) -> str:
    """The page: verdict and summary, where it stopped, where the time went, the memory maps,
    and every step with its anchor."""
    d = report
    parts = [f"<h1>kexectest: {_e(d.get('verdict'))}</h1>",
             f"<p><b>{_e(d.get('summary', ''))}</b></p>"]
    loc = d.get("hang") or d.get("reset")
    if loc and loc.get("step"):
        anchor = step_anchor({"index": loc.get("index"), "id": loc.get("step")})
        parts.append(f'<p>Stopped in <a href="#{_e(anchor)}">{_e(loc.get("step"))}</a> '
                     f"({_e(loc.get('title'))}), {_e(loc.get('call'))}"
                     + (f"; {_e(loc['note'])}" if loc.get("note") else "") + "</p>")
    diffs = (d.get("before_after") or {}).get("differences") or []
    if diffs:
        parts.append("<h2>Before kexec / after kexec</h2><ul>"
                     + "".join(f"<li>{_e(x)}</li>" for x in diffs) + "</ul>")
    steps = d.get("steps") or []
    parts.append("<h2>Where the time went</h2>" + chart(time_rows(steps), note=clock_note(d)))
    if memory_map_svg:
        parts.append('<h2>Memory map</h2><p class="small">The same picture as '
                     '<a href="memory-map.svg">memory-map.svg</a>.</p>'
                     f'<div id="memory-map">{memory_map_svg}</div>')
    rows = []
    for s in steps:
        st = s.get("status", "")
        rows.append(f'<tr id="{_e(step_anchor(s))}" class="{_e(st)}"><td class="num">'
                    f'{s.get("index", 0):03d}</td><td>{_e(s.get("id"))}</td>'
                    f'<td>{_e(s.get("title", ""))}</td><td>{_e(s.get("call", ""))}</td>'
                    f'<td>{_e(st)}</td><td class="num">{_e(step_time_text(s))}</td>'
                    f'<td class="r">{_e(short_result(s, 200))}</td></tr>')
    if rows:
        parts.append(f'<h2>Steps</h2><table id="steps"><thead><tr><th>#</th><th>step</th>'
                     f"<th>title</th><th>call</th><th>status</th><th>time</th><th>result</th>"
                     f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    p = d.get("payload") or {}
    parts.append(f'<p class="small">payload {_e(p.get("version"))}, build id '
                 f'{_e(p.get("build_id"))}; the rest: <a href="summary.md">summary.md</a>, '
                 '<a href="report.json">report.json</a>.</p>')
    title = f"kexectest {d.get('verdict')}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
            f"</title><style>{CSS}</style></head>\n<body>\n{''.join(parts)}\n</body></html>\n")
