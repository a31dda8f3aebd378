"""The VGA BIOS: int 10h cursor, mode, EGA information, display combination code."""

from __future__ import annotations

from .base import Decoded, decoder

DCC_NAMES = {0x00: "no display", 0x01: "MDA", 0x02: "CGA", 0x04: "EGA color", 0x05: "EGA mono",
             0x06: "PGA", 0x07: "VGA mono", 0x08: "VGA color", 0x0A: "MCGA digital color",
             0x0B: "MCGA mono", 0x0C: "MCGA analog color", 0xFF: "unknown"}


@decoder("video-cursor")
def _cursor(r, d):
    return Decoded("ok", {"row": r.dh, "column": r.dl, "start_line": r.ch, "end_line": r.cl})


@decoder("video-mode")
def _vmode(r, d):
    return Decoded("ok", {"mode": r.al & 0x7F, "columns": r.ah, "page": r.bh})


@decoder("video-ega")
def _ega(r, d):
    if r.bl == 0x10:
        return Decoded("error", {"ega": False}, "no EGA/VGA answer (BL unchanged)")
    return Decoded("ok", {"ega": True, "mono": r.bh == 1, "memory_kib": 64 << r.bl if r.bl < 4 else None,
                          "switches": r.cl, "feature_bits": r.ch})


@decoder("video-dcc")
def _dcc(r, d):
    if r.al != 0x1A:
        return Decoded("error", {}, "display combination not supported (AL != 1Ah)")
    return Decoded("ok", {"active": DCC_NAMES.get(r.bl, f"{r.bl:02X}h"), "active_code": r.bl,
                          "alternate": DCC_NAMES.get(r.bh, f"{r.bh:02X}h")})
