"""The collector through Debian's ser2net: a pty exported as raw TCP (socket://) and as telnet
RFC2217 (rfc2217://) on 127.0.0.1, as a remote lab exports its serial lines."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kexectest.capture.session import RunOptions, run_session
from test_serialio import PtyConsole, encode, paced_write, trace_lines

pytestmark = pytest.mark.skipif(shutil.which("ser2net") is None,
                                reason="ser2net not installed (apt-get install ser2net)")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ser2net exited: {proc.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            time.sleep(0.3)  # let ser2net close the device again before the real client comes
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("ser2net did not start listening")


@pytest.fixture
def ser2net(tmp_path):
    """Start ser2net exporting a fresh pty; start(kind) -> (PtyConsole, url, process)."""
    procs, cons = [], []

    def start(kind: str):
        con = PtyConsole()  # the slave stays open here, so the pty lives between clients
        port = _free_port()
        accepter = (f"telnet(rfc2217),tcp,127.0.0.1,{port}" if kind == "rfc2217"
                    else f"tcp,127.0.0.1,{port}")
        conf = tmp_path / f"ser2net-{kind}.yaml"
        conf.write_text(
            "%YAML 1.1\n---\n"
            f"connection: &kt{kind}\n"
            f"  accepter: {accepter}\n"
            f"  connector: serialdev,{con.path},115200n81,local\n"
            "  options:\n    kickolduser: true\n")
        proc = subprocess.Popen(["ser2net", "-n", "-d", "-u", "-c", str(conf)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        cons.append(con)
        _wait_listening(port, proc)
        scheme = "rfc2217" if kind == "rfc2217" else "socket"
        return con, f"{scheme}://127.0.0.1:{port}", proc
    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for con in cons:
        con.close()


def _feed(con: PtyConsole, data: bytes, delay: float) -> None:
    def run():
        time.sleep(delay)
        paced_write(con.write, data)
    threading.Thread(target=run, daemon=True).start()


def _run(url: str, tmp_path: Path, **kw):
    return run_session(RunOptions(serial_url=url, out_dir=tmp_path / "out",
                                  command_line=["test"], overall_timeout=60, **kw))


@pytest.mark.parametrize("kind", ["raw", "rfc2217"])
def test_completed_through_ser2net(ser2net, tmp_path, kind):
    con, url, _ = ser2net(kind)
    data = encode(trace_lines())
    _feed(con, data, delay=1.5)
    res = _run(url, tmp_path, timeout=10)
    assert res.verdict == "completed", res.analysis.one_line()
    assert (res.bundle_dir / "console.raw").read_bytes() == data


@pytest.mark.parametrize("kind", ["raw", "rfc2217"])
def test_hang_through_ser2net(ser2net, tmp_path, kind):
    con, url, _ = ser2net(kind)
    _feed(con, encode(trace_lines(hang_at=1)), delay=1.0)
    res = _run(url, tmp_path, timeout=2.5)  # passive: the silence clock runs from the start
    assert res.verdict == "hung"
    assert res.analysis.hang["step"] == "edd-check"


def test_ser2net_gone_mid_run(ser2net, tmp_path):
    """ser2net killed mid-run: the TCP connection drops, the bundle keeps what came."""
    con, url, proc = ser2net("raw")
    data = encode(trace_lines(steps=("e820",) * 30, hang_at=20))
    _feed(con, data, delay=1.5)

    def kill_later():
        time.sleep(3.0)
        proc.terminate()  # by its PID: the one this test started
    threading.Thread(target=kill_later, daemon=True).start()
    res = _run(url, tmp_path, timeout=30)
    env = (res.bundle_dir / "environment.json").read_text()
    assert '"reason": "eof"' in env or '"reason": "lost"' in env
    assert (res.bundle_dir / "console.raw").read_bytes() == data
