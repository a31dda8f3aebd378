"""End to end on the real virtual lab (QEMU/TCG, SeaBIOS, the lab's Debian kernel): the user's own
`kexectest run` command against a lab console, both loaders on both machines, a kernel that dies
before the hand-off, the classic kexec-tools kexec_test as a baseline, hang and reset after kexec.

Each run needs a fresh guest (a kexec ends it): restored from its shape's saved state
(lab/warmstate.py), a few seconds under TCG; the first run of a shape boots it and saves it.
With KEXECTEST_SAVE_CORPUS=1 the runs that feed tests/corpus write their console.log there
(real-*.log; the .expected.json beside each is written by hand)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from kexectest import payload as pl
from kexectest.errors import Exit
from kexectest.lab import image as li
from kexectest.lab import qemu as lq
from kexectest.lab import warmstate
from kexectest.lab.runner import run_virtual
from kexectest.capture.session import RunOptions, run_session
from reportschema import assert_valid_report

pytestmark = pytest.mark.qemu

CORPUS = Path(__file__).parent / "corpus"
BUNDLE_FILES = ("console.raw", "console.log", "report.json", "summary.md", "environment.json")
CLASSIC = "/usr/lib/x86_64-linux-gnu/kexec-tools/kexec_test.static"
PW_VAR = "KT_E2E_LAB_PASSWORD"


def _save_corpus(bundle_dir: Path, name: str) -> None:
    if os.environ.get("KEXECTEST_SAVE_CORPUS") == "1":
        shutil.copyfile(bundle_dir / "console.log", CORPUS / f"{name}.log")


@contextmanager
def _lab_qemu(lab_image, out: Path, machine: str = "pc", **kw):
    """A lab guest as runner.py starts one: the Linux kernel, the initramfs, the host's / at
    /host; restored from its shape's saved state (these tests are about what follows the boot)."""
    q = lq.Qemu(machine=machine, memory_mib=256, accel="tcg", kernel=lab_image.kernel,
                initrd=lab_image.initrd, append=lab_image.cmdline,
                disks=lab_image.disks[:1], share_host=True, time_limit=300, out_dir=out, **kw)
    warmstate.launch(q)
    with q:
        yield q


def _lab_session(lab_image, q: lq.Qemu, out: Path, command: str, timeout: float):
    opts = RunOptions(serial_url=q.serial_url, login=lab_image.login, password=lab_image.password,
                      prompt=li.PROMPT_RE, command=command, timeout=timeout, out_dir=out,
                      quiet=True, command_line=["pytest", "lab-e2e"])
    return run_session(opts)


def _virtual(tmp_path, built_payload, lab_image, machine, **kw):
    kw.setdefault("timeout", 20.0)
    result = run_virtual(machine, out_dir=tmp_path, payload=built_payload, image=lab_image,
                         quiet=True, accel="tcg", **kw)
    report = json.loads((result.bundle_dir / "report.json").read_text())
    assert_valid_report(report)
    console = (result.bundle_dir / "console.log").read_text(errors="replace")
    return result, report, console


def _banner_entry(console: str) -> int:
    m = re.search(r"^(?:\+\d+\.\d+\t)?KT banner .*\bentry=(\d+)\b", console, re.M)
    assert m, "no payload banner in the console"
    return int(m.group(1))


# ------------------------------------------------------------------ 1. the user's own command


def test_cli_run_against_a_lab_console(tmp_path, lab_image):
    """`kexectest run --serial socket://... --login root --password-env VAR --command
    'kexectest load --exec --yes'`: what a user types, against a lab guest's console."""
    pl.ensure_built()  # the guest's `kexectest load` (no path) uses the tree's build/ (read-only)
    out = tmp_path / "bundles"
    with _lab_qemu(lab_image, tmp_path / "qemu") as q:
        env = dict(os.environ, **{PW_VAR: lab_image.password})
        p = subprocess.run(
            [sys.executable, "-m", "kexectest", "run", "--serial", q.serial_url,
             "--login", lab_image.login, "--password-env", PW_VAR, "--prompt", li.PROMPT_RE,
             "--command", "kexectest load --exec --yes", "--timeout", "20", "--quiet",
             "--out", str(out)],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=400)
    assert p.returncode == Exit.COMPLETED, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert p.stdout.startswith("completed"), p.stdout
    m = re.search(r"^bundle: (\S+\.tar\.gz)$", p.stdout, re.M)
    assert m, p.stdout
    tarball = Path(m.group(1))
    assert tarball.is_file() and tarball.parent == out
    with tarfile.open(tarball) as tf:
        members = {Path(n).name: n for n in tf.getnames()}
        for name in BUNDLE_FILES:
            assert name in members, (name, sorted(members))
        report = json.load(tf.extractfile(members["report.json"]))
        assert_valid_report(report)
        summary = tf.extractfile(members["summary.md"]).read().decode()
        secret = lab_image.password.encode()
        for info in tf.getmembers():
            if info.isfile():
                assert secret not in tf.extractfile(info).read(), info.name
    assert report["verdict"] == "completed", report["summary"]
    assert summary.splitlines()[0] == "## kexectest: completed", summary[:200]
    assert report["summary"] in summary
    bundle_dir = tarball.with_name(tarball.name[:-len(".tar.gz")])
    env_json = json.loads((bundle_dir / "environment.json").read_text())
    assert env_json["mode"] == "serial-command" and env_json["verdict"] == "completed"
    assert env_json["target"]["command"] == "kexectest load --exec --yes"
    for f in bundle_dir.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f
    console = (bundle_dir / "console.log").read_text()
    assert "kexec_core: Starting new kernel" in console and "Password:" in console


# ------------------------------------------------------------------ 2. loaders x machines


