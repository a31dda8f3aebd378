"""The payload's serial trace format (docs/trace-format.md): checksums, records, line splitting.

This is the one module that parses `KT ...` lines.  Everything works on bytes first so that a
capture loop or a replay of a large log pays little for lines that are not payload lines, and
memory stays bounded whatever arrives on the wire (NULs, invalid UTF-8, lines without an end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import accumulate

MAX_LINE = 4096
KINDS = frozenset({"banner", "mode", "begin", "end", "data", "state", "skip", "done", "boot"})
_STEP_KINDS = frozenset({"begin", "end", "data", "skip"})
_UHEX_CHARS = b"0123456789ABCDEF"


def checksum(data: bytes) -> int:
    """Fletcher-16 with modulo 256 over the bytes before ` ~` (cheap for 16-bit assembly).

    The payload keeps running sums s1 += b, s2 += s1: s2 is the sum of the prefix sums, which
    itertools.accumulate yields in C instead of a byte loop (the collector checks every line of
    every console it follows)."""
    s1 = sum(data)
    s2 = sum(accumulate(data))
    return ((s2 & 0xFF) << 8) | (s1 & 0xFF)


def format_line(body: str) -> str:
    """A complete KT line (without CR LF) for `body`; used by tests and log generators."""
    return f"{body} ~{checksum(body.encode('ascii')):04X}"


@dataclass(slots=True)
class Record:
    """One parsed payload line.  Every field has passed its format check (FIELD_FORMS), so a
    number read from it is never negative and never wider than the format prints it."""

    kind: str
    step: int | None
    name: str | None
    fields: dict[str, str]
    data: bytes | None
    iteration: str | None

    def hex(self, key: str, default: int | None = None) -> int | None:
        """A field as an integer (fields are printed as upper-case hex, at most 8 digits);
        `default` when the field is absent or is not such a number."""
        v = self.fields.get(key)
        if v is None or not _HEX_FIELD(v):
            return default
        return int(v, 16)


@dataclass(slots=True)
class Line:
    """One line of the console: text plus the payload record when it is a valid KT line.
    (Slots: a replay makes tens of thousands of these; half the memory, made faster.)"""

    text: str
    t: float | None = None
    record: Record | None = None
    bad_checksum: bool = False  # a damaged payload line: checksum failed, or `malformed`
    truncated: bool = False
    raw_len: int = field(default=0, compare=False)
    scrubbed: bool = False  # a secret was masked in it: its text is not what the wire carried
    malformed: bool = False  # its checksum matched but it breaks the format (a field's width...)


# The widths the payload prints (docs/trace-format.md): a field that does not match its form
# makes the whole line damaged, so no record carries a huge, negative or odd-width number.
_HEX_FIELD = re.compile(r"[0-9A-F]{1,8}").fullmatch
_WORD = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}"
_NAME_OK = re.compile(_WORD).fullmatch
_DATA_HEX = re.compile(r"[0-9A-F]+").fullmatch
_H2, _H4, _H8 = r"[0-9A-F]{2}", r"[0-9A-F]{4}", r"[0-9A-F]{8}"
FIELD_FORMS = {
    "int": _H2, "ax": _H4, "dl": _H2, "i": r"[0-9]{1,3}", "cf": r"[01]",
    "eax": _H8, "ebx": _H8, "ecx": _H8, "edx": _H8, "esi": _H8, "edi": _H8,
    "ds": _H4, "es": _H4, "fl": _H4, "off": _H4, "tag": _WORD, "reason": _WORD,
    "version": _WORD, "build": r"(?:[0-9A-F]{2}){1,32}|none", "entry": r"[0-9]{2}",
    "uart": _H4, "div": _H4, "steps": r"[0-9]{3}", "errors": r"[0-9]{3}", "next": _WORD,
    "via": _WORD, "us": _H8,
}
_KEY = r"[A-Za-z0-9_]{1,32}"
# one token: a known key with its form, or any other key (one this host does not read) with a
# printable value; state groups print registers, masks, ids and counters as 1 to 8 hex digits,
# vectors as SSSS:OOOO and PCI addresses as BB:DD.F.  One regex for all of a line's fields keeps
# the collector's hot path cheap.
_KNOWN = "|".join(f"{k}=(?:{v})" for k, v in FIELD_FORMS.items())
_OTHER = rf"(?!(?:{'|'.join(FIELD_FORMS)})=){_KEY}=[!-~]{{1,64}}"
_TOKEN = rf"(?:{_KNOWN}|{_OTHER})"
_STATE_TOKEN = rf"{_KEY}=(?:[0-9A-F]{{1,8}}|{_H4}:{_H4}|{_H2}:{_H2}\.[0-7])"
_FIELDS_OK = re.compile(rf"(?:{_TOKEN}(?: {_TOKEN})*)?").fullmatch
_STATE_FIELDS_OK = re.compile(rf"(?:{_STATE_TOKEN}(?: {_STATE_TOKEN})*)?").fullmatch
MAX_DATA = 32  # bytes on one data line
DATA_SPACE = 0x10000  # off + bytes stay within the 64 KiB the payload's word offset reaches


def _fields(toks: list[str], state: bool) -> dict[str, str] | None:
    """key=value tokens, each checked against its form; None if any breaks the format (or a
    key appears twice)."""
    if not (_STATE_FIELDS_OK if state else _FIELDS_OK)(" ".join(toks)):
        return None
    fields = dict(tok.split("=", 1) for tok in toks)
    return fields if len(fields) == len(toks) else None


def _parse_body(body: str) -> Record | None:
    """Record from the text before ` ~` (already checksum-verified); None if malformed."""
    toks = body.split()
    if len(toks) < 2 or toks[0] != "KT" or toks[1] not in KINDS:
        return None
    kind = toks[1]
    step = name = None
    if kind in _STEP_KINDS:
        if len(toks) < 4 or len(toks[2]) != 3 or not toks[2].isdigit():
            return None
        step, name, rest = int(toks[2]), toks[3], toks[4:]
    elif kind == "mode" or kind == "state":
        if len(toks) < 3:
            return None
        name, rest = toks[2], toks[3:]
    else:
        rest = toks[2:]
    if name is not None and not _NAME_OK(name):
        return None
    data = None
    if kind == "data":
        # key=value fields first, then the hex run (no '=' in it)
        n = 0
        for tok in rest:
            if "=" not in tok:
                break
            n += 1
        hexrun = "".join(rest[n:])
        rest = rest[:n]
        if (not hexrun or len(hexrun) > 2 * MAX_DATA or len(hexrun) % 2
                or not _DATA_HEX(hexrun)):
            return None
        data = bytes.fromhex(hexrun)
    fields = _fields(rest, kind == "state")
    if fields is None:
        return None
    if data is not None and int(fields.get("off", "0"), 16) + len(data) > DATA_SPACE:
        return None
    iteration = None
    if "dl" in fields:
        iteration = "dl=" + fields["dl"]
    elif "i" in fields:
        iteration = "i=" + fields["i"]
    return Record(kind, step, name, fields, data, iteration)


def parse_line(raw: bytes, t: float | None = None, truncated: bool = False) -> Line:
    """A Line from one line's bytes (no terminator): decoded, and parsed if it is a KT line."""
    text = raw.decode("utf-8", "replace").rstrip()
    line = Line(text, t, None, False, truncated, len(raw))
    pos = raw.find(b"KT ")
    if pos < 0:
        return line
    tail = raw[pos:].rstrip()
    looks = len(tail) >= 9 and tail[-6:-4] == b" ~"
    if pos != 0 and not looks:
        return line  # "KT " inside some other text, not a payload line
    if not looks:
        line.bad_checksum = True
        return line
    body, cs = tail[:-6], tail[-4:]
    if cs.translate(None, _UHEX_CHARS) or int(cs, 16) != checksum(body):
        line.bad_checksum = True
        return line
    if not body.isascii():  # a payload line always is
        line.bad_checksum = line.malformed = True
        return line
    line.record = _parse_body(text[pos:pos + len(body)] if raw.isascii() else body.decode("ascii"))
    if line.record is None:
        line.bad_checksum = line.malformed = True
    return line


