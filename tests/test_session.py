"""run_session and `kexectest run` end to end over real ptys and TCP: verdicts, exit codes,
bundles written whatever happens, bounded memory on a 100 MB line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from kexectest.errors import Exit
from kexectest.capture.session import RunOptions, run_session
from test_serialio import PtyConsole, TcpConsole, encode, paced_write, trace_lines
from reportschema import assert_valid_report

KEXECTEST = [sys.executable, "-m", "kexectest"]


def _opts(url: str, tmp_path: Path, **kw) -> RunOptions:
    kw.setdefault("timeout", 0.6)
    kw.setdefault("overall_timeout", 60)
    return RunOptions(serial_url=url, out_dir=tmp_path / "out", command_line=["test"], **kw)


def _bundle_ok(result, data: bytes | None = None):
    d = result.bundle_dir
    for name in ("console.raw", "console.log", "report.json", "summary.md", "environment.json"):
        assert (d / name).is_file(), name
    assert not [p for p in d.parent.iterdir() if ".tmp-" in p.name]
    with tarfile.open(result.tarball) as tar:
        names = tar.getnames()
    assert f"{d.name}/console.raw" in names and f"{d.name}/report.json" in names
    if data is not None:
        assert (d / "console.raw").read_bytes() == data
    assert_valid_report(json.loads((d / "report.json").read_text()))
    return json.loads((d / "report.json").read_text()), json.loads(
        (d / "environment.json").read_text())


@pytest.fixture
def con():
    c = PtyConsole()
    yield c
    c.close()


def test_completed(con, tmp_path):
    data = encode(trace_lines())
    con.feed_later(data)
    res = run_session(_opts(con.path, tmp_path, timeout=5))
    assert res.verdict == "completed" and res.exit_code == Exit.COMPLETED
    report, env = _bundle_ok(res, data)
    assert report["verdict"] == "completed"
    assert env["stop"]["reason"] == "final" and env["serial"]["url"] == con.path
    assert env["bytes"] == len(data) and env["command_line"] == ["test"]


def test_hung_after_silence(con, tmp_path):
    data = encode(trace_lines(hang_at=1))
    con.feed_later(data)
    res = run_session(_opts(con.path, tmp_path))
    assert res.verdict == "hung" and res.exit_code == Exit.HUNG
    report, env = _bundle_ok(res, data)
    assert report["hang"]["step"] == "edd-check"
    assert env["stop"]["reason"] == "timeout"
    assert env["timings"]["verdict_delay_s"] is not None and env["timings"]["verdict_delay_s"] >= 0


def test_reset(con, tmp_path):
    con.feed_later(encode(trace_lines(reset_at=1)))
    res = run_session(_opts(con.path, tmp_path, timeout=5))
    assert res.verdict == "reset" and res.exit_code == Exit.RESET
    _bundle_ok(res)


def test_no_output(con, tmp_path):
    res = run_session(_opts(con.path, tmp_path, timeout=0.3))
    assert res.verdict == "no-output" and res.exit_code == Exit.NO_OUTPUT
    _bundle_ok(res, b"")


def test_pty_closed_mid_run_bundle_has_all_bytes(con, tmp_path):
    data = encode(trace_lines(steps=("e820",) * 30, hang_at=20))
    con.feed_later(data, close=True)
    res = run_session(_opts(con.path, tmp_path, timeout=10))
    report, env = _bundle_ok(res, data)
    assert env["stop"]["reason"] in ("eof", "lost")
    assert report["verdict"] != "completed"


def test_tcp_reset_mid_run_bundle_has_all_bytes(tmp_path):
    srv = TcpConsole()
    data = encode(trace_lines(steps=("e820",) * 30, hang_at=20))
    srv.serve_later(data, then="reset")
    try:
        res = run_session(_opts(srv.url, tmp_path, timeout=10))
    finally:
        srv.close()
    report, env = _bundle_ok(res, data)
    assert env["stop"]["reason"] == "lost"


def test_garbage_is_garbled_or_no_output(con, tmp_path):
    data = os.urandom(20000) + b"\0" * 500
    con.feed_later(data, rate=100_000)
    res = run_session(_opts(con.path, tmp_path, timeout=0.5))
    _bundle_ok(res, data)
    assert res.verdict in ("garbled", "no-output")


def test_redacted_bundle(con, tmp_path):
    lines = ["bench-target login: root", "root@bench-target:~# ip a",
             "    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff",
             "    inet 192.168.7.23/24 brd 192.168.7.255 scope global eth0",
             "KTSNAP dmi product_serial=VMW-4711-XYZ ~0000"] + trace_lines()
    data = encode(lines)
    con.feed_later(data)
    res = run_session(_opts(con.path, tmp_path, timeout=5, redact=True))
    assert res.verdict == "completed"
    report, env = _bundle_ok(res)  # both still parse as JSON, the same keys as unredacted
    assert set(env["serial"]) == {"url", "baud", "parity", "rtscts", "xonxoff"}
    assert env["serial"]["url"] == con.path and report["verdict"] == "completed"
    blob = b""
    with tarfile.open(res.tarball) as tar:
        for m in tar.getmembers():
            if m.isfile():
                blob += tar.extractfile(m).read()
    for secret in (b"bench-target", b"52:54:00:12:34:56", b"192.168.7.23", b"VMW-4711-XYZ",
                   os.uname().nodename.encode()):
        assert secret not in blob, secret
    assert b"<host-1>" in blob and b"<mac-1>" in blob and b"<ip-1>" in blob


# -- the command line ------------------------------------------------------------------------

def _run_cli(args, **kw):
    return subprocess.run(KEXECTEST + ["run", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_cli_missing_device_one_line_exit_14(tmp_path):
    p = _run_cli(["--serial", "/dev/ttyNOPE42", "--out", str(tmp_path)])
    assert p.returncode == Exit.SERIAL == 14
    assert p.stderr.strip().splitlines() == [
        "kexectest: error: serial device /dev/ttyNOPE42 does not exist"]
    assert "Traceback" not in p.stderr and not list(tmp_path.iterdir())


def test_cli_unknown_scheme(tmp_path):
    p = _run_cli(["--serial", "foo://bar", "--out", str(tmp_path)])
    assert p.returncode == 14 and len(p.stderr.strip().splitlines()) == 1


def test_permission_denied_hints_dialout(tmp_path):
    """A real EACCES: a forked child drops to `nobody` and opens a root-only pty."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    from kexectest.capture import transport
    from kexectest.errors import KexectestError
    con = PtyConsole()
    os.chmod(con.path, 0o600)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(65534)
            os.setuid(65534)
            transport.open_port(transport.SerialSettings(con.path))
            msg = "opened"
        except KexectestError as exc:
            msg = f"{int(exc.code)} {exc}"
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            msg = repr(exc)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    msg = os.read(r, 4096).decode()
    os.close(r)
    con.close()
    assert msg.startswith("14 permission denied") and "dialout" in msg, msg


