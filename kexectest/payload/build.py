"""Building the payload with binutils (as, ld): payloads/*.S -> build/kexec_test.elf, and the
same payload as a bzImage (build/kexec_test.bzImage, payload/bzimage.py).

The assembly is the one source of truth; the host only assembles, links and checks it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import Exit, KexectestError
from ..fsutil import copy_atomic, os_error
from . import bzimage
from .image import PayloadImage

SOURCE_NAME = "kexec_test.S"
LDSCRIPT_NAME = "kexec_test.ld"
REPO = Path(__file__).resolve().parents[2]


def payload_dir() -> Path:
    """Where the payload sources live (KEXECTEST_PAYLOAD_DIR overrides, for tests and forks)."""
    env = os.environ.get("KEXECTEST_PAYLOAD_DIR")
    return Path(env) if env else REPO / "payloads"


def default_elf() -> Path:
    return REPO / "build" / "kexec_test.elf"


def default_bzimage() -> Path:
    return REPO / "build" / "kexec_test.bzImage"


def write_bzimage(elf: Path | str, out: Path | str | None = None) -> Path:
    """The payload ELF (configuration block as it is) as a bzImage file (payload/bzimage.py)."""
    from ..fsutil import write_atomic

    out = Path(out) if out else default_bzimage()
    try:
        data = bzimage.make(PayloadImage.open(elf))
    except bzimage.BzImageError as exc:
        raise KexectestError(f"{elf}: {exc}", Exit.BAD_INPUT) from None
    write_atomic(out, data)
    return out


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise KexectestError(
            f"'{name}' not found: install binutils (apt-get install binutils)", Exit.MISSING_TOOL
        )
    return path


# ld's words for a size/placement limit (region overflow, overlap, the script's own ASSERTs)
_LIMIT_RE = re.compile(r"too large|will not fit|overflowed by|overlaps|kexectest payload")


def _first_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"(?i)\b(fatal )?error:", ln):
            return ln
    return lines[0] if lines else "no message"


def build(out: Path | str | None = None) -> Path:
    """Assemble and link the payload; returns the ELF path. Fails on error-level checks."""
    src_dir = payload_dir()
    src, lds = src_dir / SOURCE_NAME, src_dir / LDSCRIPT_NAME
    for f in (src, lds):
        if not f.is_file():
            raise KexectestError(f"payload source missing: {f}", Exit.BAD_INPUT)
    out = Path(out) if out else default_elf()
    as_, ld = _tool("as"), _tool("ld")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(out, exc) from None
    with tempfile.TemporaryDirectory(prefix="kt-build-") as tmp:
        obj = Path(tmp) / "kexec_test.o"
        elf_tmp = Path(tmp) / "kexec_test.elf"
        steps = (
            ("assembler", [as_, "--32", "-I", str(src_dir), "-o", str(obj), str(src)]),
            ("linker", [ld, "-m", "elf_i386", "-T", str(lds), "--build-id=sha1",
                        "-o", str(elf_tmp), str(obj)]),
        )
        for what, cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                msg = _first_error(proc.stderr + proc.stdout)
                if what == "linker" and _LIMIT_RE.search(msg):
                    raise KexectestError(f"payload breaks its limits: {msg}", Exit.PAYLOAD_LIMITS)
                raise KexectestError(f"{what} failed: {msg}", Exit.BAD_INPUT)
        img = PayloadImage.open(elf_tmp)
        errors = [m for lvl, m in img.checks() if lvl == "error"]
        if errors:
            raise KexectestError(f"payload breaks its limits: {errors[0]}", Exit.PAYLOAD_LIMITS)
        try:  # a temporary name of its own: processes that build at once never collide
            copy_atomic(elf_tmp, out)
        except OSError as exc:
            raise os_error(out, exc) from None
    return out


def ensure_built(out: Path | str | None = None) -> Path:
    """The default payload ELF, rebuilt only when a payloads/* source is newer or it is missing."""
    out = Path(out) if out else default_elf()
    src_dir = payload_dir()
    sources = [p for p in src_dir.iterdir() if p.is_file()] if src_dir.is_dir() else []
    if out.is_file() and sources:
        elf_mtime = out.stat().st_mtime
        if all(p.stat().st_mtime <= elf_mtime for p in sources):
            return out
    elif out.is_file() and not sources:
        return out  # an installed copy without sources: use what is there
    return build(out)
