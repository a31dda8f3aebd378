"""The running kernel's view before kexec (the KTSNAP snapshot) against the BIOS's answers after
it: E820 map, base memory, each drive's EDD parameters.

Only whole evidence is compared: a snapshot with a damaged or missing line, or a step whose
lines were damaged (`unknown`), could show a difference that is the wire's, not the firmware's."""

from __future__ import annotations

import re

from . import decoders as dec

_E820_NAMES = {"usable": 1, "system ram": 1, "reserved": 2, "acpi data": 3, "acpi tables": 3,
               "acpi reclaimable": 3, "acpi nvs": 4, "acpi non-volatile storage": 4, "unusable": 5,
               "unusable memory": 5, "disabled": 6, "persistent memory": 7, "persistent (type 7)": 7,
               "persistent memory (legacy)": 12, "persistent (type 12)": 12}


def e820_type(t) -> int | None:
    if isinstance(t, int):
        return t
    s = str(t).strip().lower()
    if s.isdigit() and len(s) <= 10:  # an E820 type is 32 bits: no 4,000-digit number
        return int(s)
    m = re.search(r"type (\d{1,10})\b", s)
    return _E820_NAMES.get(s, int(m[1]) if m else None)


def _merged(ranges: list[tuple[int, int, object]]) -> list[tuple[int, int, object]]:
    """Sorted ranges (inclusive ends) with touching ranges of one type merged."""
    out: list[list] = []
    for s, e, t in sorted(ranges, key=lambda r: (r[0], r[1])):
        if out and out[-1][2] == t and s <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e, t])
    return [tuple(r) for r in out]


def _rng(r) -> dict:
    return {"start": r[0], "end": r[1], "type": r[2],
            "text": f"{r[0]:016X}-{r[1]:016X} {dec.E820_TYPES.get(r[2], r[2])}"}


def before_after(snap: dict | None, e820: list[dict], steps: list[dict]) -> dict:
    """The kernel's view before kexec against the payload's answers after it."""
    if not snap:
        return {"available": False, "differences": []}
    if snap.get("bad_lines") or snap.get("complete") is False:
        return {"available": False, "differences": [],
                "note": f"the snapshot before kexec is not whole ({snap.get('bad_lines') or 0} "
                        "damaged lines, or lines missing): nothing is compared"}
    diffs: list[str] = []
    out: dict = {"available": True, "differences": diffs}
    by_id = {s["id"]: s for s in steps}
    done = lambda sid: by_id.get(sid, {}).get("status") in ("ok", "error")  # noqa: E731
    answer = lambda sid: by_id[sid].get("result", {}) if done(sid) else {}  # noqa: E731
    src = "e820" if snap.get("e820") else "memmap"
    before = [(x["start"], x["end"], e820_type(x.get("type"))) for x in snap.get(src) or []]
    if before and e820 and done("e820"):
        after = [(x["base"], x["base"] + x["length"] - 1, x["type"]) for x in e820 if x["length"]]
        b, a = set(_merged(before)), set(_merged(after))
        only_b, only_a = sorted(b - a), sorted(a - b)
        out["e820"] = {"source": src, "same": not only_b and not only_a,
                       "only_before": [_rng(r) for r in only_b], "only_after": [_rng(r) for r in only_a]}
        for r in only_b:
            diffs.append(f"E820 before only: {_rng(r)['text']}")
        for r in only_a:
            diffs.append(f"E820 after only: {_rng(r)['text']}")
    kib = snap.get("basemem_kib")
    base = answer("base-mem").get("kib")
    if kib is not None and base is not None:
        out["base_memory"] = {"before_kib": kib, "after_kib": base, "same": kib == base}
        if kib != base:
            diffs.append(f"base memory: {kib} KiB before, {base} KiB after")
    _drives(snap, answer, done, out, diffs)
    return out


def _drives(snap: dict, answer, done, out: dict, diffs: list[str]) -> None:
    """Each drive the kernel's EDD saw at boot against the BIOS's int 13h answers after kexec."""
    edd_b = {re.sub(r".*?([0-9a-fA-F]{2})$", r"\1", k).upper(): v for k, v in (snap.get("edd") or {}).items()}
    drives_after = answer("edd-check").get("drives", {})
    params = answer("edd-params").get("drives", {})
    if (edd_b or drives_after) and done("edd-check"):
        out["drives"] = {"before": sorted(edd_b), "after": sorted(drives_after)}
        if sorted(edd_b) != sorted(drives_after) and edd_b:
            diffs.append(f"BIOS drives: {', '.join(sorted(edd_b)) or 'none'} before, "
                         f"{', '.join(sorted(drives_after)) or 'none'} after")
        reads = answer("read-chs").get("drives", {})
        legacy = answer("disk-geometry").get("drives", {})
        compared = out["drives"]["compared"] = {}
        for dr, info in sorted(edd_b.items()):
            if not isinstance(info, dict):
                continue
            p, rd, g = params.get(dr, {}), reads.get(dr, {}), legacy.get(dr, {})
            pairs = {  # what the kernel's EDD saw at boot -> what the BIOS answers after kexec
                "sectors": (_num(info.get("sectors")), p.get("sectors")),
                "mbr_signature": (_num(info.get("mbr_signature")), _num(rd.get("mbr_signature"), 16)),
                "heads": (_num(info.get("default_heads")), p.get("heads")),
                "sectors_per_track": (_num(info.get("default_sectors_per_track")), p.get("sectors_per_track")),
                "legacy_cylinders": (_plus1(info.get("legacy_max_cylinder")), g.get("cylinders")),
                "legacy_heads": (_plus1(info.get("legacy_max_head")), g.get("heads")),
                "legacy_sectors_per_track": (_num(info.get("legacy_sectors_per_track")),
                                             g.get("sectors_per_track")),
                "host_bus": (_word(info.get("host_bus")), _word(p.get("host_bus"))),
                "interface": (_word(info.get("interface")), _word(p.get("interface"))),
            }
            seen = {k: v for k, v in pairs.items() if v[0] is not None and v[1] is not None}
            compared[dr] = sorted(seen)
            for k, (bv, av) in seen.items():
                if bv != av:
                    shown = (f"{bv:08X}h", f"{av:08X}h") if k == "mbr_signature" else (bv, av)
                    diffs.append(f"drive {dr}h {k}: {shown[0]} before, {shown[1]} after")


def _num(v, base: int = 0) -> int | None:
    """An int from a snapshot or decoder value ("32768", "0x4b545330", 32768); None if absent."""
    if isinstance(v, int):
        return v
    text = str(v).strip()
    if len(text) > 24:  # no 64-bit value is longer: a damaged or hostile field
        return None
    try:
        return int(text, base)
    except (TypeError, ValueError):
        return None


def _plus1(v) -> int | None:
    """A maximum index (EDD's legacy_max_*) as a count."""
    n = _num(v)
    return None if n is None else n + 1


def _word(v) -> str | None:
    return (str(v).split() or [""])[0] if v else None
