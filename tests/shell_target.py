"""A machine under test as far as its console shows, made of real parts: a real shell (dash,
busybox ash) on a pty of its own, reached through a relay the collector opens as a pty or a TCP
console.  The relay can do to the collector's bytes what bad consoles do: damage or drop a
line, turn LF into CR LF, clear the eighth bit, or cut the line half-way."""

from __future__ import annotations

import fcntl
import os
import re
import selectors
import socket
import subprocess
import termios
import threading
import tty
from pathlib import Path

PROMPT = "target# "
PROMPT_RE = r"target# ?$"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _make_ctty():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Mangler:
    """What happens to each line the collector sends: `damage` and `drop` hold chunk numbers
    (each hit once: the resend gets through), `crlf` doubles line ends as a telnet-ish console
    does, `seven_bit` clears bit 7, `cut_after` closes the console after that many chunks."""

    def __init__(self, damage=(), drop=(), crlf=False, seven_bit=False, cut_after=None,
                 damage_all=False):
        self.damage, self.drop = set(damage), set(drop)
        self.crlf, self.seven_bit, self.cut_after = crlf, seven_bit, cut_after
        self.damage_all = damage_all
        self.damaged = self.dropped = self.chunks = 0
        self.cut = False

    def __call__(self, line: bytes) -> bytes | None:
        """The bytes to pass on for one line (None: close the console now)."""
        m = re.match(rb"C (\d+) ", line)
        if m:
            self.chunks += 1
            n = int(m.group(1))
            if self.cut_after is not None and self.chunks > self.cut_after:
                self.cut = True
                return None
            if n in self.drop:
                self.drop.discard(n)
                self.dropped += 1
                return b""
            if n in self.damage or self.damage_all:
                self.damage.discard(n)
                self.damaged += 1
                at = len(line) // 2
                line = line[:at] + (b"A" if line[at:at + 1] != b"A" else b"B") + line[at + 1:]
        if self.seven_bit:
            line = bytes(b & 0x7F for b in line)
        if self.crlf:
            line = line.replace(b"\n", b"\r\n")
        return line


class ShellTarget:
    """Start with `start()`; `url` is what the collector opens; `stop()` ends it all."""

    def __init__(self, tmp: Path, *, argv=("dash", "-i"), as_nobody=False, tcp=False,
                 mangle: Mangler | None = None, env: dict | None = None, wrap=()):
        self.tmp = Path(tmp)
        self.push_tmp = self.tmp / "target-tmp"  # the target's TMPDIR
        self.push_tmp.mkdir(parents=True, exist_ok=True)
        os.chmod(self.push_tmp, 0o1777)
        os.chmod(self.tmp, 0o755)
        self.argv = list(wrap) + (NOBODY if as_nobody else []) + list(argv)
        self.env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "PS1": PROMPT,
                    "TMPDIR": str(self.push_tmp), "TERM": "dumb", **(env or {})}
        self.mangle = mangle or Mangler()
        self.tcp = tcp
        self.proc = None
        self._stop = threading.Event()
        self.url = None

    def start(self) -> "ShellTarget":
        self.master_b, slave_b = os.openpty()
        self.proc = subprocess.Popen(self.argv, stdin=slave_b, stdout=slave_b, stderr=slave_b,
                                     env=self.env, cwd="/", preexec_fn=_make_ctty)
        os.close(slave_b)
        if self.tcp:
            self.server = socket.socket()
            self.server.bind(("127.0.0.1", 0))
            self.server.listen(1)
            self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        else:
            self.master_a, slave_a = os.openpty()
            tty.setraw(slave_a)  # as the collector will: no echo of the target's output back
            self.url = os.ttyname(slave_a)
            self._slave_a = slave_a
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()
        return self

    def push_dir(self) -> Path:
        uid = 65534 if NOBODY[0] in self.argv else os.geteuid()
        return self.push_tmp / f"kexectest-push-{uid}"

    def _relay(self) -> None:
        if self.tcp:
            conn, _ = self.server.accept()
            conn.setblocking(False)
            a_read = lambda: conn.recv(65536)  # noqa: E731
            a_write = conn.sendall
            a_fd = conn.fileno()
            close_a = conn.close
        else:
            a_fd = self.master_a
            a_read = lambda: os.read(self.master_a, 65536)  # noqa: E731

            def a_write(data):
                _write_all(self.master_a, data)
            close_a = lambda: os.close(self.master_a)  # noqa: E731
        sel = selectors.DefaultSelector()
        sel.register(a_fd, selectors.EVENT_READ, "a")
        sel.register(self.master_b, selectors.EVENT_READ, "b")
        pending = b""
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    try:
                        data = a_read() if key.data == "a" else os.read(self.master_b, 65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        return
                    if not data:
                        if key.data == "a" and not self.tcp:
                            continue  # nobody has the console open yet
                        return
                    if key.data == "b":
                        a_write(data)
                        continue
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        out = self.mangle(line + b"\n")
                        if out is None:
                            return
                        _write_all(self.master_b, out)
                    if pending and not re.match(rb"C \d", pending):
                        _write_all(self.master_b, pending)  # ^C and other bytes without a line
                        pending = b""
        finally:
            sel.close()
            try:
                close_a()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in ("master_b", "_slave_a"):
            if hasattr(self, fd):
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
        if self.tcp:
            self.server.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            selectors.DefaultSelector().select(0.01)
            continue
        view = view[n:]
