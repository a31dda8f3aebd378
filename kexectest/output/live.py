"""What the user sees while a capture runs: a rich live panel, plain lines, or nothing.

Why separate: the capture loop only hands over `Capture` snapshots; how they are shown (terminal,
pipe, --quiet, --json) is decided here, once, from the one Console made at the edge.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

REFRESH_S = 0.25  # at most 4 redraws a second, whatever the console's line rate
PLAIN_MAX = 300  # plain output shows the start of very long lines; console.log has them whole


class View:
    """Shows nothing (--quiet, --json); the base of the other views."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def stage(self, text: str) -> None:
        """A driving stage: "waiting for the login prompt", "command sent", ..."""

    def update(self, capture, now: float) -> None:
        """Called by the capture loop after every wake-up."""


class PlainView(View):
    """Plain line output for pipes and logs: every console line once, with its time."""

    def __init__(self, console: Console):
        self.console = console
        self.seen = 0

    def stage(self, text: str) -> None:
        self.console.print(f"kexectest: {text}", markup=False, highlight=False)

    def update(self, capture, now: float) -> None:
        new = capture.lines - self.seen
        if new <= 0:
            return
        tail = list(capture.tail)[-new:] if new <= len(capture.tail) else list(capture.tail)
        if new > len(capture.tail):
            self.console.print(f"... {new - len(capture.tail)} lines (see console.log)",
                               markup=False, highlight=False)
        for line in tail:
            text = line.text if len(line.text) <= PLAIN_MAX else line.text[:PLAIN_MAX] + "…"
            self.console.print(f"{line.t or 0.0:10.3f}  {text}", markup=False,
                               highlight=False, soft_wrap=True)
        self.seen = capture.lines


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class RichView(View):
    """The live panel: current step, steps done/total, silence timer, bytes, last lines."""

    def __init__(self, console: Console, title: str, timeout: float | None, tail: int = 8):
        self.console = console
        self.title = title
        self.timeout = timeout
        self.tail = tail
        self.stage_text = "opening the console"
        self.last_draw = 0.0
        self.status: dict | None = None
        self.live = Live(console=console, auto_refresh=False, transient=False,
                         redirect_stdout=False, redirect_stderr=False)

    def __enter__(self):
        self.live.start()
        self.live.update(self._render(), refresh=True)
        return self

    def __exit__(self, *exc):
        self.live.update(self._render(), refresh=True)
        self.live.stop()
        return False

    def stage(self, text: str) -> None:
        self.stage_text = text
        self.live.update(self._render(), refresh=True)

    def update(self, capture, now: float) -> None:
        wall = time.monotonic()
        if wall - self.last_draw < REFRESH_S:
            return
        self.last_draw = wall
        self.status = capture.status(now)
        self.live.update(self._render(), refresh=True)

    def _render(self):
        st = self.status
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("stage", self.stage_text)
        if st is not None:
            cur = st["current"]
            grid.add_row("step", f"{cur[0]:03d} {cur[1]}" if cur else
                         ("-" if not st["payload_started"] else "between steps"))
            total = st["steps_total"]
            grid.add_row("done", f"{st['steps_done']}" + (f" / {total}" if total else ""))
            if st["silence"] is not None:
                lim = f" / {self.timeout:g} s" if self.timeout else ""
                grid.add_row("silence", f"{st['silence']:.1f} s{lim}")
            grid.add_row("received", f"{_fmt_bytes(st['bytes'])}, {st['lines']} lines, "
                         f"{st['elapsed']:.1f} s")
        lines = Text()
        width = max(20, self.console.width - 6)
        for line in (st["tail"][-self.tail:] if st else []):
            text = line.text if len(line.text) <= width else line.text[: width - 1] + "…"
            style = "green" if line.record else ("red" if line.bad_checksum else "")
            lines.append(text + "\n", style=style)
        return Panel(Group(grid, lines), title=self.title, title_align="left")


def make_view(console: Console | None, *, quiet: bool, json_output: bool, title: str,
              timeout: float | None) -> View:
    """Rich panel on a terminal, plain lines on a pipe, nothing for --quiet/--json."""
    if quiet or json_output or console is None:
        return View()
    if console.is_terminal:
        return RichView(console, title, timeout)
    return PlainView(console)
