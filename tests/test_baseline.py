"""The POST baseline (analysis/baseline.py, `kexectest report --baseline`): on real captures of the
same machine at POST and after kexec, under the Bochs BIOS and SeaBIOS; refusals of captures
that cannot be compared; bundles and tarballs as input."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kexectest.analysis import baseline as bl
from kexectest.analysis.replay import analyze_log
from kexectest.analysis.saved import load
from kexectest.errors import Exit, KexectestError
from kexectest.output.baseline_md import baseline_section
from reportschema import assert_valid_report

CORPUS = Path(__file__).parent / "corpus"
POST, KEXEC = CORPUS / "real-bochs-post-pc.log", CORPUS / "real-bochs-kexec-pc.log"


def capture(path: Path, environment=None) -> bl.Capture:
    a = analyze_log(path)
    return bl.Capture(a.to_dict(), str(path), environment, bl.pci_functions(a.lines))


def test_the_same_machine_at_post_and_after_kexec_answers_alike_under_bochs():
    """Real captures, Bochs BIOS on pc: POST from the disk image, then Linux from a CD + kexec."""
    post, kexec = capture(POST), capture(KEXEC)
    assert post.via == "disk" and kexec.via == "kexec"
    assert post.pci and post.pci == kexec.pci, "the same machine, by its PCI functions"
    b = bl.compare(post, kexec)
    assert b["differences"] == []
    # ...because what changes by nature was left out, by rule, and said so
    left = {x["rule"] for x in b["left_out"]}
    assert {"ticks", "rtc", "bda-ticks"} <= left
    assert "entry-pic" in left, "Linux leaves the 8259s otherwise than the firmware"
    assert b["post"] == {"verdict": "completed", "summary": post.report["summary"],
                         "via": "disk", "build_id": post.report["payload"]["build_id"]}


def test_a_changed_answer_is_listed_and_a_changed_clock_is_not():
    post, kexec = capture(POST), capture(KEXEC)
    k = copy.deepcopy(kexec.report)
    steps = {s["id"]: s for s in k["steps"]}
    steps["e820"]["result"]["entries"][3]["length"] -= 0x100000  # the BIOS lost a MiB
    steps["edd-params"]["status"] = "error"
    steps["rtc-time"]["result"]["time"] = "23:59:59"
    k["state"]["ivt"]["v13"] = "9FC0:0100"  # somebody hooked int 13h
    b = bl.compare(post, bl.Capture(k, "kexec", None, kexec.pci))
    got = {(d["step"], d["field"]) for d in b["differences"]}
    assert got == {("e820", "entries[3].length"), ("edd-params", "status"), ("state", "ivt.v13")}
    ivt = next(d for d in b["differences"] if d["field"] == "ivt.v13")
    assert ivt["post"] == post.report["state"]["ivt"]["v13"] and ivt["after_kexec"] == "9FC0:0100"
    md = "\n".join(baseline_section(b))
    assert "| e820 | entries[3].length |" in md and "3 difference(s) in 3 step(s)" in md


def test_a_hang_after_kexec_lists_the_step_and_what_was_not_reached():
    post, kexec = capture(POST), capture(KEXEC)
    k = copy.deepcopy(kexec.report)
    ids = [s["id"] for s in k["steps"]]
    at = ids.index("edd-params")
    for s in k["steps"][at:]:
        s["status"], s["result"], s["calls"] = "not-reached", {}, []
    k["steps"][at]["status"] = "hung"
    b = bl.compare(post, bl.Capture(k, "kexec", None, kexec.pci))
    first = b["differences"][0]
    assert (first["step"], first["field"], first["after_kexec"]) == ("edd-params", "status", "hung")
    unreached = [d["step"] for d in b["differences"] if d["after_kexec"] == "not-reached"]
    assert unreached == [i for i in ids[at + 1:]
                         if next(s for s in post.report["steps"] if s["id"] == i)["status"] != "not-reached"]
    md = "\n".join(baseline_section(b))
    assert f"not reached after kexec: {len(unreached)} step(s)" in md


def test_drives_are_matched_by_their_mbr_signature():
    """A USB stick booted at POST becomes 80h and moves the internal disk to 81h: the same disk
    is compared with itself; the stick, gone after kexec, is left out by rule."""
    post, kexec = capture(POST), capture(KEXEC)
    p = copy.deepcopy(post.report)
    for s in p["steps"]:
        drives = s["result"].get("drives") if isinstance(s["result"], dict) else None
        if drives and "80" in drives:
            stick = copy.deepcopy(drives["80"])
            if "mbr_signature" in stick:
                stick["mbr_signature"] = "5354494B"
            drives["81"], drives["80"] = drives["80"], stick
    p["payload"]["drive"] = "80"
    b = bl.compare(bl.Capture(p, "post", None, post.pci), kexec)
    assert b["differences"] == [], b["differences"]
    assert any(x["rule"] == "post-boot-medium" for x in b["left_out"])


@pytest.mark.parametrize("case", ["build", "pci", "lab", "classic", "via", "no-banner"])
def test_captures_that_cannot_be_compared_are_refused_in_one_line(case):
    post, kexec = capture(POST), capture(KEXEC)
    if case == "build":
        kexec = capture(CORPUS / "real-direct-pc.log")
        want = "different payload builds"
    elif case == "pci":
        kexec = capture(CORPUS / "real-bochs-post-q35.log")
        want = "different machines: PCI 00:00.0 is 8086:1237 at POST, 8086:29C0 after kexec"
    elif case == "lab":
        post.environment = {"lab": {"machine": {"machine": "pc", "memory": 256}}}
        kexec.environment = {"lab": {"machine": {"machine": "pc", "memory": 512}}}
        want = "different machines: lab memory is 256 at POST, 512 after kexec"
    elif case == "classic":
        post = capture(CORPUS / "real-classic-lab.log")
        want = "not a trace of this payload"
    elif case == "via":
        post = kexec
        want = "entered by kexec"
    else:
        post = capture(CORPUS / "no-output-noise.log")
        want = "no intact payload banner"
    with pytest.raises(KexectestError) as ei:
        bl.compare(post, kexec)
    assert ei.value.code == Exit.BAD_INPUT and want in str(ei.value)
    assert "\n" not in str(ei.value)


def test_rules_are_one_table_and_the_docs_show_it():
    doc = (Path(__file__).parents[1] / "docs" / "trace-format.md").read_text()
    for r in bl.rules_table():
        assert f"| `{r['rule']}` | `{r['step']}` | `{r['field']}` | {r['why']} |" in doc, r


def _bundle(tmp: Path, log: Path, name: str, env: dict | None = None) -> Path:
    d = tmp / name
    d.mkdir()
    shutil.copyfile(log, d / "console.log")
    if env is not None:
        (d / "environment.json").write_text(json.dumps(env))
    return d


def test_saved_captures_load_from_a_bundle_its_tarball_or_a_log(tmp_path):
    d = _bundle(tmp_path, KEXEC, "run-1", {"lab": {"machine": {"machine": "pc"}}})
    with tarfile.open(tmp_path / "run-1.tar.gz", "w:gz") as tar:
        tar.add(d, arcname="run-1")
    want = analyze_log(KEXEC).to_dict()
    for src in (d, tmp_path / "run-1.tar.gz", KEXEC):
        s = load(src)
        assert s.analysis.to_dict()["steps"] == want["steps"], src
        assert (s.environment is None) is (src == KEXEC)
    with pytest.raises(KexectestError) as ei:
        load(tmp_path)  # a directory without a console
    assert ei.value.code == Exit.BAD_INPUT and "not a bundle" in str(ei.value)
    (tmp_path / "broken.tar.gz").write_bytes((tmp_path / "run-1.tar.gz").read_bytes()[:200])
    with pytest.raises(KexectestError) as ei:
        load(tmp_path / "broken.tar.gz")
    assert ei.value.code == Exit.BAD_INPUT


def test_report_baseline_command(tmp_path):
    post = _bundle(tmp_path, POST, "post")
    out = tmp_path / "out"
    exe = [sys.executable, "-m", "kexectest", "report"]
    p = subprocess.run(exe + ["--baseline", str(post), str(KEXEC), "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr  # the kexec capture's verdict: completed
    rep = json.loads((out / "report.json").read_text())
    assert_valid_report(rep)
    assert rep["baseline"]["source"] == str(post) and rep["baseline"]["differences"] == []
    assert rep["verdict"] == "completed" and rep["payload"]["via"] == "kexec"
    md = (out / "summary.md").read_text()
    assert "### Against the POST baseline" in md and "no differences" in md
    assert "Against the POST baseline" in p.stdout
    p = subprocess.run(exe + ["--baseline", str(POST), str(CORPUS / "real-direct-pc.log")],
                       capture_output=True, text=True)
    assert p.returncode == 10 and p.stderr.count("\n") == 1 and "different payload builds" in p.stderr
    p = subprocess.run(exe + ["--baseline", str(POST), str(KEXEC), str(KEXEC)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = subprocess.run(exe + ["--json", "--baseline", str(POST), str(KEXEC)], capture_output=True,
                       text=True)
    assert json.loads(p.stdout)["baseline"]["differences"] == []
