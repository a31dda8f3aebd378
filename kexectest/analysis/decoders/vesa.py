"""VESA BIOS Extensions: int 10h 4F00h controller information, 4F01h mode information, 4F02h
set mode, 4F15h DDC capabilities and the EDID block."""

from __future__ import annotations

from .base import Decoded, Regs, buffer, decoder, text, u

_EDID_HEADER = bytes.fromhex("00FFFFFFFFFFFF00")


def vbe_status(r: Regs, ax_in: int) -> Decoded | None:
    """None when AX=004Fh (success); else the error."""
    if r.ax == 0x004F:
        return None
    if r.ax == ax_in:
        return Decoded("error", {"ax": r.ax}, "VBE not supported (AX unchanged)")
    return Decoded("error", {"ax": r.ax}, f"VBE call failed (AX={r.ax:04X}h)")


def _vbe_version(v: int) -> str:
    return f"{v >> 8}.{v & 0xFF}"


@decoder("vbe-info")
def _vbe_info(r, d):
    bad = vbe_status(r, 0x4F00)
    if bad:
        return bad
    b = buffer(d, "buffer") or buffer(d)
    res: dict = {}
    if len(b) >= 20:
        res.update(signature=text(b[0:4]), version=_vbe_version(u("H", b, 4)),
                   capabilities=u("I", b, 10), total_memory_64k=u("H", b, 18),
                   total_memory_kib=u("H", b, 18) * 64)
    for tag in ("oem", "vendor", "product", "rev"):
        if tag in d:
            res[tag] = text(buffer(d, tag))
    if "modes" in d:
        m = buffer(d, "modes")
        modes = []
        for i in range(0, len(m) - 1, 2):
            v = u("H", m, i)
            if v == 0xFFFF:
                break
            modes.append(v)
        res["modes"] = modes
    return Decoded("ok", res)


@decoder("vbe-mode-info")
def _vbe_mode(r, d):
    bad = vbe_status(r, 0x4F01)
    if bad:
        return bad
    b = buffer(d)
    if len(b) < 44:
        return Decoded("ok", {})
    return Decoded("ok", {"attributes": u("H", b, 0), "width": u("H", b, 18), "height": u("H", b, 20),
                          "bpp": b[25], "memory_model": b[27], "framebuffer": u("I", b, 40)})


@decoder("vbe-set-mode")
def _vbe_set(r, d):
    return vbe_status(r, 0x4F02) or Decoded("ok")


@decoder("ddc-caps")
def _ddc(r, d):
    bad = vbe_status(r, 0x4F15)
    if bad:
        return bad
    return Decoded("ok", {"ddc1": bool(r.bl & 1), "ddc2": bool(r.bl & 2), "seconds_per_block": r.bh})


def edid_manufacturer(b: bytes) -> str:
    """The three-letter PNP id packed in EDID bytes 8-9 (5 bits a letter, 1 = A); "?" for a code
    that is no letter, "" when the block is too short to hold it."""
    if len(b) < 10:
        return ""
    v = (b[8] << 8) | b[9]
    return "".join(chr(ord("A") - 1 + c) if 1 <= c <= 26 else "?"
                   for c in ((v >> s) & 0x1F for s in (10, 5, 0)))


def decode_edid(b: bytes) -> dict:
    """The base EDID block: header, vendor and product, date, version, checksum, preferred mode."""
    res = {"header_ok": b[:8] == _EDID_HEADER}
    if len(b) < 128:
        return res
    res.update(manufacturer=edid_manufacturer(b), product=u("H", b, 10), serial=u("I", b, 12),
               week=b[16], year=1990 + b[17], version=f"{b[18]}.{b[19]}",
               checksum_valid=sum(b[:128]) % 256 == 0)
    t = b[54:72]
    if t[0] | t[1]:
        res["preferred_mode"] = {"width": t[2] | ((t[4] >> 4) << 8), "height": t[5] | ((t[7] >> 4) << 8),
                                 "pixel_clock_khz": u("H", t, 0) * 10}
    return res


@decoder("edid")
def _edid(r, d):
    bad = vbe_status(r, 0x4F15)
    if bad:
        return bad
    res = decode_edid(buffer(d))
    if not res.get("header_ok", False):
        return Decoded("error", res, "EDID header invalid")
    return Decoded("ok", res)
