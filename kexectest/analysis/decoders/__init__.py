"""Per-step decoders: raw registers and dumped bytes after one BIOS call -> meaning and ok/error.

One small module per BIOS concern (as Linux's arch/x86/boot keeps one file per concern): each
registers its decoders with @decoder("step-id") in base.py's registry.  Adding a BIOS call to the
payload is one STEP row in payloads/steps.S plus (if it has results worth reading) one function in
the module of its concern.  A step without a decoder still gets a status from its carry flag.
"""

from __future__ import annotations

from . import a20, apm, builtins, clock, disk, keyboard, memory, pci, system, vesa, video  # noqa: F401  (register)
from .apm import APM_ERRORS
from .base import DECODERS, Decoded, Decoder, Regs, bcd, cf_error, decode_call, decoder, generic, text
from .disk import DASD_TYPES, INT13_STATUS, device_path_info, sector_summary
from .memory import E820_TYPES, e820_entry
from .vesa import decode_edid, edid_manufacturer, vbe_status
from .video import DCC_NAMES

__all__ = ["APM_ERRORS", "DASD_TYPES", "DCC_NAMES", "DECODERS", "E820_TYPES", "INT13_STATUS",
           "Decoded", "Decoder", "Regs", "bcd", "cf_error", "decode_call", "decode_edid", "decoder",
           "device_path_info", "e820_entry", "edid_manufacturer", "generic", "sector_summary", "text",
           "vbe_status"]
