"""`kexectest compare OLD NEW` on synthetic sweep directories (pure units) and through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rich.console import Console

from kexectest.fleet.compare import compare, render_html, render_text
from test_sweep_report import E820, HANG_SIG, make_sweep, report

E820_NEW = [E820[0], {"base": 0x100000, "length": 0xFEDF000, "type": 1},
            {"base": 0xFEFFC000, "length": 0x4000, "type": 2}]


@pytest.fixture
def two_sweeps(tmp_path):
    old = make_sweep(tmp_path / "old", {
        "a": ("completed", report("completed")),
        "b": ("hung", report("hung", hang_at=3, sig=HANG_SIG)),
        "c": ("completed", report("completed")),
        "d": ("hung", report("hung", hang_at=2)),
        "gone": ("completed", report("completed")),
    })
    changed = report("completed", e820=E820_NEW)
    changed["steps"][1]["result"] = {"cf": 0, "ax": 639}
    new = make_sweep(tmp_path / "new", {
        "a": ("hung", report("hung", hang_at=3, sig=HANG_SIG)),
        "b": ("completed", report("completed")),
        "c": ("completed", changed),
        "d": ("failed-steps", report("failed-steps", errors=("disk-read",))),
        "fresh": ("completed", report("completed")),
    })
    return old, new


def test_compare_finds_each_kind(two_sweeps):
    res = compare(*two_sweeps)
    assert [i["machine"] for i in res["new_failures"]] == ["a"]
    assert [i["machine"] for i in res["fixes"]] == ["b"]
    assert [(i["machine"], i["old"], i["new"]) for i in res["changed_verdicts"]] == [
        ("d", "hung", "failed-steps")]
    fw = {f["machine"]: f for f in res["firmware_changes"]}
    assert set(fw["c"]["e820"]["added"]) == {"0x000000100000+0xfedf000 type 1",
                                             "0x0000feffc000+0x4000 type 2"}
    assert fw["c"]["e820"]["removed"] == ["0x000000100000+0xfee0000 type 1"]
    assert [s["step"] for s in fw["c"]["steps"]] == ["mem-12"]
    assert res["only_old"] == ["gone"] and res["only_new"] == ["fresh"]


def test_compare_same_sweep_has_no_differences(two_sweeps):
    res = compare(two_sweeps[0], two_sweeps[0])
    assert not any(res[k] for k in ("new_failures", "fixes", "changed_verdicts",
                                    "firmware_changes", "only_old", "only_new"))


def test_renderings(two_sweeps):
    res = compare(*two_sweeps)
    console = Console(record=True, width=140)
    render_text(res, console)
    text = console.export_text()
    assert "New failures" in text and "Fixes" in text and "e820 + 0x0000feffc000" in text
    page = render_html(res)
    assert 'id="new_failures"' in page and 'data-machine="a"' in page and "<style>" in page


def test_cli_json_and_bad_dir(two_sweeps, tmp_path):
    old, new = two_sweeps
    html = tmp_path / "cmp.html"
    proc = subprocess.run([sys.executable, "-m", "kexectest", "compare", str(old), str(new),
                           "--json", "--html", str(html)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["new_failures"][0]["machine"] == "a" and html.read_text().startswith("<!DOCTYPE")
    proc = subprocess.run([sys.executable, "-m", "kexectest", "compare", str(tmp_path), str(new)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 10 and "no sweep.json" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
