"""Files and OS errors, one way for the whole tool: atomic writes, and an OSError turned into
one line with its exit code (a full disk is always Exit.NO_SPACE, 18).

Why one module: a report, a bundle, a journal and a payload are all evidence; each must appear
whole or not at all, and each failure to write must read the same wherever it happens.  Every
write helper here raises only KexectestError (never a bare OSError), and leaves no temporary
file behind when it fails.  A bug in kexectest itself is one line too (`internal_error`, exit
70), its traceback kept in a file for the bug report.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

from .errors import Exit, KexectestError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
CHUNK = 1 << 20


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def os_error(path: Path | str, exc: OSError, verb: str = "write") -> KexectestError:
    """One line for a failed file operation: no space (exit 18) or anything else (exit 10).

    `verb` says what was tried: "write", "read", "create", ..."""
    if is_no_space(exc):
        return KexectestError(f"no space left on the device: cannot {verb} {path}", Exit.NO_SPACE)
    why = exc.strerror or str(exc) or type(exc).__name__
    return KexectestError(f"cannot {verb} {path}: {why}", Exit.BAD_INPUT)


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file in the same directory (so the rename is atomic)."""
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as exc:
        raise os_error(path, exc) from None


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "wb", *, fsync: bool = True) -> Iterator:
    """`with atomic_file(p) as fh: fh.write(...)`: the file appears at `p` whole, when the block
    ends without an error, or not at all (the temporary name is removed)."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        kw = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise os_error(path, exc) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Write to a temporary name in the same directory, then rename into place."""
    with atomic_file(path, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def copy_atomic(src: Path | str, dst: Path | str) -> None:
    """Copy `src` to `dst` through a temporary name (a read error names `src`)."""
    try:
        fin = open(src, "rb")
    except OSError as exc:
        raise os_error(src, exc, "read") from None
    with fin, atomic_file(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)


def rewrite_atomic(path: Path | str, transform: Callable[[bytes], bytes], *,
                   cut: Callable[[bytes], int] | None = None) -> None:
    """Stream `path` through transform(chunk) into a temporary file, then rename over it.

    `cut(data)` says where a chunk may end (index after the last byte of the chunk; -1: nowhere
    yet, keep reading); by default after the last newline, else the last space, so that no token
    is cut in two.  A chunk never grows beyond 4 MiB without a place to cut."""
    path = Path(path)
    cut = cut or _cut_at_line
    try:
        src = open(path, "rb")
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    with src, atomic_file(path, "wb") as dst:
        carry = b""
        while True:
            block = src.read(CHUNK)
            data = carry + block
            if not block:
                dst.write(transform(data))
                break
            end = cut(data)
            if end < 0 and len(data) < 4 * CHUNK:
                carry = data
                continue
            end = len(data) if end < 0 else end
            dst.write(transform(data[:end]))
            carry = data[end:]


def _cut_at_line(data: bytes) -> int:
    at = data.rfind(b"\n")
    if at < 0:
        at = data.rfind(b" ")
    return at + 1 if at >= 0 else -1


def make_dirs(path: Path | str) -> Path:
    """mkdir -p, an OSError as one line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(path, exc, "create") from None
    return path


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def internal_error(exc: BaseException, directory: Path | str | None = None) -> KexectestError:
    """A bug in kexectest as one line (Exit.INTERNAL, 70) asking for a bug report, with its
    traceback saved to a file (in `directory`, else the temporary directory) for that report."""
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    name = f"kexectest-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        write_atomic(where / name, text)
        saved = f"the traceback is in {where / name}"
    except KexectestError:
        saved = "the traceback could not be saved"
    return KexectestError(f"internal error: {last} (a bug in kexectest: please report it; "
                          f"{saved})", Exit.INTERNAL)
