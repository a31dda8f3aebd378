"""Walks tests/corpus: every log against its golden file, through the real `kexectest report`.

Each `X.expected.json` holds the stable part of X's report.json (verdict, summary, hang, reset,
signature, every step's status, the E820 map, kernel trouble blocks, hand-off, damage, ...) and
a free-text "note" saying where the log comes from.  A key the golden file has and the report's
stable part has not (or the other way round) fails the test, as a differing value does;
`pytest --update-corpus` rewrites the golden files from the analysis (review the diff).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kexectest.analysis.replay import analyze_log
from kexectest.errors import VERDICT_EXIT, Exit, KexectestError
from reportschema import assert_valid_report

CORPUS = Path(__file__).parent / "corpus"
LOGS = sorted(CORPUS.glob("*.log"))
_LOCATION = ("step", "index", "call", "drive", "iteration", "between_steps", "definite", "measured",
             "device")
FREE = ("note",)  # keys of a golden file that are not compared


def stable(d: dict) -> dict:
    """The part of a report.json that depends on the log only (no paths, no timings)."""
    ba = d["before_after"]
    return {
        "verdict": d["verdict"], "exit_code": int(VERDICT_EXIT[d["verdict"]]), "summary": d["summary"],
        "source": d["source"], "stop_reason": d["stop_reason"],
        "hang": {k: d["hang"].get(k) for k in _LOCATION} if d["hang"] else None,
        "reset": ({k: d["reset"].get(k) for k in _LOCATION} | {"banner": d["reset"]["banner"]}
                  if d["reset"] else None),
        "signature": d["signature"],
        "steps": [f"{s['index']:03d} {s['id']} {s['status']}" for s in d["steps"]],
        "error_steps": sorted(s["id"] for s in d["steps"] if s["status"] == "error"),
        "e820": [f"{e['base']:016X} {e['length']:016X} type {e['type']}" for e in d["e820"]],
        "kernel_trouble": [{"kind": t["kind"], "fatal": t["fatal"], "phase": t["phase"], "title": t["title"],
                            "block_lines": len(t["block"])} for t in d["kernel_trouble"]],
        "findings": [f["kind"] for f in d["findings"]],
        "before_after": {"available": ba["available"], "differences": ba["differences"],
                         "e820_same": (ba.get("e820") or {}).get("same")},
        "handoff": d["handoff"],
        "payload": d["payload"],
        "damage": d["damage"],
        "hints": d["hints"],
        "log_format": d["timing"].get("log_format"),
        "devices": _devices(d["devices"]),
        "step_devices": [f"{s['index']:03d} {s['id']} {s['device']['bdf']}" for s in d["steps"]
                         if s["device"]],
        "causes": [{k: c[k] for k in ("step", "drive", "status", "device", "sentence", "missing")}
                   for c in d["causes"]],
        "handoff_params": _handoff_params(d["handoff_params"]),
    }


def _handoff_params(hp: dict | None) -> dict | None:
    """The hand-off page in lines: its door, map, setup_data, what it breaks, and every
    difference with its class."""
    if hp is None:
        return None
    return {"door": hp.get("door"), "address": hp["address"], "readable": hp["readable"],
            "problems": hp["problems"], "loader": hp.get("loader"),
            "e820": [f"{e['base']:016X} {e['length']:016X} type {e['type']}"
                     for e in hp.get("e820", [])],
            "setup_data": [f"{c['addr']:#x} {c.get('type_name')}" for c in hp.get("setup_data", [])],
            "fields": [f"{r['field']}: {r['kernel']} | {r['firmware']} | {r['same']}"
                       for r in hp.get("fields", [])],
            "differences": [f"{x['class']}: {x['field']}: {x['kernel']} | {x['firmware']} | "
                            f"{x['why']}" for x in hp.get("differences", [])]}


def _devices(dev: dict) -> dict:
    """The device table in a line a function, each use by its B/D/F."""
    def bdf(use):
        return use["device"]["bdf"] if use["device"] else None

    return {"pci": dev["pci"], "missing": dev["missing"],
            "table": [f"{r['bdf']} {r['vendor']}:{r['device']} {r['class_code']} {r['class']} "
                      f"driver={r['linux_driver']} cmd {r['cmd_before']} -> {r['cmd_after']} "
                      f"seen by {'+'.join(r['seen_by'])}" for r in dev["table"]],
            "drives": {k: bdf(u) for k, u in dev["drives"].items()},
            "video": bdf(dev["video"]), "keyboard": bdf(dev["keyboard"])}


def _bad_input(log: Path) -> dict:
    with pytest.raises(KexectestError) as ei:
        analyze_log(log)
    # the message names the log by its path: keep only its name, so the golden file holds no
    # machine's directory
    return {"verdict": "bad-input", "exit_code": int(ei.value.code),
            "error": str(ei.value).replace(str(log), log.name)}


def test_corpus_is_not_empty():
    assert len(LOGS) >= 20


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_corpus_log(log, update_corpus):
    path = log.with_suffix(".expected.json")
    exp = json.loads(path.read_text()) if path.exists() else {}
    if exp.get("verdict") == "bad-input":
        got = _bad_input(log)
        assert got["exit_code"] == Exit.BAD_INPUT
    else:
        d = analyze_log(log).to_dict()
        assert_valid_report(d)
        json.dumps(d)  # report.json is plain JSON
        got = stable(d)
    if update_corpus:
        keep = {k: exp[k] for k in FREE if k in exp}
        path.write_text(json.dumps({**keep, **got}, indent=1, sort_keys=True) + "\n")
        return
    unknown = sorted(set(exp) - set(got) - set(FREE))
    missing = sorted(set(got) - set(exp))
    assert not unknown, f"{path.name}: keys the report has no stable part for: {unknown}"
    assert not missing, f"{path.name}: lacks {missing} (pytest --update-corpus, then review the diff)"
    for key, want in exp.items():
        if key not in FREE:
            assert got[key] == want, f"{path.name}: {key}"


def test_cli_exit_codes_and_out_dir(tmp_path):
    exe = [sys.executable, "-m", "kexectest", "report"]
    r = subprocess.run(exe + [str(CORPUS / "hung-edd-params.log"), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == VERDICT_EXIT["hung"], r.stderr
    assert "hung at step 041 edd-params" in r.stdout
    rep = json.loads((tmp_path / "report.json").read_text())
    assert_valid_report(rep)
    assert rep["hang"]["step"] == "edd-params" and rep["hang"]["drive"] == 0x80
    md = (tmp_path / "summary.md").read_text()
    assert "edd-params" in md and "| 041 | edd-params |" in md and "```" in md
    r = subprocess.run(exe + ["--json", str(CORPUS / "completed.log")], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "completed"
    r = subprocess.run(exe + [str(CORPUS / "no-output-nothing.log")], capture_output=True, text=True)
    assert r.returncode == Exit.BAD_INPUT and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = subprocess.run(exe + [str(tmp_path / "missing.log")], capture_output=True, text=True)
    assert r.returncode == Exit.BAD_INPUT and "Traceback" not in r.stderr
