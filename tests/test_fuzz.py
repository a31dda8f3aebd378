"""No input crashes or stalls the analysis: the bounded fuzz run (the mutation fuzzer of
tests/fuzzing.py over both paths a user has), every minimised input that once crashed
(tests/fuzz_regressions/), and well-formed traces with arbitrary values in every field.
The long run is benchmarks/bench_fuzz.py."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from kexectest.analysis.replay import analyze_capture
from kexectest.trace import format_line, split_all

FUZZ_INPUTS = 1500  # about 20 s on one core; benchmarks/bench_fuzz.py runs a million
TIME_LIMIT = 10.0  # seconds per input before it counts as a hang


def test_bounded_fuzz_run_has_no_crash_and_no_hang(tmp_path):
    whole, windows = fuzzing.seeds()
    assert len(whole) >= 30 and len(windows) >= 100  # the corpus is the seed: not an empty run
    findings, verdicts = [], Counter()
    for i in range(FUZZ_INPUTS):
        data = fuzzing.make_input(i, whole, windows, seed=1)
        out = fuzzing.run_one(data, tmp_path, i, TIME_LIMIT, terminal_every=25)
        if out.kind != "ok":
            findings.append((i, out.kind, out.signature, out.detail))
    assert not findings, "\n".join(map(str, findings[:10]))
    # the inputs reach the analysis (verdicts of every kind), not only its bad-input exit
    for i in range(0, 200):
        data = fuzzing.make_input(i, whole, windows, seed=1)
        verdicts[fuzzing.report_path(data, tmp_path)] += 1
    assert len(verdicts) >= 5 and verdicts["bad-input"] < 20


def _regressions():
    return sorted(fuzzing.REGRESSIONS.glob("*.log"))


def test_the_regression_inputs_are_described():
    readme = (fuzzing.REGRESSIONS / "README.md").read_text()
    logs = _regressions()
    assert logs
    for p in logs:
        assert f"`{p.name}`" in readme, f"{p.name} has no line in fuzz_regressions/README.md"


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.stem)
def test_an_input_that_once_crashed_runs_through_both_paths(path, tmp_path):
    data = path.read_bytes()
    old = signal.signal(signal.SIGALRM, fuzzing._on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT * 3)
    try:
        fuzzing.report_path(data, tmp_path, render_terminal=True)
        for i, reason in enumerate(fuzzing.STOP_REASONS):
            fuzzing.run_path(data, tmp_path, reason, chunk=(0, 1, 97, 4096)[i], render_terminal=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- well-formed traces, arbitrary values ---------------------------------------------------

_h = lambda n: st.integers(0, (1 << (4 * n)) - 1).map(lambda v: f"{v:0{n}X}")  # noqa: E731
_names = st.sampled_from(["state", "e820", "edd-check", "edd-params", "disk-geometry", "dasd-type",
                          "read-chs", "read-lba", "vbe-info", "vbe-mode-info", "edid", "rtc-time",
                          "rtc-date", "pci-bios", "sysconf", "equipment", "int19-boot", "ist",
                          "apm-check", "fdpt-hd0", "tick-advance", "step-x"])
_iter = st.one_of(st.just(""), _h(2).map(lambda v: f" dl={v}"), st.integers(0, 999).map(lambda v: f" i={v}"))
_regs = st.lists(st.tuples(st.sampled_from(["cf", "eax", "ebx", "ecx", "edx", "esi", "edi", "ds", "es", "fl"]),
                           st.integers(0, 0xFFFFFFFF)), max_size=10, unique_by=lambda t: t[0])


def _reg(k: str, v: int) -> str:
    if k == "cf":
        return f"cf={v & 1}"
    return f"{k}={v & 0xFFFF:04X}" if k in ("ds", "es", "fl") else f"{k}={v:08X}"


_record = st.one_of(
    st.builds(lambda s, n, it, i, a: f"KT begin {s:03d} {n}{it} int={i} ax={a}",
              st.integers(0, 999), _names, _iter, _h(2), _h(4)),
    st.builds(lambda s, n, it, r: f"KT end {s:03d} {n}{it} " + " ".join(_reg(k, v) for k, v in r),
              st.integers(0, 999), _names, _iter, _regs),
    st.builds(lambda s, n, it, tag, off, b: f"KT data {s:03d} {n}{it}{tag} off={off:04X} {b.hex().upper()}",
              st.integers(0, 999), _names, _iter, st.sampled_from(["", " tag=oem", " tag=modes", " tag=buffer"]),
              st.integers(0, 0xFFE0), st.binary(min_size=1, max_size=32)),
    st.builds(lambda s, n, why: f"KT skip {s:03d} {n} reason={why}", st.integers(0, 999), _names,
              st.sampled_from(["config", "nodrive", "nokey", "optin"])),
    st.builds(lambda d, n: f"KT banner version=0.1.0 build=none entry=32 uart=03F8 div={d} steps={n:03d}",
              _h(4), st.integers(0, 999)),
    st.builds(lambda n, e, nx: f"KT done steps={n:03d} errors={e:03d}{nx}", st.integers(0, 999),
              st.integers(0, 999), st.sampled_from(["", " next=int19"])),
    st.builds(lambda g, kv: f"KT state {g} " + " ".join(f"{k}={v}" for k, v in kv),
              st.sampled_from(["regs", "bda", "ivt", "apic", "pic"]),
              st.lists(st.tuples(st.sampled_from(["eax", "ticks", "v13", "basemem", "fixed", "present"]),
                                 st.one_of(_h(1), _h(2), _h(4), _h(8))), max_size=4, unique_by=lambda t: t[0])),
    st.just("KT mode real"), st.just("KT boot via=int19"),
    st.sampled_from(["[    5.1] kexec_core: Starting new kernel", "SeaBIOS (version 1.16)", "noise"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_record, min_size=1, max_size=40), st.sampled_from(fuzzing.STOP_REASONS + ("replay",)))
def test_well_formed_traces_with_any_values_analyse(bodies, stop_reason):
    raw = "".join((format_line(b) if b.startswith("KT ") else b) + "\r\n" for b in bodies).encode()
    lines = split_all(raw)
    assert all(ln.record is not None for ln in lines if ln.text.startswith("KT "))  # all well-formed
    a = analyze_capture(lines, stop_reason=stop_reason, silence_s=1.0 if stop_reason == "timeout" else None)
    json.dumps(a.to_dict(), default=str)
    assert a.verdict
