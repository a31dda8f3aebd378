"""The lab's POST baseline and its second firmware, on real QEMU: `kexectest lab run --baseline`
boots the same machine shape from the payload's disk image and then through Linux + kexec, and
lists what differs; `--firmware bochs` runs both under Debian's Bochs BIOS; sweeps mark the cells
that differ from POST."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kexectest.analysis.replay import analyze_bytes
from kexectest.errors import Exit, KexectestError
from kexectest.lab import baseline as lab_baseline
from kexectest.lab.runner import run_virtual
from reportschema import assert_valid_report

CORPUS = Path(__file__).parent / "corpus"


def bundle_of(result) -> tuple[dict, dict, Path]:
    d = Path(result.bundle_dir)
    return (json.loads((d / "report.json").read_text()),
            json.loads((d / "environment.json").read_text()), d)


# ---------------------------------------------------------------- no QEMU: bad input


@pytest.mark.parametrize("kw,want", [
    ({"firmware": "bochs", "smp": 2}, "smp must be 1 with firmware bochs"),
    ({"firmware": "bochs", "machine": "q35"}, "runs on pc only, not q35"),
    ({"firmware": "ami"}, "firmware must be seabios or bochs"),
    ({"baseline": True, "loader": "direct"}, "needs a kexec loader"),
])
def test_shapes_the_lab_cannot_run_are_one_line(tmp_path, kw, want):
    kw = {"machine": "pc", **kw}
    with pytest.raises(KexectestError) as ei:
        run_virtual(kw.pop("machine"), out_dir=tmp_path, accel="tcg", quiet=True, **kw)
    assert ei.value.code == Exit.CONFIG and want in str(ei.value)


def test_a_post_run_that_shows_no_banner_is_reported_not_compared():
    """The machine did not boot the image: the bundle's baseline says so instead of comparing."""
    class Run:
        def __init__(self, log):
            self.analysis = analyze_bytes((CORPUS / log).read_bytes())
    b = lab_baseline.compare_runs(Run("no-output-noise.log"), Run("real-bochs-kexec-pc.log"), {}, {})
    assert b["differences"] == [] and "no intact payload banner" in b["refused"]
    assert b["post"]["verdict"] == "no-output"
    assert_valid_report({**analyze_bytes((CORPUS / "real-bochs-kexec-pc.log").read_bytes()).to_dict(),
                         "baseline": b})


def test_lab_file_keys(tmp_path):
    from kexectest.fleet.labfile import load_lab
    f = tmp_path / "l.toml"
    f.write_text('[[machine]]\nname = "a"\nbaseline = true\n'
                 'qemu = { machine = "pc", firmware = "bochs" }\n')
    (m,) = load_lab(f).machines
    assert m.baseline is True and m.qemu.firmware == "bochs"
    f.write_text('[[machine]]\nname = "a"\nbaseline = true\nload = { via = "direct" }\n'
                 'qemu = { machine = "pc" }\n')
    with pytest.raises(KexectestError) as ei:
        load_lab(f)
    assert ei.value.code == Exit.CONFIG and "l.toml:3" in str(ei.value)
    f.write_text('[[machine]]\nname = "a"\nqemu = { machine = "pc", firmware = "uefi" }\n')
    with pytest.raises(KexectestError) as ei:
        load_lab(f)
    assert "firmware must be seabios or bochs" in str(ei.value)


# ---------------------------------------------------------------- real runs


