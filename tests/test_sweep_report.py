"""sweep.json, JUnit XML and the HTML page from synthetic sweep directories (pure units),
plus the HTML opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kexectest.errors import Exit, KexectestError
from kexectest.fleet.sweep_report import build_sweep, group_failures, load_sweep, write_reports

STEPS = ["state", "mem-12", "e820", "edd-check", "disk-read"]
E820 = [{"base": 0, "length": 0x9FC00, "type": 1}, {"base": 0x100000, "length": 0xFEE0000, "type": 1}]


def report(verdict: str, hang_at: int | None = None, errors=(), e820=E820, sig=None) -> dict:
    steps = []
    for i, sid in enumerate(STEPS):
        if hang_at is not None and i == hang_at:
            status = "hung"
        elif hang_at is not None and i > hang_at:
            status = "not-reached"
        else:
            status = "error" if sid in errors else "ok"
        steps.append({"id": sid, "index": i, "title": sid.upper(), "int": 0x15, "function": 0xE820,
                      "status": status, "result": {"cf": 1 if status == "error" else 0, "ax": i},
                      "seconds": 0.01 * (i + 1)})
    return {"verdict": verdict, "steps": steps, "e820": e820,
            "hang": {"step": STEPS[hang_at]} if hang_at is not None else None,
            "signature": sig, "payload": {"version": "0.1.0", "build_id": "ab" * 20}}


def make_sweep(root: Path, machines: dict[str, tuple[str, dict | None]],
               envs: dict[str, dict] | None = None) -> Path:
    """machines: name -> (verdict, report dict or None for a machine that never ran); envs:
    name -> the bundle's environment.json."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    codes = {"completed": 0, "failed-steps": 1, "hung": 3, "reset": 4, "no-output": 5, "error": 14}
    for name, (verdict, rep) in machines.items():
        rec = {"machine": name, "kind": "virtual", "tags": ["t"], "verdict": verdict,
               "exit_code": codes[verdict], "one_line": f"{name} {verdict}", "attempts": 1,
               "seconds": 4.5}
        if rep is not None:
            b = root / name / "bundle"
            b.mkdir(parents=True)
            (b / "report.json").write_text(json.dumps(rep))
            (b / "summary.md").write_text(f"# {name}\n")
            if envs and name in envs:
                (b / "environment.json").write_text(json.dumps(envs[name]))
            rec["bundle"] = f"{name}/bundle"
            rec["tarball"] = f"{name}/bundle.tar.gz"
        else:
            rec["error"] = "cannot open socket://127.0.0.1:1: connection refused"
        records.append(rec)
    t = time.time()
    write_reports(root, build_sweep(root, {"name": "synthetic", "path": "x.toml"}, records, t - 9, t))
    return root


HANG_SIG = {"id": "hung:edd-check:seabios", "title": "hung at edd-check"}


@pytest.fixture
def sweep_dir(tmp_path):
    return make_sweep(tmp_path / "s", {
        "m-ok": ("completed", report("completed")),
        "m-fail": ("failed-steps", report("failed-steps", errors=("disk-read",),
                                          sig={"id": "fs:disk", "title": "disk-read error"})),
        "m-hang1": ("hung", report("hung", hang_at=3, sig=HANG_SIG)),
        "m-hang2": ("hung", report("hung", hang_at=3, sig=HANG_SIG)),
        "m-dead": ("error", None),
    })


def test_sweep_json(sweep_dir):
    s = load_sweep(sweep_dir)
    assert s["exit_code"] == 14 and s["worst"] == "error"
    assert s["counts"] == {"completed": 1, "failed-steps": 1, "hung": 2, "error": 1}
    m = {x["name"]: x for x in s["machines"]}
    assert m["m-hang1"]["steps"][3]["status"] == "hung"
    assert m["m-ok"]["summary"] == "m-ok/bundle/summary.md"
    assert m["m-dead"]["steps"] == [] and "refused" in m["m-dead"]["error"]
    groups = group_failures(s["machines"])
    assert len(groups[0][1]) == 2 and groups[0][0]["id"] == HANG_SIG["id"]


