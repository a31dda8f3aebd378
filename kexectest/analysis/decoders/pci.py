"""The PCI BIOS: int 1Ah B101h installation check, B103h find a class (VGA)."""

from __future__ import annotations

from .base import Decoded, bcd, decoder

_PCI = 0x20494350  # "PCI "


def _version(major: int, minor: int) -> str:
    """The PCI BIOS version, printed in BCD; hex digits when the BIOS broke BCD."""
    hi, lo = bcd(major), bcd(minor)
    return f"{hi}.{lo:02d}" if hi is not None and lo is not None else f"{major:02X}h.{minor:02X}h"


@decoder("pci-bios")
def _pci(r, d):
    if r.cf or r.ah or r.edx != _PCI:
        return Decoded("error", {"present": False}, "PCI BIOS not present")
    return Decoded("ok", {"present": True, "version": _version(r.bh, r.bl),
                          "mechanism": r.al, "config_mechanism_1": bool(r.al & 1),
                          "config_mechanism_2": bool(r.al & 2), "last_bus": r.cl})


@decoder("pci-find-vga")
def _pci_vga(r, d):
    if r.cf or r.ah:
        return Decoded("error", {}, f"no VGA-class device found (AH={r.ah:02X}h)")
    return Decoded("ok", {"bus": r.bh, "device": r.bl >> 3, "function": r.bl & 7})
