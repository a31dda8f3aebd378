"""Saved logs: the collector's timestamped console.log, a raw capture, or a trace pasted from an
email (quoted, wrapped), read back into Lines; a prefilter keeps replays of huge raw logs cheap."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Iterable, Iterator

import hyperscan

from .format import MAX_LINE, Line, LineSplitter, checksum, parse_line

# console.log's stamp (docs/bundle-format.md): `+SSSSS.ssssss[~][*]<TAB>text`, seconds since the
# capture began, `~` for a piece of a line cut at the length limit, `*` for a line kexectest
# changed (a secret masked, a name redacted).  Digits bounded, so that a stamp is never read as
# inf or a number too long to print.  output/consolelog.py writes this format; this reads it.
STAMP = re.compile(rb"\+(\d{1,15}\.\d{1,9})(~?)(\*?)\t")
CUT_MARK, SCRUBBED_MARK = "~", "*"
KEEP_PIECES = 2  # of a run of pieces cut from one huge line: the first two and the last are kept
_QUOTE = re.compile(r"(?:> ?)*")  # email quoting: ">", "> ", ">>" ... (one optional space each)
_CHECKSUM_TAIL = re.compile(rb" ~[0-9A-F]{4}")
_CHUNK = 1 << 20


def _is_timestamped(head: bytes) -> bool:
    """The collector's console.log: every line `+SSSSS.ssssss<TAB>text`."""
    return STAMP.match(head.split(b"\n", 1)[0]) is not None


def mark_scrubbed(line: Line) -> Line:
    """A line whose text kexectest changed: never a payload record; a payload line's damage
    shows as a bad checksum."""
    line.scrubbed = True
    if line.record is not None or line.bad_checksum or line.text.lstrip().startswith("KT "):
        line.record = None
        line.bad_checksum = True
    return line


def stamped_line(raw: bytes, limit: int | None = None) -> Line | None:
    """The Line of one console.log line (without its newline); None when it has no stamp.
    `limit`: cut a longer text there (a log from elsewhere may hold any line; the collector's
    own are at most MAX_LINE, plus what masking a secret cut across two pieces added)."""
    m = STAMP.match(raw)
    if m is None:
        return None
    body = raw[m.end():]
    if b"\0" in body:
        body = body.replace(b"\0", b"")
    cut = limit is not None and len(body) > limit
    line = parse_line(body[:limit] if cut else body, float(m[1]), m[2] == b"~" or cut)
    return mark_scrubbed(line) if m[3] else line


def bounded_pieces(lines: Iterable[Line], keep: int = KEEP_PIECES) -> Iterator[Line]:
    """Lines with every run of truncated pieces cut to its first `keep` pieces and its last one,
    so that a log of one huge line costs a few Lines (the run path's read_log does the same)."""
    run, held = 0, None
    for ln in lines:
        if ln.truncated:
            run += 1
            if run <= keep:
                yield ln
            else:
                held = ln
            continue
        if held is not None:
            yield held
            held = None
        run = 0
        yield ln
    if held is not None:
        yield held


def _split(data: bytes, start: int = 0) -> list[Line]:
    """split_all of data[start:], fed in chunks, with runs of pieces bounded (bounded_pieces)."""
    sp = LineSplitter()
    view = memoryview(data)

    def pieces() -> Iterator[Line]:
        for pos in range(start, len(data), _CHUNK):
            yield from sp.feed(bytes(view[pos:pos + _CHUNK]))
        yield from sp.flush()
    return list(bounded_pieces(pieces()))


def _timestamped(data: bytes) -> list[Line]:
    def lines() -> Iterator[Line]:
        for raw in data.splitlines():
            line = stamped_line(raw, MAX_LINE)
            if line is None:  # a line without its stamp (an edited log): its text as it is
                body = raw.replace(b"\0", b"")
                line = parse_line(body[:MAX_LINE], None, len(body) > MAX_LINE)
            if line.text.strip() or line.truncated:
                yield line
    return list(bounded_pieces(lines()))


def _fletcher_join(cs_a: int, b: bytes) -> int:
    """checksum(A + b) from checksum(A) and b: s1 adds, and every prefix sum over b carries
    s1(A) once more."""
    cs_b = checksum(b)
    s1 = (cs_a + cs_b) & 0xFF
    s2 = ((cs_a >> 8) + len(b) * (cs_a & 0xFF) + (cs_b >> 8)) & 0xFF
    return (s2 << 8) | s1


def _fletcher_cut(cs_ab: int, b: bytes) -> int:
    """checksum(A) from checksum(A + b) and b: _fletcher_join undone."""
    cs_b = checksum(b)
    s1 = (cs_ab - cs_b) & 0xFF
    s2 = ((cs_ab >> 8) - (cs_b >> 8) - len(b) * s1) & 0xFF
    return (s2 << 8) | s1


