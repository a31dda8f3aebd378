"""rfc2217://HOST:PORT (ser2net telnet): pyserial's handler, input kept on open, the server's
SET_CONTROL answers not waited for (the `ign_set_control` option, added when absent)."""

from __future__ import annotations

from serial import rfc2217

from . import KeepInputOnOpen


def with_option(url: str, option: str) -> str:
    """`url` with `option` in its query (unchanged when it is there already)."""
    head, _, query = url.partition("?")
    options = [o for o in query.split("&") if o]
    if any(o.split("=", 1)[0] == option for o in options):
        return url
    return f"{head}?{'&'.join([*options, option])}"


class Serial(KeepInputOnOpen, rfc2217.Serial):
    def from_url(self, url):
        return super().from_url(with_option(url, "ign_set_control"))