@pytest.mark.qemu
def test_lab_run_baseline_on_pc_lists_no_difference(tmp_path, built_payload):
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--baseline",
                        "--accel", "tcg", "--payload", str(built_payload), "--timeout", "30",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no differences" in p.stdout and "baseline: 0 difference(s) from POST" in p.stderr
    (run_dir,) = [d for d in tmp_path.glob("run-*") if d.is_dir()]
    rep = json.loads((run_dir / "report.json").read_text())
    assert_valid_report(rep)
    assert rep["verdict"] == "completed" and rep["payload"]["via"] == "kexec"
    assert rep["baseline"]["differences"] == [] and rep["baseline"]["post"]["via"] == "disk"
    post = json.loads((run_dir / "post" / "report.json").read_text())
    assert post["verdict"] == "completed" and post["payload"]["build_id"] == rep["payload"]["build_id"]
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["lab"]["baseline"]["post_verdict"] == "completed"
    # the same drives in both runs: the payload's image first, the lab disk after it
    post_env = json.loads((run_dir / "post" / "environment.json").read_text())
    for e in (env, post_env):
        drives = [a for a in e["lab"]["qemu_argv"] if a.startswith("file=")]
        assert drives[0].split(",")[0].endswith("payload-direct.img") and len(drives) == 2
    assert "-kernel" in env["lab"]["qemu_argv"] and "-kernel" not in post_env["lab"]["qemu_argv"]
    with tarfile.open(run_dir.parent / f"{run_dir.name}.tar.gz") as tar:
        names = tar.getnames()
    assert f"{run_dir.name}/post/console.log" in names and f"{run_dir.name}/report.json" in names
    # and the comparison again from the bundle, as a user would
    p = subprocess.run([sys.executable, "-m", "kexectest", "report", "--json", "--baseline",
                        str(run_dir / "post"), str(run_dir)], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["baseline"]["differences"] == []


@pytest.mark.qemu
def test_lab_run_baseline_on_q35_lists_no_difference(tmp_path, built_payload, lab_image):
    r = run_virtual("q35", baseline=True, out_dir=tmp_path, payload=built_payload,
                    image=lab_image, accel="tcg", quiet=True, timeout=30.0)
    rep, env, d = bundle_of(r)
    assert r.verdict == "completed" and rep["baseline"]["differences"] == [], rep["baseline"]
    assert {x["rule"] for x in rep["baseline"]["left_out"]} >= {"ticks", "entry-pic"}
    assert (d / "post" / "console.log").is_file()


@pytest.mark.qemu
def test_a_sweep_marks_the_cells_that_differ_from_post(tmp_path, built_payload):
    """A hang injected after kexec: the baseline lists the hung step and the steps it left
    unreached, and the sweep's matrix marks those cells; a Bochs machine in the same sweep."""
    lab = tmp_path / "b.toml"
    lab.write_text(f"""
[defaults]
timeout = 15
qemu = {{ accel = "tcg" }}
load = {{ payload = "{built_payload}" }}
[[machine]]
name = "hangs-after-kexec"
baseline = true
qemu = {{ machine = "pc", memory = 256, disks = 1 }}
load = {{ via = "syscall", hang_at = "edd-params" }}
[[machine]]
name = "bochs-q35-direct"
qemu = {{ machine = "q35", memory = 256, disks = 1, firmware = "bochs" }}
load = {{ via = "direct" }}
""")
    out = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "kexectest", "sweep", str(lab), "--out", str(out)],
                       capture_output=True, text=True, timeout=500)
    assert p.returncode == Exit.HUNG, p.stdout + p.stderr
    s = json.loads((out / "sweep.json").read_text())
    got = {m["name"]: m for m in s["machines"]}
    hung = got["hangs-after-kexec"]
    assert hung["verdict"] == "hung" and hung["baseline"]["differences"] >= 2
    assert hung["baseline"]["steps"]["edd-params"] == ["status: ok at POST, hung after kexec"]
    assert got["bochs-q35-direct"]["verdict"] == "completed"
    assert got["bochs-q35-direct"]["payload"]["via"] == "disk"
    html = (out / "report.html").read_text()
    assert html.count('data-post="differs"') == len(hung["baseline"]["steps"])
    assert "differs from POST: status: ok at POST, hung after kexec" in html
    assert '<span class="postmark">differs from POST</span>' in html
    # each concern's collapsed cell counts its steps that differ (the matrix fits when collapsed)
    assert sum(int(n) for n in re.findall(r'data-post-steps="(\d+)"', html)) == \
        len(hung["baseline"]["steps"])


@pytest.mark.qemu
def test_bochs_linux_kexec_and_its_baseline(tmp_path, built_payload, lab_image):
    """Under the Bochs BIOS: Linux from its CD, kexec into the payload, every step answered;
    then the same machine at POST and after kexec, compared: no difference."""
    r = run_virtual("pc", firmware="bochs", out_dir=tmp_path / "k", payload=built_payload,
                    image=lab_image, accel="tcg", quiet=True, timeout=30.0)
    rep, env, _ = bundle_of(r)
    assert r.verdict == "completed", rep["summary"]
    assert rep["payload"]["via"] == "kexec" and env["lab"]["firmware"] == "bochs"
    argv = env["lab"]["qemu_argv"]
    assert argv[argv.index("-bios") + 1].endswith("BIOS-bochs-latest") and "-kernel" not in argv
    assert "qemu64,-apic" in argv and any(a.startswith("file=") and "linux.iso" in a for a in argv)
    steps = {s["id"]: s for s in rep["steps"]}
    assert steps["vbe-info"]["result"]["oem"].startswith("Bochs VBE")
    assert steps["wait"]["result"]["supported"] is False
    b = run_virtual("pc", firmware="bochs", baseline=True, out_dir=tmp_path / "b",
                    payload=built_payload, image=lab_image, accel="tcg", quiet=True, timeout=30.0)
    rep, env, d = bundle_of(b)
    assert b.verdict == "completed" and rep["baseline"]["differences"] == [], rep["baseline"]
    post = json.loads((d / "post" / "report.json").read_text())
    assert post["payload"]["via"] == "disk" and post["verdict"] == "completed"
