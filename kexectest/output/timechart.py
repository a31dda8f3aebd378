"""Where the time went: a bar chart of step durations, longest first (inline SVG).

Why target time first: the collector stamps lines as it reads them and a virtual UART does not
pace, so host-side time says nothing about a BIOS call (every step read 0.000 s); the payload
times each call with its TSC (report.json `steps[].target_us`).  Host time is used only for a
step the target did not time, drawn in another colour and said so.  A chart of zeros says
nothing either: only steps that took time are drawn, longest first, the rest summed in a line.

Pure: rows in, HTML out (the bundle's summary.html and the sweep report use it).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

TARGET, HOST, MIXED = "target", "host", "mixed"
COLOURS = {TARGET: "#3f51b5", HOST: "#9e9e9e", MIXED: "#7986cb"}
LIMIT = 20  # bars drawn; the rest is one line under the chart


@dataclass
class Row:
    label: str  # "067 tick-advance"
    us: float  # the bar: the step's time (a sweep: the median over machines), microseconds
    source: str = TARGET  # target | host | mixed
    points: list[float] = field(default_factory=list)  # each machine's time (a sweep)
    tip: str = ""


def step_time(step: dict) -> tuple[float | None, str | None]:
    """A step's time in microseconds and where it was measured: the target's (`target_us`),
    else the host's (`duration_s` in report.json, `seconds` in sweep.json); (None, None)."""
    us = step.get("target_us")
    if isinstance(us, int) and not isinstance(us, bool):
        return float(us), TARGET
    for key in ("duration_s", "seconds"):
        s = step.get(key)
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            return float(s) * 1e6, HOST
    return None, None


def fmt_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} \u00b5s"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


def _n(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def chart(rows: list[Row], *, svg_id: str = "timing", limit: int = LIMIT,
          unit: str = "step", note: str = "") -> str:
    """An HTML fragment: the caption (with `note`, e.g. how the target's clock was calibrated),
    the SVG of the `limit` longest rows that took time, and a line for the rest.  Never a bar
    of zero: a row of 0 us is counted, not drawn."""
    timed = [r for r in rows if r.us > 0]
    zero = len(rows) - len(timed)
    if not timed:
        why = ("no step carries a time" if not rows else
               f"all {len(rows)} timed {unit}s took no measurable time")
        return f'<p class="small" id="{_e(svg_id)}-none">No time chart: {why}.</p>'
    timed.sort(key=lambda r: -r.us)
    shown, rest = timed[:limit], timed[limit:]
    sources = {r.source for r in timed}
    top = max(max([r.us, *r.points]) for r in shown)
    total = sum(r.us for r in timed)
    label_w, bar_w, rh = 230, 560, 18
    h = rh * len(shown) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{_e(svg_id)}" width="{label_w + bar_w + 130}" '
             f'height="{h}" font-size="11" font-family="sans-serif" role="img" '
             f'aria-label="time per {unit}, longest first">']
    for n, r in enumerate(shown):
        y = 4 + n * rh
        w = max(1.0, r.us / top * bar_w)
        tip = r.tip or f"{r.label}: {fmt_us(r.us)} ({r.source} time)"
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{_e(r.label)}</text>'
                     f'<rect class="bar {r.source}" x="{label_w}" y="{y + 2}" width="{w:.1f}" '
                     f'height="{rh - 5}" fill="{COLOURS[r.source]}"><title>{_e(tip)}</title></rect>')
        for v in r.points:
            parts.append(f'<circle cx="{label_w + v / top * bar_w:.1f}" cy="{y + rh / 2:.1f}" '
                         f'r="2.2" fill="#222"/>')
        share = f" ({100 * r.us / total:.0f} %)" if total else ""
        end = max([w, *(v / top * bar_w for v in r.points)])
        parts.append(f'<text x="{label_w + end + 6:.1f}" y="{y + 12}">{_e(fmt_us(r.us))}{share}</text>')
    parts.append("</svg>")
    where = {frozenset({TARGET}): "measured on the target" + (
                 "" if note else " (its TSC, calibrated against the PIT)"),
             frozenset({HOST}): "host time stamps only: the target gave none (no TSC, or a "
                                "payload that does not time its calls), so these say little "
                                "about the calls themselves"}.get(
        frozenset(sources), "measured on the target where it gave a time; grey bars are host "
                            "time stamps, for steps the target did not time")
    cap = (f'<p class="small">Where the time went, {where}: the {len(shown)} longest of '
           f"{len(timed)} {unit}s that took time, longest first, with their share of the "
           f"{fmt_us(total)} in all."
           + (" A bar is the median over the machines, a dot each machine." if any(
               r.points for r in shown) else "")
           + (f" {_e(note)}." if note else "") + "</p>")
    tail = []
    if rest:
        tail.append(f"{_n(len(rest), 'more ' + unit)} took {fmt_us(sum(r.us for r in rest))} "
                    "together")
    if zero:
        tail.append(f"{_n(zero, unit)} took no measurable time" + (
            " (under 1 \u00b5s)" if all(r.source == TARGET for r in rows if r.us <= 0) else ""))
    foot = f'<p class="small">{_e("; ".join(tail))}.</p>' if tail else ""
    return cap + "".join(parts) + foot
