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


_UPPER_HEX = "0123456789ABCDEF"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _is_hex(v: str, n: int) -> bool:
    return len(v) == n and all(c in _UPPER_HEX for c in v)


def _is_dec(v: str, lo: int, hi: int) -> bool:
    return lo <= len(v) <= hi and all(c in "0123456789" for c in v)


def _is_word(v: str) -> bool:
    return (1 <= len(v) <= 32 and v[0] in _NAME_CHARS
            and all(c in _NAME_CHARS + "_.+-" for c in v))


def _field_ok(kind: str, key: str, v: str) -> bool:
    """The widths of docs/trace-format.md, one key at a time."""
    if kind == "state":
        return (any(_is_hex(v, n) for n in range(1, 9))
                or (len(v) == 9 and v[4] == ":" and _is_hex(v[:4], 4) and _is_hex(v[5:], 4))
                or (len(v) == 7 and v[2] == ":" and v[5] == "." and _is_hex(v[:2], 2)
                    and _is_hex(v[3:5], 2) and v[6] in "01234567"))
    widths = {"int": 2, "ax": 4, "dl": 2, "eax": 8, "ebx": 8, "ecx": 8, "edx": 8, "esi": 8,
              "edi": 8, "ds": 4, "es": 4, "fl": 4, "off": 4, "uart": 4, "div": 4}
    if key in widths:
        return _is_hex(v, widths[key])
    if key == "i":
        return _is_dec(v, 1, 3)
    if key in ("steps", "errors"):
        return _is_dec(v, 3, 3)
    if key == "entry":
        return _is_dec(v, 2, 2)
    if key == "cf":
        return v in ("0", "1")
    if key == "build":
        return v == "none" or (0 < len(v) <= 64 and len(v) % 2 == 0 and all(c in _UPPER_HEX for c in v))
    if key in ("tag", "reason", "version", "next", "via"):
        return _is_word(v)
    return 1 <= len(v) <= 64 and all("!" <= c <= "~" for c in v)


def _reference_record(body: str):
    """The record rules of docs/trace-format.md written plainly, token by token."""
    toks = body.split()
    if len(toks) < 2 or toks[0] != "KT" or toks[1] not in ("banner", "mode", "begin", "end", "data",
                                                            "state", "skip", "done", "boot"):
        return None
    kind, rest, step, name = toks[1], toks[2:], None, None
    if kind in ("begin", "end", "data", "skip"):
        if len(rest) < 2 or not _is_dec(rest[0], 3, 3):
            return None
        step, name, rest = int(rest[0]), rest[1], rest[2:]
    elif kind in ("mode", "state"):
        if not rest:
            return None
        name, rest = rest[0], rest[1:]
    if name is not None and not _is_word(name):
        return None
    fields, hexparts = {}, []
    for tok in rest:
        k, eq, v = tok.partition("=")
        if eq and not hexparts:
            if k in fields or not (1 <= len(k) <= 32 and all(c in _NAME_CHARS + "_" for c in k)):
                return None
            if not _field_ok(kind, k, v):
                return None
            fields[k] = v
        elif kind == "data" and not eq:
            hexparts.append(tok)
        else:
            return None
    data = None
    if kind == "data":
        joined = "".join(hexparts)
        if not joined or len(joined) % 2 or len(joined) > 64 or any(c not in _UPPER_HEX for c in joined):
            return None
        data = bytes.fromhex(joined)
        if int(fields.get("off", "0"), 16) + len(data) > 0x10000:
            return None
    it = "dl=" + fields["dl"] if "dl" in fields else ("i=" + fields["i"] if "i" in fields else None)
    return (kind, step, name, fields, data, it)


_kinds = st.sampled_from(["begin", "end", "data", "state", "mode", "skip", "done", "boot", "banner",
                          "oops", "KT"])
