"""Classic kexec_test transcripts: where it hung, from which labels print before/after."""

from __future__ import annotations

from pathlib import Path

import pytest

from kexectest.analysis.classic import analyze_classic, looks_classic
from kexectest.trace import split_all

HEAD = ["kexec_test 1.8 starting...", "eax: 0E1FB007 ebx: 0000115C ecx: 00000000 edx: 00000000",
        "Switching descriptors.", "Descriptors changed.", "Legacy pic setup.", "In real mode."]


def run(*texts):
    ls = split_all(("\r\n".join(texts) + "\r\n").encode())
    assert looks_classic(ls)
    return analyze_classic(ls)


@pytest.mark.parametrize("tail,step,between", [
    ([], "sti", False),
    (["Interrupts enabled."], "base-mem", False),  # int 12h prints after the call
    (["Interrupts enabled.", "Base memory size: 027F", "A20 disabled.", "E820 Memory Map."], "e820", False),
    (["Interrupts enabled.", "Base memory size: 027F", "A20 disabled.", "E820 Memory Map.",
      "000000000009FC00 @ 0000000000000000 type: 00000001", "E801  Memory size: 0001FC00"], "mem88", False),
    (["Testing for APM."], "apm-check", False),
    (["APM test done.", "Equiptment list: "], "equipment", False),
    (["APM test done.", "Equiptment list: 0027"], "sysdesc", True),  # between calls, before the label
    (["Video Mode: 0003", "Setting auto repeat rate "], "kbd-rate", False),
    (["DASD type: 0003 00000000", "EDD:"], "edd", False),
    (["DASD ty"], "dasd-type", False),  # the label itself cut on the wire
])
def test_hang_points(tail, step, between):
    a = run(*HEAD, *tail)
    assert a.verdict == "hung" and a.hang["step"] == step
    assert a.hang["between_steps"] is between
    assert a.source == "classic"


def test_completed_and_a20_failure():
    done = HEAD + ["Interrupts enabled.", "A20 gate not responding!", "Interrupts disabled.", "In protected mode.",
                   "Halting."]
    a = run(*done)
    assert a.verdict == "failed-steps" and [s["id"] for s in a.steps if s["status"] == "error"] == ["a20-enable"]


def test_reset_in_classic():
    a = run(*HEAD, "Interrupts enabled.", "SeaBIOS (version 1.16.2)")
    assert a.verdict == "reset"


def test_classic_shares_the_verdict_ladder():
    """The classic reader fills the same Evidence and reads the same LADDER: a lost console is
    not a hang, a measured silence says so, a missing last line is no hang."""
    ls = split_all(("\r\n".join(HEAD + ["Interrupts enabled."]) + "\r\n").encode())
    assert analyze_classic(ls, stop_reason="eof").verdict == "interrupted"
    a = analyze_classic(ls, stop_reason="timeout", silence_s=12.5)
    assert a.verdict == "hung" and a.hang["step"] == "base-mem" and "after 12.5 s of silence" in a.summary
    assert a.hang["measured"] and a.hang["definite"]
    b = run(*REAL[:-1])  # 'Halting.' lost: every BIOS call had answered
    assert b.verdict == "completed" and "did not arrive" in b.summary and b.hang is None
    c = run(*[x for x in REAL if not x.startswith("Video Mode")])  # a line lost mid-way
    assert c.verdict == "garbled" and [s.id for s in c.steps if s.status == "unknown"] == ["video-mode"]


# the real lab transcript (tests/corpus/real-classic-lab.log), from its banner on
REAL = [ln.split("\t", 1)[1] for ln in (Path(__file__).parent / "corpus" / "real-classic-lab.log")
        .read_text().splitlines() if "\t" in ln]
REAL = REAL[next(i for i, x in enumerate(REAL) if x.startswith("kexec_test ")):]


def test_classic_damaged_line_is_unknown_and_a_repeated_banner_no_reset():
    lines = [REAL[0]] + REAL  # the banner twice: the wire repeated it
    i = lines.index("A20 disabled.")
    lines[i] = "A2\x010 disab|ed."
    a = analyze_classic(split_all(("\r\n".join(lines) + "\r\n").encode()))
    assert a.verdict == "garbled" and a.damage.duplicated == 1 and a.damage.lines == 1
    assert [s.id for s in a.steps if s.status == "unknown"] == ["base-mem", "a20-disable"]


def test_classic_apm_chain_stops_only_where_the_test_does():
    """kexec_test stops its APM chain only after the install check or the connect (each jumps to
    'APM test done.'); a pair cut in half is a lost line."""
    no_disable = [x for x in REAL if x not in ("APM disabling.", "APM disconnecting.")]
    assert run(*no_disable).verdict == "completed"  # the connect failed: a chain that stops
    lost = [x for x in REAL if x != "APM disconnecting."]
    a = run(*lost)
    assert a.verdict == "garbled" and [s.id for s in a.steps if s.status == "unknown"] == ["apm-disconnect2"]
