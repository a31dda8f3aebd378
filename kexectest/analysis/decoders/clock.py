"""Time: the int 1Ah tick count and RTC, int 15h 86h wait, and the payload's check that IRQ0
still advances the tick count."""

from __future__ import annotations

from .base import Decoded, bcd, cf_error, decoder


@decoder("ticks", "ticks-after")
def _ticks(r, d):
    return Decoded("ok", {"ticks": (r.cx << 16) | r.dx, "midnight": r.al})


def _bcd_fields(pairs: list[tuple[str, int]]) -> tuple[list[int], Decoded | None]:
    """The BCD registers as numbers, or the error naming the first that is not BCD."""
    out = []
    for name, v in pairs:
        n = bcd(v)
        if n is None:
            return [], Decoded("error", {name: v}, f"RTC answer not BCD ({name.upper()}={v:02X}h)")
        out.append(n)
    return out, None


@decoder("rtc-time")
def _rtc_time(r, d):
    if r.cf:
        return Decoded("error", {}, "RTC not running (CF=1)")
    vals, bad = _bcd_fields([("ch", r.ch), ("cl", r.cl), ("dh", r.dh)])
    if bad:
        return bad
    hh, mm, ss = vals
    return Decoded("ok", {"time": f"{hh:02d}:{mm:02d}:{ss:02d}", "dst": r.dl})


@decoder("rtc-date")
def _rtc_date(r, d):
    if r.cf:
        return Decoded("error", {}, "RTC not running (CF=1)")
    vals, bad = _bcd_fields([("ch", r.ch), ("cl", r.cl), ("dh", r.dh), ("dl", r.dl)])
    if bad:
        return bad
    cc, yy, mo, dd = vals
    return Decoded("ok", {"date": f"{cc:02d}{yy:02d}-{mo:02d}-{dd:02d}"})


@decoder("wait")
def _wait(r, d):
    if r.cf:
        return cf_error(r, {0x83: "wait already in progress"})
    return Decoded("ok")


@decoder("tick-advance")
def _tick_adv(r, d):
    res = {"before": r.eax, "after": r.ebx, "delta": r.ecx}
    return Decoded("error", res, "timer tick did not advance (IRQ0 dead)") if r.cf else Decoded("ok", res)
