"""Following many consoles from one process: one selector loop (`Follower`) reads every console
that has bytes, feeds its Capture, and stops each one on its own deadlines, so a sweep can watch
hundreds of machines at once."""

from __future__ import annotations

import selectors
import time
from dataclasses import dataclass
from typing import Callable

from .capture import Capture
from .transport import Port, SerialLost

MAX_READS_PER_WAKE = 64
LINGER_S = 0.3  # after the payload's last line, keep what trails it (mode halt, int 19h) ...
LINGER_MAX_S = 2.0  # ... but never longer than this
TICK_S = 0.01  # the follower's wake-up period for up to TICK_CONSOLES consoles ...
TICK_CONSOLES = 32  # ... growing in proportion beyond that ...
TICK_MAX_S = 0.05  # ... to at most this (576 bytes of a 115200-baud console per read)
FLOOD_BYTES = 4096  # a console this busy is read again at once instead of after the tick


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