_tokens = st.sampled_from(["012", "12", "e820", "i=3", "dl=80", "off=0000", "a=b=c", "=x", "k=",
                           "00FC", "0A1", "zz", "AB", "ab", "\u00e9", "\u00b2\u00b2\u00b2", "x",
                           "off=FFF0", "off=12345", "off=-001", "i=1234", "i=-1", "cf=2", "cf=1",
                           "eax=0000000G", "eax=00000001", "eax=-0000001", "ax=4100", "dl=800",
                           "steps=071", "steps=71", "steps=9999999", "div=0001", "div=1C200",
                           "v1A=F000:FEA5", "ticks=0012ABCD", "fixed=1", "bdf=00:1F.2", "bdf=00:1F.8",
                           "class=030000", "v1A=F000FEA5F", "AB" * 32, "AB" * 33,
                           "tag=oem", "tag=" + "x" * 40, "build=none", "build=AB", "reason=nodrive"])


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
@example([b"[ 1.0] BUG: x\n", b"y" * 5000, b"\n", b"\xff\xfe BUG \xc3\n", b" cont\r\n", b"hand-off\n"], 2)
def test_prefiltered_lines_match_the_plain_scan(pieces, block_lines):
    from kexectest.trace import prefiltered_lines
    data = b"".join(pieces)
    args = ((b"BUG", b"WARNING", b"panic", b"Linux version"), (b"hand-off",), (b"BUG", b"panic"),
            block_lines)
    key = lambda ls: [(ln.text, ln.truncated, ln.bad_checksum, ln.record) for ln in ls]  # noqa: E731
    assert key(prefiltered_lines(data, *args)) == key(_reference_prefiltered(data, *args))


# ---- the format's widths and ranges ----------------------------------------------------------

def _kt(body: str) -> bytes:
    return format_line(body).encode()


def test_fields_outside_their_width_make_the_line_damaged():
    ok = ["KT data 009 e820 i=2 off=FFE0 " + "AB" * 32, "KT begin 040 edd-check int=13 ax=4100 dl=80",
          "KT banner version=0.1.0 build=none entry=32 uart=03F8 div=FFFF steps=999",
          "KT state ivt v08=F000:FEA5 v1A=F000:FE6E", "KT state apic present=0",
          "KT state pcifn bdf=00:1F.2 vendor=8086 device=2922 class=010601 cmd=0507 hdr=00",
          "KT end 012 e820 i=127 cf=1 eax=FFFFFFFF ds=0000 es=FFFF fl=0202"]
    for body in ok:
        ln = parse_line(_kt(body))
        assert ln.record is not None and not ln.bad_checksum and not ln.malformed, body
    bad = ["KT data 009 e820 off=80000000 00",          # off= of 2^31
           "KT data 009 e820 off=FFF0 " + "AB" * 17,    # past the 64 KiB the offset reaches
           "KT data 009 e820 off=0000 " + "AB" * 33,    # more than 32 bytes on one line
           "KT data 009 e820 off=0000 ab",              # lower-case hex
           "KT data 009 e820 off=0000",                 # no bytes
           "KT data 009 e820 off=0000 ABC",             # odd digit count
           "KT banner div=1C200 steps=071",             # a divisor wider than a word
           "KT banner steps=9999999",                   # millions of steps
           "KT done steps=071 errors=0000000000000000000000000000001",
           "KT end 045 edd-params dl=800 cf=0",         # dl wider than a byte
           "KT end 045 edd-params dl=80 cf=2",          # carry neither 0 nor 1
           "KT end 045 edd-params dl=80 cf=0 eax=-0000001",
           "KT end 045 edd-params dl=80 cf=0 eax=0x000001",
           "KT end 045 edd-params dl=80 cf=0 eax=+1",
           "KT begin 009 e820 int=15 ax=E820 i=1000",   # more iterations than 3 digits
           "KT begin 009 e820 int=15 ax=E820 ax=E820",  # a key twice
           "KT begin 009 e\u00e9820 int=15",             # not ASCII
           "KT begin 9 e820 int=15",                    # step number not 3 digits
           "KT state regs eax=123456789",               # a state value of 9 digits
           "KT state pcifn bdf=00:1F.9",                # a PCI function past 7
           "KT state regs eax=",                        # an empty value
           "KT mode =real"]
    for body in bad:
        ln = parse_line(body.encode() + f" ~{checksum(body.encode()):04X}".encode())
        assert ln.record is None and ln.bad_checksum and ln.malformed, body
    # a checksum failure is damage too, but not a format break
    ln = parse_line(_kt("KT mode real")[:-1] + b"0")
    assert ln.bad_checksum and not ln.malformed


@settings(max_examples=500, deadline=None)
@given(st.lists(_tokens, max_size=8), _kinds)
def test_no_record_yields_a_huge_or_negative_number(toks, kind):
    body = " ".join(["KT", kind, "012", "e820"] + toks)
    rec = parse_line(body.encode() + f" ~{checksum(body.encode()):04X}".encode()).record
    if rec is None:
        return
    for key in rec.fields:
        v = rec.hex(key)
        assert v is None or 0 <= v <= 0xFFFFFFFF
    assert rec.step is None or 0 <= rec.step <= 999
    if rec.data is not None:
        assert 1 <= len(rec.data) <= 32 and (rec.hex("off") or 0) + len(rec.data) <= 0x10000


