"""Disks: int 13h reset, EDD (41h check, 48h drive parameters with the EDD 3.0 device path),
legacy geometry (08h), DASD type (15h), sector reads (02h, 42h), and the fixed disk parameter
tables int 41h/46h point at."""

from __future__ import annotations

from .base import Decoded, buffer, cf_error, decoder, far, text, u

INT13_STATUS = {0x01: "invalid function", 0x02: "address mark not found", 0x04: "sector not found",
                0x05: "reset failed", 0x07: "drive parameter activity failed", 0x0C: "unsupported track",
                0x10: "uncorrectable ECC error", 0x20: "controller failure", 0x40: "seek failed",
                0x80: "timeout (not ready)", 0xAA: "drive not ready", 0xBB: "undefined error",
                0xCC: "write fault", 0xFF: "sense operation failed"}
DASD_TYPES = {0: "no such drive", 1: "floppy without change-line", 2: "floppy with change-line",
              3: "fixed disk"}
_EDD_VERSIONS = {0x01: "1.x", 0x20: "2.0", 0x21: "1.1", 0x30: "3.0"}

# EDD 3.0 (and EDD-4) device path information, after the 30 bytes of EDD 2.0 parameters:
# key BEDDh, its length (36 in EDD 3.0: an 8-byte device path; 44 in EDD-4: 16 bytes),
# host bus (4 ASCII), interface (8 ASCII), interface path (8), device path, reserved, checksum.
EDD_KEY = 0xBEDD
_DPI = 30
_DPI_LAYOUTS = {36: ("EDD 3.0", 8), 44: ("EDD-4", 16)}
HOST_BUSES = {"ISA": "ISA (16-bit fixed bus)", "PCI": "PCI", "PCIX": "PCI-X", "IBND": "InfiniBand",
              "XPRS": "PCI Express", "HTPT": "HyperTransport"}
INTERFACES = {"ATA": "ATA", "ATAPI": "ATAPI", "SCSI": "SCSI", "USB": "USB mass storage",
              "1394": "IEEE 1394 mass storage", "FIBRE": "Fibre Channel", "I2O": "I2O",
              "RAID": "RAID member", "SATA": "Serial ATA (native mode)"}
_PCI_LIKE = ("PCI", "PCIX", "XPRS", "HTPT")


@decoder("disk-reset")
def _disk_reset(r, d):
    return cf_error(r, INT13_STATUS) if r.cf else Decoded("ok")


@decoder("edd-check")
def _edd_check(r, d):
    if r.cf or r.bx != 0xAA55:
        why = "EDD not present" + (f" (AH={r.ah:02X}h)" if r.cf else f" (BX={r.bx:04X}h)")
        return Decoded("error", {"present": False}, why)
    return Decoded("ok", {"present": True, "version": _EDD_VERSIONS.get(r.ah, f"{r.ah:02X}h"),
                          "features": r.cx, "fixed_disk_access": bool(r.cx & 1),
                          "locking_ejecting": bool(r.cx & 2), "edd_support": bool(r.cx & 4),
                          "ext64": bool(r.cx & 8)})


def _unused(v: int) -> int | None:
    """A PCI bus/slot/function/channel byte: FFh means the field is not used."""
    return None if v == 0xFF else v


def interface_path(bus: str, p: bytes) -> dict:
    """Where the interface is, by host bus: an ISA base port, or PCI bus/slot/function/channel."""
    if bus == "ISA" and len(p) >= 2:
        return {"base_address": u("H", p, 0)}
    if bus in _PCI_LIKE and len(p) >= 4:
        return {"bus": _unused(p[0]), "slot": _unused(p[1]), "function": _unused(p[2]),
                "channel": _unused(p[3])}
    return {}


def _qword_hex(p: bytes, off: int) -> str | None:
    v = u("Q", p, off)
    return None if v is None else f"{v:016X}"


def device_path(iface: str, p: bytes, size: int) -> dict:
    """Which device on the interface, by interface type; `size` is the layout's path length (8
    in EDD 3.0, 16 in EDD-4: SCSI and Fibre Channel differ), `p` what the dump holds of it."""
    if iface in ("ATA", "ATAPI") and p:
        res = {"device": {0: "master", 1: "slave"}.get(p[0], f"{p[0]:02X}h")}
        if iface == "ATAPI" and len(p) >= 2:
            res["lun"] = p[1]
        return res
    if iface == "SCSI":
        if size == 8:
            return {"lun": p[0]} if p else {}
        return {k: v for k, v in (("id", u("H", p, 0)), ("lun", u("Q", p, 2))) if v is not None}
    if iface == "SATA" and p:
        return {"port": p[0]}
    if iface == "RAID":
        n = u("I", p, 0)
        return {} if n is None else {"array_number": n}
    names = {"USB": "serial_number", "1394": "guid", "FIBRE": "wwn", "I2O": "identity_tag"}
    if iface in names:
        res = {names[iface]: _qword_hex(p, 0)}
        if iface == "FIBRE" and size == 16:
            res["lun"] = u("Q", p, 8)
        return {k: v for k, v in res.items() if v is not None}
    return {}


