"""QEMU's monitor protocol (QMP) over a unix socket: one JSON object per line each way.

Why not qemu.qmp: its synchronous wrapper waits for every reply and binds itself to an asyncio
loop of the calling thread, while a restore must leave `chardev-change` and `cont` queued in
QEMU (their replies come only once the collector has connected) and go on.  What the lab needs
is a handful of commands and one file descriptor passed with SCM_RIGHTS: the standard library's
socket module does both.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path


class QmpError(Exception):
    """QEMU answered a command with an error, or the monitor went away."""


class QmpTimeout(QmpError):
    """No message from the monitor within the time allowed."""


class Qmp:
    """A connected QMP client: `execute` waits for the reply, `send` leaves it pending."""

    def __init__(self, path: Path, *, timeout: float = 30.0, alive=lambda: True):
        """Connect to QEMU's `-qmp unix:PATH,server=on,wait=off` socket, retrying while QEMU
        starts (`alive()` false ends the wait), and leave capabilities negotiation done."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except OSError as exc:  # not there yet, or not listening yet
                sock.close()
                if not alive() or time.monotonic() > deadline:
                    raise QmpError(f"no QMP monitor at {path}: {exc.strerror or exc}") from None
                time.sleep(0.005)
        sock.settimeout(timeout)
        self._sock = sock
        self._timeout = timeout
        self._buf = b""
        self._pending = 0
        self.events: list[dict] = []
        greeting = self._message()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {str(greeting)[:80]}")
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.execute("qmp_capabilities")

    # -- wire
    def _message(self) -> dict:
        while b"\n" not in self._buf:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise QmpTimeout("QMP monitor did not answer in time") from None
            except OSError as exc:
                raise QmpError(f"QMP monitor lost: {exc.strerror or exc}") from None
            if not data:
                raise QmpError("QMP monitor closed")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            raise QmpError(f"QMP sent something that is not JSON: {line[:80]!r}") from None

    def _reply(self) -> dict:
        while True:
            msg = self._message()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def _write(self, command: str, arguments: dict, fds: list[int] = ()) -> None:
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        data = json.dumps(msg).encode() + b"\n"
        try:
            if fds:
                socket.send_fds(self._sock, [data], list(fds))
            else:
                self._sock.sendall(data)
        except OSError as exc:
            raise QmpError(f"QMP monitor lost: {exc.strerror or exc}") from None

    # -- commands
    def execute(self, command: str, **arguments):
        """Run one command and return its `return` value; QmpError with QEMU's description."""
        if self._pending:
            raise QmpError(f"{command}: replies to earlier commands are still pending")
        self._write(command, arguments)
        reply = self._reply()
        if "error" in reply:
            raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def send(self, command: str, **arguments) -> None:
        """Queue a command without waiting: QEMU runs queued commands in order."""
        self._write(command, arguments)
        self._pending += 1

    def pending_reply(self, timeout: float) -> dict | None:
        """The next reply to a `send`, if one arrives within `timeout` s (None otherwise)."""
        if not self._pending:
            return None
        self._sock.settimeout(max(timeout, 0.001))
        try:
            reply = self._reply()
        except QmpTimeout:
            return None
        finally:
            self._sock.settimeout(self._timeout)
        self._pending -= 1
        return reply

    def pass_fd(self, fd: int, name: str) -> None:
        """Hand QEMU a file descriptor under `name` (for `fd:NAME` migration URIs)."""
        self._write("getfd", {"fdname": name}, fds=[fd])
        reply = self._reply()
        if "error" in reply:
            raise QmpError(f"getfd: {reply['error'].get('desc', reply['error'])}")

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def qmp_socket_dir() -> Path:
    """A private directory for one QEMU's monitor socket (unix socket paths are short)."""
    d = Path(tempfile.mkdtemp(prefix="kt-qmp-"))
    os.chmod(d, 0o700)
    return d
