"""Numbers read from a record never size, divide or index anything before they are checked
against the payload's own limits: each root cause the fuzz campaign found is one case here, and
a property test throws checksum-valid records with arbitrary fields at the whole pipeline."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from kexectest.analysis.classic import analyze_classic
from kexectest.analysis.core import analyze
from kexectest.analysis.model import STEP_STATUSES, VERDICTS
from kexectest.output.report import render_summary_md, render_terminal
from kexectest.trace import format_line, split_all
from reportschema import assert_valid_report

BANNER = "KT banner version=0.1.0 build=AB entry=32 uart=03F8 div=0001 steps=071"
REGS = "cf=0 eax=0000027F ebx=00000000 ecx=00000000 edx=00000000 esi=00000000 edi=00000000 ds=2000 es=2000 fl=0246"


def run(*bodies, stop_reason="replay"):
    text = "\r\n".join(format_line(b) if b.startswith("KT ") else b for b in bodies) + "\r\n"
    a = analyze(split_all(text.encode()), stop_reason=stop_reason, silence_s=5.0)
    _rendered(a)
    return a


def _rendered(a):
    """The report is valid, and both renderings of it work."""
    d = a.to_dict()
    assert_valid_report(d)
    assert d["verdict"] in VERDICTS and all(s["status"] in STEP_STATUSES for s in d["steps"])
    assert render_summary_md(a).startswith(f"## kexectest: {d['verdict']}")
    render_terminal(a, Console(file=io.StringIO(), width=120))
    return d


EDID = ["KT begin 060 edid int=10 ax=4F15", "KT end 060 edid cf=0 eax=0000004F ebx=00000001 ecx=00000000 "
        "edx=00000000 esi=00000000 edi=00000000 ds=2000 es=2000 fl=0246"]


@pytest.mark.parametrize("off", ["FFF0", "80000000", "1" * 30, "-001", "00g0"])
def test_data_offset_out_of_range_is_malformed(off):
    """`off=` beyond a 64 KiB dump, or not 4 hex digits: never sizes a buffer."""
    a = run(BANNER, "KT mode real", *EDID, f"KT data 060 edid off={off} " + "AB" * 32)
    assert a.damage.malformed == 1
    assert a.steps[60].status == "unknown" and "damaged" in a.steps[60].reason
    assert all(len(bytes.fromhex(c["data"].get("", ""))) <= 32 for c in a.steps[60].calls)


@pytest.mark.parametrize("field,value", [("div", "0000"), ("div", "1C2001"), ("steps", "9999999"),
                                         ("steps", "300"), ("div", "-001")])
def test_banner_numbers_out_of_range(field, value):
    """A divisor of 0 or beyond 16 bits, a step count beyond the payload's 256: the banner is
    not believed, nothing divides by it or sizes a table with it."""
    bad = BANNER.replace("div=0001" if field == "div" else "steps=071", f"{field}={value}")
    a = run(bad, "KT mode real", "KT begin 000 state int=00 ax=0000", f"KT end 000 state {REGS}")
    assert a.damage.malformed == 1 and a.payload.get("steps") is None
    assert len(a.steps) <= 256 and a.timing["baud"] == 115200


@pytest.mark.parametrize("line", [
    f"KT end 008 base-mem {REGS.replace('eax=0000027F', 'eax=-0000001')}",
    f"KT end 008 base-mem {REGS.replace('eax=0000027F', 'eax=' + 'F' * 40)}",
    f"KT end 008 base-mem {REGS.replace('cf=0', 'cf=7')}",
    "KT begin 300 base-mem int=12 ax=0000",
    "KT begin 009 e820 int=15 ax=E820 i=500",
    "KT begin 041 edd-params int=13 ax=4800 dl=05",
])
def test_register_and_index_fields_out_of_format(line):
    """Negative, oversized or wrong-width registers, a step number beyond 256, an E820 call
    beyond the loop's 128, a drive that is no BIOS hard disk: malformed, never decoded."""
    a = run(BANNER, "KT mode real", "KT begin 008 base-mem int=12 ax=0000", line)
    assert a.damage.malformed == 1
    assert a.verdict != "failed-steps"


def test_missing_fields_are_handled():
    """A disk step without `dl=`, an end line with only some registers."""
    a = run(BANNER, "KT mode real", "KT begin 041 edd-params int=13 ax=4800",
            "KT end 041 edd-params cf=0 eax=00000000", "KT data 041 edd-params off=0000 4200",
            "KT begin 042 disk-geometry int=13 ax=0800", stop_reason="timeout")
    assert a.verdict == "hung" and a.hang["step"] == "disk-geometry" and a.hang["drive"] is None
    assert a.steps[41].status == "ok"


def test_classic_e820_type_of_4000_digits():
    """A classic transcript's E820 line with a 4,000-digit type: a damaged line, not a number."""
    head = ["kexec_test 1.8 starting...", "eax: 0E1FB007 ebx: 0000115C ecx: 00000000 edx: 00000000",
            "In real mode.", "Interrupts enabled.", "Base memory size: 027F", "A20 disabled.",
            "E820 Memory Map."]
    ls = split_all(("\r\n".join(head + ["000000000009FC00 @ 0000000000000000 type: " + "1" * 4000,
                                        "E801  Memory size: 0001FC00"]) + "\r\n").encode())
    a = analyze_classic(ls)
    d = _rendered(a)
    assert d["e820"] == [] and d["steps"][8]["status"] == "unknown"


_TOKENS = st.one_of(
    st.sampled_from(["eax", "ebx", "ecx", "cf", "off", "dl", "i", "div", "steps", "int", "ax", "tag",
                     "fl", "ds", "es", "reason", "next", "build", "uart"]).flatmap(
        lambda k: st.text(alphabet="0123456789ABCDEF-xg=", min_size=0, max_size=40).map(lambda v: f"{k}={v}")),
    st.text(alphabet="0123456789ABCDEF", min_size=0, max_size=80))
_RECORD = st.tuples(
    st.sampled_from(["banner", "mode", "begin", "end", "data", "state", "skip", "done", "boot"]),
    st.sampled_from(["000", "008", "009", "041", "060", "255", "999", "07"]),
    st.sampled_from(["state", "base-mem", "e820", "edd-params", "edid", "x"]),
    st.lists(_TOKENS, max_size=8)).map(
    lambda r: " ".join(["KT", r[0]] + ([r[1], r[2]] if r[0] in ("begin", "end", "data", "skip") else
                                       [r[2]] if r[0] in ("mode", "state") else []) + r[3]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_RECORD, min_size=1, max_size=40), st.sampled_from(["replay", "timeout", "eof", "final"]))
def test_checksum_valid_records_with_any_fields_never_crash(records, stop_reason):
    a = run(BANNER, "KT mode real", *records, stop_reason=stop_reason)
    assert sum(len(bytes.fromhex(c["data"].get(t, ""))) for s in a.steps for c in s.calls
               for t in c["data"]) <= 32 * len(records)
