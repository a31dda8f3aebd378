"""Saved logs: the collector's timestamped console.log, a raw capture, or a trace pasted from an
email (quoted, wrapped), read back into Lines; a prefilter keeps replays of huge raw logs cheap."""

from __future__ import annotations

import re
from functools import lru_cache

from .format import MAX_LINE, Line, parse_line, split_all

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
