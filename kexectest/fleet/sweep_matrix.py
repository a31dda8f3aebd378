"""The sweep report's machine x step matrix, grouped by BIOS concern so that it fits a laptop.

Why groups: 71 step columns run off a 1400-pixel window.  The columns are the steps' BIOS
concerns (the GROUP lines of payloads/steps.S: memory, A20, keyboard, APM, disk, video, time,
PCI, ...), one cell per machine and concern coloured by its worst step; a click on a concern's
header shows its steps beside it.  Concerns where some machine failed come first.  No script:
a hidden checkbox per concern and CSS (`:checked ~`) do the expanding, so the report stays one
file that runs nothing.  Machine names and the header row stay in view while the matrix scrolls
(position: sticky).  Every cell says its result on hover and links to the step in that
machine's summary.html; a failing cell names the device behind the failure and the Linux driver
that held it before kexec (steps[].device, else the run's cause for the step).
"""

from __future__ import annotations

import html
import re
from collections import defaultdict

from ..output.timechart import HOST, fmt_us, step_time

STATUS_CLASS = {"ok": "ok", "error": "err", "hung": "hung", "unknown": "unk", "skipped": "skip",
                "not-reached": "nr"}
# the worst status of a group's steps colours its cell: failures first, then what is not known
WORST = ["hung", "error", "unknown", "ok", "skipped", "not-reached"]
FAILING = ("hung", "error", "unknown")

CSS = """
.mwrap{overflow:auto;max-height:82vh;max-width:100%;border:1px solid #ccc}
table.matrix{border-collapse:separate;border-spacing:0;font-size:12px}
table.matrix td,table.matrix th{border:0;border-right:1px solid #ddd;border-bottom:1px solid #ddd;
  padding:2px 4px;background:#fff}
table.matrix thead th{position:sticky;top:0;z-index:2;vertical-align:bottom}
table.matrix th.m{position:sticky;left:0;z-index:1;text-align:left;white-space:nowrap;
  max-width:16em;overflow:hidden;text-overflow:ellipsis}
table.matrix thead th.m{z-index:3}
table.matrix th.g{white-space:nowrap;font-weight:bold;cursor:pointer}
table.matrix th.g label{cursor:pointer;display:block}
table.matrix th.g.fail label::before{content:"\\25cf ";color:#e53935}
table.matrix th.s{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;
  font-size:11px;padding:3px 0;white-space:nowrap}
table.matrix td.c{padding:0;height:22px;text-align:center}
table.matrix td.g{min-width:54px;white-space:nowrap}
table.matrix td.g a{padding:0 4px}
table.matrix td.s{width:14px;min-width:14px}
table.matrix td.c a{display:block;height:100%;min-height:22px;line-height:22px;color:#000;
  text-decoration:none;font-size:11px}
table.matrix .s{display:none}
.gx{position:absolute;opacity:0;width:1px;height:1px}
table.matrix td.ok{background:#4caf50}table.matrix td.err{background:#ff9800}
table.matrix td.hung{background:#e53935}table.matrix td.skip{background:#bbb}
table.matrix td.nr{background:#eee}table.matrix td.none{background:#fff}
table.matrix td.unk{background:repeating-linear-gradient(45deg,#bbb 0 3px,#fff 3px 6px)}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def slug(group: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(group).lower()).strip("-") or "other"


def groups(machines: list[dict]) -> list[tuple[str, list[tuple[int, str]]]]:
    """The concerns and their steps (index, id), in step-table order; concerns in which some
    machine's step failed (hung, error, unknown) first, the most failures first."""
    cols: dict[str, dict[tuple[int, str], None]] = defaultdict(dict)
    first: dict[str, int] = {}
    fails: dict[str, int] = defaultdict(int)
    for m in machines:
        for s in m["steps"]:
            g = str(s.get("group") or "other")
            key = (s["index"] if isinstance(s["index"], int) else 0, str(s["id"]))
            cols[g][key] = None
            first[g] = min(first.get(g, key[0]), key[0])
            fails[g] += s.get("status") in FAILING
    order = sorted(cols, key=lambda g: (not fails[g], -fails[g], first[g]))
    return [(g, sorted(cols[g])) for g in order]


