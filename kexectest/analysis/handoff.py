"""The kernel's side of a run, by phase: trouble the old kernel printed before its hand-off
line, trouble printed after it but before any payload line (machine_shutdown, machine_kexec,
relocate_kernel, purgatory: a failure of the hand-off itself), the hand-off lines of every
architecture, and kexec-tools' purgatory messages."""

from __future__ import annotations

from ..trace import Line
from .kernel import find_trouble, is_handoff, purgatory_lines
from .model import Trouble

MAX_HANDOFF_LINES = 8


def kernel_end(handoff_at: int | None, first_payload: int | None, reset_at: int | None,
               n: int) -> int:
    """Index of the first line that is not the kernel's: the payload's first line (intact or
    damaged) after the hand-off, or the reset, or the end."""
    ends = [x for x in (first_payload, reset_at) if x is not None and (handoff_at is None or x > handoff_at)]
    return min(ends) if ends else n


def trouble_by_phase(texts: list[str], handoff_at: int | None, kend: int) -> list[Trouble]:
    """Trouble blocks before the hand-off line (it included) and between it and the payload."""
    before_end = handoff_at + 1 if handoff_at is not None else kend
    out = [Trouble(**t, phase="before-handoff") for t in find_trouble(texts, 0, before_end)]
    if handoff_at is not None:
        out += [Trouble(**t, phase="handoff") for t in find_trouble(texts, handoff_at + 1, kend)]
    return out


def handoff_info(lines: list[Line], handoff_at: int | None, kend: int) -> dict:
    """The hand-off line, every hand-off line after it (an architecture prints several:
    "Starting new kernel", then "Bye!"), and purgatory's lines."""
    if handoff_at is None:
        return {"seen": False, "line": None, "lines": [], "purgatory": []}
    texts = [ln.text for ln in lines[handoff_at:kend]]
    return {"seen": True, "line": lines[handoff_at].text,
            "lines": [t for t in texts if is_handoff(t)][:MAX_HANDOFF_LINES],
            "purgatory": purgatory_lines(texts)[:MAX_HANDOFF_LINES]}
