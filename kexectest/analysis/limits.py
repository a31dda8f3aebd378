"""The payload's own limits, and the check every record passes before a number read from it
sizes, divides or indexes anything.

A line whose checksum verified can still carry a field the payload never prints (a payload bug,
or damage the checksum missed): such a record is `malformed` evidence, handled like a damaged
line, never decoded.  The limits are the payload's (payloads/runner.S, io.S, docs/trace-format.md):
numbers are fixed-width upper-case hex, step numbers 3 decimal digits.
"""

from __future__ import annotations

import re

from ..payload.config import MAX_SKIP_STEPS
from ..trace import Record
from ..trace.format import FIELD_FORMS

MAX_STEPS = MAX_SKIP_STEPS  # the skip bitmap's size bounds the step table (payload/config.py)
MAX_E820_CALLS = 128  # runner.S per_e820: at most 128 continuations
DATA_CHUNK = 32  # io.S dump: at most 32 bytes per data line
MAX_DUMP = 0x10000  # a dump's length and offsets are 16-bit words
UART_CLOCK = 115200  # the 16550 divisor's base rate: baud = 115200 / div

_DEC = re.compile(r"[0-9]{1,3}")
_WORD = re.compile(r"[\x21-\x7e]{1,64}")

# the fields' formats are the trace's (trace.format.FIELD_FORMS, the one table): a record the
# parser made has passed them; one made any other way is held to them here
_FORMAT = {key: re.compile(form) for key, form in FIELD_FORMS.items()}
_STEP_FIELDS = {"begin": ("int", "ax"), "end": ("cf",), "data": ("off",), "skip": ("reason",)}


def malformed(rec: Record, text: str) -> str | None:
    """Why a checksum-verified record cannot be believed, or None when it is well formed."""
    body = text[max(0, text.find("KT ")):]  # what may precede it is the console's, not the payload's
    if not body.isascii() or not body.isprintable():
        return "a byte the payload never prints"
    for key, rx in _FORMAT.items():
        v = rec.fields.get(key)
        if v is not None and not rx.fullmatch(v):
            return f"{key}={v[:20]} is out of format"
    kind = rec.kind
    if kind in _STEP_FIELDS:
        if rec.step is None or rec.step >= MAX_STEPS:
            return f"step {rec.step} beyond the payload's {MAX_STEPS}-step limit"
        if not rec.name or not _WORD.fullmatch(rec.name):
            return "no step id"
        missing = [k for k in _STEP_FIELDS[kind] if k not in rec.fields]
        if missing:
            return f"{missing[0]}= missing"
        if "i" in rec.fields and int(rec.fields["i"]) >= MAX_E820_CALLS:
            return f"i={rec.fields['i']} beyond the E820 loop's {MAX_E820_CALLS} calls"
        if "dl" in rec.fields and int(rec.fields["dl"], 16) < 0x80:
            return f"dl={rec.fields['dl']} is not a BIOS hard disk"
    if kind == "data":
        n = len(rec.data or b"")
        if not 0 < n <= DATA_CHUNK:
            return f"{n} data bytes (a data line holds 1 to {DATA_CHUNK})"
        if int(rec.fields["off"], 16) + n > MAX_DUMP:
            return "offset beyond a 64 KiB dump"
    if kind == "banner":
        steps = rec.fields.get("steps")
        if steps is not None and (not _DEC.fullmatch(steps) or int(steps) > MAX_STEPS):
            return f"steps={steps[:12]} beyond the payload's {MAX_STEPS}-step limit"
        if rec.fields.get("div") == "0000":
            return "div=0000 (a 16550 divisor is at least 1)"
    if kind == "done":
        steps = rec.fields.get("steps")
        if steps is not None and (not _DEC.fullmatch(steps) or int(steps) > MAX_STEPS):
            return f"steps={steps[:12]} beyond the payload's {MAX_STEPS}-step limit"
    return None


def step_count(rec: Record | None) -> int | None:
    """A banner's or done line's step count, within the payload's limit (None when absent)."""
    if rec is None:
        return None
    v = rec.fields.get("steps", "")
    return int(v) if _DEC.fullmatch(v) and int(v) <= MAX_STEPS else None


def baud(rec: Record | None) -> int | None:
    """The baud rate the banner's UART divisor gives (None when absent or out of range)."""
    v = rec.fields.get("div", "") if rec is not None else ""
    if not _FORMAT["div"].fullmatch(v) or int(v, 16) == 0:
        return None
    return UART_CLOCK // int(v, 16)
