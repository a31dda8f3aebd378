"""Serial consoles: open any pyserial URL and follow consoles to disk without losing a byte.

Why this shape: the raw bytes are the evidence, so they go to `console.raw` (unbuffered) the moment
they are read, and every complete line goes to `console.log` with its arrival time (format in
docs/bundle-format.md).  Nothing read is held only in memory: the live view keeps the last few
lines, the analysis re-reads the log from disk.  One selector loop (`Follower`) follows any number
of consoles, so a sweep can watch hundreds of machines from one process.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import serial

from . import analysis, trace
from .errors import Exit, KexectestError

RAW_NAME = "console.raw"
LOG_NAME = "console.log"
READ_SIZE = 65536
MAX_READS_PER_WAKE = 64
LINGER_S = 0.3  # after the payload's last line, keep what trails it (mode halt, int 19h) ...
LINGER_MAX_S = 2.0  # ... but never longer than this
TICK_S = 0.01  # the follower's wake-up period for up to TICK_CONSOLES consoles ...
TICK_CONSOLES = 32  # ... growing in proportion beyond that ...
TICK_MAX_S = 0.05  # ... to at most this (576 bytes of a 115200-baud console per read)
FLOOD_BYTES = 4096  # a console this busy is read again at once instead of after the tick
PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_LOG_RE = re.compile(r"\+(\d+\.\d+)(~?)\t")


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

    Local ttys and socket:// expose a file descriptor we read with os.read/recv directly (one
    syscall, exactly what is there); every other URL (rfc2217://, loop://, ...) is polled through
    pyserial with `in_waiting`.
    """

    def __init__(self, ser: serial.SerialBase, settings: SerialSettings):
        self.serial = ser
        self.settings = settings
        self.sock = None
        self.fd: int | None = None
        module = type(ser).__module__
        if module == "serial.urlhandler.protocol_socket" and getattr(ser, "_socket", None):
            self.sock = ser._socket
            self.sock.setblocking(False)
            self.fd = self.sock.fileno()
        elif isinstance(getattr(ser, "fd", None), int):
            self.fd = ser.fd

    def fileno(self) -> int:
        if self.fd is None:
            raise OSError("console has no file descriptor")
        return self.fd

    def read_available(self, size: int = READ_SIZE, ready: bool = True) -> bytes:
        """What is there now (maybe b""); SerialLost when the console went away.

        `ready`: select() said the descriptor is readable.  A tty with VMIN=0 answers an empty
        read with 0 bytes, so only an empty read after readiness means the device hung up."""
        if self.sock is not None:
            try:
                data = self.sock.recv(size)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as exc:
                raise SerialLost("lost", f"connection lost: {exc.strerror or exc}") from None
            if not data:
                raise SerialLost("eof", "connection closed by the other end")
            return data
        if self.fd is not None:
            try:
                data = os.read(self.fd, size)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as exc:
                raise SerialLost("lost", f"serial device lost: {exc.strerror or exc}") from None
            if not data and ready:
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
    if _is_local(url):
        if not os.path.exists(url):
            raise KexectestError(f"serial device {url} does not exist", Exit.SERIAL)
        kwargs["exclusive"] = True
    try:
        ser = serial.serial_for_url(_url_for_pyserial(url), do_not_open=True, **kwargs)
        # pyserial flushes the input on open (socket://, tty): bytes the target sent while we
        # connected would be lost, and the kernel's first words matter.  Keep them.
        ser.reset_input_buffer = ser._reset_input_buffer = _keep_input
        try:
            ser.open()
        finally:
            del ser.reset_input_buffer, ser._reset_input_buffer
    except (ValueError, serial.SerialException, OSError) as exc:
        raise _open_error(url, exc) from None
    return Port(ser, settings)


def _url_for_pyserial(url: str) -> str:
    """rfc2217://: ignore the server's answers to SET_CONTROL (ser2net 4 does not send the
    ones pyserial waits for; we use no modem control lines), as labgrid does."""
    if url.lower().startswith("rfc2217://") and "ign_set_control" not in url:
        return url + ("&" if "?" in url else "?") + "ign_set_control"
    return url


def _keep_input() -> None:
    """Stands in for pyserial's input flush while a port opens."""


