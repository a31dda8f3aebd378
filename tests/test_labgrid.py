"""Sweeps over labgrid places: a real labgrid coordinator and exporter on 127.0.0.1, exporting
loopback consoles that replay recorded traces; places acquired through labgrid's client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("labgrid.remote.client", reason="labgrid not installed (kexectest[labgrid])")

from test_sweep import ROOT, ReplayConsole, CORPUS  # noqa: E402

BIN = Path(sys.executable).parent



def free_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client(coord: str, *args, user="kexectest-test"):
    env = {**os.environ, "LG_USERNAME": user}
    return subprocess.run([str(BIN / "labgrid-client"), "-x", coord, *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def lab(tmp_path):
    if shutil.which("labgrid-coordinator", path=str(BIN)) is None:
        pytest.skip("labgrid-coordinator not installed")
    port = free_port()
    coord = f"127.0.0.1:{port}"
    consoles = [ReplayConsole(CORPUS / "completed.log") for _ in range(3)]
    config = tmp_path / "exporter.yaml"
    config.write_text("".join(
        f"board{i}:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {c.port}\n"
        f"    protocol: raw\n    speed: 115200\n" for i, c in enumerate(consoles)))
    procs = [subprocess.Popen([str(BIN / "labgrid-coordinator"), "-l", coord], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(1.5)
        procs.append(subprocess.Popen([str(BIN / "labgrid-exporter"), "-c", coord, "--name",
                                       "exp", "--hostname", "127.0.0.1", str(config)],
                                      cwd=tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        for i in range(3):
            deadline = time.monotonic() + 30
            while True:
                r = client(coord, "-p", f"board{i}", "create")
                if r.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert client(coord, "-p", f"board{i}", "add-match",
                          f"exp/board{i}/NetworkSerialPort").returncode == 0
            assert client(coord, "-p", f"board{i}", "set-tags",
                          f"kind={'shared' if i else 'solo'}").returncode == 0
        deadline = time.monotonic() + 30
        while "NetworkSerialPort" not in client(coord, "resources").stdout.replace("\n", " ") \
                or client(coord, "resources").stdout.count("NetworkSerialPort") < 3:
            assert time.monotonic() < deadline, "exporter never registered its resources"
            time.sleep(0.5)
        yield coord
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for c in consoles:
            c.close()


def lab_file(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text("[defaults]\ntimeout = 3\ntrigger = { kind = \"manual\" }\n" + body)
    return p


def sweep(lab: Path, out: Path):
    return subprocess.Popen([sys.executable, "-m", "kexectest", "sweep", str(lab), "--out",
                             str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def results(out: Path) -> dict:
    return {m["name"]: m for m in json.loads((out / "sweep.json").read_text())["machines"]}


def test_sweep_over_places_and_taken_or_missing(lab, tmp_path):
    taken = client(lab, "-p", "board2", "acquire", user="someone-else")
    assert taken.returncode == 0, taken.stderr
    lf = lab_file(tmp_path, "lg.toml", f"""
[[machine]]
name = "b0"
labgrid = {{ coordinator = "{lab}", place = "board0" }}
[[machine]]
name = "b2-taken"
labgrid = {{ coordinator = "{lab}", place = "board2" }}
[[machine]]
name = "nowhere"
labgrid = {{ coordinator = "{lab}", place = "no-such-board" }}
""")
    p = sweep(lf, tmp_path / "out")
    _, err = p.communicate(timeout=120)
    got = results(tmp_path / "out")
    assert got["b0"]["verdict"] == "completed" and got["b0"]["place"] == "board0", got["b0"]["one_line"]
    assert got["b2-taken"]["verdict"] == "error" and "taken by" in got["b2-taken"]["one_line"]
    assert got["nowhere"]["verdict"] == "error" and "does not exist" in got["nowhere"]["one_line"]
    who = client(lab, "who").stdout
    assert "board0" not in who and "board2" in who  # ours released, the other user's kept


def test_two_sweeps_share_places_by_tag(lab, tmp_path):
    body = f"""
[[machine]]
name = "any-shared"
labgrid = {{ coordinator = "{lab}", tags = {{ kind = "shared" }} }}
"""
    a = sweep(lab_file(tmp_path, "a.toml", body), tmp_path / "a")
    b = sweep(lab_file(tmp_path, "b.toml", body), tmp_path / "b")
    a.communicate(timeout=120)
    b.communicate(timeout=120)
    ra, rb = results(tmp_path / "a")["any-shared"], results(tmp_path / "b")["any-shared"]
    assert ra["verdict"] == rb["verdict"] == "completed", (ra["one_line"], rb["one_line"])
    assert {ra["place"], rb["place"]} == {"board1", "board2"}  # never the same place at once
    assert "board" not in client(lab, "who").stdout