def worst(statuses) -> str:
    got = [s or "not-reached" for s in statuses]
    return min(got, key=lambda s: WORST.index(s) if s in WORST else len(WORST)) if got else "none"


def _bm(v) -> str:
    return {True: "on", False: "off"}.get(v, "?")


def device_facts(d: dict) -> str:
    """A device as the report names it: B/D/F, class, the Linux driver that held it before
    kexec and its bus mastering before and after."""
    driver = d.get("linux_driver") or "none or not known"
    return (f'{d.get("bdf")} {d.get("class")}, Linux driver {driver}, bus master '
            f'{_bm(d.get("bus_master_before"))} -> {_bm(d.get("bus_master_after"))}')


def failing_device(m: dict, steps: list[dict]) -> dict | None:
    """The device behind the first of STEPS (failed ones) that names one: the step's own
    (steps[].device), else the run's cause for that step (report.json causes)."""
    for s in steps:
        if s.get("device"):
            return s["device"]
        for c in m.get("causes") or ():
            if str(c.get("step")) == str(s.get("id")) and c.get("device"):
                return c["device"]
    return None


def device_label(d: dict | None) -> str:
    """A failing cell's short text: the driver that held the device, else its B/D/F."""
    if not d:
        return ""
    return str(d.get("linux_driver") or d.get("bdf") or "")


def _step_line(s: dict) -> str:
    from ..output.report import short_result

    us, src = step_time(s)
    t = f", {fmt_us(us)}{' host' if src == HOST else ''}" if us is not None else ""
    res = short_result(s, 60) if s.get("status") in ("ok", "error", "unknown", "skipped") else ""
    return f'{s["index"]:03d} {s["id"]}: {s.get("status") or "not-reached"}{t}' + \
        (f" - {res}" if res else "")


def _href(m: dict, anchor: str | None) -> str | None:
    if m.get("page"):
        return f'{m["page"]}#{anchor}' if anchor else m["page"]
    return m.get("summary")


def _cell(cls: str, tip: str, href: str | None, text: str = "", attrs: str = "") -> str:
    inner = f'<a href="{_e(href)}">{_e(text)}</a>' if href else _e(text)
    return f'<td class="{cls}"{attrs} title="{_e(tip)}">{inner}</td>'


