"""The bug-report bundle: a run directory plus a .tar.gz of it (docs/bundle-format.md).

Why this shape: the console is captured straight into the final run directory (a collector that
dies still leaves the bytes), everything written afterwards goes through a temporary name and a
rename, so a reader never sees half a file, and the tarball appears in one rename.  Redaction and
password scrubbing work on the files themselves, so no file can escape them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterable

from ..errors import Exit, KexectestError
from ..fsutil import copy_atomic, write_atomic
from ..fsutil import os_error as _os_error

TEXT_FILES = ("console.raw", "console.log", "report.json", "summary.md", "environment.json",
              "qemu.stderr", "ssh.log")
CHUNK = 1 << 20


def new_run_dir(out_dir: Path, now: float | None = None) -> Path:
    """Create OUT/run-YYYYMMDD-HHMMSS-XXXX (the capture is written into it from the start)."""
    out_dir = Path(out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            path = out_dir / f"run-{stamp}-{secrets.token_hex(2)}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise _os_error(out_dir, exc) from None
    raise KexectestError(f"cannot create a run directory in {out_dir}", Exit.BAD_INPUT)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# -- redaction ---------------------------------------------------------------------------------
_NAME_PATTERNS = [
    re.compile(rb"(?m)^\s*([A-Za-z0-9][\w.-]*) login:"),
    re.compile(rb"\b[a-z_][\w.-]*@([A-Za-z0-9][\w.-]*?)[:\s][^\n]{0,80}?[#$]"),
    re.compile(rb"Hostname set to <([^>\s]+)>"),
    re.compile(rb"(?i)\b(?:node ?name|hostname)\s*[=:]\s*\"?([A-Za-z0-9][\w.-]*)"),
]
_GENERIC_NAMES = {b"localhost", b"(none)", b"none", b"localdomain", b"root", b"root@"}
_MAC = re.compile(rb"\b[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}\b")
_IPV4 = re.compile(rb"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_IPV6 = re.compile(rb"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_SERIAL = re.compile(
    rb"(?i)(\b\w*?serial(?:[ _-]?(?:number|no|num|string|str))?\"?\s*[:=]\s*)(\"?)([^\s\",}<]+)")


class Redactor:
    """Stable placeholders for host names, addresses and serial numbers across a bundle."""

    def __init__(self, names: Iterable[str | bytes] = ()):
        self.names: set[bytes] = set()
        self.maps: dict[str, dict[bytes, bytes]] = {"host": {}, "ip": {}, "mac": {}, "serial": {}}
        for n in names:
            self.add_name(n)
        self._name_re: re.Pattern | None = None

    def add_name(self, name: str | bytes) -> None:
        if isinstance(name, str):
            name = name.encode("utf-8", "replace")
        name = name.strip().rstrip(b".")
        if len(name) < 2 or name.lower() in _GENERIC_NAMES or name.startswith(b"<"):
            return
        self.names.add(name)
        short = name.split(b".", 1)[0]
        if len(short) >= 2 and short.lower() not in _GENERIC_NAMES:
            self.names.add(short)
        self._name_re = None

    def collect(self, data: bytes) -> None:
        """Learn the target's host names from its prompts and boot messages."""
        for pat in _NAME_PATTERNS:
            for m in pat.finditer(data):
                self.add_name(m.group(1))

    def _token(self, kind: str, value: bytes) -> bytes:
        table = self.maps[kind]
        if value not in table:
            table[value] = f"<{kind}-{len(table) + 1}>".encode()
        return table[value]

    def apply(self, data: bytes, json_file: bool = False) -> bytes:
        def serial(m: re.Match) -> bytes:
            value = m.group(3)
            if value.startswith(b"<") or value.lower() in (b"none", b"null", b"0"):
                return m.group(0)
            tok = self._token("serial", value)
            if json_file and not m.group(2):
                tok = b'"' + tok + b'"'
            return m.group(1) + m.group(2) + tok

        def ipv4(m: re.Match) -> bytes:
            try:
                ipaddress.IPv4Address(m.group(0).decode())
            except ValueError:
                return m.group(0)
            return self._token("ip", m.group(0))

        def ipv6(m: re.Match) -> bytes:
            text = m.group(0)
            if len(text) < 3:
                return text
            try:
                ipaddress.IPv6Address(text.decode().split("%")[0])
            except ValueError:
                return text
            return self._token("ip", text)

        data = _SERIAL.sub(serial, data)
        data = _MAC.sub(lambda m: self._token("mac", m.group(0).lower()), data)
        data = _IPV6.sub(ipv6, data)
        data = _IPV4.sub(ipv4, data)
        if self.names:
            if self._name_re is None:
                alts = b"|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
                self._name_re = re.compile(rb"(?<![\w-])(?:" + alts + rb")(?![\w-])")
            data = self._name_re.sub(lambda m: self._token("host", m.group(0)), data)
        return data


