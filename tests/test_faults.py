"""Faults on the capture path, for real: a tmpfs filled to a real ENOSPC at different moments, a
read-only and a vanished output directory, and a bounded run of the fault campaign
(benchmarks/bench_faults.py: collector killed, console server killed, pty closed, disk full at
random moments, real corpus captures through real ptys, TCP and ser2net).

Whatever strikes: console.raw is an exact prefix of what was sent, `kexectest run` ends with at
most one line on stderr (exit 18 when the disk filled), and what was captured stays."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kexectest.errors import Exit
from test_serialio import PtyConsole, encode, paced_write, trace_lines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_faults  # noqa: E402

KEXECTEST = [sys.executable, "-m", "kexectest"]
needs_mount = pytest.mark.skipif(not bench_faults.can_mount(), reason="needs root and tmpfs")


@pytest.fixture
def small_fs(tmp_path):
    made = []

    def make(size=1 << 20, options=""):
        fs = bench_faults.SmallFs(tmp_path / f"fs{len(made)}", size)
        if options:
            subprocess.run(["mount", "-o", f"remount,{options}", str(fs.path)], check=True)
        made.append(fs)
        return fs
    yield make
    for fs in made:
        fs.close()


def _run(con: PtyConsole, out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(KEXECTEST + ["run", "--serial", con.path, "--timeout", "1.5",
                                         "--max-time", "60", "--quiet", "--out", str(out),
                                         *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir() and p.name.startswith("run-")]
    assert len(runs) == 1, runs
    return runs[0]


@needs_mount
def test_disk_full_before_the_first_byte(small_fs):
    fs = small_fs()
    fs.fill()
    con = PtyConsole()
    data = encode(trace_lines())
    try:
        proc = _run(con, fs.path)
        bench_faults.wait_open(proc.pid, con.path)
        con.release_slave()
        paced_write(con.write, data, rate=200_000)
        _, err = proc.communicate(timeout=60)
    finally:
        con.close()
    assert proc.returncode == Exit.NO_SPACE == 18
    line = _one_line(err)
    assert line.startswith("kexectest: error: no space left on the device: cannot write ")
    assert "console.raw" in line and "not written:" in line
    assert data.startswith((_run_dir(fs.path) / "console.raw").read_bytes())


@needs_mount
@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_disk_full_mid_capture(tmp_path, transport):
    """The disk fills while the trace streams: one line, exit 18, the bytes before it kept."""
    src = next(s for s in bench_faults.sources(["real-syscall-q35"]))
    trial = bench_faults.run_trial("disk-full", src, random.Random(7), tmp_path, rate=200_000,
                                   transport=transport, moment=len(src.wire) // 3)
    assert trial.exit_code == Exit.NO_SPACE, trial.stderr
    assert trial.one_line and trial.stderr[0].startswith("kexectest: error: no space left")
    assert trial.prefix_ok and 0 < trial.raw_len < len(src.wire)
    assert trial.judged["replay_log"] not in ("no-verdict", "claims-completion")


@needs_mount
def test_disk_full_after_the_capture_bundle_as_far_as_space_allows(small_fs):
    """The capture fits, the bundle does not all fit: what fits is written (environment.json
    is valid JSON), the line says what is missing, exit 18."""
    fs = small_fs()
    con = PtyConsole()
    data = encode(trace_lines(steps=("e820",) * 60))
    try:
        proc = _run(con, fs.path)
        bench_faults.wait_open(proc.pid, con.path)
        con.release_slave()
        run_dir = None
        paced_write(con.write, data, rate=200_000)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the last byte is in console.raw: fill the disk
            runs = list(fs.path.glob("run-*/console.raw"))
            if runs and runs[0].stat().st_size == len(data):
                run_dir = runs[0].parent
                break
            time.sleep(0.005)
        assert run_dir is not None
        fs.fill(leave=3 * 4096)  # room for the small files, not for report.json and the tarball
        _, err = proc.communicate(timeout=60)
    finally:
        con.close()
    assert proc.returncode == Exit.NO_SPACE, err
    line = _one_line(err)
    assert "no space left on the device" in line and "not written:" in line
    assert "report.json" in line.split("not written:")[1]
    assert (run_dir / "console.raw").read_bytes() == data
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["stop"]["reason"] == "final" and env["bytes"] == len(data)
    assert not list(fs.path.glob("**/.*.tmp-*"))  # no half-written temporary file left


@needs_mount
def test_read_only_output_directory(small_fs):
    fs = small_fs(options="ro")
    con = PtyConsole()
    try:
        p = subprocess.run(KEXECTEST + ["run", "--serial", con.path, "--timeout", "1",
                                        "--out", str(fs.path / "runs")],
                           capture_output=True, text=True, timeout=60)
    finally:
        con.close()
    assert p.returncode == Exit.BAD_INPUT
    assert _one_line(p.stderr) == (f"kexectest: error: cannot create a run directory in "
                                   f"{fs.path / 'runs'}: Read-only file system")


def test_run_directory_vanishes_mid_capture(tmp_path):
    """Someone removes the run directory while the console streams: one line, never a trace."""
    con = PtyConsole()
    out = tmp_path / "out"
    data = encode(trace_lines(steps=("e820",) * 40))
    try:
        proc = _run(con, out)
        bench_faults.wait_open(proc.pid, con.path)
        con.release_slave()
        paced_write(con.write, data[: len(data) // 2], rate=100_000)
        shutil.rmtree(_run_dir(out))
        paced_write(con.write, data[len(data) // 2:], rate=100_000)
        _, err = proc.communicate(timeout=60)
    finally:
        con.close()
    assert proc.returncode == Exit.BAD_INPUT, err
    line = _one_line(err)
    assert line.startswith("kexectest: error: cannot ") and "No such file or directory" in line
    print(line)


# -- the campaign, bounded ---------------------------------------------------------------------

_CAMPAIGN = ("collector-killed", "server-killed", "pty-closed") + (
    ("disk-full",) if bench_faults.can_mount() else ())


@pytest.mark.parametrize("fault", _CAMPAIGN)
def test_fault_campaign_bounded(tmp_path, fault):
    if fault == "server-killed" and shutil.which("ser2net") is None:
        pytest.skip("ser2net not installed")
    rng = random.Random(f"kexectest-{fault}")
    srcs = bench_faults.sources(["real-syscall-q35", "real-hang-kexec-tools-pc",
                                 "real-panic-sysrq"])
    for i, src in enumerate(srcs):
        work = tmp_path / str(i)
        work.mkdir()
        trial = bench_faults.run_trial(fault, src, rng, work, rate=300_000)
        print(trial)
        assert trial.prefix_ok, trial
        assert trial.one_line, trial.stderr
        if fault == "collector-killed":
            assert trial.exit_code == -9
        elif fault == "disk-full":
            assert trial.exit_code == Exit.NO_SPACE, trial.stderr
        else:  # the console went away: a verdict, never a tool error or a bug
            assert trial.exit_code is not None and 0 <= trial.exit_code <= 9, trial.stderr
        for key in ("run_verdict", "replay_log", "replay_raw"):
            assert trial.judged[key] not in ("no-verdict", "claims-completion"), (key, trial)



# -- a bug in kexectest: exit 70, one line, the traceback kept ---------------------------------

@pytest.fixture
def cli_with(monkeypatch, tmp_path):
    """The real CLI group with one more command module that fails the way given."""
    from click.testing import CliRunner

    from kexectest import cli

    def make(body: str):
        mod = tmp_path / "kt_failing_cmd.py"
        mod.write_text("import click, errno\n@click.command('fail')\ndef fail():\n"
                       f"    {body}\n"
                       "def register(group):\n    group.add_command(fail)\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setitem(cli.COMMANDS, "fail", "kt_failing_cmd")
        monkeypatch.delitem(sys.modules, "kt_failing_cmd", raising=False)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the traceback goes
        return CliRunner().invoke(cli.main, ["fail"])
    return make


def test_a_bug_is_exit_70_with_the_traceback_saved(cli_with, tmp_path):
    res = cli_with("{}['missing']")
    assert res.exit_code == Exit.INTERNAL == 70
    line = _one_line(res.stderr)
    assert line.startswith("kexectest: error: internal error: KeyError: 'missing' (a bug in "
                           "kexectest: please report it; the traceback is in ")
    saved = Path(line.rsplit("the traceback is in ", 1)[1].rstrip(")"))
    assert saved.parent == tmp_path and "Traceback" in saved.read_text()


def test_an_escaped_full_disk_error_is_still_18(cli_with):
    res = cli_with("raise OSError(errno.ENOSPC, 'No space left on device', '/x/report.json')")
    assert res.exit_code == Exit.NO_SPACE
    assert _one_line(res.stderr) == ("kexectest: error: no space left on the device: cannot "
                                     "write /x/report.json")