def test_exit_code_is_worst_verdict(tmp_path):
    s = load_sweep(make_sweep(tmp_path / "a", {"a": ("completed", report("completed")),
                                               "b": ("hung", report("hung", hang_at=2)),
                                               "c": ("failed-steps", report("failed-steps"))}))
    assert s["exit_code"] == Exit.HUNG
    s = load_sweep(make_sweep(tmp_path / "b", {"a": ("completed", report("completed"))}))
    assert s["exit_code"] == 0


def test_load_sweep_bad_input(tmp_path):
    with pytest.raises(KexectestError) as info:
        load_sweep(tmp_path)
    assert info.value.code == Exit.BAD_INPUT and "sweep.json" in str(info.value)
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(KexectestError):
        load_sweep(tmp_path)


def test_junit_parses(sweep_dir):
    root = ET.parse(sweep_dir / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"m-ok", "m-fail", "m-hang1", "m-hang2", "m-dead"}
    hang = suites["m-hang1"]
    cases = {c.get("name"): c for c in hang.findall("testcase")}
    assert set(cases) == {"verdict", "000 state", "001 mem-12", "002 e820", "003 edd-check",
                          "004 disk-read"}
    assert cases["verdict"].find("failure").get("message") == "m-hang1 hung"
    assert cases["003 edd-check"].find("failure") is not None
    assert cases["004 disk-read"].find("skipped") is not None
    assert cases["000 state"].find("failure") is None
    assert suites["m-dead"].find("testcase/error") is not None
    assert int(root.get("tests")) == 1 + 4 * 6 and int(root.get("errors")) == 1
    assert int(suites["m-fail"].get("failures")) == 2


def test_html_self_contained(sweep_dir):
    text = (sweep_dir / "report.html").read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "<script" not in text and "<link" not in text
    assert "same hung on 2 machines" in text
    assert 'href="m-ok/bundle/summary.md"' in text and 'href="m-ok/bundle.tar.gz"' in text
    assert "<svg" in text and "004 disk-read" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
