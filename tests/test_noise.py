"""Noise never misattributes: a damaged, lost or repeated line is evidence about the line, not
the firmware.  The named cases of issue 16, every single-bit error of a whole small trace, and a
bounded, seeded run of the noise campaign over the real captures (benchmarks/bench_noise.py is
the long one)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from kexectest.analysis.core import analyze
from kexectest.analysis.replay import analyze_bytes, analyze_capture
from kexectest.errors import KexectestError
from kexectest.trace import format_line, split_all
from noise import KINDS, RATES, mutate, wrong_diagnosis
from reportschema import assert_valid_report

CORPUS = Path(__file__).parent / "corpus"
REGS = "ebx=00000000 ecx=00000000 edx=00000000 esi=00000000 edi=00000000 ds=2000 es=2000 fl=0246"
EDID = bytes.fromhex("00FFFFFFFFFFFF00") + bytes(range(8, 128))


def trace(done: bool = True, hang_at: int | None = None) -> list[str]:
    """A small whole trace: banner, three steps (one with a 128-byte EDID dump), done."""
    out = ["[   20.100000] kexec_core: Starting new kernel",
           "KT banner version=0.1.0 build=AB entry=32 uart=03F8 div=0001 steps=003", "KT mode real"]
    steps = [("base-mem", "12", "0000", "eax=0000027F", b""), ("edid", "10", "4F15", "eax=0000004F", EDID),
             ("wait", "15", "8600", "eax=00008600", b"")]
    for i, (name, intno, ax, eax, data) in enumerate(steps):
        out.append(f"KT begin {i:03d} {name} int={intno} ax={ax}")
        if i == hang_at:
            return [x if not x.startswith("KT ") else format_line(x) for x in out]
        out.append(f"KT end {i:03d} {name} cf=0 {eax} {REGS}")
        out += [f"KT data {i:03d} {name} off={o:04X} {data[o:o + 32].hex().upper()}" for o in range(0, len(data), 32)]
    if done:
        out += ["KT done steps=003 errors=000", "KT mode halt"]
    return [x if not x.startswith("KT ") else format_line(x) for x in out]


def report(lines: list[str], **kw) -> dict:
    d = analyze(split_all(("\r\n".join(lines) + "\r\n").encode()), **kw).to_dict()
    assert_valid_report(d)
    return d


def test_the_small_trace_is_what_it_claims():
    assert report(trace())["verdict"] == "completed"
    h = report(trace(hang_at=1), stop_reason="timeout", silence_s=30.0)
    assert h["verdict"] == "hung" and h["hang"]["step"] == "edid" and h["hang"]["measured"]


def _elf(dump_lens):
    """What analyze reads of a payload ELF: its step table with each row's dump length."""
    names = ("base-mem", "edid", "wait")
    return SimpleNamespace(steps=[SimpleNamespace(name=n, dump_len=d) for n, d in zip(names, dump_lens)])


def test_one_lost_edid_data_line_is_not_a_firmware_error():
    lines = trace()
    data = [i for i, x in enumerate(lines) if "KT data 001 edid" in x]
    for lost in data:
        d = report(lines[:lost] + lines[lost + 1:])
        assert "EDID header invalid" not in d["summary"] and d["verdict"] != "failed-steps"
        if lost != data[-1]:  # a hole in the offsets shows
            assert d["verdict"] == "garbled" and d["steps"][1]["status"] == "unknown", d["summary"]
            assert d["damage"]["gaps"] == 1
        else:  # a lost last chunk of 32 bytes leaves a dump that looks whole: the ELF knows better
            assert "manufacturer" not in d["steps"][1]["result"]
            d = report(lines[:lost] + lines[lost + 1:], payload=_elf((0, 128, 0)))
            assert d["verdict"] == "garbled" and "96 of its 128 data bytes" in d["steps"][1]["reason"]
    damaged = list(lines)  # the EDID header's first data line with one bit flipped
    damaged[data[0]] = damaged[data[0]].replace("off=0000 00FF", "off=0000 00FE")
    d = report(damaged)
    assert d["verdict"] == "garbled" and d["damage"]["bad_checksum"] == 1
    assert d["steps"][1]["status"] == "unknown" and d["steps"][1]["damaged"] == [damaged[data[0]]]


