"""Memory size and map: int 12h, int 15h E820/E801/88h."""

from __future__ import annotations

import struct

from .base import Decoded, buffer, cf_error, decoder, u

E820_TYPES = {1: "usable", 2: "reserved", 3: "ACPI reclaimable", 4: "ACPI NVS", 5: "unusable",
              6: "disabled", 7: "persistent", 12: "persistent (legacy)"}
_SMAP = 0x534D4150


def e820_entry(b: bytes) -> dict | None:
    """One E820 entry (base, length, type, and the ACPI 3.0 extended attributes when 24 bytes)."""
    if len(b) < 20:
        return None
    base, length, typ = struct.unpack_from("<QQI", b, 0)
    ent = {"base": base, "length": length, "type": typ, "type_name": E820_TYPES.get(typ, f"type {typ}")}
    if len(b) >= 24:
        ent["ext_attr"] = u("I", b, 20)
    return ent


@decoder("base-mem")
def _base_mem(r, d):
    return Decoded("ok", {"kib": r.ax})


@decoder("e820")
def _e820(r, d):
    if r.cf:
        return cf_error(r)
    if r.eax != _SMAP:
        return Decoded("error", {}, f"EAX={r.eax:08X}h is not 'SMAP'")
    ent = e820_entry(buffer(d)[: max(r.ecx, 20)])
    return Decoded("ok", {"entry": ent, "continuation": r.ebx, "bytes": r.ecx})


@decoder("e801")
def _e801(r, d):
    if r.cf:
        return cf_error(r)
    lo, hi = (r.cx, r.dx) if (r.cx or r.dx) else (r.ax, r.bx)
    return Decoded("ok", {"kib_1m_16m": lo, "blocks64k_above_16m": hi, "total_kib": 1024 + lo + hi * 64})


@decoder("mem88")
def _mem88(r, d):
    if r.cf:
        return cf_error(r)
    return Decoded("ok", {"kib_above_1m": r.ax})
