"""kexectest's pyserial URL handlers: pyserial's own classes for socket://, rfc2217:// and local
ttys, changed only where a collector must differ (transport.py puts this package first in
`serial.protocol_handler_packages`; every other scheme is pyserial's own).

Why: pyserial flushes the input when it opens a port.  Bytes the machine under test sent while
the collector connected would be lost, and the kernel's first words matter: these handlers
keep them.  rfc2217:// also ignores the server's answers to SET_CONTROL (ser2net 4 does not send
the ones pyserial waits for; the collector uses no modem control lines), as labgrid does.
"""

from __future__ import annotations

import serial


class KeepInputOnOpen:
    """Mixed into a pyserial class: the input flush its open() does is skipped; afterwards
    reset_input_buffer() works as usual."""

    _opening = False

    def open(self):
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def reset_input_buffer(self):
        if not self._opening:
            super().reset_input_buffer()


class TtySerial(KeepInputOnOpen, serial.Serial):
    """A local serial device (a path, no URL scheme), as serial.Serial opens it."""

    def _reset_input_buffer(self):
        # serialposix's open() flushes through this name (tcflush TCIFLUSH)
        if not self._opening:
            super()._reset_input_buffer()
