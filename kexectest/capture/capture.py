"""One console's capture: console.raw and console.log written as the bytes arrive.

Why this shape: the raw bytes are the evidence, so they go to `console.raw` (unbuffered) the
moment they are read, and every complete line goes to `console.log` with its arrival time (format
in docs/bundle-format.md).  Nothing read is held only in memory: the live view keeps the last few
lines, the analysis re-reads the log from disk.
"""

from __future__ import annotations

import re
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

from .. import trace
from ..analysis.livestate import LiveState

RAW_NAME = "console.raw"
LOG_NAME = "console.log"
_LOG_RE = re.compile(r"\+(\d+\.\d+)(~?)\t")


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
        self.live = LiveState()
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