def device_path_info(b: bytes) -> dict | None:
    """The EDD 3.0 device path information of an int 13h 48h buffer, decoded; None without its
    key.  Reads only what the dump holds, and says when the checksum lies beyond it."""
    if u("H", b, _DPI) != EDD_KEY or len(b) <= _DPI + 2:
        return None
    length = b[_DPI + 2]
    dpi = b[_DPI:_DPI + length]
    bus, iface = text(b[36:40]), text(b[40:48])
    res: dict = {"length": length, "host_bus": bus, "host_bus_name": HOST_BUSES.get(bus),
                 "interface": iface, "interface_name": INTERFACES.get(iface)}
    layout = _DPI_LAYOUTS.get(length)
    if layout is None:
        res.update(layout=None, note=f"unknown device path information length {length}")
        return res
    name, size = layout
    res["layout"] = name
    res["interface_path"] = interface_path(bus, b[48:56])
    res["device_path"] = device_path(iface, b[56:56 + size], size)
    if len(dpi) == length:
        res["checksum_valid"] = sum(dpi) & 0xFF == 0
    else:
        res["checksum_valid"] = None
        res["note"] = f"the dump holds {len(dpi)} of its {length} bytes: checksum not seen"
    return res


@decoder("edd-params")
def _edd_params(r, d):
    if r.cf:
        return cf_error(r, INT13_STATUS)
    b = buffer(d)
    if len(b) < 26:
        return Decoded("ok", {"size": u("H", b, 0)})
    res = {"size": u("H", b, 0), "info_flags": u("H", b, 2), "cylinders": u("I", b, 4),
           "heads": u("I", b, 8), "sectors_per_track": u("I", b, 12), "sectors": u("Q", b, 16),
           "bytes_per_sector": u("H", b, 24)}
    if len(b) >= 30:
        res["dpte"] = far(u("I", b, 26))
    if len(b) >= 48 and u("H", b, _DPI) == EDD_KEY:
        res.update(host_bus=text(b[36:40]), interface=text(b[40:48]),
                   interface_path=b[48:56].hex(), device_path=b[56:64].hex())
        res["device_path_info"] = device_path_info(b)
    return Decoded("ok", res)


@decoder("disk-geometry")
def _geometry(r, d):
    if r.cf:
        return cf_error(r, INT13_STATUS)
    return Decoded("ok", {"cylinders": (((r.cl & 0xC0) << 2) | r.ch) + 1, "heads": r.dh + 1,
                          "sectors_per_track": r.cl & 0x3F, "drives": r.dl})


@decoder("dasd-type")
def _dasd(r, d):
    if r.cf:
        return cf_error(r, INT13_STATUS)
    res = {"type": r.ah, "type_name": DASD_TYPES.get(r.ah, f"{r.ah:02X}h")}
    if r.ah == 3:
        res["sectors"] = (r.cx << 16) | r.dx
    return Decoded("ok", res)


def sector_summary(b: bytes) -> dict:
    """A sector read: its size, MBR disk signature and boot signature, and its first bytes."""
    res = {"bytes": len(b)}
    if len(b) >= 512:
        res.update(mbr_signature=f"{u('I', b, 0x1B8):08X}", boot_signature=b[510:512] == b"\x55\xaa")
    res["first_bytes"] = text(b[:16].replace(b"\0", b" ")) if b else ""
    return res


@decoder("read-chs", "read-lba")
def _read(r, d):
    if r.cf:
        return cf_error(r, INT13_STATUS)
    return Decoded("ok", sector_summary(buffer(d)))


@decoder("fdpt-hd0", "fdpt-hd1")
def _fdpt(r, d):
    b = buffer(d)
    res = {"pointer": far(r.eax)}
    if len(b) >= 16:
        res.update(cylinders=u("H", b, 0), heads=b[2], sectors_per_track=b[14])
    return Decoded("ok", res)
