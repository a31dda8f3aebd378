"""Driving the target over its console: a small real shell-like program on the other end of a
pty (or a TCP connection) prints login:, Password:, a prompt, and a payload trace when told."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kexectest.capture import triggers as target
from kexectest.errors import Exit, KexectestError
from kexectest.capture.session import RunOptions, run_session
from test_serialio import PtyConsole, encode, trace_lines

PASSWORD = "Tr0ub4dor&3-kt"

# The machine under test, as far as its console shows: getty, login, a shell, kexec.
FAKE_TARGET = r'''
import os, sys, time
fd, mode, trace_file, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def out(b):
    if isinstance(b, str): b = b.encode()
    while b:
        b = b[os.write(fd, b):]
if mode == "silent":
    time.sleep(600)
if mode == "cut-hash":  # a kernel line that pauses right after a "#"
    out("[    0.100000] .... node  #0, CPUs:      #")
    time.sleep(0.1)
    out("1\r\n")
out("[    3.900000] Run /init as init process\r\n")
buf, state, user = b"", "login", ""
PROMPT = "root@bench:~# "
out("\r\nDebian GNU/Linux 12 bench ttyS0\r\n\r\nbench login: ")
while True:
    data = os.read(fd, 1024)
    if not data:
        sys.exit(0)
    for ch in data:
        c = bytes([ch])
        if c not in (b"\r", b"\n"):
            buf += c
            if state != "password" or mode == "echo-password":
                out(c)
            continue
        line, buf = buf.decode(), b""
        if state == "login":
            if not line:
                out("\r\nbench login: ")
                continue
            user, state = line, "password"
            out("\r\nPassword: ")
        elif state == "password":
            if line == password and user == "root":
                state = "shell"
                out("\r\nLast login: Mon Nov 23 10:00:00 UTC 2026 on ttyS0\r\n" + PROMPT)
            else:
                state = "login"
                time.sleep(0.2)
                out("\r\nLogin incorrect\r\nbench login: ")
        else:
            out("\r\n")
            if line == "kexec-go":
                out("[  100.100000] kexec_core: Starting new kernel\r\n")
                data = open(trace_file, "rb").read()
                for i in range(0, len(data), 64):
                    out(data[i:i + 64]); time.sleep(64 / 11520)
                time.sleep(600)
            elif line.startswith("kexec-fail"):
                out("kexectest: error: kexec_load refused: Operation not permitted\r\n" + PROMPT)
            else:
                out(PROMPT)
'''


class FakeTarget:
    def __init__(self, tmp_path: Path, mode: str = "normal", lines=None, password=PASSWORD):
        script = tmp_path / "fake_target.py"
        script.write_text(FAKE_TARGET)
        self.trace = tmp_path / "trace.bin"
        self.trace.write_bytes(encode(lines or trace_lines()))
        self.script, self.mode, self.password = script, mode, password
        self.proc = None

    def start(self, fd: int) -> None:
        self.proc = subprocess.Popen([sys.executable, str(self.script), str(fd), self.mode,
                                      str(self.trace), self.password], pass_fds=[fd])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def pty_target(tmp_path):
    made = []

    def make(mode="normal", **kw):
        con = PtyConsole()
        fake = FakeTarget(tmp_path, mode, **kw)
        fake.start(con.master)
        con.release_slave()
        made.append((con, fake))
        return con
    yield make
    for con, fake in made:
        fake.stop()
        con.close()


def _opts(url, tmp_path, **kw):
    kw.setdefault("timeout", 1.0)
    kw.setdefault("login_timeout", 10)
    kw.setdefault("overall_timeout", 60)
    return RunOptions(serial_url=url, out_dir=tmp_path / "out", command_line=["test"], **kw)


def _all_bundle_bytes(tarball: Path) -> bytes:
    blob = b""
    with tarfile.open(tarball) as tar:
        for m in tar.getmembers():
            if m.isfile():
                blob += tar.extractfile(m).read()
    for p in Path(str(tarball)[: -len(".tar.gz")]).iterdir():
        blob += p.read_bytes()
    return blob


@pytest.mark.parametrize("mode", ["normal", "echo-password", "cut-hash"])
def test_login_command_completed_password_never_written(pty_target, tmp_path, monkeypatch, mode):
    con = pty_target(mode)
    monkeypatch.setenv("KT_TEST_PW", PASSWORD)
    res = run_session(_opts(con.path, tmp_path, login="root", password_env="KT_TEST_PW",
                            command="kexec-go"))
    assert res.verdict == "completed", res.analysis.one_line()
    blob = _all_bundle_bytes(res.tarball)
    assert PASSWORD.encode() not in blob
    raw = (res.bundle_dir / "console.raw").read_bytes()
    assert b"bench login: root" in raw and b"Starting new kernel" in raw  # the kernel's last words
    if mode == "echo-password":
        assert b"********" in raw
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert PASSWORD.encode() not in p.read_bytes(), p


def test_short_password_masked_only_in_the_dialogue(pty_target, tmp_path):
    """A 4-digit password also occurs in the payload's answers: those are kept as they came
    (no scrubbed line, every step verifiable); only its echo in the login dialogue is masked."""
    con = pty_target("echo-password", password="0000")
    res = run_session(_opts(con.path, tmp_path, login="root", password="0000",
                            command="kexec-go"))
    assert res.verdict == "completed", res.analysis.one_line()
    raw = (res.bundle_dir / "console.raw").read_bytes()
    assert b"Password: ********" in raw and raw.endswith(encode(trace_lines()))
    log = (res.bundle_dir / "console.log").read_text().splitlines()
    marked = [x for x in log if x.split("\t", 1)[0].endswith("*")]
    assert len(marked) == 1 and marked[0].endswith("Password: ********")
    env = json.loads((res.bundle_dir / "environment.json").read_text())
    assert env["scrubbed_lines"] == 1


def test_login_over_tcp(tmp_path, monkeypatch):
    """pexpect through socket:// (the QEMU lab's console) works the same."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    fake = FakeTarget(tmp_path)
    import threading

    def accept():
        conn, _ = srv.accept()
        fake.start(conn.fileno())
        conn.close()
    threading.Thread(target=accept, daemon=True).start()
    try:
        res = run_session(_opts(f"socket://127.0.0.1:{srv.getsockname()[1]}", tmp_path,
                                login="root", password=PASSWORD, command="kexec-go"))
    finally:
        fake.stop()
        srv.close()
    assert res.verdict == "completed"


