"""Advanced Power Management: int 15h 53xxh check, connect, version, enable, disconnect."""

from __future__ import annotations

from .base import Decoded, cf_error, decoder

APM_ERRORS = {0x01: "power management disabled", 0x02: "real-mode interface already connected",
              0x03: "interface not connected", 0x05: "16-bit interface already connected",
              0x06: "16-bit interface not supported", 0x07: "32-bit interface already connected",
              0x08: "32-bit interface not supported", 0x09: "unrecognised device id",
              0x0A: "parameter out of range", 0x0B: "interface not engaged",
              0x80: "no power management events", 0x86: "APM not present"}
_PM = 0x504D  # "PM"


@decoder("apm-check")
def _apm_check(r, d):
    if r.cf:
        return cf_error(r, APM_ERRORS)
    if r.bx != _PM:
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
        return cf_error(r, APM_ERRORS)
    return Decoded("ok", {"was_connected": True})


@decoder("apm-connect-rm", "apm-enable")
def _apm_plain(r, d):
    return cf_error(r, APM_ERRORS) if r.cf else Decoded("ok")


@decoder("apm-version")
def _apm_ver(r, d):
    if r.cf:
        return cf_error(r, APM_ERRORS)
    return Decoded("ok", {"version": f"{r.ah}.{r.al}"})


@decoder("apm-connect-32")
def _apm32(r, d):
    if r.cf:
        return cf_error(r, APM_ERRORS)
    return Decoded("ok", {"code32_seg": r.ax, "entry_offset": r.ebx, "code16_seg": r.cx,
                          "data_seg": r.dx, "code_len": r.esi & 0xFFFF, "data_len": r.edi & 0xFFFF})
