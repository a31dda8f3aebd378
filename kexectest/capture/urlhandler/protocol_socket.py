"""socket://HOST:PORT (ser2net raw, QEMU's tcp chardev): pyserial's handler, input kept on open."""

from __future__ import annotations

from serial.urlhandler import protocol_socket

from . import KeepInputOnOpen


class Serial(KeepInputOnOpen, protocol_socket.Serial):
    pass