class LineSplitter:
    """Incremental: feed(bytes, t) -> list[Line]; flush() -> list[Line].

    CR, LF and CR LF all end a line (a CR LF split across two feeds counts once); NUL bytes are
    dropped; lines longer than MAX_LINE are emitted in MAX_LINE pieces with truncated=True, so
    memory stays bounded whatever arrives.  Empty lines are not emitted.  Time is linear in the
    bytes fed: every byte is copied a bounded number of times, however long its line.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = b""  # the start of a line not yet ended: at most max_line bytes
        self._cont = False  # the buffered text continues a line already cut
        self._pending_cr = False

    def feed(self, data: bytes, t: float | None = None) -> list[Line]:
        if not data:
            return []
        if b"\0" in data:
            data = data.replace(b"\0", b"")
            if not data:
                return []
        if self._pending_cr and data[:1] == b"\n":
            data = data[1:]
            if not data:
                self._pending_cr = False
                return []
        self._pending_cr = data[-1:] == b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[Line] = []
        parts = data.split(b"\n")
        last = parts.pop()
        mx = self.max_line
        for part in parts:
            if self._buf:
                part, self._buf = self._buf + part, b""
            if len(part) > mx:
                part = self._cut(part, t, out)
            if part or self._cont:
                out.append(parse_line(part, t, self._cont))
            self._cont = False
        if last:
            if self._buf:
                last = self._buf + last
            self._buf = self._cut(last, t, out) if len(last) > mx else last
        return [ln for ln in out if ln.text or ln.truncated]

    def _cut(self, part: bytes, t: float | None, out: list[Line]) -> bytes:
        """Whole pieces of `part` to `out` (truncated) while more than max_line bytes are left;
        the rest (at most max_line bytes) returned.  Steps through a view: no copy of the rest."""
        mx, view = self.max_line, memoryview(part)
        pos, n = 0, len(part)
        while n - pos > mx:
            out.append(parse_line(bytes(view[pos:pos + mx]), t, True))
            pos += mx
        self._cont = True
        return bytes(view[pos:])

    def flush(self, t: float | None = None) -> list[Line]:
        """The line cut mid-way at EOF, if any."""
        buf, cont = self._buf, self._cont
        self._buf, self._cont, self._pending_cr = b"", False, False
        if not buf:
            return []
        ln = parse_line(buf, t, cont)
        return [ln] if ln.text or ln.truncated else []


def split_all(data: bytes, t: float | None = None) -> list[Line]:
    """All lines of a complete byte string (a whole log)."""
    sp = LineSplitter()
    return sp.feed(data, t) + sp.flush(t)