class _Join:
    """A KT line growing by the lines after it: its pieces, length, checksum and last bytes
    (the bytes themselves are joined only for the candidate that verifies)."""

    def __init__(self, parts: tuple[bytes, ...], size: int, cs: int, tail: bytes):
        self.parts, self.size, self.cs, self.tail = parts, size, cs, tail

    @classmethod
    def of(cls, text: bytes) -> "_Join":
        return cls((text,), len(text), checksum(text), text[-6:])

    def plus(self, sep: bytes, piece: bytes) -> "_Join":
        return _Join(self.parts + (sep, piece), self.size + len(sep) + len(piece),
                     _fletcher_join(_fletcher_join(self.cs, sep), piece), (self.tail + sep + piece[-6:])[-6:])

    def verifies(self) -> bool:
        """Its last six bytes are ` ~CCCC` and CCCC is the checksum of what stands before."""
        tail = self.tail
        return (_CHECKSUM_TAIL.fullmatch(tail) is not None
                and int(tail[2:], 16) == _fletcher_cut(self.cs, tail))

    def text(self) -> bytes:
        return b"".join(self.parts)


def _rejoined(first: Line, lines: list[Line], start: int, limit: int) -> tuple[Line, int] | None:
    """The KT line `first` joined with the lines from `start` on into a line whose checksum
    verifies, and the index after the last line taken; None if none does.

    A wrap dropped either nothing (a hard wrap inside a token) or one space (a wrap at a space):
    both are tried at the last wrap, and at the wraps before it the same choice throughout.
    Stops at the next line that begins a payload line, after `limit` lines or MAX_LINE bytes.
    Checksums are extended, never recomputed, so a search costs the bytes it looks at and the
    whole rejoining is linear in the log."""
    tight = spaced = _Join.of(first.text.encode("utf-8", "replace"))
    for j in range(start, min(len(lines), start + limit)):
        nxt = lines[j].text
        piece = nxt.encode("utf-8", "replace")
        if nxt.startswith("KT ") or spaced.size + 1 + len(piece) > MAX_LINE:
            return None
        for cand in (tight.plus(b"", piece), spaced.plus(b" ", piece),
                     tight.plus(b" ", piece), spaced.plus(b"", piece)):
            if cand.verifies():
                got = parse_line(cand.text(), first.t)
                if got.record is not None:
                    return got, j + 1
        tight, spaced = tight.plus(b"", piece), spaced.plus(b" ", piece)
    return None


def _rejoin_wrapped(lines: list[Line], limit: int = 40) -> list[Line]:
    """Email clients wrap long lines: a KT line whose checksum fails is joined with the lines
    after it (with and without a space at each wrap) until the checksum verifies."""
    out: list[Line] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        i += 1
        if ln.bad_checksum and ln.text.startswith("KT "):
            got = _rejoined(ln, lines, i, limit)
            if got is not None:
                ln, i = got
        out.append(ln)
    return out


def _email(lines: list[Line]) -> list[Line]:
    out = []
    for ln in lines:
        t = ln.text[_QUOTE.match(ln.text).end():]
        if t.strip():
            out.append(parse_line(t.encode("utf-8", "replace"), ln.t, ln.truncated))
    return _rejoin_wrapped(out)