def test_a_lost_final_line_is_not_a_hang():
    hung = trace(hang_at=1)
    d = report(hung[:-1] + [hung[-1][:-3] + "xyz"], stop_reason="timeout", silence_s=30.0)
    assert d["verdict"] == "garbled" and d["damage"]["trailing"] and not d["hang"]["definite"]
    whole = trace()
    assert report(whole[:-2])["verdict"] == "completed"  # done and halt lost: every step answered
    d = report(whole[:-3])  # the last step's end line too: its begin is last, nothing damaged
    assert d["verdict"] == "hung" and d["hang"]["step"] == "wait" and not d["hang"]["measured"]
    assert "not measured" in d["summary"]


@pytest.mark.parametrize("reason,words", [("eof", "console lost (end of stream)"),
                                          ("lost", "console lost (connection broke)"),
                                          ("max-time", "cut short by the overall time limit")])
def test_lost_console_or_time_limit_is_not_a_hang(reason, words):
    d = report(trace(hang_at=1), stop_reason=reason, silence_s=0.0)
    assert d["verdict"] == "interrupted" and words in d["summary"], d["summary"]
    assert "hung" not in d["summary"] and "0.0 s of silence" not in d["summary"]
    assert d["hang"]["step"] == "edid" and not d["hang"]["measured"] and d["steps"][1]["status"] == "unknown"


def test_sequence_gaps_make_the_step_unknown():
    lines = trace()
    no_end = [x for x in lines if "KT end 000" not in x]  # a begin without its end, then another begin
    d = report(no_end)
    assert d["steps"][0]["status"] == "unknown" and "end line is missing" in d["steps"][0]["reason"]
    no_step = [x for x in lines if " 002 " not in x]  # a whole step lost
    d = report(no_step)
    assert d["steps"][2]["status"] == "unknown" and d["verdict"] == "garbled"
    hole = [x for x in lines if "off=0020" not in x]  # a data line in the middle of a dump
    d = report(hole)
    assert "data lines missing at offset 0020" in d["steps"][1]["reason"]


def test_scrubbed_line_is_not_evidence():
    """A line in which a secret was masked is quoted as damaged, never counted as an answer."""
    lines = split_all(("\r\n".join(trace()) + "\r\n").encode())
    i = next(k for k, ln in enumerate(lines) if ln.text.startswith("KT end 002"))
    lines[i] = replace(lines[i], text=lines[i].text.replace("8600", "****"), scrubbed=True)
    d = analyze_capture(lines, stop_reason="replay").to_dict()
    assert d["damage"]["scrubbed"] == 1 and d["steps"][2]["status"] == "unknown"
    assert d["verdict"] == "garbled" and "completed" not in d["summary"]


def test_duplicated_lines_are_read_once():
    lines = trace()
    d = report([x for line in lines for x in (line, line)])
    assert d["verdict"] == "completed" and d["damage"]["duplicated"] == sum(x.startswith("KT ") for x in lines)


@pytest.mark.parametrize("hang_at", [None, 1])
def test_every_single_bit_error_of_a_trace(hang_at):
    """Each bit of the whole capture (line ends and the hand-off line included) flipped on its
    own: no flip makes the analysis claim what the undamaged trace does not."""
    data = ("\r\n".join(trace(hang_at=hang_at)) + "\r\n").encode()
    orig = analyze_bytes(data).to_dict()
    wrong = []
    for bit in range(len(data) * 8):
        b = bytearray(data)
        b[bit >> 3] ^= 1 << (bit & 7)
        try:
            got = analyze_bytes(bytes(b)).to_dict()
        except KexectestError:
            continue
        why = wrong_diagnosis(orig, got)
        if why:
            wrong.append((bit >> 3, bit & 7, why[0]))
    assert not wrong, f"{len(wrong)} of {len(data) * 8} flips misread, e.g. {wrong[:3]}"


REAL = sorted(CORPUS.glob("real-*.log"))


@pytest.mark.parametrize("kind", KINDS)
def test_noise_campaign_bounded(kind):
    """The campaign, seeded and bounded: 4 damaged copies of every real capture at every rate
    (84 inputs per kind), no wrong diagnosis."""
    rng = random.Random(f"ci-{kind}")
    wrong = []
    for path in REAL:
        data = path.read_bytes()
        orig = analyze_bytes(data).to_dict()
        for rate in RATES:
            for _ in range(4):
                try:
                    got = analyze_bytes(mutate(data, kind, rate, rng)).to_dict()
                except KexectestError:
                    continue
                assert_valid_report(got)
                why = wrong_diagnosis(orig, got)
                if why:
                    wrong.append(f"{path.stem} {rate:g}: {why[0]}")
    assert not wrong, wrong[:5]
