"""Per-step decoders: raw registers and dumped bytes after one BIOS call -> meaning and ok/error.

Adding a BIOS call to the payload is one table row there and one row in catalog.py plus (if it has
results worth reading) one function here, registered with @decoder("step-id").  A step without a
decoder still gets a status from its carry flag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from ...trace import Record
from ..catalog import OPTIONAL_SERVICES


class Regs:
    """Registers after a call (from an `end` record), with 8/16-bit views."""

    def __init__(self, rec: Record):
        self.f = rec.fields
        self.cf = self.f.get("cf") == "1"
        for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ds", "es", "fl"):
            setattr(self, r, rec.hex(r, 0) or 0)
        self.zf = bool(self.fl & 0x40)

    ax = property(lambda s: s.eax & 0xFFFF)
    bx = property(lambda s: s.ebx & 0xFFFF)
    cx = property(lambda s: s.ecx & 0xFFFF)
    dx = property(lambda s: s.edx & 0xFFFF)
    ah = property(lambda s: (s.eax >> 8) & 0xFF)
    al = property(lambda s: s.eax & 0xFF)
    bh = property(lambda s: (s.ebx >> 8) & 0xFF)
    bl = property(lambda s: s.ebx & 0xFF)
    ch = property(lambda s: (s.ecx >> 8) & 0xFF)
    cl = property(lambda s: s.ecx & 0xFF)
    dh = property(lambda s: (s.edx >> 8) & 0xFF)
    dl = property(lambda s: s.edx & 0xFF)

    def raw(self) -> dict:
        return {"cf": int(self.cf), **{r: getattr(self, r) for r in
                                        ("eax", "ebx", "ecx", "edx", "esi", "edi", "ds", "es", "fl")}}


@dataclass
class Decoded:
    status: str  # "ok" | "error"
    result: dict = field(default_factory=dict)
    reason: str | None = None


Decoder = Callable[[Regs, dict], Decoded]
DECODERS: dict[str, Decoder] = {}


def decoder(*names: str):
    def reg(fn: Decoder) -> Decoder:
        for n in names:
            DECODERS[n] = fn
        return fn
    return reg


INT13_STATUS = {0x01: "invalid function", 0x02: "address mark not found", 0x04: "sector not found",
                0x05: "reset failed", 0x07: "drive parameter activity failed", 0x0C: "unsupported track",
                0x10: "uncorrectable ECC error", 0x20: "controller failure", 0x40: "seek failed",
                0x80: "timeout (not ready)", 0xAA: "drive not ready", 0xBB: "undefined error",
                0xCC: "write fault", 0xFF: "sense operation failed"}
APM_ERRORS = {0x01: "power management disabled", 0x02: "real-mode interface already connected",
              0x03: "interface not connected", 0x05: "16-bit interface already connected",
              0x06: "16-bit interface not supported", 0x07: "32-bit interface already connected",
              0x08: "32-bit interface not supported", 0x09: "unrecognised device id",
              0x0A: "parameter out of range", 0x0B: "interface not engaged",
              0x80: "no power management events", 0x86: "APM not present"}
E820_TYPES = {1: "usable", 2: "reserved", 3: "ACPI reclaimable", 4: "ACPI NVS", 5: "unusable",
              6: "disabled", 7: "persistent", 12: "persistent (legacy)"}
DCC_NAMES = {0x00: "no display", 0x01: "MDA", 0x02: "CGA", 0x04: "EGA color", 0x05: "EGA mono",
             0x06: "PGA", 0x07: "VGA mono", 0x08: "VGA color", 0x0A: "MCGA digital color",
             0x0B: "MCGA mono", 0x0C: "MCGA analog color", 0xFF: "unknown"}
DASD_TYPES = {0: "no such drive", 1: "floppy without change-line", 2: "floppy with change-line",
              3: "fixed disk"}


def generic(r: Regs, data: dict) -> Decoded:
    """Carry flag only; AH=86h/80h on CF=1 is the usual "function not supported"."""
    if not r.cf:
        return Decoded("ok")
    if r.ah in (0x86, 0x80):
        return Decoded("error", {"ah": r.ah}, f"function not supported (AH={r.ah:02X}h)")
    return Decoded("error", {"ah": r.ah}, f"CF=1 (AH={r.ah:02X}h)")


def _cf_error(r: Regs, table: dict | None = None) -> Decoded:
    msg = (table or {}).get(r.ah)
    if r.ah in (0x86, 0x80) and not msg:
        msg = "function not supported"
    return Decoded("error", {"ah": r.ah}, f"{msg or 'CF=1'} (AH={r.ah:02X}h)")


def bcd(v: int) -> int:
    return (v >> 4) * 10 + (v & 0xF)


def text(b: bytes) -> str:
    """Bytes up to the first NUL as printable ASCII."""
    b = b.split(b"\0", 1)[0]
    return "".join(chr(c) if 32 <= c < 127 else "." for c in b).strip()


def _u(fmt: str, b: bytes, off: int):
    size = struct.calcsize(fmt)
    if len(b) < off + size:
        return None
    return struct.unpack_from("<" + fmt, b, off)[0]


# ---- built-ins -------------------------------------------------------------------------------

@decoder("apic-fix")
def _apic_fix(r, d):
    res = {"svr_before": r.eax, "svr_after": r.ebx, "lvt0_after": r.ecx,
           "was_software_disabled": not (r.eax & 0x100), "reprogrammed_virtual_wire": r.edx == 1}
    return Decoded("error" if r.cf else "ok", res)


@decoder("pic-init")
def _pic_init(r, d):
    return Decoded("error" if r.cf else "ok", {"old_master_mask": r.eax & 0xFF, "old_slave_mask": (r.eax >> 8) & 0xFF,
                                               "new_master_mask": r.ebx & 0xFF, "new_slave_mask": (r.ebx >> 8) & 0xFF})


@decoder("idt-real")
def _idt(r, d):
    return Decoded("error" if r.cf else "ok", {"idt_base_at_entry": r.eax, "idt_limit_at_entry": r.ebx})


@decoder("stack")
def _stack(r, d):
    return Decoded("error" if r.cf else "ok", {"ss": r.eax & 0xFFFF, "sp": r.ebx & 0xFFFF})


@decoder("a20-test", "a20-test-off", "a20-test-on")
def _a20_test(r, d):
    return Decoded("ok", {"a20_enabled": r.eax == 1})


@decoder("a20-final")
def _a20_final(r, d):
    on = r.eax == 1
    return Decoded("ok" if on else "error", {"a20_enabled": on}, None if on else "A20 still disabled")


@decoder("a20-kbc")
def _a20_kbc(r, d):
    ok = r.eax == 1
    return Decoded("ok" if ok else "error", {"kbc_done": ok, "a20_enabled": r.ebx == 1},
                   None if ok else "keyboard controller timed out")


@decoder("a20-fast")
def _a20_fast(r, d):
    return Decoded("ok", {"port92_before": r.eax & 0xFF, "a20_enabled": r.ebx == 1})


@decoder("fdpt-hd0", "fdpt-hd1")
def _fdpt(r, d):
    b = d.get("", b"")
    res = {"pointer": f"{r.eax >> 16:04X}:{r.eax & 0xFFFF:04X}"}
    if len(b) >= 16:
        res.update(cylinders=_u("H", b, 0), heads=b[2], sectors_per_track=b[14])
    return Decoded("ok", res)


@decoder("tick-advance")
def _tick_adv(r, d):
    res = {"before": r.eax, "after": r.ebx, "delta": r.ecx}
    return Decoded("error", res, "timer tick did not advance (IRQ0 dead)") if r.cf else Decoded("ok", res)


# ---- memory ----------------------------------------------------------------------------------

@decoder("base-mem")
def _base_mem(r, d):
    return Decoded("ok", {"kib": r.ax})


def e820_entry(b: bytes) -> dict | None:
    if len(b) < 20:
        return None
    base, length, typ = struct.unpack_from("<QQI", b, 0)
    ent = {"base": base, "length": length, "type": typ, "type_name": E820_TYPES.get(typ, f"type {typ}")}
    if len(b) >= 24:
        ent["ext_attr"] = _u("I", b, 20)
    return ent


@decoder("e820")
def _e820(r, d):
    if r.cf:
        return _cf_error(r)
    if r.eax != 0x534D4150:
        return Decoded("error", {}, f"EAX={r.eax:08X}h is not 'SMAP'")
    ent = e820_entry(d.get("", b"")[: max(r.ecx, 20)])
    res = {"entry": ent, "continuation": r.ebx, "bytes": r.ecx}
    return Decoded("ok", res)


@decoder("e801")
def _e801(r, d):
    if r.cf:
        return _cf_error(r)
    lo, hi = (r.cx, r.dx) if (r.cx or r.dx) else (r.ax, r.bx)
    return Decoded("ok", {"kib_1m_16m": lo, "blocks64k_above_16m": hi, "total_kib": 1024 + lo + hi * 64})


@decoder("mem88")
def _mem88(r, d):
    if r.cf:
        return _cf_error(r)
    return Decoded("ok", {"kib_above_1m": r.ax})


@decoder("a20-query")
def _a20q(r, d):
    if r.cf:
        return _cf_error(r)
    return Decoded("ok", {"a20_enabled": r.al == 1})


@decoder("a20-support")
def _a20s(r, d):
    if r.cf:
        return _cf_error(r)
    return Decoded("ok", {"kbc": bool(r.bx & 1), "port92": bool(r.bx & 2)})


# ---- keyboard / system -----------------------------------------------------------------------

_SHIFT = ["right_shift", "left_shift", "ctrl", "alt", "scroll_lock", "num_lock", "caps_lock", "insert"]


@decoder("kbd-shift")
def _kbd_shift(r, d):
    return Decoded("ok", {"flags": r.al, "set": [n for i, n in enumerate(_SHIFT) if r.al >> i & 1]})


@decoder("kbd-pending")
def _kbd_pending(r, d):
    res = {"key_pending": not r.zf}
    if not r.zf:
        res.update(scancode=r.ah, ascii=r.al)
    return Decoded("ok", res)


@decoder("kbd-read")
def _kbd_read(r, d):
    return Decoded("ok", {"scancode": r.ah, "ascii": r.al})


@decoder("kbd-ext-shift")
def _kbd_ext(r, d):
    return Decoded("ok", {"flags": r.ax})


@decoder("sysconf")
def _sysconf(r, d):
    if r.cf or r.ah:
        return _cf_error(r)
    b = d.get("", b"")
    res = {"table": f"{r.es:04X}:{r.bx:04X}"}
    if len(b) >= 5:
        res.update(length=_u("H", b, 0), model=b[2], submodel=b[3], bios_revision=b[4],
                   feature_bytes=list(b[5:10]))
    return Decoded("ok", res)


_VIDEO_MODES = {0: "EGA/VGA or none", 1: "40x25 color", 2: "80x25 color", 3: "80x25 mono"}


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
        return _cf_error(r)
    sig = r.eax.to_bytes(4, "little")
    return Decoded("ok", {"signature": text(sig), "command": r.ebx, "event": r.ecx, "perf_level": r.edx})


# ---- APM -------------------------------------------------------------------------------------

@decoder("apm-check")
def _apm_check(r, d):
    if r.cf:
        return _cf_error(r, APM_ERRORS)
    if r.bx != 0x504D:
        return Decoded("error", {"bx": r.bx}, f"BX={r.bx:04X}h is not 'PM'")
    return Decoded("ok", {"version": f"{r.ah}.{r.al}", "flags": r.cx,
                          "pm16": bool(r.cx & 1), "pm32": bool(r.cx & 2),
                          "cpu_idle_slows_clock": bool(r.cx & 4), "bios_pm_disabled": bool(r.cx & 8),
                          "bios_pm_disengaged": bool(r.cx & 16)})


@decoder("apm-disconnect", "apm-disconnect2", "apm-disconnect3")
def _apm_disc(r, d):
    if r.cf and r.ah == 0x03:
        return Decoded("ok", {"was_connected": False})
    if r.cf:
        return _cf_error(r, APM_ERRORS)
    return Decoded("ok", {"was_connected": True})


@decoder("apm-connect-rm", "apm-enable")
def _apm_plain(r, d):
    return _cf_error(r, APM_ERRORS) if r.cf else Decoded("ok")


@decoder("apm-version")
def _apm_ver(r, d):
    if r.cf:
        return _cf_error(r, APM_ERRORS)
    return Decoded("ok", {"version": f"{r.ah}.{r.al}"})


@decoder("apm-connect-32")
def _apm32(r, d):
    if r.cf:
        return _cf_error(r, APM_ERRORS)
    return Decoded("ok", {"code32_seg": r.ax, "entry_offset": r.ebx, "code16_seg": r.cx,
                          "data_seg": r.dx, "code_len": r.esi & 0xFFFF, "data_len": r.edi & 0xFFFF})


# ---- disks -----------------------------------------------------------------------------------

@decoder("disk-reset")
def _disk_reset(r, d):
    return _cf_error(r, INT13_STATUS) if r.cf else Decoded("ok")


_EDD_VERSIONS = {0x01: "1.x", 0x20: "2.0", 0x21: "1.1", 0x30: "3.0"}


@decoder("edd-check")
def _edd_check(r, d):
    if r.cf or r.bx != 0xAA55:
        why = "EDD not present" + (f" (AH={r.ah:02X}h)" if r.cf else f" (BX={r.bx:04X}h)")
        return Decoded("error", {"present": False}, why)
    return Decoded("ok", {"present": True, "version": _EDD_VERSIONS.get(r.ah, f"{r.ah:02X}h"),
                          "features": r.cx, "fixed_disk_access": bool(r.cx & 1),
                          "locking_ejecting": bool(r.cx & 2), "edd_support": bool(r.cx & 4),
                          "ext64": bool(r.cx & 8)})


@decoder("edd-params")
def _edd_params(r, d):
    if r.cf:
        return _cf_error(r, INT13_STATUS)
    b = d.get("", b"")
    if len(b) < 26:
        return Decoded("ok", {"size": _u("H", b, 0)})
    res = {"size": _u("H", b, 0), "info_flags": _u("H", b, 2), "cylinders": _u("I", b, 4),
           "heads": _u("I", b, 8), "sectors_per_track": _u("I", b, 12), "sectors": _u("Q", b, 16),
           "bytes_per_sector": _u("H", b, 24)}
    if len(b) >= 30:
        ptr = _u("I", b, 26)
        res["dpte"] = f"{ptr >> 16:04X}:{ptr & 0xFFFF:04X}"
    if len(b) >= 48 and _u("H", b, 30) == 0xBEDD:
        res.update(host_bus=text(b[36:40]), interface=text(b[40:48]),
                   interface_path=b[48:56].hex(), device_path=b[56:64].hex())
    return Decoded("ok", res)


@decoder("disk-geometry")
def _geometry(r, d):
    if r.cf:
        return _cf_error(r, INT13_STATUS)
    return Decoded("ok", {"cylinders": (((r.cl & 0xC0) << 2) | r.ch) + 1, "heads": r.dh + 1,
                          "sectors_per_track": r.cl & 0x3F, "drives": r.dl})


@decoder("dasd-type")
def _dasd(r, d):
    if r.cf:
        return _cf_error(r, INT13_STATUS)
    res = {"type": r.ah, "type_name": DASD_TYPES.get(r.ah, f"{r.ah:02X}h")}
    if r.ah == 3:
        res["sectors"] = (r.cx << 16) | r.dx
    return Decoded("ok", res)


def sector_summary(b: bytes) -> dict:
    res = {"bytes": len(b)}
    if len(b) >= 512:
        res.update(mbr_signature=f"{_u('I', b, 0x1B8):08X}", boot_signature=b[510:512] == b"\x55\xaa")
    res["first_bytes"] = text(b[:16].replace(b"\0", b" ")) if b else ""
    return res


@decoder("read-chs", "read-lba")
def _read(r, d):
    if r.cf:
        return _cf_error(r, INT13_STATUS)
    return Decoded("ok", sector_summary(d.get("", b"")))


# ---- video -----------------------------------------------------------------------------------

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
    b = d.get("buffer", d.get("", b""))
    res: dict = {}
    if len(b) >= 20:
        res.update(signature=text(b[0:4]), version=_vbe_version(_u("H", b, 4)),
                   capabilities=_u("I", b, 10), total_memory_64k=_u("H", b, 18),
                   total_memory_kib=_u("H", b, 18) * 64)
    for tag in ("oem", "vendor", "product", "rev"):
        if tag in d:
            res[tag] = text(d[tag])
    if "modes" in d:
        m = d["modes"]
        modes = []
        for i in range(0, len(m) - 1, 2):
            v = _u("H", m, i)
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
    b = d.get("", b"")
    if len(b) < 44:
        return Decoded("ok", {})
    return Decoded("ok", {"attributes": _u("H", b, 0), "width": _u("H", b, 18), "height": _u("H", b, 20),
                          "bpp": b[25], "memory_model": b[27], "framebuffer": _u("I", b, 40)})


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
    v = (b[8] << 8) | b[9]
    return "".join(chr(ord("A") - 1 + ((v >> s) & 0x1F)) for s in (10, 5, 0))


def decode_edid(b: bytes) -> dict:
    res = {"header_ok": b[:8] == bytes.fromhex("00FFFFFFFFFFFF00")}
    if len(b) < 128:
        return res
    res.update(manufacturer=edid_manufacturer(b), product=_u("H", b, 10), serial=_u("I", b, 12),
               week=b[16], year=1990 + b[17], version=f"{b[18]}.{b[19]}",
               checksum_valid=sum(b[:128]) % 256 == 0)
    t = b[54:72]
    if t[0] | t[1]:
        res["preferred_mode"] = {"width": t[2] | ((t[4] >> 4) << 8), "height": t[5] | ((t[7] >> 4) << 8),
                                 "pixel_clock_khz": _u("H", t, 0) * 10}
    return res


@decoder("edid")
def _edid(r, d):
    bad = vbe_status(r, 0x4F15)
    if bad:
        return bad
    res = decode_edid(d.get("", b""))
    if not res.get("header_ok", False):
        return Decoded("error", res, "EDID header invalid")
    return Decoded("ok", res)


# ---- time, PCI, wait -------------------------------------------------------------------------

@decoder("ticks", "ticks-after")
def _ticks(r, d):
    return Decoded("ok", {"ticks": (r.cx << 16) | r.dx, "midnight": r.al})


@decoder("rtc-time")
def _rtc_time(r, d):
    if r.cf:
        return Decoded("error", {}, "RTC not running (CF=1)")
    return Decoded("ok", {"time": f"{bcd(r.ch):02d}:{bcd(r.cl):02d}:{bcd(r.dh):02d}", "dst": r.dl})


@decoder("rtc-date")
def _rtc_date(r, d):
    if r.cf:
        return Decoded("error", {}, "RTC not running (CF=1)")
    return Decoded("ok", {"date": f"{bcd(r.ch):02d}{bcd(r.cl):02d}-{bcd(r.dh):02d}-{bcd(r.dl):02d}"})


@decoder("pci-bios")
def _pci(r, d):
    if r.cf or r.ah or r.edx != 0x20494350:
        return Decoded("error", {"present": False}, "PCI BIOS not present")
    return Decoded("ok", {"present": True, "version": f"{bcd(r.bh)}.{bcd(r.bl):02d}",
                          "mechanism": r.al, "config_mechanism_1": bool(r.al & 1),
                          "config_mechanism_2": bool(r.al & 2), "last_bus": r.cl})


@decoder("pci-find-vga")
def _pci_vga(r, d):
    if r.cf or r.ah:
        return Decoded("error", {}, f"no VGA-class device found (AH={r.ah:02X}h)")
    return Decoded("ok", {"bus": r.bh, "device": r.bl >> 3, "function": r.bl & 7})


@decoder("wait")
def _wait(r, d):
    if r.cf:
        return _cf_error(r, {0x83: "wait already in progress"})
    return Decoded("ok")


_UNSUPPORTED_WORDS = ("not supported", "not present")


def decode_call(step_id: str, regs: Regs, data: dict) -> Decoded:
    """One call (iteration) of a step; never raises on odd input."""
    fn = DECODERS.get(step_id, generic)
    try:
        dec = fn(regs, data)
    except (IndexError, struct.error, KeyError, ValueError, TypeError) as exc:
        return Decoded("error" if regs.cf else "ok", {}, f"undecodable result: {exc}")
    if (dec.status == "error" and step_id in OPTIONAL_SERVICES
            and any(w in (dec.reason or "") for w in _UNSUPPORTED_WORDS)):
        return Decoded("ok", {**dec.result, "supported": False}, dec.reason)
    return dec
