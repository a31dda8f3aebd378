"""What every decoder shares: the registers after a call (`Regs`), the decoded answer
(`Decoded`), the registry the concern modules add to (`@decoder`), and `decode_call`, the one
way the analysis asks for a step's meaning."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from ...trace import Record
from ..catalog import OPTIONAL_SERVICES

_DWORD_REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi")
_WORD_REGS = ("ds", "es", "fl")


class Regs:
    """Registers after a call (from an `end` record), with 8/16-bit views.  A register the line
    lacks reads 0; every value is held to its width (32 bits, 16 for ds/es/fl), so no decoder
    sees a negative or wider number whatever the record holds."""

    def __init__(self, rec: Record):
        self.f = rec.fields
        self.cf = self.f.get("cf") == "1"
        for r in _DWORD_REGS:
            setattr(self, r, (rec.hex(r, 0) or 0) & 0xFFFFFFFF)
        for r in _WORD_REGS:
            setattr(self, r, (rec.hex(r, 0) or 0) & 0xFFFF)
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
        return {"cf": int(self.cf), **{r: getattr(self, r) for r in _DWORD_REGS + _WORD_REGS}}


@dataclass
class Decoded:
    status: str  # "ok" | "error"
    result: dict = field(default_factory=dict)
    reason: str | None = None


Decoder = Callable[[Regs, dict], Decoded]
DECODERS: dict[str, Decoder] = {}


def decoder(*names: str):
    """Register a function as the decoder of the named steps."""
    def reg(fn: Decoder) -> Decoder:
        for n in names:
            DECODERS[n] = fn
        return fn
    return reg


def generic(r: Regs, data: dict) -> Decoded:
    """Carry flag only; AH=86h/80h on CF=1 is the usual "function not supported"."""
    if not r.cf:
        return Decoded("ok")
    if r.ah in (0x86, 0x80):
        return Decoded("error", {"ah": r.ah}, f"function not supported (AH={r.ah:02X}h)")
    return Decoded("error", {"ah": r.ah}, f"CF=1 (AH={r.ah:02X}h)")


def cf_error(r: Regs, table: dict | None = None) -> Decoded:
    """The error a call reported with CF=1, named from its AH status table when it has one."""
    msg = (table or {}).get(r.ah)
    if r.ah in (0x86, 0x80) and not msg:
        msg = "function not supported"
    return Decoded("error", {"ah": r.ah}, f"{msg or 'CF=1'} (AH={r.ah:02X}h)")


def bcd(v: int) -> int | None:
    """A packed-BCD byte as a number; None when a nibble is not a decimal digit."""
    hi, lo = (v >> 4) & 0xF, v & 0xF
    return None if hi > 9 or lo > 9 else hi * 10 + lo


def text(b: bytes) -> str:
    """Bytes up to the first NUL as printable ASCII."""
    b = b.split(b"\0", 1)[0]
    return "".join(chr(c) if 32 <= c < 127 else "." for c in b).strip()


def u(fmt: str, b: bytes, off: int):
    """One little-endian value of struct format `fmt` at `off`; None when `b` is too short."""
    size = struct.calcsize(fmt)
    if off < 0 or len(b) < off + size:
        return None
    return struct.unpack_from("<" + fmt, b, off)[0]


def far(v: int) -> str:
    """A far pointer dword (segment in the high word) as SSSS:OOOO."""
    return f"{(v >> 16) & 0xFFFF:04X}:{v & 0xFFFF:04X}"


def buffer(data: dict, tag: str = "") -> bytes:
    """The bytes dumped under `tag` ("" for the step's one buffer); empty when none was."""
    b = data.get(tag, b"")
    return bytes(b) if isinstance(b, (bytes, bytearray, memoryview)) else b""


_UNSUPPORTED_WORDS = ("not supported", "not present")


def decode_call(step_id: str, regs: Regs, data: dict) -> Decoded:
    """One call (iteration) of a step.  Decoders read only what the dump holds and check every
    value's range; the catch below is a last guard that keeps a decoder bug from costing the
    whole report."""
    fn = DECODERS.get(step_id, generic)
    try:
        dec = fn(regs, data)
    except (IndexError, struct.error, KeyError, ValueError, TypeError) as exc:
        return Decoded("error" if regs.cf else "ok", {}, f"undecodable result: {exc}")
    if (dec.status == "error" and step_id in OPTIONAL_SERVICES
            and any(w in (dec.reason or "") for w in _UNSUPPORTED_WORDS)):
        return Decoded("ok", {**dec.result, "supported": False}, dec.reason)
    return dec
