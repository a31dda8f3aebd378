"""The system: int 15h C0h configuration table, int 11h equipment list, Intel SpeedStep (IST)."""

from __future__ import annotations

from .base import Decoded, buffer, cf_error, decoder, text, u

_VIDEO_MODES = {0: "EGA/VGA or none", 1: "40x25 color", 2: "80x25 color", 3: "80x25 mono"}


@decoder("sysconf")
def _sysconf(r, d):
    if r.cf or r.ah:
        return cf_error(r)
    b = buffer(d)
    res = {"table": f"{r.es:04X}:{r.bx:04X}"}
    if len(b) >= 5:
        res.update(length=u("H", b, 0), model=b[2], submodel=b[3], bios_revision=b[4],
                   feature_bytes=list(b[5:10]))
    return Decoded("ok", res)


@decoder("equipment")
def _equipment(r, d):
    w = r.ax
    return Decoded("ok", {
        "word": w, "floppies": ((w >> 6) & 3) + 1 if w & 1 else 0, "fpu": bool(w & 2),
        "ps2_mouse": bool(w & 4), "initial_video_mode": _VIDEO_MODES[(w >> 4) & 3],
        "serial_ports": (w >> 9) & 7, "parallel_ports": (w >> 14) & 3})


@decoder("ist")
def _ist(r, d):
    if r.cf:
        return cf_error(r)
    sig = r.eax.to_bytes(4, "little")
    return Decoded("ok", {"signature": text(sig), "command": r.ebx, "event": r.ecx, "perf_level": r.edx})
