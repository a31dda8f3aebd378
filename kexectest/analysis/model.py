"""The analysis result: one `Analysis` per capture, rendered by output/ into report.json,
summary.md and the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Verdict
from ..trace import Line

VERDICTS = tuple(v.value for v in Verdict)


@dataclass
class Analysis:
    verdict: str
    source: str = "payload"
    summary: str = ""
    hang: dict | None = None
    reset: dict | None = None
    steps: list[dict] = field(default_factory=list)
    e820: list[dict] = field(default_factory=list)
    payload: dict = field(default_factory=lambda: {"version": None, "build_id": None})
    kernel_trouble: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    before_after: dict = field(default_factory=dict)
    signature: dict = field(default_factory=dict)
    garbled: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    handoff: dict = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)
    stop_reason: str = "replay"
    errors: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list, repr=False)  # for context quotes

    def one_line(self) -> str:
        return self.summary

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict, "summary": self.summary, "source": self.source,
            "hang": self.hang, "reset": self.reset, "steps": self.steps, "e820": self.e820,
            "payload": self.payload, "kernel_trouble": self.kernel_trouble, "state": self.state,
            "findings": self.findings, "before_after": self.before_after, "signature": self.signature,
            "garbled": self.garbled, "timing": self.timing, "handoff": self.handoff,
            "hints": self.hints, "stop_reason": self.stop_reason,
        }

    def context(self, around: int | None = None, before: int = 8, after: int = 2) -> list[str]:
        """Console lines around a line index (default: the end of the capture)."""
        if not self.lines:
            return []
        i = len(self.lines) - 1 if around is None else around
        return [ln.text for ln in self.lines[max(0, i - before): i + after + 1]]
