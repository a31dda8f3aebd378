"""The bug-report bundle: a run directory plus a .tar.gz of it (docs/bundle-format.md).

Why this shape: the console is captured straight into the final run directory (a collector that
dies still leaves the bytes), everything written afterwards goes through a temporary name and a
rename, so a reader never sees half a file, and the tarball appears in one rename.  Redaction and
password scrubbing work on the files themselves, so no file can escape them; JSON is redacted as
JSON (values, never keys or structure), and a console.log line they change is marked.

A file that cannot be written (a full disk, an I/O error) does not stop the others: the bundle is
written as far as it can be, then one error says what is missing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import socket
import string
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import Exit, KexectestError
from ..fsutil import atomic_file, copy_atomic, os_error, rewrite_atomic, write_atomic
from . import consolelog

CHUNK = 1 << 20
CAPTURED = ("console.raw", "console.log", "ssh.log")  # written while the run happens
MASK = b"********"
SAFE_SECRET_LEN = 8  # a secret this long (and not all hex digits) is masked wherever it occurs


def scrub_everywhere(secret: bytes | str | None) -> bool:
    """Whether a secret may be masked in the whole capture, not only in the login dialogue.

    A short secret, or one of hex digits only, also occurs by chance in the evidence (timestamps,
    addresses, the payload's hex dumps): masking it there would rewrite what the firmware said.
    Such a secret is masked only until the command that triggers kexec is sent."""
    if not secret:
        return False
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8", "replace")
    return len(secret) >= SAFE_SECRET_LEN and not all(c in string.hexdigits for c in secret)


class BundleIncomplete(KexectestError):
    """Some files of the bundle could not be written; the others were."""

    def __init__(self, first: KexectestError, run_dir: Path, missing: list[str],
                 tarball: Path | None):
        super().__init__(f"{first} (not written: {', '.join(missing)}; the rest is in "
                         f"{run_dir})", first.code)
        self.first = first
        self.missing = missing
        self.tarball = tarball


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
        raise os_error(out_dir, exc, "create a run directory in") from None
    raise KexectestError(f"cannot create a run directory in {out_dir}", Exit.BAD_INPUT)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    return h.hexdigest()


# -- redaction ---------------------------------------------------------------------------------
# where the target's host names show: a getty prompt line ("NAME login: [USER]" and nothing
# else, so "Last login: Mon ..." is not one), a shell prompt at the start of a line (after the
# terminal escapes bash prints there, e.g. bracketed paste on), boot messages
_NAME_PATTERNS = [
    re.compile(rb"(?m)^[\r \t]*([A-Za-z0-9][\w.-]*) login: *(?:[\w.-]+)? *\r?$"),
    re.compile(rb"(?m)^(?:[\r \t]|\x1b\[[0-9;?]*[A-Za-z])*\[?[a-z_][\w.-]*@([A-Za-z0-9][\w.-]*?)"
               rb"[:\s][^\n]{0,80}?[#$]"),
    re.compile(rb"Hostname set to <([^>\s]+)>"),
    re.compile(rb"(?i)\b(?:node ?name|hostname)\s*[=:]\s*\"?([A-Za-z0-9][\w.-]*)"),
]
_GENERIC_NAMES = {b"localhost", b"(none)", b"none", b"localdomain", b"root", b"root@"}
_MAC = re.compile(rb"\b[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}\b")
_IPV4 = re.compile(rb"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_IPV6 = re.compile(rb"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_SERIAL_SUFFIX = rb"(?:[ _-]?(?:number|no|num|string|str))"
# serial numbers in text: KEY=VALUE where the key ends in "serial" (product_serial=, serial=),
# and "Serial Number: VALUE" / "serial_no: VALUE"; not "Serial: 8250/16550 driver"
_SERIAL_TEXT = [
    re.compile(rb"(?i)(\b[\w.-]*serial" + _SERIAL_SUFFIX + rb"?=)(\"?)([^\s\",}<]+)"),
    re.compile(rb"(?i)(\bserial" + _SERIAL_SUFFIX + rb"\.?[ \t]*:[ \t]*)(\"?)([^\s\",}<]+)"),
]
# JSON keys whose scalar values are serial numbers
_SERIAL_KEY = re.compile(r"(?i)\w*serial(?:[ _-]?(?:number|no|num|string|str))?")  # fullmatch
_NOT_A_SERIAL = (b"none", b"null", b"0", b"")


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
        """Redact a text (bytes).  For a JSON document use `apply_json`: `json_file` is kept for
        callers holding JSON as text, which is parsed and redacted as JSON."""
        if json_file:
            return (json.dumps(self.apply_json(json.loads(data)), indent=2) + "\n").encode()

        def serial(m: re.Match) -> bytes:
            value = m.group(3)
            if value.startswith(b"<") or value.lower() in _NOT_A_SERIAL:
                return m.group(0)
            return m.group(1) + m.group(2) + self._token("serial", value)

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

        for pattern in _SERIAL_TEXT:
            data = pattern.sub(serial, data)
        data = _MAC.sub(lambda m: self._token("mac", m.group(0).lower()), data)
        data = _IPV6.sub(ipv6, data)
        data = _IPV4.sub(ipv4, data)
        if self.names:
            if self._name_re is None:
                alts = b"|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
                self._name_re = re.compile(rb"(?<![\w-])(?:" + alts + rb")(?![\w-])")
            data = self._name_re.sub(lambda m: self._token("host", m.group(0)), data)
        return data

    def apply_json(self, doc: Any, key: str | None = None) -> Any:
        """A JSON value redacted: keys and structure kept; a scalar under a serial-number key
        becomes its placeholder, every string is redacted as text."""
        if isinstance(doc, dict):
            return {k: self.apply_json(v, k) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self.apply_json(v, key) for v in doc]
        if isinstance(doc, bool) or doc is None:
            return doc
        if key is not None and _SERIAL_KEY.fullmatch(key) and isinstance(doc, (str, int, float)):
            value = str(doc).encode("utf-8", "replace")
            if value.lower() not in _NOT_A_SERIAL and not value.startswith(b"<"):
                return self._token("serial", value).decode()
        if isinstance(doc, str):
            return self.apply(doc.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")
        return doc


def json_strings(doc: Any, change: Callable[[str], str]) -> Any:
    """`doc` with `change` applied to every string value (keys and structure kept)."""
    if isinstance(doc, dict):
        return {k: json_strings(v, change) for k, v in doc.items()}
    if isinstance(doc, list):
        return [json_strings(v, change) for v in doc]
    return change(doc) if isinstance(doc, str) else doc


def local_names() -> list[str]:
    names = [socket.gethostname()]
    try:
        names.append(socket.getfqdn())
    except OSError:
        pass
    return names


def _rewrite(path: Path, transform) -> None:
    """Stream `path` through transform(chunk) into a temporary file, then rename over it."""
    rewrite_atomic(path, transform)


def _contains(path: Path, needle: bytes) -> bool:
    """Whether `needle` occurs in the file (also across read boundaries)."""
    tail = b""
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                if needle in tail + block:
                    return True
                tail = block[-len(needle):]
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    return False


def _scan(path: Path, fn) -> None:
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                fn(block)
    except OSError as exc:
        raise os_error(path, exc, "read") from None


class _Writer:
    """Runs the bundle's steps one after the other; a step that fails is remembered and the
    next one still runs (a later, smaller file may fit where a larger one did not)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.errors: list[tuple[str, KexectestError]] = []

    def do(self, name: str, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except KexectestError as exc:
            self.errors.append((name, exc))
            return False
        except OSError as exc:
            self.errors.append((name, os_error(self.run_dir / name, exc)))
            return False

    def failure(self, tarball: Path | None) -> BundleIncomplete:
        missing = [name for name, _ in self.errors]
        if tarball is None:
            missing.append("the tarball")
        first = next((e for _, e in self.errors if e.code == Exit.NO_SPACE), self.errors[0][1])
        return BundleIncomplete(first, self.run_dir, list(dict.fromkeys(missing)), tarball)


def finalize(run_dir: Path, *, report: dict | None, summary: str | None, environment: dict,
             payload_elf: Path | None = None, extra_files: dict[str, Path] | None = None,
             redact: bool = False, secret: str | None = None) -> Path:
    """Write the rest of the bundle into `run_dir`, redact/scrub, and pack `run_dir.tar.gz`.

    Returns the tarball.  Raises BundleIncomplete (exit 18 when space ran out) after writing
    every file it could; no tarball is made when redaction or scrubbing could not be finished,
    so an unredacted file never leaves in one."""
    run_dir = Path(run_dir)
    environment = dict(environment)
    w = _Writer(run_dir)
    secret_b = secret.encode("utf-8") if secret and scrub_everywhere(secret) else None
    red = Redactor(local_names()) if redact else None
    clean = True  # every file redacted / scrubbed as asked

    def learn_names():
        for name in ("console.raw", "console.log"):
            if (run_dir / name).is_file():
                _scan(run_dir / name, red.collect)
    if red is not None:
        clean &= w.do("console.raw", learn_names)

    def text(value: str) -> str:
        if red is not None:
            value = red.apply(value.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")
        if secret_b:
            value = value.replace(secret, MASK.decode())
        return value

    def doc(value: dict) -> dict:
        if red is not None:
            value = red.apply_json(value)
        if secret_b:
            value = json_strings(value, lambda v: v.replace(secret, MASK.decode()))
        return value

    if report is not None:
        w.do("report.json", lambda: write_atomic(
            run_dir / "report.json", json.dumps(doc(report), indent=2) + "\n"))
    if summary is not None:
        w.do("summary.md", lambda: write_atomic(run_dir / "summary.md", text(summary)))
    if report is not None and report.get("schema_version") is not None:  # a whole report.json
        w.do("summary.html", lambda: write_pages(run_dir, doc(report), console_lines(run_dir)))
    if payload_elf is not None and Path(payload_elf).is_file():
        def payload():
            copy_atomic(Path(payload_elf), run_dir / "payload.elf")
            digest = sha256_file(run_dir / "payload.elf")
            write_atomic(run_dir / "payload.elf.sha256", f"{digest}  payload.elf\n")
            environment["payload"] = {"path": str(payload_elf), "sha256": digest}
        w.do("payload.elf", payload)
    copied = []
    for name, src in (extra_files or {}).items():
        if src is not None and Path(src).is_file():
            if w.do(name, lambda s=src, n=name: copy_atomic(Path(s), run_dir / n)):
                copied.append(name)
    w.do("environment.json", lambda: write_atomic(
        run_dir / "environment.json", json.dumps(doc(environment), indent=2) + "\n"))

    for name in (*CAPTURED, *copied):
        path = run_dir / name
        if not path.is_file():
            continue
        if red is not None:
            clean &= w.do(name, lambda p=path: _redact_file(p, red))
        if secret_b:
            clean &= w.do(name, lambda p=path: _scrub_file(p, secret_b))
    tarball = None
    if clean:
        tarball = run_dir.parent / f"{run_dir.name}.tar.gz"
        if not w.do("the tarball", lambda: make_tarball(run_dir)):
            tarball = None
    if w.errors:
        raise w.failure(tarball)
    return tarball


def console_lines(run_dir: Path) -> Iterator[str]:
    """The captured console's lines, streamed in bounded memory (console.raw, else
    console.log; a line cut at the trace's length limit is left out, no snapshot line is that
    long): where the pages find the kernel's "before" snapshot."""
    from ..trace import LineSplitter

    for name in ("console.raw", consolelog.NAME):
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        splitter = LineSplitter()
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK), b""):
                    yield from (ln.text for ln in splitter.feed(block) if not ln.truncated)
        except OSError as exc:
            raise os_error(path, exc, "read") from None
        yield from (ln.text for ln in splitter.flush() if not ln.truncated)
        return


def write_pages(directory: Path, report: dict, lines: Iterable[str | bytes]) -> list[str]:
    """The pages a browser shows beside summary.md: memory-map.svg (when a map has ranges) and
    summary.html, from report.json's content and the console's lines; the names written.  The
    picture holds only the maps' numbers and type names, the page only what report.json holds
    (already redacted and scrubbed when the bundle is)."""
    from . import memmap_svg, summary_html

    directory = Path(directory)
    svg = memmap_svg.render(memmap_svg.memory_maps(report, lines))
    written = []
    if svg is not None:
        write_atomic(directory / memmap_svg.NAME, svg)
        written.append(memmap_svg.NAME)
    write_atomic(directory / summary_html.NAME, summary_html.render(report, svg))
    return written + [summary_html.NAME]


def _redact_file(path: Path, red: Redactor) -> None:
    if path.name == consolelog.NAME:
        consolelog.rewrite(path, red.apply)
    else:
        rewrite_atomic(path, red.apply)


def _scrub_file(path: Path, secret: bytes) -> None:
    if not _contains(path, secret):
        return
    change = lambda b: b.replace(secret, MASK)  # noqa: E731
    if path.name == consolelog.NAME:
        consolelog.rewrite(path, change)
    else:
        rewrite_atomic(path, change)


def make_tarball(run_dir: Path) -> Path:
    """Pack run_dir into run_dir.tar.gz through a temporary name."""
    final = run_dir.parent / f"{run_dir.name}.tar.gz"
    with atomic_file(final, "wb", fsync=False) as fh:
        try:
            with tarfile.open(fileobj=fh, mode="w:gz", compresslevel=6) as tar:
                for path in sorted(run_dir.iterdir()):
                    if path.name.startswith("."):
                        continue
                    tar.add(path, arcname=f"{run_dir.name}/{path.name}")
        except tarfile.TarError as exc:
            raise KexectestError(f"cannot pack {final}: {exc}", Exit.BAD_INPUT) from None
    return final

