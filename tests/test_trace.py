"""The trace format: checksums, record parsing, line splitting with bounded memory."""

from __future__ import annotations

import tracemalloc

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kexectest.trace import MAX_LINE, LineSplitter, checksum, format_line, parse_line, split_all


def test_checksum_known_values():
    assert checksum(b"") == 0x0000
    assert checksum(b"\x01") == 0x0101
    assert checksum(b"\x01\x02") == 0x0403  # s1=3, s2=1+3=4
    # by hand: s1 = 495 & 0xFF = 0xEF; s2 = (97+195+294+394+495) & 0xFF = 0xC3 (mod 255 would be C8F0)
    assert checksum(b"abcde") == 0xC3EF
    assert checksum(b"\xff" * 300) == checksum(b"\xff" * 300)
    assert format_line("KT mode real").endswith(f" ~{checksum(b'KT mode real'):04X}")


def test_records_parse():
    ln = parse_line(format_line("KT begin 040 edd-check int=13 ax=4100 dl=80").encode())
    r = ln.record
    assert (r.kind, r.step, r.name, r.iteration) == ("begin", 40, "edd-check", "dl=80")
    assert r.hex("ax") == 0x4100
    ln = parse_line(format_line("KT data 009 e820 i=2 off=0010 0100 0000 02000000").encode())
    assert ln.record.data == bytes.fromhex("0100000002000000")
    assert ln.record.iteration == "i=2"
    b = parse_line(format_line("KT banner version=0.1.0 build=AB entry=32 uart=03F8 div=0001 steps=071").encode())
    assert b.record.kind == "banner" and b.record.fields["steps"] == "071"
    s = parse_line(format_line("KT state ivt v08=F000:FEA5 v13=0070:0100").encode())
    assert s.record.name == "ivt" and s.record.fields["v13"] == "0070:0100"
    d = parse_line(format_line("KT done steps=071 errors=002").encode())
    assert d.record.kind == "done" and d.record.step is None


def test_bad_checksum_and_corruption():
    good = format_line("KT end 008 base-mem cf=0 eax=0000027F")
    assert parse_line(good.encode()).record is not None
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    ln = parse_line(bad.encode())
    assert ln.record is None and ln.bad_checksum
    flipped = good.replace("027F", "027E")
    assert parse_line(flipped.encode()).bad_checksum
    # a KT line cut before its checksum
    assert parse_line(good[:20].encode()).bad_checksum
    # lower-case checksum digits are not the format
    low = parse_line(format_line("KT mode real").lower().replace("kt", "KT", 1).encode())
    assert low.record is None
    # "KT " inside kernel text is not a payload line and not a bad one
    ln = parse_line(b"[    1.0] usb 1-1: new device KT 1234")
    assert ln.record is None and not ln.bad_checksum


def test_line_endings_nul_and_utf8():
    data = b"a\r\nb\rc\nd\x00e\r\n\r\n\xff\xfeok\n"
    lines = split_all(data)
    assert [ln.text for ln in lines] == ["a", "b", "c", "de", "\ufffd\ufffdok"]
    # CR LF split across two feeds counts once
    sp = LineSplitter()
    out = sp.feed(b"one\r") + sp.feed(b"\ntwo\r") + sp.feed(b"\n") + sp.flush()
    assert [ln.text for ln in out] == ["one", "two"]


def test_cut_line_flushed_at_eof():
    sp = LineSplitter()
    assert sp.feed(b"complete\npartial KT begin 0", 1.5)[0].text == "complete"
    rest = sp.flush(2.0)
    assert [ln.text for ln in rest] == ["partial KT begin 0"]
    assert sp.flush() == []