def test_cli_hung_plain_output_and_exit_code(con, tmp_path):
    data = encode(trace_lines(hang_at=2))
    con.feed_later(data, delay=1.0)
    p = _run_cli(["--serial", con.path, "--timeout", "1", "--out", str(tmp_path)])
    assert p.returncode == Exit.HUNG, p.stderr
    out = p.stdout.splitlines()
    assert out[-2].startswith("hung at step 002 vbe-info")
    assert out[-1].startswith("bundle: ") and out[-1].endswith(".tar.gz")
    assert any("KT begin 002 vbe-info" in x for x in out)  # plain line output, not a terminal
    assert Path(out[-1].split(" ", 1)[1]).is_file()


def test_cli_json(con, tmp_path):
    con.feed_later(encode(trace_lines()), delay=1.0)
    p = _run_cli(["--serial", con.path, "--timeout", "5", "--json", "--out", str(tmp_path)])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["verdict"] == "completed"


def test_cli_ctrl_c_writes_bundle(con, tmp_path):
    data = encode(trace_lines(hang_at=1))
    proc = subprocess.Popen(KEXECTEST + ["run", "--serial", con.path, "--timeout", "60",
                                         "--quiet", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    con.release_slave()
    paced_write(con.write, data)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == Exit.INTERRUPTED, err
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "console.raw").read_bytes() == data
    assert json.loads((runs[0] / "environment.json").read_text())["stop"]["reason"] == \
        "interrupted"


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_kib(feed_chunks, tmp_path: Path) -> tuple[int, int]:
    """Peak RSS (KiB, the child's own VmHWM, sampled until it exits) of a `kexectest run`
    child fed the chunks."""
    con = PtyConsole()
    proc = subprocess.Popen(KEXECTEST + ["run", "--serial", con.path, "--timeout", "2",
                                         "--quiet", "--out", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _hwm_kib(proc.pid) or 0)
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(1.5)
    con.release_slave()
    for chunk in feed_chunks:
        con.write(chunk)
    proc.wait(timeout=300)
    stop.set()
    sampler.join()
    con.close()
    return peak, proc.returncode


def test_100mb_line_without_newline_bounded_memory(tmp_path):
    """A 100 MB line: everything on disk, the collector's memory stays small."""
    small, _ = _peak_rss_kib([encode(trace_lines())], tmp_path / "a")
    block = b"A" * (1 << 16)
    big, code = _peak_rss_kib((block for _ in range(1600)), tmp_path / "b")
    runs = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
    assert (runs[0] / "console.raw").stat().st_size == 1600 * len(block)
    assert code in (Exit.NO_OUTPUT, Exit.GARBLED, Exit.HUNG)
    print(f"max RSS: small {small} KiB, 100 MB line {big} KiB")
    assert big - small < 40 * 1024