def test_wrong_password(pty_target, tmp_path):
    con = pty_target()
    with pytest.raises(KexectestError) as err:
        run_session(_opts(con.path, tmp_path, login="root", password="wrong",
                          command="kexec-go"))
    assert err.value.code == Exit.LAB_STAGE
    assert "login incorrect for user 'root'" in str(err.value) and "bundle: " in str(err.value)
    runs = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert (runs[0] / "report.json").is_file()
    assert b"Login incorrect" in (runs[0] / "console.raw").read_bytes()


def test_no_login_prompt(pty_target, tmp_path):
    con = pty_target("silent")
    with pytest.raises(KexectestError) as err:
        run_session(_opts(con.path, tmp_path, login="root", password="x", command="kexec-go",
                          login_timeout=2))
    assert err.value.code == Exit.LAB_STAGE
    assert "no login prompt on the console within 2 s" in str(err.value)


def test_password_asked_but_none_given(pty_target, tmp_path):
    con = pty_target()
    with pytest.raises(KexectestError) as err:
        run_session(_opts(con.path, tmp_path, login="root", command="kexec-go"))
    assert err.value.code == Exit.LAB_STAGE and "--password-env" in str(err.value)


def test_command_fails_prompt_comes_back(pty_target, tmp_path):
    con = pty_target()
    with pytest.raises(KexectestError) as err:
        run_session(_opts(con.path, tmp_path, login="root", password=PASSWORD,
                          command="kexec-fail now", timeout=30))
    assert err.value.code == Exit.TARGET_COMMAND
    assert "kexec_load refused: Operation not permitted" in str(err.value)


def test_password_env_missing(monkeypatch):
    monkeypatch.delenv("KT_NOT_SET_PW", raising=False)
    with pytest.raises(KexectestError) as err:
        target.resolve_password("KT_NOT_SET_PW", "root", interactive=False)
    assert err.value.code == Exit.USAGE


def test_ssh_failure_is_reported(tmp_path):
    """Real ssh, nothing listening: the failure is one line with ssh's own words."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    con = PtyConsole()
    try:
        with pytest.raises(KexectestError) as err:
            run_session(_opts(con.path, tmp_path, ssh=f"ssh://root@127.0.0.1:{port}",
                              command="kexectest load x --exec --yes", timeout=20))
    finally:
        con.close()
    assert err.value.code == Exit.TARGET_COMMAND
    assert "ssh failed" in str(err.value) and "refused" in str(err.value)
    runs = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert (runs[0] / "ssh.log").is_file()


# -- `kexectest load --exec` always needs --yes ------------------------------------------------

def _load_exec(stdin, tmp_path, *extra):
    """`kexectest load --exec` with a payload that does not exist: a refusal must come before
    anything is read, built or loaded (exit 2, one line), never an attempt to kexec."""
    return subprocess.run([sys.executable, "-m", "kexectest", "load", str(tmp_path / "none.elf"),
                           "--exec", *extra], stdin=stdin, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("stdin", ["devnull", "pipe"])
def test_exec_without_yes_refuses_without_a_terminal(tmp_path, stdin):
    p = _load_exec(subprocess.DEVNULL if stdin == "devnull" else subprocess.PIPE, tmp_path)
    assert p.returncode == Exit.USAGE, p.stderr
    assert p.stderr.strip().splitlines() == [
        "kexectest: error: --exec ends the running system: add --yes to confirm "
        "(and there is no terminal here to ask at)"]


def test_exec_with_yes_goes_on_without_a_terminal(tmp_path):
    """--yes is the confirmation: the run goes on (and stops at the missing payload)."""
    p = _load_exec(subprocess.DEVNULL, tmp_path, "--yes")
    assert p.returncode != Exit.USAGE and "--yes" not in p.stderr
    assert "none.elf" in p.stderr and "Traceback" not in p.stderr