# ---- saved logs --------------------------------------------------------------------------------

def _with_alarm(fn, seconds=20):
    """Run fn; a stall fails the test instead of hanging the suite."""
    import signal

    def expired(*_):
        raise TimeoutError(f"no result within {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_email_bad_checksum_after_a_good_line_before_long_lines_returns():
    from kexectest.trace import lines_from_log
    good = format_line("KT mode real")
    bad = format_line("KT begin 008 base-mem int=12 ax=0000")[:-1] + "0"
    text = ["> hello", "> " + good, "> " + bad] + ["> " + "x" * 5000] * 3 + ["> more"] * 5
    lines, fmt = _with_alarm(lambda: lines_from_log(("\n".join(text) + "\n").encode()))
    assert fmt == "email"
    assert [ln.text for ln in lines[:3]] == ["hello", good, bad]
    assert lines[1].record is not None and lines[2].bad_checksum and lines[2].record is None


def _wrapped(body: str, cuts: list[int], drop_space: bool) -> list[str]:
    """A KT line as an email client wraps it at the given offsets (at a space, the space is lost
    or kept at the end of the line; elsewhere a hard wrap)."""
    line, out, prev = format_line(body), [], 0
    for c in cuts:
        out.append(line[prev:c])
        prev = c + 1 if drop_space and line[c] == " " else c
    out.append(line[prev:])
    return out


def test_email_wrapped_lines_rejoined_at_spaces_hard_wraps_and_before_the_checksum():
    from kexectest.trace import lines_from_log
    end = ("KT end 041 edd-params dl=80 cf=0 eax=00000000 ebx=00000000 ecx=00000000 "
           "edx=00000080 esi=00000000 edi=00000000 ds=2000 es=2000 fl=0202")
    data = "KT data 041 edd-params dl=80 off=0000 " + "1A00" * 16
    full_end, full_data = format_line(end), format_line(data)
    spaces = [i for i, c in enumerate(full_end) if c == " "]
    cases = [
        (_wrapped(end, [spaces[5], spaces[11]], True), full_end),   # two wraps at spaces
        (_wrapped(end, [spaces[5], spaces[11]], False), full_end),  # spaces kept (then stripped)
        (_wrapped(end, [len(full_end) - 6], True), full_end),       # "~CCCC" alone on the last line
        (_wrapped(data, [72], False), full_data),                   # a hard wrap inside the hex run
        (_wrapped(data, [20, 72], False), full_data),
    ]
    for pieces, want in cases:
        text = ["> " + p for p in ["Hi,", "the log:"] + pieces + ["thanks"]]
        lines, fmt = lines_from_log(("\n".join(text) + "\n").encode())
        assert fmt == "email"
        assert [ln.text for ln in lines] == ["Hi,", "the log:", want, "thanks"], pieces
        assert lines[2].record is not None


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_checksum_of_a_join_is_extended_and_cut_without_rescanning(a, b):
    from kexectest.trace.logs import _fletcher_cut, _fletcher_join
    assert _fletcher_join(checksum(a), b) == checksum(a + b)
    assert _fletcher_cut(checksum(a + b), b) == checksum(a)


def test_timestamped_log_reads_cut_marks_and_refuses_absurd_stamps():
    from kexectest.trace import lines_from_log
    log = (b"+00001.500000\tfirst\n+00002.000000~\tpiece one\n+00002.000000~\tpiece two\n"
           b"+" + b"9" * 400 + b".0\tstamp too long to be a number\n")
    lines, fmt = lines_from_log(log)
    assert fmt == "timestamped"
    assert [(ln.text, ln.t, ln.truncated) for ln in lines[:3]] == [
        ("first", 1.5, False), ("piece one", 2.0, True), ("piece two", 2.0, True)]
    assert lines[3].t is None and lines[3].text.endswith("stamp too long to be a number")


def test_a_huge_line_costs_a_few_lines_in_every_format():
    from kexectest.trace import lines_from_log
    from kexectest.analysis.kernel import REPLAY_FILTER
    huge = b"x" * (6 << 20)
    for data in (huge, b"KT mode real\n" + huge + b"\nend\n", b"+00001.000000\t" + huge + b"\n"):
        for pf in (None, REPLAY_FILTER):
            lines, _fmt = lines_from_log(data, pf)
            pieces = [ln for ln in lines if ln.truncated]
            assert 1 <= len(pieces) <= 3 and all(len(ln.text) <= MAX_LINE for ln in pieces)
