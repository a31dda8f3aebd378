"""The memory-map picture (memory-map.svg): E820 maps side by side on one address axis.

Why a picture: a report is most often about the E820 map, and a table of 16-digit hex numbers
hides what a glance at ranges shows (a hole that moved, a range that changed type, RAM that
vanished above 4 GiB).  Why this axis: 640 KiB and 5 GiB do not fit one linear scale, so the
axis is cut at every range boundary of every map and each piece is drawn as tall as the log of
its size (a broken axis: addresses that no map names are a thin break band).  All maps share the
cuts, so a row where they disagree is one band, highlighted.

Pure: maps in, SVG text out.  `named_maps` gathers the maps a report has (the payload's E820 after
kexec, the kernel's boot-time view from the "before" snapshot, the map the kernel handed over
when the report carries one); `render` draws any number of named maps.  The SVG holds only
numbers, type names from the E820 type table and the maps' names: no console text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..analysis.before_after import e820_type
from ..analysis.decoders.memory import E820_TYPES

NAME = "memory-map.svg"
COLOURS = {1: "#81c784", 2: "#b0bec5", 3: "#ffd54f", 4: "#ffb74d", 5: "#e57373", 6: "#cfd8dc",
           7: "#9575cd", 12: "#ba68c8"}
OTHER, CONFLICT, DIFF = "#90a4ae", "#f06292", "#d32f2f"
MAX_RANGES = 256
AXIS_W, COL_W, GAP, TOP, ROW_MIN, BREAK_H, LEGEND_H = 180, 170, 14, 86, 18, 14, 44


@dataclass
class MemMap:
    """One map: its name, its ranges as (start, end inclusive, E820 type), and a note saying
    why it is empty or what is odd about it."""

    name: str
    detail: str = ""  # where the map comes from, under its name
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    note: str = ""


def _from_base_length(entries) -> list[tuple[int, int, int]]:
    out = []
    for e in entries or []:
        if not isinstance(e, dict):
            continue
        t = e820_type(e.get("type"))
        if "base" in e or "addr" in e:
            base, size = e.get("base", e.get("addr")), e.get("length", e.get("size"))
            if isinstance(base, int) and isinstance(size, int) and size > 0:
                out.append((base, base + size - 1, t if t is not None else 0))
        elif isinstance(e.get("start"), int) and isinstance(e.get("end"), int) and e["end"] >= e["start"]:
            out.append((e["start"], e["end"], t if t is not None else 0))
    return out


def _capped(m: MemMap) -> MemMap:
    """At most MAX_RANGES ranges a map (a real E820 map has tens; the payload reads at most
    128): a console that repeats snapshot lines without end must not make the picture huge."""
    if len(m.ranges) > MAX_RANGES:
        note = f"the first {MAX_RANGES} of its {len(m.ranges)} ranges drawn"
        return MemMap(m.name, m.detail, m.ranges[:MAX_RANGES], m.note or note)
    return m


def named_maps(report: dict, snapshot: dict | None = None) -> list[MemMap]:
    """The maps a report has, in the order they are drawn: the kernel's boot-time view (before
    kexec), the map it handed over (report.json `handoff_params.e820`, when present), the
    firmware's E820 as the payload read it after kexec.  A map whose evidence is damaged is
    kept with a note, so the picture says why it is missing."""
    maps: list[MemMap] = []
    if snapshot:
        src = "e820" if snapshot.get("e820") else "memmap"
        ranges = _from_base_length(snapshot.get(src))
        detail = f"the kernel's boot-time {src}"
        if snapshot.get("bad_lines") or snapshot.get("complete") is False:
            maps.append(MemMap("before kexec", detail, [], "not shown: snapshot not whole"))
        elif ranges:
            maps.append(MemMap("before kexec", detail, ranges))
    handed = (report.get("handoff_params") or {}).get("e820") if isinstance(
        report.get("handoff_params"), dict) else None
    if handed:
        maps.append(MemMap("handed over", "the kernel's boot parameters",
                           _from_base_length(handed)))
    after = _from_base_length(report.get("e820"))
    step = next((s for s in report.get("steps") or [] if s.get("id") == "e820"), None)
    detail = "the firmware's E820 (payload)"
    if after:
        maps.append(MemMap("after kexec", detail, after))
    elif step is not None and step.get("status") in ("unknown", "hung", "error"):
        maps.append(MemMap("after kexec", detail, [], f"not shown: the E820 step is {step['status']}"))
    return [_capped(m) for m in maps]


def memory_maps(report: dict, lines: Iterable[str]) -> list[MemMap]:
    """`named_maps` with the "before" snapshot read from the console's lines (the kernel prints
    it before the hand-off; target/snapshot.py).  The summary and the bundle's pages both call
    this, with the lines of the same capture, so they name the same maps."""
    from ..target.snapshot import parse_snapshot

    return named_maps(report, parse_snapshot(lines))


def human(n: int) -> str:
    """A size or address in the unit that reads best and is exact where it can be (639 KiB,
    4095.75 MiB, 5 GiB); else rounded to 4 digits, marked: 0xfed1c000 is "~3.982 GiB"."""
    units = (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10))
    for unit, shift in units:
        v = n / (1 << shift)
        if 1 <= v < 10000 and (v * 100).is_integer():
            return f"{v:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    for unit, shift in units:
        if n >= 1 << shift:
            return f"~{n / (1 << shift):.4g} {unit}"
    return f"{n} B"


def type_name(t: int | None) -> str:
    if t is None:
        return "overlapping ranges"
    return E820_TYPES.get(t, f"type {t}")


def _merged(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[list[int]] = []
    for s, e, t in sorted(ranges):
        if out and out[-1][2] == t and s <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e, t])
    return [(s, e, t) for s, e, t in out]


def _type_at(ranges: list[tuple[int, int, int]], lo: int, hi: int):
    """The type covering [lo, hi), None for ranges of different types overlapping, or "" when
    the map does not name those addresses."""
    types = {t for s, e, t in ranges if s < hi and e + 1 > lo}
    if not types:
        return ""
    return types.pop() if len(types) == 1 else None


def rows(maps: list[MemMap]) -> list[dict]:
    """The broken axis: the address pieces between every boundary of every map, each with the
    type every map gives it and whether they differ."""
    cuts = sorted({x for m in maps for s, e, _t in m.ranges for x in (s, e + 1)})
    drawn = [m for m in maps if m.ranges]
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        types = [_type_at(m.ranges, lo, hi) for m in drawn]
        named = [t for t in types if t != ""]
        out.append({"lo": lo, "hi": hi, "types": types, "break": not named,
                    "differs": len(drawn) > 1 and len(set(types)) > 1})
    return out


def _height(size: int) -> float:
    return ROW_MIN + 3.2 * max(0.0, math.log2(max(size, 1)) - 10)


def _address(a: int, y: float) -> str:
    """An axis label: the address in hex (digits grouped by four) and in words."""
    return (f'<text x="{AXIS_W - 10}" y="{y + 4:.1f}" text-anchor="end" fill="#333" '
            f'font-family="monospace" font-size="10">{a:#_x}<tspan fill="#888"> '
            f'{_e(human(a)) if a else "0"}</tspan></text>')


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def render(maps: list[MemMap], title: str = "E820 memory map") -> str | None:
    """The picture of `maps` side by side (None when no map has a range).  Each map is a column
    of ranges coloured by type, labelled with type and size, with the exact addresses on hover;
    rows where the maps disagree are marked red."""
    if not any(m.ranges for m in maps):
        return None
    axis = rows(maps)
    ys, y = [], float(TOP)
    for r in axis:
        ys.append(y)
        y += BREAK_H if r["break"] else _height(r["hi"] - r["lo"])
    bottom = y
    width = AXIS_W + len(maps) * (COL_W + GAP) + 56
    height = int(bottom + LEGEND_H + 20)
    ndiff = sum(r["differs"] for r in axis)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="kt-memmap" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
           f'font-size="11" role="img" aria-label="{_e(title)}">',
           f"<title>{_e(title)}: {len(maps)} maps{f', {ndiff} differing rows' if ndiff else ''}"
           "</title>",
           f'<text x="4" y="16" font-size="13" font-weight="bold">{_e(title)}</text>',
           '<text x="4" y="32" fill="#555">the address axis is cut at every boundary of every '
           'map; each piece is as tall as the log of its size;</text>',
           '<text x="4" y="46" fill="#555">a grey zigzag: addresses no map names. '
           'Hover a range for its exact addresses.</text>']
    cols = {}
    x = AXIS_W
    for m in maps:
        cols[m.name] = x
        out.append(f'<text class="map-name" x="{x + COL_W / 2:.0f}" y="{TOP - 22}" '
                   f'text-anchor="middle" font-weight="bold" font-size="12">{_e(m.name)}</text>'
                   f'<text x="{x + COL_W / 2:.0f}" y="{TOP - 8}" text-anchor="middle" '
                   f'fill="#555">{_e(m.detail)}</text>')
        if m.note:
            out.append(f'<text x="{x + 4}" y="{TOP + 14}" fill="{DIFF}">{_e(m.note)}</text>')
        x += COL_W + GAP
    right = x
    for r, y0 in zip(axis, ys):
        h = BREAK_H if r["break"] else _height(r["hi"] - r["lo"])
        if r["differs"]:
            out.append(f'<rect class="diff" x="{AXIS_W - 6}" y="{y0:.1f}" '
                       f'width="{right - AXIS_W + 6}" height="{h:.1f}" fill="#ffebee">'
                       f'<title>the maps differ at {r["lo"]:#x}-{r["hi"] - 1:#x}</title></rect>')
            out.append(f'<text x="{right + 2}" y="{y0 + min(h, 16) - 4:.1f}" fill="{DIFF}" '
                       f'font-weight="bold">differs</text>')
        elif r["break"]:
            zig = " ".join(f"{AXIS_W + i * 6},{y0 + (3 if i % 2 else h - 3):.1f}"
                           for i in range(int((right - AXIS_W) / 6)))
            out.append(f'<polyline points="{zig}" fill="none" stroke="#bbb"/>')
        out.append(_address(r["lo"], y0))
    out.append(_address(axis[-1]["hi"], bottom))
    drawn = [m for m in maps if m.ranges]
    for m in drawn:
        x0 = cols[m.name]
        col = drawn.index(m)
        for s, e, t in _merged(m.ranges):
            piece = [i for i, r in enumerate(axis) if r["lo"] >= s and r["hi"] <= e + 1]
            if not piece:
                continue
            y0 = ys[piece[0]]
            i1 = piece[-1]
            y1 = ys[i1] + (BREAK_H if axis[i1]["break"] else _height(axis[i1]["hi"] - axis[i1]["lo"]))
            conflict = any(axis[i]["types"][col] is None for i in piece)
            fill = CONFLICT if conflict else COLOURS.get(t, OTHER)
            differs = any(axis[i]["differs"] for i in piece)
            stroke = f' stroke="{DIFF}" stroke-width="2"' if differs else ' stroke="#fff"'
            tip = (f"{m.name}: {s:#018x}-{e:#018x} {type_name(None if conflict else t)} "
                   f"({human(e - s + 1)})")
            out.append(f'<rect class="range t{t}" x="{x0}" y="{y0:.1f}" width="{COL_W}" '
                       f'height="{y1 - y0:.1f}" fill="{fill}"{stroke}><title>{_e(tip)}</title>'
                       "</rect>")
            if y1 - y0 >= 13:
                label = f"{type_name(None if conflict else t)}  {human(e - s + 1)}"
                out.append(f'<text x="{x0 + 6}" y="{(y0 + y1) / 2 + 4:.1f}">{_e(label)}</text>')
    ly = bottom + 22
    lx = 4
    for t in sorted({t for m in drawn for _s, _e2, t in m.ranges}):
        name = type_name(t)
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" '
                   f'fill="{COLOURS.get(t, OTHER)}"/><text x="{lx + 16}" y="{ly}">{_e(name)}</text>')
        lx += 30 + 7 * len(name)
    if ndiff:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="#ffebee" '
                   f'stroke="{DIFF}" stroke-width="2"/><text x="{lx + 16}" y="{ly}">'
                   f"the maps differ ({ndiff} rows)</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
