"""Time measured on the target (payloads/tsc.S): the end line's `us=` field through the parser
and the analysis (steps[].target_us), and under QEMU the calibration against the PIT and the
calls it times (the 100 ms int 15h AH=86h wait)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kexectest import payload as pl
from kexectest.analysis.replay import analyze_bytes
from kexectest.trace import format_line, split_all
from kexectest.trace.format import checksum, parse_line
from reportschema import assert_valid_report

CORPUS = Path(__file__).parent / "corpus"


def _relined(text: str, change) -> bytes:
    """The log with every intact KT end line passed through change(body, n) (re-checksummed;
    a console's time stamp before it kept)."""
    out, n = [], 0
    for line in text.splitlines():
        m = re.fullmatch(r"(.*?)(KT end .*) ~([0-9A-F]{4})", line)
        if m and int(m[3], 16) == checksum(m[2].encode()):
            body = change(m[2], n)
            n += 1
            line = m[1] + format_line(body) if body is not None else line
        out.append(line)
    return ("\n".join(out) + "\n").encode()


def _timed(us_of) -> dict:
    raw = _relined((CORPUS / "completed.log").read_text(),
                   lambda body, n: body if us_of(n) is None else f"{body} us={us_of(n)}")
    report = analyze_bytes(raw).to_dict()
    assert_valid_report(report)
    return report


def test_us_field_is_parsed_and_held_to_its_width():
    base = "KT end 068 wait cf=0 eax=00008600 ebx=00000000 ecx=00000001 edx=000086A0 " \
           "esi=00000000 edi=00000000 ds=2000 es=2000 fl=0246"
    rec = parse_line(format_line(base + " us=0001A4C5").encode()).record
    assert rec is not None and rec.hex("us") == 107717
    old = parse_line(format_line(base).encode())  # a trace from before the field
    assert old.record is not None and "us" not in old.record.fields
    for bad in ("us=1A4C5", "us=0001a4c5", "us=00001A4C5", "us=-0000001"):
        ln = parse_line(format_line(f"{base} {bad}").encode())
        assert ln.record is None and ln.malformed, bad


def test_target_us_adds_a_steps_calls_up():
    report = _timed(lambda n: f"{1000 + n:08X}")
    steps = {s["id"]: s for s in report["steps"]}
    for s in report["steps"]:
        if s["calls"]:
            assert s["target_us"] == sum(c["target_us"] for c in s["calls"]), s["id"]
            assert all(isinstance(c["target_us"], int) for c in s["calls"])
        else:
            assert s["target_us"] is None, s["id"]  # skipped: nothing was timed
    e820 = steps["e820"]
    assert len(e820["calls"]) > 1  # the E820 loop: one call per entry, each timed
    assert e820["target_us"] == sum(c["target_us"] for c in e820["calls"]) > 1000 * len(e820["calls"])


def test_a_step_is_timed_only_when_every_call_is():
    probe = _timed(lambda n: "00000010")
    # the end lines in the order _relined numbers them, to leave the field off one E820 call
    ends = [s["id"] for s in probe["steps"] for c in s["calls"]]
    second_e820 = ends.index("e820") + 1
    wait = ends.index("wait")
    report = _timed(lambda n: None if n == second_e820 else "FFFFFFFF" if n == wait else "00000010")
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["e820"]["target_us"] is None and steps["e820"]["status"] == "ok"
    assert steps["e820"]["calls"][1]["target_us"] is None
    assert steps["e820"]["calls"][0]["target_us"] == 16
    assert steps["wait"]["target_us"] is None  # FFFFFFFF: too long to count, no duration
    assert steps["e801"]["target_us"] == 16


def test_a_trace_without_the_field_has_no_target_time():
    report = analyze_bytes((CORPUS / "completed.log").read_bytes()).to_dict()
    assert report["verdict"] == "completed"
    assert all(s["target_us"] is None for s in report["steps"])
    assert all(c["target_us"] is None for s in report["steps"] for c in s["calls"])


def test_a_step_cut_short_has_no_target_time():
    """The trace stops inside the E820 loop: its ended calls keep their times, the step (one
    call never ended) has none; the steps before it do."""
    text = (CORPUS / "completed.log").read_text()
    cut = text[:text.index("KT begin 009 e820 int=15 ax=E820 i=3")]
    cut += format_line("KT begin 009 e820 int=15 ax=E820 i=3") + "\n"
    report = analyze_bytes(_relined(cut, lambda body, n: f"{body} us=00000100")).to_dict()
    e820 = next(s for s in report["steps"] if s["id"] == "e820")
    assert e820["status"] in ("hung", "unknown") and len(e820["calls"]) == 3
    assert [c["target_us"] for c in e820["calls"]] == [0x100] * 3 and e820["target_us"] is None
    assert next(s for s in report["steps"] if s["id"] == "base-mem")["target_us"] == 0x100


# --- under QEMU: the calibration and the calls it times -------------------------------------------

def _boot(built_payload, tmp_path, extra=()):
    from test_payload_boot import boot

    elf = pl.patch(built_payload, tmp_path / "p.elf", debug_exit=True)
    raw, _debugcon, status = boot(elf, tmp_path, extra=extra)
    assert status == (0x31 << 1) | 1, "the payload ends through isa-debug-exit"
    return raw


@pytest.mark.qemu
def test_tsc_calibrated_against_the_pit_times_every_call(built_payload, tmp_path):
    raw = _boot(built_payload, tmp_path)
    records = [ln.record for ln in split_all(raw) if ln.record is not None]
    kinds = [(r.kind, r.name) for r in records]
    assert kinds.index(("state", "tsc")) == kinds.index(("mode", "real")) + 1
    tsc = next(r for r in records if (r.kind, r.name) == ("state", "tsc"))
    khz, ticks, err, lo, hi, tries, latch = (int(tsc.fields[k], 16) for k in (
        "khz", "ticks", "err", "min", "max", "tries", "latch"))
    assert tsc.fields["present"] == "1" and latch == 11932  # 10 ms of the PIT's 1193182 Hz
    assert khz == ticks * 1193182 // (latch * 1000) and 100_000 < khz < 10_000_000
    assert 0 < lo <= ticks <= hi and 1 <= tries <= 16 and err <= ticks // 64
    ends = [r for r in records if r.kind == "end"]
    assert ends and all(len(r.fields.get("us", "")) == 8 for r in ends)
    report = analyze_bytes(raw).to_dict()
    assert_valid_report(report)
    steps = {s["id"]: s for s in report["steps"]}
    # int 15h AH=86h waits CX:DX = 100000 microseconds: the TSC, calibrated on the PIT's channel
    # 2, must not find it shorter (5 % for the calibration), nor absurdly long
    assert 95_000 <= steps["wait"]["target_us"] <= 2_000_000, steps["wait"]["target_us"]
    # tick-advance busy-waits on PIT channel 0 for 8 x 65536 counts (about 220 ms)
    assert 200_000 <= steps["tick-advance"]["target_us"] <= 3_000_000
    timed = [s for s in report["steps"] if s["status"] == "ok"]
    assert all(isinstance(s["target_us"], int) for s in timed)
    assert max(timed, key=lambda s: s["target_us"])["id"] in ("tick-advance", "wait")


@pytest.mark.qemu
def test_no_tsc_no_timing(built_payload, tmp_path):
    """CPUID without the TSC bit: the payload says so and times nothing; the analysis has no
    target time and the report does not invent one."""
    raw = _boot(built_payload, tmp_path, extra=("-cpu", "qemu64,-tsc"))
    records = [ln.record for ln in split_all(raw) if ln.record is not None]
    tsc = next(r for r in records if (r.kind, r.name) == ("state", "tsc"))
    assert tsc.fields == {"present": "0"}
    assert not [r for r in records if r.kind == "end" and "us" in r.fields]
    report = analyze_bytes(raw).to_dict()
    assert report["verdict"] == "completed"
    assert all(s["target_us"] is None for s in report["steps"])