class Scrubber:
    """Replaces a secret (the login password) in a byte stream before it reaches any file.

    Holds back at most len(secret)-1 bytes, and only while they could be the start of it."""

    def __init__(self, secret: bytes | None, mask: bytes = b"********"):
        self.secret = secret or None
        self.mask = mask
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        if not self.secret:
            return data
        data = (self.pending + data).replace(self.secret, self.mask)
        self.pending = b""
        for k in range(min(len(self.secret) - 1, len(data)), 0, -1):
            if data.endswith(self.secret[:k]):
                self.pending = data[-k:]
                return data[:-k]
        return data

    def flush(self) -> bytes:
        out, self.pending = self.pending, b""
        return out


def format_log_line(line: trace.Line) -> str:
    """`+SSSSS.ssssss<TAB>text`; a `~` before the TAB marks a line cut at the length limit."""
    return f"+{(line.t or 0.0):012.6f}{'~' if line.truncated else ''}\t{line.text}\n"


def _write_all(f, data: bytes) -> None:
    """An unbuffered file write that is whole even when the kernel takes only part of it."""
    n = f.write(data)
    while n is not None and n < len(data):
        data = data[n:]
        n = f.write(data)


def _log_block(lines: list[trace.Line]) -> bytes:
    """format_log_line of every line, as one UTF-8 block (lines of one read share their time)."""
    parts = []
    last_t = prefix = None
    for line in lines:
        t = line.t or 0.0
        if t != last_t:
            last_t, prefix = t, f"+{t:012.6f}"
        parts.append(f"{prefix}~\t{line.text}\n" if line.truncated else f"{prefix}\t{line.text}\n")
    return "".join(parts).encode("utf-8")


