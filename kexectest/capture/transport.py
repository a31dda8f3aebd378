"""Serial consoles: open any pyserial URL (a tty, socket://, rfc2217://, loop://) and read it
without ever dropping a byte; one clear line for every way opening one fails.

pyserial's own seam chooses the class for a URL: this module puts kexectest's handlers
(capture/urlhandler/: pyserial's classes that keep the input on open) first in
`serial.protocol_handler_packages`; every other scheme stays pyserial's.  Reading uses only
public pyserial: the descriptor from `fileno()` where a class has one, `in_waiting`/`read()`
where not.
"""

from __future__ import annotations

import errno
import os
import selectors
import stat
import time
from dataclasses import dataclass

import serial

from ..errors import Exit, KexectestError
from .urlhandler import TtySerial

HANDLERS = "kexectest.capture.urlhandler"
if HANDLERS not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.insert(0, HANDLERS)

READ_SIZE = 65536
PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
@dataclass
class SerialSettings:
    url: str
    baud: int = 115200
    parity: str = "N"
    rtscts: bool = False
    xonxoff: bool = False

    def to_dict(self) -> dict:
        return {"url": self.url, "baud": self.baud, "parity": self.parity,
                "rtscts": self.rtscts, "xonxoff": self.xonxoff}


class SerialLost(Exception):
    """The console went away while we read it; `reason` is "eof" (clean close) or "lost"."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _is_local(url: str) -> bool:
    return "://" not in url


def _open_error(url: str, exc: Exception) -> KexectestError:
    """One clear line for the ways opening a console fails."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if isinstance(exc, ValueError) and "protocol" in text:
        scheme = url.split("://", 1)[0]
        msg = (f"unknown serial URL scheme {scheme!r} in {url!r} "
               "(use a device path, socket://, rfc2217://, loop://)")
    elif code == errno.ENOENT:
        msg = f"serial device {url} does not exist"
    elif code in (errno.EACCES, errno.EPERM):
        msg = (f"permission denied opening {url} "
               "(add yourself to the 'dialout' group, then log in again)")
    elif code in (errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        msg = f"serial device {url} is busy (another program has it open)"
    elif "refused" in text.lower():
        msg = f"connection refused by {url} (is the console server running?)"
    else:
        msg = f"cannot open serial console {url}: {text.splitlines()[0] if text else exc!r}"
    return KexectestError(msg, Exit.SERIAL)


class Port:
    """One open console: the pyserial object plus a non-blocking read that never drops bytes.

    A class with a file descriptor (a local tty, socket://) is read with os.read on it: one
    system call, exactly what is there.  Every other URL (rfc2217://, loop://, ...) is polled
    through pyserial with `in_waiting`.
    """

    def __init__(self, ser: serial.SerialBase, settings: SerialSettings):
        self.serial = ser
        self.settings = settings
        self.fd: int | None = None
        self.is_socket = False
        try:
            fd = ser.fileno()
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: no descriptor
            fd = None
        if isinstance(fd, int) and fd >= 0:
            self.fd = fd
            try:
                self.is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
            except OSError:
                pass
            os.set_blocking(fd, False)

    def fileno(self) -> int:
        if self.fd is None:
            raise OSError("console has no file descriptor")
        return self.fd

    def read_available(self, size: int = READ_SIZE, ready: bool = True) -> bytes:
        """What is there now (maybe b""); SerialLost when the console went away.

        `ready`: select() said the descriptor is readable.  A tty with VMIN=0 answers an empty
        read with 0 bytes, so only an empty read after readiness means the device hung up; a
        socket's empty read is always its end."""
        if self.fd is not None:
            try:
                data = os.read(self.fd, size)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as exc:
                what = "connection lost" if self.is_socket else "serial device lost"
                raise SerialLost("lost", f"{what}: {exc.strerror or exc}") from None
            if not data:
                if self.is_socket:
                    raise SerialLost("eof", "connection closed by the other end")
                if ready:
                    raise SerialLost("eof", "serial device hung up")
            return data
        try:
            waiting = self.serial.in_waiting
            return self.serial.read(min(waiting, size)) if waiting else b""
        except (serial.SerialException, OSError) as exc:
            raise SerialLost("lost", f"console lost: {exc}") from None

    def wait_read(self, timeout: float | None, size: int = READ_SIZE) -> bytes:
        """Block up to `timeout` seconds for data; b"" on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.fd is not None:
            with selectors.DefaultSelector() as sel:
                sel.register(self.fd, selectors.EVENT_READ)
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if sel.select(left):
                        data = self.read_available(size)
                        if data:
                            return data
                    if deadline is not None and time.monotonic() >= deadline:
                        return b""
        while True:
            data = self.read_available(size)
            if data or (deadline is not None and time.monotonic() >= deadline):
                return data
            time.sleep(0.01)

    def write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
            self.serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise SerialLost("lost", f"cannot write to the console: {exc}") from None

    def close(self) -> None:
        try:
            self.serial.close()
        except (serial.SerialException, OSError):
            pass


def open_port(settings: SerialSettings) -> Port:
    """Open a pyserial URL or device path; KexectestError(Exit.SERIAL) with one line on failure."""
    url = settings.url
    if settings.parity.upper() not in PARITIES:
        raise KexectestError(f"parity must be N, E or O, not {settings.parity!r}", Exit.USAGE)
    kwargs = dict(baudrate=settings.baud, parity=PARITIES[settings.parity.upper()],
                  rtscts=settings.rtscts, xonxoff=settings.xonxoff, timeout=0)
    try:
        if _is_local(url):
            if not os.path.exists(url):
                raise KexectestError(f"serial device {url} does not exist", Exit.SERIAL)
            ser = TtySerial(None, exclusive=True, **kwargs)  # what serial_for_url does for a path
            ser.port = url
        else:
            ser = serial.serial_for_url(url, do_not_open=True, **kwargs)
        ser.open()
    except (ValueError, serial.SerialException, OSError) as exc:
        raise _open_error(url, exc) from None
    return Port(ser, settings)
