"""The trace: bytes from the wire -> Lines and Records (format.py), and saved logs read back
(logs.py).  Nothing above this package parses a `KT ` line itself."""

from __future__ import annotations

from .format import (
                     KINDS,
                     MAX_LINE,
                     Line,
                     LineSplitter,
                     Record,
                     checksum,
                     format_line,
                     parse_line,
                     split_all,
)
from .logs import (CUT_MARK, FAST_MIN, SCRUBBED_MARK, STAMP, bounded_pieces, lines_from_log,
                   mark_scrubbed, prefiltered_lines, stamped_line)

__all__ = ["KINDS", "MAX_LINE", "Line", "LineSplitter", "Record", "checksum", "format_line",
           "parse_line", "split_all", "CUT_MARK", "FAST_MIN", "SCRUBBED_MARK", "STAMP",
           "bounded_pieces", "lines_from_log", "mark_scrubbed", "prefiltered_lines",
           "stamped_line"]
