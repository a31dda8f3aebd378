"""`kexectest bisect`: ddmin over drivers, the journal it resumes from, infrastructure ends
never taken for an outcome, and (qemu) a real bisect on q35 finding the one driver that breaks
the disk step."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kexectest.errors import Exit, KexectestError
from kexectest.fleet import bisect as bs
from kexectest.fleet import journal as journal_mod
from kexectest.fleet.labfile import Machine
from kexectest.lab.shape import Shape


# ---- ddmin, pure -----------------------------------------------------------------------------

def oracle(culprits, calls=None):
    """FAIL when every name of one of CULPRITS' sets is in the subset."""
    def test(subset):
        if calls is not None:
            calls.append(list(subset))
        return bs.FAIL if any(set(c) <= set(subset) for c in culprits) else bs.PASS
    return test


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 13])
def test_ddmin_finds_every_single_culprit_at_every_place(n):
    items = [f"m{i}" for i in range(n)]
    for bad in items:
        calls = []
        assert bs.ddmin(items, oracle([[bad]], calls)) == [bad]
        assert all(c == [x for x in items if x in c] for c in calls), "subsets keep the order"
        assert [] not in calls and items not in calls, "ddmin is given the full set as failing"


def test_ddmin_finds_a_pair_that_only_fails_together():
    items = ["a", "b", "c", "d", "e", "f"]
    for pair in itertools.combinations(items, 2):
        got = bs.ddmin(items, oracle([pair]))
        assert sorted(got) == sorted(pair), pair


def test_ddmin_answer_is_one_minimal_with_two_alternatives():
    items = list("abcdefgh")
    test = oracle([["b"], ["g", "h"]])
    got = bs.ddmin(items, test)
    assert test(got) == bs.FAIL
    for x in got:
        assert test([y for y in got if y != x]) != bs.FAIL, "removing any one element passes"


def test_unresolved_is_never_taken_for_a_failure():
    items = list("abcd")

    def test(subset):
        if "d" in subset:
            return bs.FAIL
        return bs.UNRESOLVED  # e.g. an earlier step hung: the step was never reached
    assert bs.ddmin(items, test) == ["d"]


def test_outcome_of_step_statuses():
    assert bs.outcome_of("hung") == bs.FAIL and bs.outcome_of("error") == bs.FAIL
    assert bs.outcome_of("ok") == bs.PASS
    for s in ("not-reached", "unknown", "skipped", None):
        assert bs.outcome_of(s) == bs.UNRESOLVED


# ---- the bisect around ddmin: journal, resume, infrastructure --------------------------------

def machine(drivers=()):
    return Machine(name="q35-test", qemu=Shape.of("q35", disk_bus="ahci"), drivers=list(drivers))


def fake_run(broken, calls, infra=()):
    """A stand-in for the lab run (this is the pure part's test; the qemu test below runs the
    lab): the step hangs when a BROKEN driver is loaded; INFRA lists driver sets whose runs end
    for an infrastructure reason (a verdict, or a lab stage error when given as an Exception)."""
    infra = list(infra)

    def run(m, out):
        calls.append(list(m.drivers))
        assert m.baseline is False
        for i, (subset, how) in enumerate(infra):
            if sorted(subset) == sorted(m.drivers):
                del infra[i]
                if isinstance(how, Exception):
                    raise how
                return SimpleNamespace(verdict=how, exit_code=16, bundle_dir=None,
                                       analysis=SimpleNamespace(steps=[],
                                                                one_line=lambda: "no login"))
        status = "hung" if set(broken) & set(m.drivers) else "ok"
        steps = [SimpleNamespace(id="edd-check", status="ok"),
                 SimpleNamespace(id="read-chs", status=status)]
        verdict = "hung" if status == "hung" else "completed"
        return SimpleNamespace(verdict=verdict, exit_code=3 if status == "hung" else 0,
                               bundle_dir=out / "run-x",
                               analysis=SimpleNamespace(steps=steps, one_line=lambda: verdict))
    return run


DRIVERS = ["loop", "dm_mod", "crc32c_generic", "ahci"]


