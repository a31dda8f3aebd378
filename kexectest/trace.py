"""The payload's serial trace format (docs/trace-format.md): checksums, records, line splitting.

This is the one module that parses `KT ...` lines.  Everything works on bytes first so that a
capture loop or a replay of a large log pays little for lines that are not payload lines, and
memory stays bounded whatever arrives on the wire (NULs, invalid UTF-8, lines without an end).
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import accumulate

from dataclasses import dataclass, field

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


# ---- saved logs ------------------------------------------------------------------------------

_TS_PREFIX = b"+"


def _is_timestamped(head: bytes) -> bool:
    """The collector's console.log: every line `+SSSSS.ssssss<TAB>text`."""
    first = head.split(b"\n", 1)[0]
    if not first.startswith(_TS_PREFIX) or b"\t" not in first:
        return False
    try:
        float(first[1:first.index(b"\t")])
        return True
    except ValueError:
        return False


def _rejoin_wrapped(lines: list[Line], limit: int = 40) -> list[Line]:
    """Email clients wrap long lines: a KT line whose checksum fails is joined with the lines
    after it (with and without a space) until the checksum verifies."""
    out: list[Line] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.bad_checksum and ln.text.startswith("KT "):
            joined = ln.text
            for j in range(i + 1, min(len(lines), i + limit)):
                nxt = lines[j].text
                got = None
                for cand in (joined + nxt, joined + " " + nxt):
                    p = parse_line(cand.encode("utf-8", "replace"), ln.t)
                    if p.record is not None:
                        got = p
                        break
                if got is not None:
                    out.append(got)
                    i = j + 1
                    break
                joined += nxt
                if len(joined) > MAX_LINE:
                    break
            else:
                out.append(ln)
                i += 1
            if out and out[-1] is not ln and out[-1].record is not None:
                continue
            if not out or out[-1] is not ln:
                out.append(ln)
                i += 1
            continue
        out.append(ln)
        i += 1
    return out


def lines_from_log(data: bytes, prefilter: dict | None = None) -> tuple[list[Line], str]:
    """Lines of a saved log and its format: "timestamped" (the collector's console.log),
    "email" (pasted with "> " quoting, possibly wrapped) or "raw" (bytes from the wire).
    `prefilter` (keyword arguments of prefiltered_lines) speeds up large raw logs."""
    if _is_timestamped(data[:200]):
        out = []
        for raw in data.splitlines():
            ts, tab, body = raw.partition(b"\t")
            t = None
            if tab and ts.startswith(_TS_PREFIX):
                try:
                    t = float(ts[1:])
                except ValueError:
                    t, body = None, raw
            else:
                body = raw
            body = body.replace(b"\0", b"")
            if body.strip():
                out.append(parse_line(body[:MAX_LINE], t, len(body) > MAX_LINE))
        return out, "timestamped"
    if prefilter and len(data) > FAST_MIN and data[:4000].count(b"\n>") < 10:
        return prefiltered_lines(data, **prefilter), "raw"
    lines = split_all(data)
    quoted = sum(1 for ln in lines[:400] if ln.text.startswith(">"))
    if lines and quoted >= max(3, len(lines[:400]) // 3):
        out = []
        for ln in lines:
            t = ln.text
            while t.startswith(">"):
                t = t[1:]
                if t.startswith(" "):
                    t = t[1:]
            if t.strip():
                out.append(parse_line(t.encode("utf-8", "replace"), ln.t, ln.truncated))
        return _rejoin_wrapped(out), "email"
    return lines, "raw"


FAST_MIN = 4 << 20  # below this a log is simply split whole


def prefiltered_lines(data: bytes, keywords: tuple[bytes, ...], tail_markers: tuple[bytes, ...],
                      block_after: tuple[bytes, ...] = (), block_lines: int = 80) -> list[Line]:
    """Lines of a large raw log without decoding every line: before the payload region (from the
    last of `tail_markers`, or the first `KT `, or the last MiB) only lines holding one of
    `keywords` are kept (plus `block_lines` after those holding one of `block_after`, so a
    trouble block is quoted whole); the payload region is split in full.

    One pass of one alternation regex finds the keyword lines (the scan is the cost: the rest
    touches only the lines kept)."""
    cands = [data.rfind(m) for m in tail_markers] + [data.find(b"KT ")]
    cands = [c for c in cands if c >= 0]
    cut = min(cands) if cands else max(0, len(data) - (1 << 20))
    cut = data.rfind(b"\n", 0, cut) + 1
    runs: list[tuple[int, int]] = []  # (first line start, end of the last line) of kept lines
    search = _keyword_regex(keywords).search if keywords else None
    find, rfind = data.find, data.rfind
    m = search(data, 0, cut) if search else None
    while m is not None:
        pos = m.start()
        s = rfind(b"\n", 0, pos) + 1
        nl = find(b"\n", pos, cut)
        end = nl if nl >= 0 else cut
        if block_after and any(kw in data[s:end] for kw in block_after):
            more = block_lines  # the next `block_lines` lines too
            if runs and runs[-1][1] > end:  # the block before already reaches past this line
                more -= data.count(b"\n", end, runs[-1][1])
                end = runs[-1][1]
            for _ in range(max(0, more)):
                if end >= cut or end + 1 >= cut:
                    break
                nxt = find(b"\n", end + 1, cut)
                end = nxt if nxt >= 0 else cut
        runs.append((s, end))
        if nl < 0:
            break
        m = search(data, nl, cut)
    out: list[Line] = []
    last = -1  # end of the lines already taken
    for s, e in runs:  # in file order; a block may overlap the next hits
        if e <= last:
            continue
        s = max(s, last + 1)
        last = e
        for raw in data[s:e].split(b"\n"):
            if b"\0" in raw:
                raw = raw.replace(b"\0", b"")
            raw = raw.rstrip(b"\r")
            if raw and not raw.isspace():
                out.append(parse_line(raw[:MAX_LINE], None, len(raw) > MAX_LINE))
    return out + split_all(data[cut:])


@lru_cache(maxsize=8)
def _keyword_regex(keywords: tuple[bytes, ...]) -> re.Pattern:
    return re.compile(b"|".join(re.escape(kw) for kw in sorted(set(keywords), key=len, reverse=True)))