def matrix(machines: list[dict], links, badge) -> str:
    """The matrix: checkboxes (one per concern, and one for all), then the table in its
    scrolling box.  `links(machine)` gives the row's bundle links, `badge(verdict)` its verdict
    (HTML)."""
    gs = groups(machines)
    boxes = ['<input type="checkbox" class="gx" id="x-all" aria-label="show every step">']
    css = [".gx#x-all:checked ~ .mwrap .s{display:table-cell}"]
    head = ['<th class="m">machine</th><th>verdict</th><th>bundle</th>']
    for g, steps in gs:
        sg = slug(g)
        boxes.append(f'<input type="checkbox" class="gx" id="x-{sg}" aria-label="show the {_e(g)} steps">')
        css.append(f"#x-{sg}:checked ~ .mwrap .s-{sg}{{display:table-cell}}")
        bad = any(s.get("status") in FAILING for m in machines for s in m["steps"]
                  if str(s.get("group") or "other") == g)
        head.append(f'<th class="g g-{sg}{" fail" if bad else ""}" data-group="{_e(g)}" '
                    f'title="{_e(g)}: {len(steps)} steps; click to show them">'
                    f'<label for="x-{sg}">{_e(g)} <span class="small">{len(steps)}</span></label></th>')
        head += [f'<th class="s s-{sg}" title="{_e(i)} {_e(sid)}">{i:03d} {_e(sid)}</th>'
                 for i, sid in steps]
    ncols = sum(1 + len(steps) for _g, steps in gs)
    rows = []
    for m in machines:
        by = {(s["index"], str(s["id"])): s for s in m["steps"]}
        # a baseline run's steps that answered otherwise than the same machine at POST
        post = (m.get("baseline") or {}).get("steps") or {}
        cells = []
        if not m["steps"]:
            cells.append(f'<td class="none small" colspan="{max(ncols, 1)}">'
                         f'{_e(m["one_line"] or m.get("error") or m["verdict"])}</td>')
        for g, steps in (gs if m["steps"] else []):
            sg = slug(g)
            mine = [by[k] for k in steps if k in by]
            st = worst(s.get("status") for s in mine)
            bad = [s for s in mine if s.get("status") in FAILING]
            counts: dict[str, int] = defaultdict(int)
            for s in mine:
                counts[s.get("status") or "not-reached"] += 1
            tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: WORST.index(kv[0])
                                                          if kv[0] in WORST else 99))
            tip = "\n".join([f'{m["name"]} - {g}: {tally}', *(_step_line(s) for s in mine)])
            differs = [s for s in mine if post.get(str(s["id"]))]
            if differs:
                tip += f"\n{len(differs)} differ from POST: " + ", ".join(str(s["id"]) for s in differs)
            target = (bad or mine or [None])[0]
            text = str(len(bad)) if bad else ""
            dev = failing_device(m, bad)
            dev_attrs = ""
            if dev:
                tip += f"\ndevice: {device_facts(dev)}"
                text += f" {device_label(dev)}"
                dev_attrs = (f' data-bdf="{_e(dev.get("bdf") or "")}"'
                             f' data-driver="{_e(dev.get("linux_driver") or "")}"')
            cells.append(_cell(f"c g g-{sg} {STATUS_CLASS.get(st, 'none')}{' post' if differs else ''}",
                               tip, _href(m, target["anchor"] if target else None), text,
                               f' data-group-status="{_e(st)}"' + dev_attrs
                               + (f' data-post-steps="{len(differs)}"' if differs else "")))
            for k in steps:
                s = by.get(k)
                if s is None:
                    cells.append(f'<td class="c s s-{sg} none"></td>')
                    continue
                sst = s.get("status") or "not-reached"
                tip, mark, attrs = f'{m["name"]} - {_step_line(s)}', "", f' data-status="{_e(sst)}"'
                dev = failing_device(m, [s]) if sst in FAILING else None
                if dev:
                    tip += f"; device: {device_facts(dev)}"
                differs = post.get(str(s["id"]))
                if differs:
                    tip += "; differs from POST: " + "; ".join(differs[:3])
                    mark, attrs = " post", attrs + ' data-post="differs"'
                cells.append(_cell(f"c s s-{sg} {STATUS_CLASS.get(sst, 'none')}{mark}", tip,
                                   _href(m, s.get("anchor")), attrs=attrs))
        rows.append(f'<tr data-machine="{_e(m["name"])}" data-verdict="{_e(m["verdict"])}">'
                    f'<th class="m" title="{_e(m["name"])}">{_e(m["name"])}</th><td>{badge(m["verdict"])}</td>'
                    f'<td class="small">{links(m)}</td>{"".join(cells)}</tr>')
    legend = " ".join(f'<span class="{c}" style="padding:0 6px">{_e(s)}</span>'
                      for s, c in STATUS_CLASS.items())
    if any((m.get("baseline") or {}).get("steps") for m in machines):
        legend += ' <span class="postmark">differs from POST</span>'
    note = ('<p class="small">One column per BIOS concern, coloured by its worst step (the '
            'number: steps that failed, then the Linux driver that held the device behind '
            'the first of them, where the run names one); click a concern to show its steps, or '
            '<label for="x-all"><u>every step</u></label>. Concerns with a failure come first '
            '(<span style="color:#e53935">&#9679;</span>). Hover a cell for its results; it '
            "links to the step in that machine's summary.</p>")
    return (f"<style>{''.join(css)}</style>{note}<p class=\"small\">{legend}</p>"
            f"{''.join(boxes)}<div class=\"mwrap\"><table class=\"matrix\" id=\"matrix\"><thead>"
            f"<tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
