"""The payload's serial trace format (docs/trace-format.md): checksums, records, line splitting.

This is the one module that parses `KT ...` lines.  Everything works on bytes first so that a
capture loop or a replay of a large log pays little for lines that are not payload lines, and
memory stays bounded whatever arrives on the wire (NULs, invalid UTF-8, lines without an end).
"""

from __future__ import annotations

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


@dataclass
class Record:
    """One parsed payload line."""

    kind: str
    step: int | None
    name: str | None
    fields: dict[str, str]
    data: bytes | None
    iteration: str | None

    def hex(self, key: str, default: int | None = None) -> int | None:
        """A field as an integer (fields are printed as hex)."""
        v = self.fields.get(key)
        if v is None:
            return default
        try:
            return int(v, 16)
        except ValueError:
            return default


@dataclass
class Line:
    """One line of the console: text plus the payload record when it is a valid KT line."""

    text: str
    t: float | None = None
    record: Record | None = None
    bad_checksum: bool = False
    truncated: bool = False
    raw_len: int = field(default=0, compare=False)
    scrubbed: bool = False  # a secret was masked in it: its text is not what the wire carried


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
    data = None
    if kind == "data":
        # key=value fields first, then the hex run (no '=' in it)
        n = 0
        for tok in rest:
            if "=" not in tok:
                break
            n += 1
        hexparts, rest = rest[n:], rest[:n]
        try:  # the tokens hold no whitespace, so fromhex accepts hex digits only (no '=')
            data = bytes.fromhex("".join(hexparts))
        except ValueError:
            return None
    try:
        fields = dict([tok.split("=", 1) for tok in rest])  # ValueError: a token without '='
    except ValueError:
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
    # ASCII (a payload line always is): the body is already decoded in `text`
    line.record = _parse_body(text[pos:pos + len(body)] if raw.isascii()
                              else body.decode("ascii", "replace"))
    if line.record is None:
        line.bad_checksum = True
    return line


class LineSplitter:
    """Incremental: feed(bytes, t) -> list[Line]; flush() -> list[Line].

    CR, LF and CR LF all end a line (a CR LF split across two feeds counts once); NUL bytes are
    dropped; lines longer than MAX_LINE are emitted in MAX_LINE pieces with truncated=True, so
    memory stays bounded whatever arrives.  Empty lines are not emitted.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = b""
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
        self._pending_cr = data[-1:] == b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[Line] = []
        parts = data.split(b"\n")
        last = parts.pop()
        mx = self.max_line
        for i, part in enumerate(parts):
            if i == 0 and self._buf:
                part = self._buf + part
                self._buf = b""
            cont = self._cont if i == 0 else False
            while len(part) > mx:
                out.append(parse_line(part[:mx], t, True))
                part = part[mx:]
                cont = True
            if part or cont:
                out.append(parse_line(part, t, cont))
            self._cont = False
        if parts:
            self._buf = last
        else:
            self._buf += last
        while len(self._buf) > mx:
            out.append(parse_line(self._buf[:mx], t, True))
            self._buf = self._buf[mx:]
            self._cont = True
        return [ln for ln in out if ln.text or ln.truncated]

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