def test_hundred_megabyte_line_bounded_memory():
    sp = LineSplitter()
    chunk = b"x" * (1 << 20)
    tracemalloc.start()
    pieces = 0
    for _ in range(100):
        out = sp.feed(chunk)
        assert all(ln.truncated and len(ln.text) == MAX_LINE for ln in out)
        pieces += len(out)
    out = sp.feed(b"\n") + sp.flush()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pieces += len(out)
    assert pieces == 100 * (1 << 20) // MAX_LINE
    assert peak < 64 << 20  # never held the whole line


_alphabet = st.sampled_from([b"\r", b"\n", b"\0", b"KT ", b" ~", b"a", b"\xff", b"KT mode real ~0000"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_alphabet, st.binary(max_size=20)), max_size=40), st.data())
def test_arbitrary_chunking_equals_whole(parts, data):
    blob = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=10)))
    sp = LineSplitter(max_line=16)
    out = []
    prev = 0
    for c in cuts + [len(blob)]:
        out += sp.feed(blob[prev:c])
        prev = c
    out += sp.flush()
    whole = LineSplitter(max_line=16)
    ref = whole.feed(blob) + whole.flush()
    key = lambda ls: [(ln.text, ln.truncated, ln.bad_checksum, ln.record) for ln in ls]  # noqa: E731
    assert key(out) == key(ref)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_input_never_raises(blob):
    for ln in split_all(blob):
        assert len(ln.text.encode("utf-8")) <= 3 * MAX_LINE


_bodies = st.sampled_from([
    "KT begin 040 edd-check int=13 ax=4100 dl=80",
    "KT end 009 e820 i=0 cf=0 eax=534D4150 ebx=00000001 ecx=00000014",
    "KT data 056 vbe-info tag=oem off=0000 5345414249 4F53",
    "KT done steps=071 errors=000",
])


@settings(max_examples=500, deadline=None)
@given(_bodies, st.integers(0, 200), st.integers(1, 255))
def test_corrupted_kt_line_never_valid(body, pos, xor):
    raw = bytearray(format_line(body).encode())
    pos %= len(raw)
    raw[pos] ^= xor
    if b"\r" in raw or b"\n" in raw or b"\0" in raw:
        return  # became a line break / dropped byte: not a single corrupted line
    ln = parse_line(bytes(raw))
    assert ln.record is None or raw.decode("latin1") == format_line(body)


@given(st.binary(max_size=600))
def test_checksum_closed_form_equals_the_payloads_running_sums(data):
    """trace.checksum computes in closed form what the payload sums byte by byte."""
    s1 = s2 = 0
    for b in data:
        s1 = (s1 + b) & 0xFF
        s2 = (s2 + s1) & 0xFF
    assert checksum(data) == (s2 << 8) | s1


def _reference_record(body: str):
    """The record rules of docs/trace-format.md written plainly, token by token."""
    toks = body.split()
    if len(toks) < 2 or toks[0] != "KT" or toks[1] not in ("banner", "mode", "begin", "end", "data",
                                                            "state", "skip", "done", "boot"):
        return None
    kind, rest, step, name = toks[1], toks[2:], None, None
    if kind in ("begin", "end", "data", "skip"):
        if len(rest) < 2 or len(rest[0]) != 3 or not rest[0].isdigit():
            return None
        step, name, rest = int(rest[0]), rest[1], rest[2:]
    elif kind in ("mode", "state"):
        if not rest:
            return None
        name, rest = rest[0], rest[1:]
    fields, hexparts = {}, []
    for tok in rest:
        k, eq, v = tok.partition("=")
        if eq and not hexparts:
            fields[k] = v
        elif kind == "data" and not eq:
            hexparts.append(tok)
        else:
            return None
    data = None
    if kind == "data":
        joined = "".join(hexparts)
        if len(joined) % 2 or any(c not in "0123456789ABCDEFabcdef" for c in joined):
            return None
        data = bytes.fromhex(joined)
    it = "dl=" + fields["dl"] if "dl" in fields else ("i=" + fields["i"] if "i" in fields else None)
    return (kind, step, name, fields, data, it)


