"""Files and OS errors, one way for the whole tool: atomic writes, and an OSError turned into
one line with its exit code (a full disk is always Exit.NO_SPACE).

Why one module: a report, a bundle, a journal and a payload are all evidence; each must appear
whole or not at all, and each failure to write must read the same.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import Exit, KexectestError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def os_error(path: Path | str, exc: OSError) -> KexectestError:
    """One line for a failed write: no space (exit 18) or anything else (exit 10)."""
    if exc.errno in NO_SPACE_ERRNOS:
        return KexectestError(f"no space left writing {path}", Exit.NO_SPACE)
    return KexectestError(f"cannot write {path}: {exc.strerror or exc}", Exit.BAD_INPUT)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary name in the same directory, then rename into place."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(path, exc) from None


def copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.tmp-", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(dst, exc) from None