def test_bisect_names_the_culprit_and_journals_every_probe(tmp_path):
    calls = []
    res = bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path,
                    fake_run(["ahci"], calls)).run()
    assert res.culprit == ["ahci"]
    assert calls[0] == DRIVERS and calls[1] == [], "the full set first, then none"
    assert len(calls) == len({tuple(sorted(c)) for c in calls}), "no probe run twice"
    out = res.to_json()
    assert out["step"] == "read-chs" and out["culprit"] == ["ahci"]
    assert out["probes"][0] == {"drivers": DRIVERS, "verdict": "hung", "step_status": "hung"}
    assert {"drivers": [], "verdict": "completed", "step_status": "ok"} in out["probes"]
    recs = journal_mod.read(tmp_path)
    assert [r["event"] for r in recs][0] == "bisect-start"
    assert sum(r["event"] == "probe" for r in recs) == len(calls)
    assert recs[-1] == {**recs[-1], "event": "bisect-end", "culprit": ["ahci"]}
    assert "ahci" in res.one_line() and "passes without it" in res.one_line()
    hint = res.suggestion()
    alone = next(i for i, p in enumerate(res.probes, 1) if p.drivers == ["ahci"])
    assert f"read-chs fails with ahci alone (probe {alone})" in hint
    assert "answers with loop, dm_mod loaded" in hint and "modprobe.blacklist=ahci" in hint


def test_an_interrupted_bisect_resumes_without_running_a_probe_again(tmp_path):
    calls = []
    full = bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path / "a",
                     fake_run(["dm_mod"], calls)).run()
    # the same bisect cut after its third probe: the journal up to there, a torn last line
    lines = (tmp_path / "a" / journal_mod.NAME).read_bytes().split(b"\n")
    probes = [i for i, l in enumerate(lines) if b'"event": "probe"' in l]
    cut = tmp_path / "b"
    cut.mkdir()
    (cut / journal_mod.NAME).write_bytes(b"\n".join(lines[:probes[2] + 1]) + b'\n{"event": "pro')
    again = []
    res = bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, cut, fake_run(["dm_mod"], again)).run()
    assert res.culprit == full.culprit == ["dm_mod"]
    assert again == calls[3:], "only the probes the journal lacks are run"
    assert [p.resumed for p in res.probes] == [True] * 3 + [False] * (len(calls) - 3)
    assert res.to_json() == full.to_json()


def test_a_journal_of_another_bisect_is_refused(tmp_path):
    bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path, fake_run(["ahci"], [])).run()
    with pytest.raises(KexectestError) as e:
        bs.Bisect(machine(DRIVERS), "read-lba", DRIVERS, tmp_path, fake_run(["ahci"], [])).run()
    assert e.value.code == Exit.USAGE and "use another --out" in str(e.value)


def test_a_failure_that_does_not_reproduce_is_one_line_and_its_own_code(tmp_path):
    calls = []
    with pytest.raises(KexectestError) as e:
        bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path, fake_run([], calls)).run()
    assert e.value.code == Exit.NOT_REPRODUCED == 21 and "\n" not in str(e.value)
    assert "does not fail" in str(e.value) and calls == [DRIVERS]


def test_a_failure_without_any_of_the_drivers_has_no_culprit(tmp_path):
    def run(m, out):
        steps = [SimpleNamespace(id="read-chs", status="hung")]
        return SimpleNamespace(verdict="hung", exit_code=3, bundle_dir=None,
                               analysis=SimpleNamespace(steps=steps, one_line=lambda: "hung"))
    res = bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path, run).run()
    assert res.culprit == [] and len(res.probes) == 2 and res.suggestion() is None
    assert "with none of" in res.one_line()


def test_an_infrastructure_end_is_retried_and_never_an_outcome(tmp_path):
    calls = []
    stage = KexectestError("lab: no login prompt within 180 s", Exit.LAB_STAGE)
    res = bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path,
                    fake_run(["ahci"], calls, infra=[([], stage),
                                                    (["loop", "dm_mod"],
                                                     "infrastructure-error")])).run()
    assert res.culprit == ["ahci"]
    assert calls.count([]) == 2 and calls.count(["loop", "dm_mod"]) == 2, "each retried once"
    assert all(p.verdict != "infrastructure-error" for p in res.probes)
    recs = journal_mod.read(tmp_path)
    assert sum(r["event"] == "probe-infrastructure" for r in recs) == 2


def test_a_second_infrastructure_end_stops_the_bisect(tmp_path):
    calls = []
    stage = KexectestError("lab: no login prompt within 180 s", Exit.LAB_STAGE)
    with pytest.raises(KexectestError) as e:
        bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path,
                  fake_run(["ahci"], calls, infra=[([], stage), ([], stage)])).run()
    assert e.value.code == Exit.LAB_STAGE and "\n" not in str(e.value)
    assert "infrastructure reason" in str(e.value) and "no login prompt" in str(e.value)
    assert calls == [DRIVERS, [], []]
    # what it had is kept: run again, only the infrastructure probe is repeated
    again = []
    res = bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path,
                    fake_run(["ahci"], again)).run()
    assert again[0] == [] and DRIVERS not in again and res.culprit == ["ahci"]


