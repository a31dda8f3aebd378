"""Walks tests/corpus: every log with its expected verdict, through the real `kexectest report`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kexectest.analysis.replay import analyze_log
from kexectest.errors import VERDICT_EXIT, Exit, KexectestError

CORPUS = Path(__file__).parent / "corpus"
LOGS = sorted(CORPUS.glob("*.log"))


def test_corpus_is_not_empty():
    assert len(LOGS) >= 20


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_corpus_log(log):
    exp = json.loads(log.with_suffix(".expected.json").read_text())
    if exp["verdict"] == "bad-input":
        with pytest.raises(KexectestError) as ei:
            analyze_log(log)
        assert ei.value.code == Exit.BAD_INPUT
        return
    a = analyze_log(log)
    d = a.to_dict()
    assert d["verdict"] == exp["verdict"], a.summary
    loc = d["hang"] or d["reset"] or {}
    assert loc.get("step") == exp.get("hang_step")
    if "hang_drive" in exp:
        assert d["hang"]["drive"] == exp["hang_drive"]
    if "source" in exp:
        assert d["source"] == exp["source"]
    if "e820_count" in exp:
        assert len(d["e820"]) == exp["e820_count"]
    if "error_steps" in exp:
        assert sorted(s["id"] for s in d["steps"] if s["status"] == "error") == exp["error_steps"]
    if "before_after_same" in exp:
        assert d["before_after"]["e820"]["same"] is exp["before_after_same"]
        assert d["before_after"]["differences"] == []
    if "kernel_trouble" in exp:
        assert len(d["kernel_trouble"]) == exp["kernel_trouble"]
    if "trouble_kinds" in exp:
        assert [t["kind"] for t in d["kernel_trouble"]] == exp["trouble_kinds"]
        assert len(d["kernel_trouble"][0]["block"]) == exp["block_lines"]
    if "findings" in exp:
        assert [f["kind"] for f in d["findings"]] == exp["findings"]
    if "handoff" in exp:
        assert d["handoff"]["seen"] is exp["handoff"]
    json.dumps(d)  # report.json is plain JSON


def test_cli_exit_codes_and_out_dir(tmp_path):
    exe = [sys.executable, "-m", "kexectest", "report"]
    r = subprocess.run(exe + [str(CORPUS / "hung-edd-params.log"), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == VERDICT_EXIT["hung"], r.stderr
    assert "hung at step 041 edd-params" in r.stdout
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["hang"]["step"] == "edd-params" and rep["hang"]["drive"] == 0x80
    md = (tmp_path / "summary.md").read_text()
    assert "edd-params" in md and "| 041 | edd-params |" in md and "```" in md
    r = subprocess.run(exe + ["--json", str(CORPUS / "completed.log")], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "completed"
    r = subprocess.run(exe + [str(CORPUS / "no-output-nothing.log")], capture_output=True, text=True)
    assert r.returncode == Exit.BAD_INPUT and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = subprocess.run(exe + [str(tmp_path / "missing.log")], capture_output=True, text=True)
    assert r.returncode == Exit.BAD_INPUT and "Traceback" not in r.stderr
