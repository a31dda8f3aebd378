"""The A20 gate: the payload's wrap-around tests, the BIOS's int 15h 24xxh services, the
keyboard controller and port 92h."""

from __future__ import annotations

from .base import Decoded, cf_error, decoder


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


@decoder("a20-query")
def _a20q(r, d):
    if r.cf:
        return cf_error(r)
    return Decoded("ok", {"a20_enabled": r.al == 1})


@decoder("a20-support")
def _a20s(r, d):
    if r.cf:
        return cf_error(r)
    return Decoded("ok", {"kbc": bool(r.bx & 1), "port92": bool(r.bx & 2)})