@pytest.mark.parametrize("machine,loader,entry", [("q35", "syscall", 64), ("pc", "kexec-tools", 32)])
def test_loader_on_machine(tmp_path, built_payload, lab_image, machine, loader, entry):
    """The combinations tests/test_lab.py does not run (it has syscall/pc and kexec-tools/q35)."""
    result, report, console = _virtual(tmp_path, built_payload, lab_image, machine, loader=loader)
    assert result.verdict == "completed", report["summary"]
    assert result.exit_code == Exit.COMPLETED
    assert report["hang"] is None and report["reset"] is None
    assert "kexec_core: Starting new kernel" in console
    assert _banner_entry(console) == entry
    assert int(report["payload"]["entry"]) == entry
    assert report["before_after"]["e820"]["same"] is True
    assert report["before_after"]["differences"] == []
    assert len(report["e820"]) >= 5
    if machine == "q35" and loader == "syscall":
        _save_corpus(result.bundle_dir, "real-syscall-q35")


# ------------------------------------------------------------------ 3. a kernel that dies first


def test_kernel_panic_before_handoff_is_died_before_handoff(tmp_path, lab_image):
    with _lab_qemu(lab_image, tmp_path / "qemu") as q:
        result = _lab_session(lab_image, q, tmp_path,
                              "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger",
                              timeout=10.0)
    report = json.loads((result.bundle_dir / "report.json").read_text())
    assert_valid_report(report)
    assert result.verdict == "died-before-handoff", report["summary"]
    assert result.exit_code == Exit.DIED_BEFORE_HANDOFF == 7
    fatal = [t for t in report["kernel_trouble"] if t["fatal"]]
    assert fatal, report["kernel_trouble"]
    block = "\n".join(fatal[0]["block"])
    assert len(fatal[0]["block"]) >= 5, fatal[0]
    assert "sysrq triggered crash" in block
    assert "Call Trace:" in block and "RIP:" in block and "Kernel Offset" in block
    assert "sysrq triggered crash" in report["summary"]
    assert report["handoff"]["seen"] is False
    _save_corpus(result.bundle_dir, "real-panic-sysrq")


# ------------------------------------------------------------------ 4. the classic kexec_test


def test_classic_kexec_test_as_baseline(tmp_path, lab_image):
    with _lab_qemu(lab_image, tmp_path / "qemu") as q:
        result = _lab_session(lab_image, q, tmp_path,
                              f"kexec -l /host{CLASSIC} --type=elf-x86 && kexec -e", timeout=5.0)
    report = json.loads((result.bundle_dir / "report.json").read_text())
    assert_valid_report(report)
    console = (result.bundle_dir / "console.log").read_text(errors="replace")
    assert "kexec_test" in console and "Halting." in console
    assert report["source"] == "classic", report
    assert result.verdict == "completed", report["summary"]
    assert result.exit_code == Exit.COMPLETED
    _save_corpus(result.bundle_dir, "real-classic-lab")


# ------------------------------------------------------------------ 5. hang and reset after kexec


def test_hang_through_kexec_tools_on_pc(tmp_path, built_payload, lab_image):
    result, report, console = _virtual(tmp_path, built_payload, lab_image, "pc",
                                       loader="kexec-tools", hang_at="edd-params", timeout=12.0)
    assert result.verdict == "hung" and result.exit_code == Exit.HUNG, report["summary"]
    assert report["hang"]["step"] == "edd-params" and report["hang"]["drive"] == 0x80
    assert "kexec_core: Starting new kernel" in console
    _save_corpus(result.bundle_dir, "real-hang-kexec-tools-pc")


def test_reset_through_syscall_on_pc(tmp_path, built_payload, lab_image):
    """The triple fault reboots the guest; the lab kernel's banner comes back ~10 s later under
    TCG (SeaBIOS, -kernel reload, decompression), so the silence timeout must exceed that."""
    result, report, console = _virtual(tmp_path, built_payload, lab_image, "pc",
                                       loader="syscall", reset_at="a20-kbc", timeout=20.0)
    assert result.verdict == "reset" and result.exit_code == Exit.RESET, report["summary"]
    assert report["reset"]["step"] == "a20-kbc"
    assert "Linux version" in report["reset"]["banner"]
    assert _banner_entry(console) == 64


# ------------------------------------------------------------------ 6. trouble, then a good run


def test_kernel_call_trace_before_handoff_is_quoted_even_when_the_payload_completes(tmp_path, lab_image):
    """A real call trace from the lab's kernel (sysrq 'l': backtrace of all CPUs) just before the
    load: the payload still completes, and the trace is quoted as kernel trouble."""
    pl.ensure_built()
    with _lab_qemu(lab_image, tmp_path / "qemu") as q:
        result = _lab_session(lab_image, q, tmp_path,
                              "echo 1 > /proc/sys/kernel/sysrq; echo l > /proc/sysrq-trigger; "
                              "sleep 1; kexectest load --exec --yes", timeout=20.0)
    report = json.loads((result.bundle_dir / "report.json").read_text())
    assert_valid_report(report)
    assert result.verdict == "completed", report["summary"]
    traces = [t for t in report["kernel_trouble"] if not t["fatal"]]
    assert traces, "the call trace before the hand-off was not reported"
    block = "\n".join(traces[0]["block"])
    # the whole block: the header naming CPU, task and machine, then the trace itself
    assert traces[0]["title"].startswith("NMI backtrace for cpu")
    assert "CPU: 0 PID:" in block and "Hardware name:" in block and "Call Trace:" in block
    assert len(traces[0]["block"]) >= 8
    summary = (result.bundle_dir / "summary.md").read_text()
    assert "Kernel trouble before the hand-off" in summary and "Call Trace:" in summary
    _save_corpus(result.bundle_dir, "real-calltrace-then-completed")