class Capture:
    """One console's capture: raw file, timestamped log, live analysis state, bounded tail.

    `feed()` is called with every chunk read (by the follower or by the pexpect driver during the
    login), so bytes read before hand-off are kept too.  The silence clock only runs once `arm()`
    is called (hand-off), and LiveState's stop reasons only count from then on."""

    def __init__(self, directory: Path, *, secret: bytes | None = None, tail_lines: int = 200,
                 clock: Callable[[], float] = time.monotonic):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.raw = open(self.directory / RAW_NAME, "ab", buffering=0)
        self.log = open(self.directory / LOG_NAME, "ab", buffering=0)  # one write per read
        self.scrubber = Scrubber(secret)
        self.splitter = trace.LineSplitter()
        self.live = analysis.LiveState()
        self.tail: deque[trace.Line] = deque(maxlen=tail_lines)
        self.clock = clock
        self.t0 = clock()
        self.started_wall = time.time()
        self.bytes = 0
        self.lines = 0
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.handoff: float | None = None
        self.steps_total: int | None = None
        self.stop_reason: str | None = None
        self.stop_detail: str | None = None
        self.stop_time: float | None = None
        self.deadline_hit: float | None = None  # when the silence/overall deadline fell due
        self.prompt_re: re.Pattern | None = None  # shell prompt: watch for the command failing
        self._partial = b""
        self._idle_checked = True
        self.closed = False

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, data: bytes, now: float | None = None) -> str | None:
        now = self.clock() if now is None else now
        data = self.scrubber.feed(data)
        if not data:
            return None
        _write_all(self.raw, data)
        self.bytes += len(data)
        if self.first_byte is None:
            self.first_byte = now
        self.last_byte = now
        self._idle_checked = False
        if self.prompt_re is not None:
            self._partial = (self._partial + data).rsplit(b"\n", 1)[-1][-512:]
        lines = self.splitter.feed(data, now - self.t0)
        return self._lines(lines) if lines else None

    def _lines(self, lines: list[trace.Line]) -> str | None:
        """Log, tail and live state for the lines of one read: one write to console.log."""
        if not lines:
            return None
        _write_all(self.log, _log_block(lines))
        self.tail.extend(lines)
        self.lines += len(lines)
        stop = None
        feed = self.live.feed
        for line in lines:
            rec = line.record
            if rec is not None and rec.kind == "banner" and "steps" in rec.fields:
                try:
                    self.steps_total = int(rec.fields["steps"])
                except ValueError:
                    pass
            reason = feed(line)
            if reason and self.handoff is not None and stop is None:
                stop = reason
        return stop

    def watch_prompt(self, prompt_re: re.Pattern) -> None:
        """After the command was sent: a shell prompt coming back means the command failed."""
        self._partial = b""
        self.prompt_re = prompt_re

    def arm(self, now: float | None = None) -> None:
        """Hand-off: from now on the silence clock runs and the payload's end stops the capture."""
        self.handoff = self.clock() if now is None else now

    # -- clocks ----------------------------------------------------------------------------
    def silence(self, now: float) -> float:
        start = max(x for x in (self.last_byte, self.handoff, self.t0) if x is not None)
        return max(0.0, now - start)

    def silence_deadline(self, timeout: float | None) -> float | None:
        if timeout is None or self.handoff is None:
            return None
        return max(self.handoff, self.last_byte or self.handoff) + timeout

    def check_idle(self, now: float, idle: float = 0.5) -> str | None:
        """After `idle` s of quiet: did the shell prompt come back (the command failed)?"""
        if (self.prompt_re is None or self._idle_checked or self.last_byte is None
                or now - self.last_byte < idle or self.live.payload_started):
            return None
        self._idle_checked = True
        text = self._partial.decode("utf-8", "replace").replace("\r", "")
        return "command-failed" if self.prompt_re.search(text) else None

    def stop(self, reason: str, now: float, detail: str | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.stop_time, self.stop_detail = reason, now, detail

    def close(self) -> None:
        """Flush what the splitter and scrubber still hold; close the files."""
        if self.closed:
            return
        rest = self.scrubber.flush()
        if rest:
            _write_all(self.raw, rest)
            self.bytes += len(rest)
            self._lines(self.splitter.feed(rest, self.clock() - self.t0))
        self._lines(self.splitter.flush(self.clock() - self.t0))
        self.raw.close()
        self.log.close()
        self.closed = True

    def status(self, now: float) -> dict:
        """A snapshot for the live view."""
        return {"bytes": self.bytes, "lines": self.lines, "current": self.live.current,
                "steps_done": self.live.steps_done, "steps_total": self.steps_total,
                "payload_started": self.live.payload_started,
                "silence": self.silence(now) if self.handoff is not None else None,
                "elapsed": now - self.t0, "tail": list(self.tail)[-8:]}


@dataclass
class _Entry:
    port: Port
    capture: Capture
    timeout: float | None
    max_time: float | None
    on_update: Callable[[Capture, float], tuple[str, str] | None] | None
    done: bool = False
    pending: str | None = None  # "final" seen: keep reading the trailing bytes a moment
    linger_end: float = 0.0
    linger_cap: float = 0.0


class Follower:
    """Follows many consoles in one selector loop until each one stops.

    Why a tick: at 115200 baud a console delivers a line every few milliseconds; waking for each
    one costs more than the work.  After a wake-up the loop sleeps out the rest of `tick`, so each
    wake-up reads many lines from many consoles; deadlines still wake it on time.  By default the
    tick grows with the number of consoles followed (TICK_S up to TICK_MAX_S): a wake-up's fixed
    costs (one pass over every console's deadlines, three system calls per console read) are
    then spread over more bytes, while silence deadlines stay exact."""

    def __init__(self, tick: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.tick = tick  # None: automatic (_tick)
        self.clock = clock
        self.sel = selectors.DefaultSelector()
        self.entries: list[_Entry] = []

    def add(self, port: Port, capture: Capture, *, timeout: float | None = 60.0,
            max_time: float | None = None,
            on_update: Callable[[Capture, float], tuple[str, str] | None] | None = None) -> None:
        entry = _Entry(port, capture, timeout, max_time, on_update)
        self.entries.append(entry)
        if port.fd is not None:
            self.sel.register(port.fd, selectors.EVENT_READ, entry)

    def _finish(self, entry: _Entry, reason: str, now: float, detail: str | None = None) -> None:
        entry.capture.stop(reason, now, detail)
        entry.done = True
        if entry.port.fd is not None:
            try:
                self.sel.unregister(entry.port.fd)
            except (KeyError, ValueError):
                pass

    def _read(self, entry: _Entry, now: float) -> int:
        """Read what is there (a few reads while they come back large); bytes read."""
        total = 0
        for i in range(MAX_READS_PER_WAKE):
            try:
                data = entry.port.read_available(ready=i == 0)
            except SerialLost as lost:
                self._finish(entry, lost.reason, now, str(lost))
                return total
            if not data:
                break
            total += len(data)
            reason = entry.capture.feed(data, now)
            if entry.pending:
                entry.linger_end = min(now + LINGER_S, entry.linger_cap)
            elif reason == "final":
                entry.pending = reason
                entry.linger_end, entry.linger_cap = now + LINGER_S, now + LINGER_MAX_S
            elif reason:
                self._finish(entry, reason, now)
                break
            if len(data) < 1024:  # drained; a tty hands out at most 4 KiB per read
                break
        return total

    def _next_deadline(self, entry: _Entry) -> float | None:
        cap = entry.capture
        if entry.pending:
            return entry.linger_end
        due = cap.silence_deadline(entry.timeout)  # called for every console at every wake-up
        if entry.max_time is not None:
            end = cap.t0 + entry.max_time
            due = end if due is None else min(due, end)
        if cap.prompt_re is not None and cap.last_byte is not None and not cap._idle_checked:
            idle = cap.last_byte + 0.5
            due = idle if due is None else min(due, idle)
        return due

    def _deadlines(self, entry: _Entry, now: float) -> None:
        cap = entry.capture
        if entry.pending:
            if now >= entry.linger_end:
                self._finish(entry, entry.pending, now)
            return
        due = cap.silence_deadline(entry.timeout)
        if due is not None and now >= due:
            cap.deadline_hit = due
            self._finish(entry, "timeout", now, f"{entry.timeout:g} s of silence")
            return
        if entry.max_time is not None and now >= cap.t0 + entry.max_time:
            cap.deadline_hit = cap.t0 + entry.max_time
            self._finish(entry, "max-time", now, f"overall time limit {entry.max_time:g} s")
            return
        if cap.check_idle(now) == "command-failed":
            self._finish(entry, "command-failed", now, "the shell prompt came back")

    def _tick(self, consoles: int) -> float:
        if self.tick is not None:
            return self.tick
        return min(TICK_MAX_S, TICK_S * max(1.0, consoles / TICK_CONSOLES))

    def step(self) -> bool:
        """One wake-up; False when every console has stopped."""
        active = [e for e in self.entries if not e.done]
        if not active:
            return False
        tick = self._tick(len(active))
        start = self.clock()
        polled = [e for e in active if e.port.fd is None]
        deadlines = [d for d in map(self._next_deadline, active) if d is not None]
        wait = min(deadlines) - start if deadlines else 1.0
        wait = max(0.0, min(wait, 1.0, tick if polled else 1.0))
        events = self.sel.select(wait) if self.sel.get_map() else (time.sleep(wait) or [])
        now = self.clock()
        flood = False
        for key, _ in events:
            if not key.data.done:
                flood |= self._read(key.data, now) >= FLOOD_BYTES
        for entry in polled:
            if not entry.done:
                flood |= self._read(entry, now) >= FLOOD_BYTES
        for entry in active:
            if not entry.done:
                self._deadlines(entry, now)
            if entry.on_update is not None:
                res = entry.on_update(entry.capture, now)
                if res and not entry.done:
                    self._finish(entry, res[0], now, res[1])
        rest = tick - (self.clock() - start)
        if events and rest > 0 and not flood:
            time.sleep(rest)
        return any(not e.done for e in self.entries)

    def run(self) -> None:
        """Follow until every console stopped; Ctrl-C stops them all as "interrupted"."""
        try:
            while self.step():
                pass
        except KeyboardInterrupt:
            now = self.clock()
            for entry in self.entries:
                if not entry.done:
                    self._finish(entry, "interrupted", now, "Ctrl-C")

    def close(self) -> None:
        self.sel.close()


def follow(port: Port, capture: Capture, *, timeout: float | None = 60.0,
           max_time: float | None = None,
           on_update: Callable[[Capture, float], tuple[str, str] | None] | None = None) -> str:
    """Capture one console until it stops; returns the stop reason."""
    follower = Follower()
    follower.add(port, capture, timeout=timeout, max_time=max_time, on_update=on_update)
    try:
        follower.run()
    finally:
        follower.close()
    return capture.stop_reason or "interrupted"


def read_log(path: Path, keep_truncated: int = 2) -> Iterator[trace.Line]:
    """The lines of a console.log, as Lines again (for the analysis at the end).

    Bounded: of a run of pieces cut from one huge line only the first `keep_truncated` pieces
    and the last one are kept."""
    run = 0
    with open(path, encoding="utf-8", errors="replace", newline="\n") as fh:
        for raw in fh:
            m = _LOG_RE.match(raw)
            if not m:
                continue
            cut = m.group(2) == "~"
            if cut:
                run += 1
                if run > keep_truncated:
                    continue
            else:
                run = 0
            text = raw[m.end():].rstrip("\n")
            yield trace.parse_line(text.encode("utf-8"), float(m.group(1)), cut)