def test_bad_input_is_not_retried(tmp_path):
    calls = []
    bad = KexectestError("lab: the lab's kernel has no module 'nosuch'", Exit.CONFIG)

    def run(m, out):
        calls.append(m.drivers)
        raise bad
    with pytest.raises(KexectestError) as e:
        bs.Bisect(machine(DRIVERS), "read-chs", DRIVERS, tmp_path, run).run()
    assert e.value is bad and len(calls) == 1


def test_no_drivers_and_hardware_machines_are_refused(tmp_path):
    with pytest.raises(KexectestError) as e:
        bs.Bisect(machine(), "read-chs", [], tmp_path, fake_run([], []))
    assert e.value.code == Exit.USAGE and "--drivers" in str(e.value)
    with pytest.raises(KexectestError) as e:
        bs.Bisect(Machine(name="hw"), "read-chs", DRIVERS, tmp_path, fake_run([], []))
    assert e.value.code == Exit.CONFIG


def test_cli_unknown_step_and_machine_are_one_line(tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text('[lab]\nname = "t"\n[[machine]]\nname = "m"\n'
                   'qemu = { machine = "q35", disk_bus = "ahci", drivers = ["ahci"] }\n')
    for args, code in (([str(lab), "m", "--step", "no-such-step"], Exit.UNKNOWN_STEP),
                       ([str(lab), "nope", "--step", "read-chs"], Exit.CONFIG)):
        p = subprocess.run([sys.executable, "-m", "kexectest", "bisect", *args,
                            "--out", str(tmp_path / "b")], capture_output=True, text=True)
        assert p.returncode == code, p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


# ---- real: q35's AHCI, four drivers, one of which breaks the disk step -----------------------

@pytest.mark.qemu
def test_bisect_finds_ahci_among_four_drivers(tmp_path, built_payload, lab_image):
    """Each probe a real lab run (TCG, SeaBIOS, Debian's kernel, real kexec) with a subset
    loaded: the step read-chs hangs only when Linux's ahci driver held the controller."""
    lab = tmp_path / "lab.toml"
    lab.write_text(
        '[lab]\nname = "bisect"\n[defaults]\ntimeout = 20\n'
        f'load = {{ via = "syscall", payload = "{built_payload}" }}\n'
        '[[machine]]\nname = "q35-ahci-four"\n'
        'qemu = { machine = "q35", disks = 1, disk_bus = "ahci", accel = "tcg", '
        'drivers = ["loop", "dm_mod", "crc32c_generic", "ahci"] }\n')
    out = tmp_path / "bisect"
    argv = [sys.executable, "-m", "kexectest", "bisect", str(lab), "q35-ahci-four",
            "--step", "read-chs", "--out", str(out), "--json"]
    # interrupted (SIGINT, as Ctrl-C) once two probes are journalled: one line, exit 8
    cut = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and cut.poll() is None:
        done = [r for r in journal_mod.read(out) if r["event"] == "probe"]
        if len(done) >= 2:
            break
        time.sleep(0.5)
    cut.send_signal(signal.SIGINT)
    _, err = cut.communicate(timeout=60)
    assert cut.returncode == Exit.INTERRUPTED, err
    assert "the same command resumes from" in err and "Traceback" not in err
    before = [r["drivers"] for r in journal_mod.read(out) if r["event"] == "probe"]
    assert len(before) >= 2
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["step"] == "read-chs" and res["culprit"] == ["ahci"]
    by = {tuple(sorted(x["drivers"])): x for x in res["probes"]}
    assert by[tuple(sorted(["loop", "dm_mod", "crc32c_generic", "ahci"]))]["step_status"] \
        == "hung"
    assert by[()]["step_status"] == "ok" and by[("ahci",)]["step_status"] == "hung"
    for drivers, x in by.items():
        assert (x["step_status"] == "hung") == ("ahci" in drivers), x
    # each probe's own bundle: a real run whose report names the driver that held the disk
    recs = [r for r in journal_mod.read(out) if r["event"] == "probe"]
    assert [r["drivers"] for r in recs][:len(before)] == before, "resumed, not run again"
    assert len(recs) == len(res["probes"]), "every probe once in the journal"
    ahci_only = next(r for r in recs if r["drivers"] == ["ahci"])
    report = json.loads((Path(ahci_only["bundle"]) / "report.json").read_text())
    assert report["hang"]["device"]["linux_driver"] == "ahci"
    # the same command again: everything from the journal, nothing run
    dirs = sorted(out.glob("probe-*"))
    again = subprocess.run([sys.executable, "-m", "kexectest", "bisect", str(lab),
                            "q35-ahci-four", "--step", "read-chs", "--out", str(out), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and json.loads(again.stdout) == res
    assert sorted(out.glob("probe-*")) == dirs, "no probe run"