def local_names() -> list[str]:
    names = [socket.gethostname()]
    try:
        names.append(socket.getfqdn())
    except OSError:
        pass
    return names


def _rewrite(path: Path, transform) -> None:
    """Stream `path` through transform(chunk) into a temporary file, then rename over it.

    Chunks end at a newline (or a space) so no token is cut in two."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            carry = b""
            while True:
                block = src.read(CHUNK)
                data = carry + block
                if not block:
                    dst.write(transform(data))
                    break
                cut = data.rfind(b"\n")
                if cut < 0:
                    cut = data.rfind(b" ")
                if cut < 0 and len(data) < 4 * CHUNK:
                    carry = data
                    continue
                cut = len(data) - 1 if cut < 0 else cut
                dst.write(transform(data[: cut + 1]))
                carry = data[cut + 1:]
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _os_error(path, exc) from None


def _scan(path: Path, fn) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            fn(block)


def finalize(run_dir: Path, *, report: dict | None, summary: str | None, environment: dict,
             payload_elf: Path | None = None, extra_files: dict[str, Path] | None = None,
             redact: bool = False, secret: str | None = None) -> Path:
    """Write the rest of the bundle into `run_dir`, redact/scrub, and pack `run_dir.tar.gz`."""
    run_dir = Path(run_dir)
    if report is not None:
        write_atomic(run_dir / "report.json", json.dumps(report, indent=2, sort_keys=False) + "\n")
    if summary is not None:
        write_atomic(run_dir / "summary.md", summary)
    if payload_elf is not None and Path(payload_elf).is_file():
        copy_atomic(Path(payload_elf), run_dir / "payload.elf")
        digest = sha256_file(run_dir / "payload.elf")
        write_atomic(run_dir / "payload.elf.sha256", f"{digest}  payload.elf\n")
        environment = {**environment, "payload": {"path": str(payload_elf), "sha256": digest}}
    for name, src in (extra_files or {}).items():
        if src is not None and Path(src).is_file():
            copy_atomic(Path(src), run_dir / name)
    write_atomic(run_dir / "environment.json", json.dumps(environment, indent=2) + "\n")

    texts = [run_dir / n for n in TEXT_FILES if (run_dir / n).is_file()]
    secret_b = secret.encode("utf-8") if secret else None
    if redact:
        red = Redactor(local_names())
        for path in texts:
            if path.name in ("console.raw", "console.log"):
                _scan(path, red.collect)
        for path in texts:
            is_json = path.suffix == ".json"
            _rewrite(path, lambda b, j=is_json: red.apply(b, j))
    if secret_b:
        for path in texts:
            found = []
            _scan(path, lambda b: found.append(secret_b in b))
            if any(found) or path.stat().st_size > CHUNK:
                _rewrite(path, lambda b: b.replace(secret_b, b"********"))
    return make_tarball(run_dir)


def make_tarball(run_dir: Path) -> Path:
    """Pack run_dir into run_dir.tar.gz through a temporary name."""
    final = run_dir.parent / f"{run_dir.name}.tar.gz"
    fd, tmp = tempfile.mkstemp(prefix=f"{run_dir.name}.tar.gz.tmp-", dir=run_dir.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for path in sorted(run_dir.iterdir()):
                if path.name.startswith("."):
                    continue
                tar.add(path, arcname=f"{run_dir.name}/{path.name}")
        os.replace(tmp, final)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _os_error(final, exc) from None
    return final
