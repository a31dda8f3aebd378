"""One entry for any capture (ours or the classic kexec_test's), and saved logs replayed
through it: `kexectest report`, `run`, the lab and sweeps all end here."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import Exit, KexectestError
from ..trace import Line, lines_from_log
from .classic import analyze_classic, looks_classic
from .core import analyze
from .kernel import REPLAY_FILTER
from .model import Analysis

_NOT_BLANK = re.compile(rb"[^\0\r\n\t ]")


def analyze_capture(lines: list[Line], *, stop_reason: str, silence_s: float | None = None,
                    payload=None) -> Analysis:
    """One entry point for any capture: our payload's trace, or the classic kexec_test's."""
    if not any(ln.record for ln in lines) and looks_classic(lines):
        return analyze_classic(lines, stop_reason=stop_reason, silence_s=silence_s)
    return analyze(lines, stop_reason=stop_reason, silence_s=silence_s, payload=payload)


def analyze_bytes(data: bytes, payload=None, name: str = "log") -> Analysis:
    """Analysis of a saved log's bytes (raw, the collector's console.log, or an email paste)."""
    if not _NOT_BLANK.search(data):  # stops at the first byte that is not blank
        raise KexectestError(f"{name}: empty log", Exit.BAD_INPUT)
    lines, fmt = lines_from_log(data, REPLAY_FILTER)
    a = analyze_capture(lines, stop_reason="replay", payload=payload)
    a.timing["log_format"] = fmt
    return a


def analyze_log(path: Path, payload=None) -> Analysis:
    """Analysis of one saved log (raw bytes, the collector's console.log, or an email paste)."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise KexectestError(f"{path}: is a directory, not a log", Exit.BAD_INPUT)
    except OSError as exc:
        raise KexectestError(f"{path}: cannot read: {exc.strerror}", Exit.BAD_INPUT)
    return analyze_bytes(data, payload, str(path))
