"""console.log's line format (docs/bundle-format.md): written by the capture, rewritten by the
bundle's scrubbing and redaction, read back for the analysis.

    +SSSSS.ssssss[~][*]<TAB>text

`~`: a piece of a line longer than the length limit.  `*`: kexectest changed this line's text
(a secret masked, a host name or address redacted): it is not what the wire carried, so it is
read back with `Line.scrubbed` set and never as a payload record.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import trace
from ..fsutil import os_error, rewrite_atomic

NAME = "console.log"
CUT_MARK, SCRUBBED_MARK = trace.CUT_MARK, trace.SCRUBBED_MARK
LINE_RE = re.compile(trace.STAMP.pattern.decode())  # the stamp, for text lines


def format_line(line: trace.Line) -> str:
    """One console.log line (with its newline) for `line`."""
    return (f"+{(line.t or 0.0):012.6f}{CUT_MARK if line.truncated else ''}"
            f"{SCRUBBED_MARK if line.scrubbed else ''}\t{line.text}\n")


def format_block(lines: Iterable[trace.Line]) -> bytes:
    """format_line of every line as one UTF-8 block (the lines of one read share their time)."""
    parts = []
    last_t = prefix = None
    for line in lines:
        t = line.t or 0.0
        if t != last_t:
            last_t, prefix = t, f"+{t:012.6f}"
        if line.truncated or line.scrubbed:
            marks = (CUT_MARK if line.truncated else "") + (SCRUBBED_MARK if line.scrubbed else "")
            parts.append(f"{prefix}{marks}\t{line.text}\n")
        else:
            parts.append(f"{prefix}\t{line.text}\n")
    return "".join(parts).encode("utf-8")


def parse_line(raw: str) -> trace.Line | None:
    """A Line from one console.log line (None when it is not one)."""
    return trace.stamped_line(raw.rstrip("\n").encode("utf-8"))


mark_scrubbed = trace.mark_scrubbed


def read(path: Path, keep_truncated: int = 2) -> Iterator[trace.Line]:
    """The lines of a console.log, as Lines again (for the analysis at the end).

    Bounded: of a run of pieces cut from one huge line only the first `keep_truncated` pieces
    are kept."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise os_error(path, exc, "read") from None

    run = 0
    with fh:
        for raw in fh:
            line = trace.stamped_line(raw.rstrip(b"\n"))
            if line is None:
                continue
            run = run + 1 if line.truncated else 0
            if run <= keep_truncated:
                yield line


def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Apply `change` to the text of every line of a console.log; a line it changes gets the
    `*` mark.  The timestamps and marks already there are kept."""

    def transform(block: bytes) -> bytes:
        out = []
        for raw in block.splitlines(keepends=True):
            m = trace.STAMP.match(raw)
            if not m:
                out.append(change(raw))
                continue
            body = raw[m.end():]
            new = change(body)
            if new == body:
                out.append(raw)
            else:
                out.append(b"+" + m.group(1) + m.group(2) + b"*\t" + new)
        return b"".join(out)

    rewrite_atomic(path, transform)
