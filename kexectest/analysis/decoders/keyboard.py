"""The keyboard: int 16h shift flags, key pending, key read."""

from __future__ import annotations

from .base import Decoded, decoder

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