def lines_from_log(data: bytes, prefilter: dict | None = None) -> tuple[list[Line], str]:
    """Lines of a saved log and its format: "timestamped" (the collector's console.log),
    "email" (pasted with "> " quoting, possibly wrapped) or "raw" (bytes from the wire).
    `prefilter` (keyword arguments of prefiltered_lines) speeds up large raw logs.
    Time is linear in the log; a huge line costs a few Lines (bounded_pieces)."""
    if _is_timestamped(data[:200]):
        return _timestamped(data), "timestamped"
    if prefilter and len(data) > FAST_MIN and data[:4000].count(b"\n>") < 10:
        return prefiltered_lines(data, **prefilter), "raw"
    lines = _split(data)
    quoted = sum(1 for ln in lines[:400] if ln.text.startswith(">"))
    if lines and quoted >= max(3, len(lines[:400]) // 3):
        return _email(lines), "email"
    return lines, "raw"


FAST_MIN = 4 << 20  # below this a log is simply split whole


def prefiltered_lines(data: bytes, keywords: tuple[bytes, ...], tail_markers: tuple[bytes, ...],
                      block_after: tuple[bytes, ...] = (), block_lines: int = 80) -> list[Line]:
    """Lines of a large raw log without decoding every line: before the payload region (from the
    last of `tail_markers`, or the first `KT `, or the last MiB) only lines holding one of
    `keywords` are kept (plus `block_lines` after those holding one of `block_after`, so a
    trouble block is quoted whole); the payload region is split in full.

    The scan is the cost, so it is Hyperscan's: all keywords in one SIMD pass, stopped at the
    first hit and resumed after that line (benchmarks/bench_replay.py measured it against
    re, google-re2, ahocorasick-rs and pyahocorasick); the rest touches only the lines kept."""
    cands = _region_marks(data, tail_markers)
    cut = min(cands) if cands else max(0, len(data) - (1 << 20))
    cut = data.rfind(b"\n", 0, cut) + 1
    runs: list[tuple[int, int]] = []  # (first line start, end of the last line) of kept lines
    first = _first_hit(data, keywords, cut) if any(keywords) else None
    find, rfind = data.find, data.rfind
    pos = first(0) if first else -1
    while pos >= 0:
        s = rfind(b"\n", 0, pos) + 1
        nl = find(b"\n", pos, cut)
        end = nl if nl >= 0 else cut
        if block_after and any(kw in data[s:end] for kw in block_after):
            more = block_lines  # the next `block_lines` lines too
            if runs and runs[-1][1] > end:  # the block before already reaches past this line
                more -= data.count(b"\n", end, runs[-1][1])
                end = runs[-1][1]
            end = _block_end(data, end, cut, more)
        runs.append((s, end))
        if nl < 0:
            break
        pos = first(nl)
    out: list[Line] = []
    last = -1  # end of the lines already taken
    for s, e in runs:  # in file order; a block may overlap the next hits
        if e <= last:
            continue
        s = max(s, last + 1)
        last = e
        _kernel_lines(data[s:e], out)
    return out + _split(data, cut)


def _block_end(data: bytes, end: int, cut: int, more: int) -> int:
    """The end of the `more` lines after the line ending at `end` (fewer where `cut` comes
    first): one regex match instead of a find per line."""
    if more <= 0 or end + 1 >= cut:
        return end
    m = _lines_rx(more).match(data, end + 1, cut)
    taken = data.count(b"\n", end + 1, m.end())
    if taken == more:
        return m.end() - 1
    last_nl = m.end() - 1 if taken else end  # out of whole lines before `cut`
    return cut if last_nl + 1 < cut else last_nl


@lru_cache(maxsize=8)
def _lines_rx(n: int) -> re.Pattern:
    """Up to n whole lines (possessive: no backtracking over a long line)."""
    return re.compile(rb"(?:[^\n]*+\n){0,%d}" % n)


def _kernel_lines(chunk: bytes, out: list[Line]) -> None:
    """The lines of a run kept before the payload region.  No line there holds `KT ` (the
    region starts at the first), so none is a payload line: the run is decoded at once and its
    Lines made directly, unless a NUL or a line past MAX_LINE asks for parse_line's care."""
    if b"\0" in chunk or (len(chunk) > MAX_LINE and max(map(len, chunk.split(b"\n"))) > MAX_LINE):
        for raw in chunk.split(b"\n"):
            if b"\0" in raw:
                raw = raw.replace(b"\0", b"")
            raw = raw.rstrip(b"\r")
            if raw and not raw.isspace():
                out.append(parse_line(raw[:MAX_LINE], None, len(raw) > MAX_LINE))
        return
    out += [Line(text, None, None, False, False, len(text))
            for text in map(str.rstrip, chunk.decode("utf-8", "replace").split("\n")) if text]


def _region_marks(data: bytes, tail_markers: tuple[bytes, ...]) -> list[int]:
    """Where the payload region may start: the last place of each tail marker found, and the
    first `KT `, in one Hyperscan pass (a `KT ` is reported once, markers are rare)."""
    pats = sorted(set(tail_markers) - {b""}) + [b"KT "]
    db = _marks_db(tuple(pats[:-1]))
    seen: dict[int, int] = {}

    def on_match(i, _start, stop, _flags, _ctx):
        seen[i] = stop - len(pats[i])
        return False
    db.scan(data, match_event_handler=on_match, scratch=hyperscan.Scratch(db))
    return sorted(seen.values())


@lru_cache(maxsize=8)
def _marks_db(markers: tuple[bytes, ...]) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    pats = list(markers) + [b"KT "]
    flags = [0] * len(markers) + [hyperscan.HS_FLAG_SINGLEMATCH]
    db.compile(expressions=pats, ids=list(range(len(pats))), elements=len(pats), flags=flags, literal=True)
    return db


def _first_hit(data: bytes, keywords: tuple[bytes, ...], end: int) -> Callable[[int], int]:
    """first(pos): where the first line at or after `pos` (before `end`) that holds a keyword
    has one (a position inside that line), or -1.  Keywords hold no newline, so the first match
    to end lies in the first line with any."""
    db = _keyword_db(keywords)
    scratch = hyperscan.Scratch(db)  # one per call: replays may run in several threads
    view = memoryview(data)
    got: list[int] = []

    def on_match(_id, _start, stop, _flags, _ctx):
        got.append(stop)
        return True  # the first is enough: stop the scan

    def first(pos: int) -> int:
        got.clear()
        try:
            db.scan(view[pos:end], match_event_handler=on_match, scratch=scratch)
        except hyperscan.ScanTerminated:
            pass
        return pos + got[0] - 1 if got else -1
    return first


@lru_cache(maxsize=8)
def _keyword_db(keywords: tuple[bytes, ...]) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    kws = sorted(set(keywords) - {b""})
    db.compile(expressions=kws, ids=list(range(len(kws))), elements=len(kws), flags=0, literal=True)
    return db