_kinds = st.sampled_from(["begin", "end", "data", "state", "mode", "skip", "done", "boot", "banner",
                          "oops", "KT"])
_tokens = st.sampled_from(["012", "12", "e820", "i=3", "dl=80", "off=0000", "a=b=c", "=x", "k=",
                           "00FC", "0A1", "zz", "AB", "ab", "\u00e9", "\u00b2\u00b2\u00b2", "x"])


@settings(max_examples=1500, deadline=None)
@given(st.booleans(), _kinds, st.sampled_from(["012", "12", "x=1", ""]),
       st.sampled_from(["e820", "i=3", ""]), st.lists(_tokens, max_size=7))
def test_record_parsing_matches_the_plain_rules(kt_first, kind, step, name, toks):
    body = " ".join((["KT"] if kt_first else []) + [kind, step, name] + toks)
    raw = body.encode()
    ln = parse_line(raw + f" ~{checksum(raw):04X}".encode())
    ref = _reference_record(raw.decode("ascii", "replace"))
    got = ln.record
    if ref is None:
        assert got is None and (ln.bad_checksum or not body.startswith("KT "))
    else:
        assert (got.kind, got.step, got.name, got.fields, got.data, got.iteration) == ref


def _reference_prefiltered(data, keywords, tail_markers, block_after=(), block_lines=80):
    """The prefilter's rules done the plain way: one scan per keyword, a set of line starts."""
    cands = [data.rfind(m) for m in tail_markers] + [data.find(b"KT ")]
    cands = [c for c in cands if c >= 0]
    cut = min(cands) if cands else max(0, len(data) - (1 << 20))
    cut = data.rfind(b"\n", 0, cut) + 1
    starts = set()
    for kw in keywords:
        pos = data.find(kw, 0, cut)
        while pos >= 0:
            s = data.rfind(b"\n", 0, pos) + 1
            starts.add(s)
            if kw in block_after:
                e = s
                for _ in range(block_lines):
                    e = data.find(b"\n", e, cut) + 1
                    if e <= 0 or e >= cut:
                        break
                    starts.add(e)
            nl = data.find(b"\n", pos, cut)
            if nl < 0:
                break
            pos = data.find(kw, nl, cut)
    out = []
    for s in sorted(starts):
        e = data.find(b"\n", s, cut)
        raw = data[s:e if e >= 0 else cut].replace(b"\0", b"").rstrip(b"\r")
        if raw.strip():
            out.append(parse_line(raw[:MAX_LINE], None, len(raw) > MAX_LINE))
    return out + split_all(data[cut:])


_log_pieces = st.sampled_from([b"noise line\n", b"[ 1.0] BUG: x\n", b"WARNING: CPU: 0\n", b"panic BUG\n",
                               b"Linux version 6\n", b" cont\r\n", b"\0\n", b"  \n", b"\n", b"a\0b",
                               b"hand-off\n", b"KT mode real ~0C3D\r\n", b"x" * 50, b"BUG", b"\r"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_log_pieces, max_size=60), st.integers(0, 4))
@example([b"[ 1.0] BUG: x\n", b"panic BUG\n"] + [b"noise line\n"] * 5 + [b"hand-off\n"], 2)
@example([b"panic BUG\n", b"noise line\n", b"panic BUG\n"] + [b"noise line\n"] * 5, 3)
def test_prefiltered_lines_match_the_plain_scan(pieces, block_lines):
    from kexectest.trace import prefiltered_lines
    data = b"".join(pieces)
    args = ((b"BUG", b"WARNING", b"panic", b"Linux version"), (b"hand-off",), (b"BUG", b"panic"),
            block_lines)
    key = lambda ls: [(ln.text, ln.truncated, ln.bad_checksum, ln.record) for ln in ls]  # noqa: E731
    assert key(prefiltered_lines(data, *args)) == key(_reference_prefiltered(data, *args))
