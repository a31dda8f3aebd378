"""The sweep journal: append-only JSON lines, fsynced, so a killed sweep can resume.

A line is written whole with one write() and then fsynced; a torn last line
(the sweep was killed mid-write, or the disk filled) is ignored when reading, never
fatal.  A write that fails is one line with its exit code (no space: 18).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ..fsutil import make_dirs, os_error

NAME = "journal.jsonl"


class Journal:
    def __init__(self, directory: Path):
        self.path = Path(directory) / NAME
        self._lock = threading.Lock()
        make_dirs(self.path.parent)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_error(self.path, exc, "create") from None

    def write(self, event: str, **fields) -> None:
        record = {"event": event, "t": round(time.time(), 3), **fields}
        data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
            except OSError as exc:
                raise os_error(self.path, exc) from None

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read(directory: Path) -> list[dict]:
    """All whole records of DIR's journal (none when there is no journal)."""
    path = Path(directory) / NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # torn write from a killed sweep
        if isinstance(rec, dict) and "event" in rec:
            records.append(rec)
    return records


def finished(records: list[dict]) -> dict[str, dict]:
    """machine name -> its last 'finish' record."""
    out = {}
    for rec in records:
        if rec["event"] == "finish" and "machine" in rec:
            out[rec["machine"]] = rec
    return out
