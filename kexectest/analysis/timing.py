"""Stage 5: how long the payload's trace took against its wire time, and how much of the console
was unreadable (the garbled statistics)."""

from __future__ import annotations

import re

from ..trace import Line, Record
from .limits import UART_CLOCK, baud

_NONPRINT = re.compile(r"[^\x20-\x7e\t]")
# what line noise leaves in text: invalid bytes (decoded as U+FFFD) and control characters; not
# ESC, which colour sequences of a healthy console carry
_NOISE = re.compile("[\ufffd\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")


def payload_timing(lines: list[Line], payload_lines: list[int], banner: Record | None) -> dict:
    """First and last payload line, bytes, and the time those bytes take on the wire at the
    banner's baud rate (115200 when the banner is missing; none when its divisor is invalid)."""
    if not payload_lines:
        return {}
    ts = [lines[i].t for i in payload_lines if lines[i].t is not None]
    nbytes = sum(len(lines[i].text) + 2 for i in payload_lines)
    rate = baud(banner) if banner is not None and "div" in banner.fields else UART_CLOCK
    return {"first_payload_t": ts[0] if ts else None, "last_payload_t": ts[-1] if ts else None,
            "payload_s": round(ts[-1] - ts[0], 6) if ts else None, "payload_bytes": nbytes,
            "baud": rate, "wire_s": round(nbytes * 10 / rate, 6) if rate else None,
            "payload_lines": len(payload_lines)}


def garbled_stats(lines: list[Line], handoff_at: int | None, stats: dict | None = None) -> dict:
    """Bytes and non-printable bytes after the hand-off when it was seen (the kernel's console
    may be fine), else over the whole capture; bad-checksum lines, and lines holding what line
    noise leaves, over the whole capture."""
    if stats is not None:
        g = dict(stats)
    else:
        nbytes = nonprint = 0
        for ln in (lines[handoff_at + 1:] if handoff_at is not None else lines):
            nbytes += len(ln.text)
            nonprint += len(_NONPRINT.findall(ln.text))
        g = {"bytes": nbytes, "nonprintable": nonprint,
             "bad_checksum_lines": sum(1 for ln in lines if ln.bad_checksum),
             "lines": len(lines), "noisy_lines": sum(1 for ln in lines if _NOISE.search(ln.text))}
    g["ratio_nonprintable"] = round(g["nonprintable"] / g["bytes"], 4) if g["bytes"] else 0.0
    return g
