"""A saved capture in any form it is kept in -- a log, a bundle directory, the bundle's tarball --
read back into its Analysis and the run's environment.json (docs/bundle-format.md).

The tarball is read in place (never extracted).  A bundle's own capture is its top-level
console.log (console.raw when the log is missing); a baseline bundle's POST capture is its
`post/` directory, a bundle of its own.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import Exit, KexectestError
from .model import Analysis
from .replay import analyze_bytes

CONSOLE_FILES = ("console.log", "console.raw")  # in this order of preference
ENVIRONMENT_FILE = "environment.json"
POST_DIR = "post"  # a baseline bundle's POST capture


@dataclass
class Saved:
    analysis: Analysis
    environment: dict | None
    source: str  # the path, and the file in it that was read


def _environment(raw: bytes | None, where: str) -> dict | None:
    if raw is None:
        return None
    try:
        env = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KexectestError(f"{where}: environment.json is not JSON", Exit.BAD_INPUT) from None
    return env if isinstance(env, dict) else None


def _from_dir(path: Path, payload) -> Saved:
    for name in CONSOLE_FILES:
        f = path / name
        if f.is_file():
            try:
                data = f.read_bytes()
                env_file = path / ENVIRONMENT_FILE
                env_raw = env_file.read_bytes() if env_file.is_file() else None
            except OSError as exc:
                raise KexectestError(f"{f}: cannot read: {exc.strerror}", Exit.BAD_INPUT) from None
            return Saved(analyze_bytes(data, payload, str(f)), _environment(env_raw, str(path)),
                         str(f))
    raise KexectestError(f"{path}: not a bundle (no console.log or console.raw in it)",
                         Exit.BAD_INPUT)


def _from_tar(path: Path, payload) -> Saved:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name.strip("/"): m for m in tar.getmembers() if m.isfile()}
            tops = {n.split("/")[0] for n in members}
            prefix = f"{tops.pop()}/" if len(tops) == 1 and not any(
                "/" not in n for n in members) else ""

            def read(name: str) -> bytes | None:
                m = members.get(prefix + name)
                f = tar.extractfile(m) if m is not None else None
                return f.read() if f is not None else None
            for name in CONSOLE_FILES:
                data = read(name)
                if data is not None:
                    env = _environment(read(ENVIRONMENT_FILE), str(path))
                    return Saved(analyze_bytes(data, payload, f"{path}:{prefix}{name}"), env,
                                 f"{path}:{prefix}{name}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise KexectestError(f"{path}: cannot read the tarball: {exc}", Exit.BAD_INPUT) from None
    raise KexectestError(f"{path}: not a bundle tarball (no console.log or console.raw in it)",
                         Exit.BAD_INPUT)


def load(path: Path | str, payload=None) -> Saved:
    """The capture kept at `path`: a bundle directory, a bundle tarball, or a log file."""
    path = Path(path)
    if path.is_dir():
        return _from_dir(path, payload)
    if not path.exists():
        raise KexectestError(f"{path}: no such file or directory", Exit.BAD_INPUT)
    try:
        is_tar = path.is_file() and tarfile.is_tarfile(path)
    except (tarfile.TarError, EOFError, OSError) as exc:  # a gzip stream cut short
        raise KexectestError(f"{path}: cannot read the tarball: {exc}", Exit.BAD_INPUT) from None
    if is_tar:
        return _from_tar(path, payload)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KexectestError(f"{path}: cannot read: {exc.strerror}", Exit.BAD_INPUT) from None
    return Saved(analyze_bytes(data, payload, str(path)), None, str(path))
