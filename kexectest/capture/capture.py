"""One console's capture: console.raw and console.log written as the bytes arrive.

Why this shape: the raw bytes are the evidence, so they go to `console.raw` (unbuffered) the
moment they are read, and every complete line goes to `console.log` with its arrival time (format
in docs/bundle-format.md, output/consolelog.py).  Nothing read is held only in memory: the live
view keeps the last few lines, the analysis re-reads the log from disk.

The login password is masked before it reaches either file; a line whose text was masked is
marked in console.log (`*`) and never read as a payload answer.  A short password is masked
only in the login dialogue (from sending it until the command is sent), so the evidence is
never rewritten.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

from .. import trace
from ..analysis.livestate import LiveState
from ..errors import KexectestError
from ..fsutil import make_dirs, os_error
from ..output import consolelog
from ..output.bundle import MASK, scrub_everywhere

RAW_NAME = "console.raw"
LOG_NAME = consolelog.NAME
WRITE_FAILED = "write-failed"  # the stop reason when console.raw or console.log cannot be written
_LOG_RE = consolelog.LINE_RE
format_log_line = consolelog.format_line


class Scrubber:
    """Replaces a secret (the login password) in a byte stream before it reaches any file.

    Holds back at most len(secret)-1 bytes, and only while they could be the start of it."""

    def __init__(self, secret: bytes | None, mask: bytes = MASK):
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

    def stop(self) -> bytes:
        """No more scrubbing from here on; returns the bytes held back."""
        self.secret = None
        return self.flush()


class LineScrubber:
    """The same secret masked in the text of Lines (console.log, the live view), each changed
    line marked `scrubbed`.  A secret cut in two at the length limit is found across the cut:
    a piece that ends with the start of the secret is held back until the next piece comes."""

    def __init__(self, secret: bytes | None, mask: bytes = MASK):
        self.secret = secret.decode("utf-8", "replace") if secret else None
        self.mask = mask.decode()
        self.held: trace.Line | None = None

    def feed(self, lines: list[trace.Line]) -> list[trace.Line]:
        if not self.secret:
            return self.flush() + lines if self.held else lines
        out: list[trace.Line] = []
        for line in lines:
            if self.held is not None:
                self._join(self.held, line)
                out.append(self.held)
                self.held = None
            if self.secret in line.text:
                line.text = line.text.replace(self.secret, self.mask)
                consolelog.mark_scrubbed(line)
            if line.truncated and self._starts_secret(line.text):
                self.held = line
            else:
                out.append(line)
        return out

    def _starts_secret(self, text: str) -> int:
        """Length of the longest proper prefix of the secret that `text` ends with (0: none)."""
        for k in range(min(len(self.secret) - 1, len(text)), 0, -1):
            if text.endswith(self.secret[:k]):
                return k
        return 0

    def _join(self, first: trace.Line, second: trace.Line) -> None:
        k = self._starts_secret(first.text)
        rest = self.secret[k:]
        if k and second.text.startswith(rest):
            first.text = first.text[:-k] + self.mask
            second.text = second.text[len(rest):]
            consolelog.mark_scrubbed(first)
            consolelog.mark_scrubbed(second)

    def flush(self) -> list[trace.Line]:
        held, self.held = self.held, None
        return [held] if held is not None else []

    def stop(self) -> list[trace.Line]:
        self.secret = None
        return self.flush()


def _write_all(f, data: bytes) -> None:
    """An unbuffered file write that is whole even when the kernel takes only part of it."""
    n = f.write(data)
    while n is not None and n < len(data):
        data = data[n:]
        n = f.write(data)


class Capture:
    """One console's capture: raw file, timestamped log, live analysis state, bounded tail.

    `feed()` is called with every chunk read (by the follower or by the pexpect driver during the
    login), so bytes read before hand-off are kept too.  The silence clock only runs once `arm()`
    is called (hand-off), and LiveState's stop reasons only count from then on.

    A file that cannot be written (no space, an I/O error, the directory gone) stops the capture
    with the reason WRITE_FAILED and `write_error` set: console.raw keeps the exact prefix of the
    console written so far, console.log its whole lines."""

    def __init__(self, directory: Path, *, secret: bytes | None = None, tail_lines: int = 200,
                 clock: Callable[[], float] = time.monotonic):
        self.directory = make_dirs(directory)
        self.raw = self._open(RAW_NAME)
        try:
            self.log = self._open(LOG_NAME)  # one write per read
        except KexectestError:
            self.raw.close()
            raise
        self.log_size = os.fstat(self.log.fileno()).st_size
        self.secret = secret or None
        self.scrub_everywhere = scrub_everywhere(secret)
        first = secret if self.scrub_everywhere else None  # a short one: from secret_sent()
        self.scrubber = Scrubber(first)
        self.line_scrubber = LineScrubber(first)
        self.splitter = trace.LineSplitter()
        self.live = LiveState()
        self.tail: deque[trace.Line] = deque(maxlen=tail_lines)
        self.clock = clock
        self.t0 = clock()
        self.started_wall = time.time()
        self.bytes = 0
        self.lines = 0
        self.scrubbed_lines = 0
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.handoff: float | None = None
        self.steps_total: int | None = None
        self.stop_reason: str | None = None
        self.stop_detail: str | None = None
        self.stop_time: float | None = None
        self.deadline_hit: float | None = None  # when the silence/overall deadline fell due
        self.prompt_re: re.Pattern | None = None  # shell prompt: watch for the command failing
        self.write_error: KexectestError | None = None
        self._partial = b""
        self._idle_checked = True
        self.closed = False

    def _open(self, name: str):
        try:
            return open(self.directory / name, "ab", buffering=0)
        except OSError as exc:
            raise os_error(self.directory / name, exc, "create") from None

    # -- writing ---------------------------------------------------------------------------
    def _write_raw(self, data: bytes) -> bool:
        try:
            _write_all(self.raw, data)
        except OSError as exc:
            try:  # a part of `data` may have gone in: console.raw is still a prefix of the wire
                self.bytes = os.fstat(self.raw.fileno()).st_size
            except OSError:
                pass
            self._failed(RAW_NAME, exc)
            return False
        self.bytes += len(data)
        return True

    def _write_log(self, block: bytes) -> bool:
        """One block of whole lines; on failure console.log is cut back to its last whole line."""
        try:
            _write_all(self.log, block)
        except OSError as exc:
            try:
                os.ftruncate(self.log.fileno(), self.log_size)
            except OSError:
                pass
            self._failed(LOG_NAME, exc)
            return False
        self.log_size += len(block)
        return True

    def _failed(self, name: str, exc: OSError) -> None:
        if self.write_error is None:
            self.write_error = os_error(self.directory / name, exc)
            self.stop(WRITE_FAILED, self.clock(), str(self.write_error))

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, data: bytes, now: float | None = None) -> str | None:
        if self.write_error is not None:
            return WRITE_FAILED
        now = self.clock() if now is None else now
        if not data:
            return None
        if self.first_byte is None:
            self.first_byte = now
        self.last_byte = now
        self._idle_checked = False
        raw = self.scrubber.feed(data)
        if raw and not self._write_raw(raw):
            return WRITE_FAILED
        if self.prompt_re is not None:
            self._partial = (self._partial + data).rsplit(b"\n", 1)[-1][-512:]
        lines = self.splitter.feed(data, now - self.t0)
        return self._lines(lines) if lines else None

    def _lines(self, lines: list[trace.Line], scrub: bool = True) -> str | None:
        """Log, tail and live state for the lines of one read: one write to console.log."""
        if scrub:
            lines = self.line_scrubber.feed(lines)
        if not lines:
            return None
        if not self._write_log(consolelog.format_block(lines)):
            return WRITE_FAILED
        self.tail.extend(lines)
        self.lines += len(lines)
        stop = None
        feed = self.live.feed
        for line in lines:
            if line.scrubbed:
                self.scrubbed_lines += 1
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
        """Hand-off: from now on the silence clock runs and the payload's end stops the capture.

        It also ends the login dialogue: a secret too short to be masked everywhere is masked no
        more, so the evidence from here on is written as it came."""
        self.handoff = self.clock() if now is None else now
        if not self.scrub_everywhere:
            self.end_dialogue()

    def secret_sent(self) -> None:
        """The password is about to go to the target: from here until arm() a short one is
        masked too (its echo, a "Login incorrect" dialogue)."""
        if self.secret and not self.scrub_everywhere and self.handoff is None:
            self.scrubber.secret = self.secret
            self.line_scrubber.secret = self.secret.decode("utf-8", "replace")

    def end_dialogue(self) -> None:
        """Stop masking the secret (what the scrubbers still hold is written as it is)."""
        rest = self.scrubber.stop()
        if rest and self.write_error is None:
            self._write_raw(rest)
        held = self.line_scrubber.stop()
        if held and self.write_error is None:
            self._lines(held, scrub=False)

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
        """Write what the splitter and scrubbers still hold; close the files.  Never raises: a
        write that fails here is kept in `write_error`."""
        if self.closed:
            return
        rest = self.scrubber.flush()  # raw bytes held back: the splitter has them already
        if rest and self.write_error is None:
            self._write_raw(rest)
        if self.write_error is None:
            self._lines(self.splitter.flush(self.clock() - self.t0))
        if self.write_error is None:
            self._lines(self.line_scrubber.flush(), scrub=False)
        for f, name in ((self.raw, RAW_NAME), (self.log, LOG_NAME)):
            try:
                f.close()
            except OSError as exc:
                self._failed(name, exc)
        self.closed = True

    def status(self, now: float) -> dict:
        """A snapshot for the live view."""
        return {"bytes": self.bytes, "lines": self.lines, "current": self.live.current,
                "steps_done": self.live.steps_done, "steps_total": self.steps_total,
                "payload_started": self.live.payload_started,
                "silence": self.silence(now) if self.handoff is not None else None,
                "elapsed": now - self.t0, "tail": list(self.tail)[-8:]}


def read_log(path: Path, keep_truncated: int = 2) -> Iterator[trace.Line]:
    """The lines of a console.log, as Lines again (consolelog.read)."""
    return consolelog.read(path, keep_truncated)
