"""A run's signature: verdict, step and firmware normalised into a stable id and title, so the
same failure on many machines groups together (sweep reports, bug trackers)."""

from __future__ import annotations

import hashlib
import re

from .kernel import stops, strip_ts
from .model import Analysis

_NAMED = ("hung", "reset", "interrupted")  # verdicts whose location is part of what they say
_KERNEL = ("died-before-handoff", "died-in-handoff")


def _norm(s: str) -> str:
    s = strip_ts(s)
    s = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\+0x[0-9a-f]+/0x[0-9a-f]+", "X", s)
    s = re.sub(r"\d+", "N", s)
    return re.sub(r"\s+", " ", s).strip()


def signature(a: Analysis, snap: dict | None) -> dict:
    dmi = (snap or {}).get("dmi") or {}
    fw = " ".join(x for x in (dmi.get("bios_vendor"), dmi.get("bios_version")) if x)
    parts = [a.verdict]
    title = a.verdict
    loc = a.hang or a.reset
    if loc and loc.get("step") and a.verdict in _NAMED and loc.get("definite", True):
        fn = loc.get("call") or ""
        parts += [loc["step"], fn]
        title += f" in {loc['step']}" + (f" ({fn})" if fn else "")
    if a.verdict == "failed-steps":
        bad = sorted(s["id"] for s in a.steps if s["status"] == "error")
        parts += bad
        title += ": " + ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "")
    if a.verdict in _KERNEL:
        phase = "handoff" if a.verdict == "died-in-handoff" else "before-handoff"
        stopping = [t for t in a.kernel_trouble if t["phase"] == phase and stops(t["kind"])]
        blocks = [t for t in stopping if t["fatal"]] or stopping
        t = _norm(blocks[0]["title"]) if blocks else "no hand-off"
        parts.append(t)
        title += f": {t}"
    parts.append(fw)
    if fw:
        title += f" [{fw}]"
    return {"id": hashlib.sha1("|".join(parts).encode()).hexdigest()[:12], "title": title}