def test_html_in_headless_chromium(sweep_dir, tmp_path):
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         (sweep_dir / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'id="matrix"' in dom, proc.stderr[-2000:]
    for name, verdict in [("m-ok", "completed"), ("m-hang1", "hung"), ("m-dead", "error")]:
        assert f'data-machine="{name}" data-verdict="{verdict}"' in dom
    assert dom.count('data-status="hung"') == 2
    assert 'id="timing"' in dom and 'id="failures"' in dom


def test_every_verdict_has_a_severity_and_every_status_a_colour():
    """The sweep report ranks and colours every verdict and step status the analysis can give."""
    from kexectest.analysis.model import StepStatus
    from kexectest.errors import Verdict
    from kexectest.fleet.sweep_report import SEVERITY, STATUS_CLASS

    assert {v.value for v in Verdict} <= set(SEVERITY)
    assert {s.value for s in StepStatus} <= set(STATUS_CLASS)


def test_failure_groups_name_the_device_and_driver(tmp_path):
    """A hang the analysis diagnosed (a real lab capture: q35, ahci loaded before kexec) shows
    the device, the Linux driver and bus mastering in its failure group, once per cause."""
    from kexectest.analysis.replay import analyze_log

    corpus = Path(__file__).parent / "corpus"
    ahci = analyze_log(corpus / "real-lab-ahci-q35.log").to_dict()
    s = load_sweep(make_sweep(tmp_path / "s", {"q35-a": ("hung", ahci), "q35-b": ("hung", ahci),
                                                "ok": ("completed", report("completed"))}))
    m = {x["name"]: x for x in s["machines"]}
    (cause,) = m["q35-a"]["causes"]
    assert cause["device"]["bdf"] == "00:1f.2" and cause["device"]["linux_driver"] == "ahci"
    assert next(x for x in m["q35-a"]["steps"] if x["id"] == "read-chs")["device"] == cause["device"]
    text = (tmp_path / "s" / "report.html").read_text()
    assert text.count('<li class="cause" data-bdf="00:1f.2" data-driver="ahci">') == 1
    assert "00:1f.2 AHCI controller, Linux driver ahci, bus master on -&gt; off" in text
    assert "held by Linux&#x27;s ahci driver before kexec" in text and "(q35-a, q35-b)" in text


def test_matrix_cells_and_markdown_name_the_device_and_driver(tmp_path):
    """The interference matrix's cells (issue 9): a failing concern's cell says the driver that
    held the device behind its first failed step, from the run's own evidence (a real lab
    capture: q35, ahci loaded before kexec); the same machine without the driver is green; the
    Markdown summary has the same cells as a table."""
    from kexectest.analysis.replay import analyze_log

    corpus = Path(__file__).parent / "corpus"
    held = analyze_log(corpus / "real-lab-ahci-q35.log").to_dict()
    free = analyze_log(corpus / "real-lab-ahci-no-driver-q35.log").to_dict()
    root = make_sweep(tmp_path / "s", {"q35-ahci-linux": ("hung", held),
                                       "q35-ahci": (free["verdict"], free),
                                       "m-dead": ("error", None)})
    text = (root / "report.html").read_text()
    row = text[text.index('data-machine="q35-ahci-linux"'):]
    row = row[:row.index("</tr>")]
    disk = row[row.index('data-group-status="hung"') - 200:]
    assert 'data-bdf="00:1f.2" data-driver="ahci"' in disk
    assert "device: 00:1f.2 AHCI controller, Linux driver ahci, bus master on -&gt; off" in disk
    assert ">1 ahci</a>" in disk, "the count of failed steps, then the driver"
    other = text[text.index('data-machine="q35-ahci"'):]
    other = other[:other.index("</tr>")]
    assert 'data-group-status="hung"' not in other and "data-driver=" not in other
    md = (root / "summary.md").read_text()
    lines = md.splitlines()
    head = next(l for l in lines if l.startswith("| configuration"))
    assert head.strip("| ").split(" | ") == ["configuration", "verdict", "disk"], \
        "only the concerns that failed"
    (bad,) = [l for l in lines if l.startswith("| q35-ahci-linux |")]
    assert "**hung** read-chs hung: 00:1f.2 held by ahci" in bad
    (good,) = [l for l in lines if l.startswith("| q35-ahci |")]
    assert good.split(" | ")[2].strip(" |") == "ok"
    assert any(l.startswith("| m-dead | error: ") for l in lines)
    assert "## Causes, as the runs found them" in md and "(q35-ahci-linux)" in md
    assert "Linux driver ahci, bus master on -> off" in md
    assert "  - what would make the BIOS work: load the payload from a Linux that leaves " \
        "00:1f.2 unbound" in md


def lab_env(machine: str, bus: str, drivers: list[str]) -> dict:
    shape = {"machine": machine, "memory": 256, "smp": 1, "disks": 1, "accel": "tcg",
             "disk_bus": bus, "firmware": "seabios"}
    return {"lab": {"machine": shape, "loader": "syscall", "disk_bus": bus,
                    "drivers": {"requested": drivers} if drivers else None}}


def test_interference_findings_pair_a_failure_with_the_same_machine_without_the_driver(tmp_path):
    """What makes the BIOS work, measured: q35's AHCI fails with ahci (and loop) loaded and
    answers on the same shape with loop alone; a machine of another shape, or one that also
    fails, is never the witness."""
    from kexectest.analysis.replay import analyze_log
    from kexectest.fleet.interference import findings

    corpus = Path(__file__).parent / "corpus"
    held = analyze_log(corpus / "real-lab-ahci-q35.log").to_dict()
    free = analyze_log(corpus / "real-lab-ahci-no-driver-q35.log").to_dict()
    assert free["verdict"] == "completed"
    root = make_sweep(tmp_path / "s", {
        "q35-ahci-ahci": ("hung", held), "q35-ahci-loop": ("completed", free),
        "q35-ahci-bare": ("completed", free), "pc-ahci": ("completed", free),
        "q35-ahci-ahci-2": ("hung", held)},
        envs={"q35-ahci-ahci": lab_env("q35", "ahci", ["loop", "ahci"]),
              "q35-ahci-loop": lab_env("q35", "ahci", ["loop"]),
              "q35-ahci-bare": lab_env("q35", "ahci", []),
              "pc-ahci": lab_env("pc", "ahci", ["loop", "ahci"][:1]),
              "q35-ahci-ahci-2": lab_env("q35", "ahci", ["ahci"])})
    s = load_sweep(root)
    m = {x["name"]: x for x in s["machines"]}
    assert m["q35-ahci-ahci"]["lab"]["drivers"] == ["loop", "ahci"]
    got = {(f["machine"], f["concern"]): f for f in findings(s["machines"])}
    assert set(got) == {("q35-ahci-ahci", "disk"), ("q35-ahci-ahci-2", "disk")}
    f = got[("q35-ahci-ahci", "disk")]
    assert f["answers_on"] == "q35-ahci-loop", "the witness with the most drivers kept"
    assert f["left_out"] == ["ahci"] and f["kept"] == ["loop"]
    assert f["device"]["bdf"] == "00:1f.2" and f["device"]["linux_driver"] == "ahci"
    assert "without ahci the BIOS's disk service works there" in f["sentence"]
    assert got[("q35-ahci-ahci-2", "disk")]["answers_on"] == "q35-ahci-bare"
    text = (root / "report.html").read_text()
    assert 'data-machine="q35-ahci-ahci" data-answers-on="q35-ahci-loop"' in text
    md = (root / "summary.md").read_text()
    assert "## What makes the BIOS work, measured" in md
    assert md.count("the BIOS's disk service works there") == 2
    # a sweep whose pairs prove nothing says nothing
    lone = make_sweep(tmp_path / "t", {"q35-ahci-ahci": ("hung", held)},
                      envs={"q35-ahci-ahci": lab_env("q35", "ahci", ["ahci"])})
    assert "What makes the BIOS work" not in (lone / "summary.md").read_text()
    assert 'id="interference"' not in (lone / "report.html").read_text()


def test_cause_suggestions_follow_only_from_the_runs_evidence():
    """A cause suggests what to try only where its own facts chain: a Linux driver held the
    device, bus mastering is off after kexec, the BIOS's driver needs it."""
    from kexectest.analysis.replay import analyze_log

    corpus = Path(__file__).parent / "corpus"
    seen = 0
    for log in sorted(corpus.glob("*.log")):
        try:
            causes = analyze_log(log).to_dict()["causes"]
        except KexectestError:
            continue  # the corpus's bad input (an empty log)
        for c in causes:
            if c["suggestion"] is None:
                assert not (c["held_by"] and "bus mastering is off now" in c["sentence"]
                            and "cannot" in c["sentence"]), (log.name, c["sentence"])
                continue
            seen += 1
            d = c["device"]
            assert f"held by Linux's {c['held_by']} driver" in c["sentence"]
            assert "bus mastering is off now" in c["sentence"] and d["bus_master_after"] is False
            assert d["bdf"] in c["suggestion"] and f"the {c['held_by']} driver never binds" \
                in c["suggestion"], "a driver's name, never a module name it may not have"
    assert seen >= 2, "the real AHCI captures carry one"


def test_interference_findings_never_pair_machines_of_two_kernels(tmp_path):
    """A machine that answers on another kernel proves nothing about this one's drivers: the
    witness must have booted the same kernel release (environment.json lab.kernel)."""
    from kexectest.analysis.replay import analyze_log
    from kexectest.fleet.interference import findings

    corpus = Path(__file__).parent / "corpus"
    held = analyze_log(corpus / "real-lab-ahci-q35.log").to_dict()
    free = analyze_log(corpus / "real-lab-ahci-no-driver-q35.log").to_dict()

    def env(drivers, release):
        e = lab_env("q35", "ahci", drivers)
        e["lab"]["kernel"] = {"release": release, "suite": None, "asked": None}
        return e

    root = make_sweep(tmp_path / "s", {
        "q35-ahci-ahci-sid": ("hung", held), "q35-ahci-trixie": ("completed", free),
        "q35-ahci-ahci-trixie": ("hung", held)},
        envs={"q35-ahci-ahci-sid": env(["ahci"], "7.2.13+deb14-amd64"),
              "q35-ahci-trixie": env([], "6.12.117+deb13-amd64"),
              "q35-ahci-ahci-trixie": env(["ahci"], "6.12.117+deb13-amd64")})
    s = load_sweep(root)
    got = {(f["machine"], f["concern"]): f for f in findings(s["machines"])}
    assert set(got) == {("q35-ahci-ahci-trixie", "disk")}
    assert got[("q35-ahci-ahci-trixie", "disk")]["answers_on"] == "q35-ahci-trixie"
