"""Fault campaign: real captures (tests/corpus/real-*.log) streamed into `kexectest run` through
real ptys, TCP and ser2net while a fault strikes at a random moment -- the collector killed
(SIGKILL), the console server killed (ser2net, SIGKILL), the pty closed, the disk filled (a
small tmpfs, as root).  For every trial it checks that console.raw is an exact prefix of what
was sent, that the collector ended with at most one line on stderr (exit 18 when the disk
filled), and replays the partial bundle (`kexectest report` on its console.log and console.raw)
to see whether the verdict is honest about what the partial capture proves.

Prints per fault: trials, bytes lost (sent before the fault but not in console.raw: what was
still in the pty, the console server or the socket when the fault struck), prefix violations,
exit codes, and the verdicts of the run and of the replays sorted into honest / claims
completion / names a hang at the cut / contradicts the full run.

    .venv/bin/python benchmarks/bench_faults.py [--trials 10] [--rate 11520] [--seed 1]
        [--faults collector-killed,server-killed,pty-closed,disk-full]

tests/test_faults.py runs a bounded version in CI.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kexectest.analysis.replay import analyze_log  # noqa: E402
from kexectest.trace import lines_from_log  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
KEXECTEST = [sys.executable, "-m", "kexectest"]
FAULTS = ("collector-killed", "server-killed", "pty-closed", "disk-full")
# verdicts that claim something a capture cut short cannot prove by itself
DEFINITE = {"completed", "failed-steps", "hung", "reset", "no-output", "died-before-handoff",
            "died-in-handoff", "garbled"}


# -- the captures ------------------------------------------------------------------------------

@dataclass
class Source:
    name: str
    wire: bytes  # what the machine under test sends: the capture's lines, CR LF each
    payload_end: int  # offset after the last payload (KT) line: a prefix this long has them all
    verdict: str  # the full capture's verdict


def sources(names: list[str] | None = None) -> list[Source]:
    """The real captures of the corpus, as the bytes their consoles sent."""
    out = []
    for path in sorted(CORPUS.glob("real-*.log")):
        if names and path.stem not in names:
            continue
        lines, _ = lines_from_log(path.read_bytes())
        wire, end = bytearray(), 0
        for line in lines:
            wire += line.text.encode("utf-8") + b"\r\n"
            if line.record is not None:
                end = len(wire)
        out.append(Source(path.stem, bytes(wire), end, analyze_log(path).verdict))
    return out


# -- consoles ----------------------------------------------------------------------------------

class Pty:
    """A pty whose slave the collector opens; the slave is raw and held open here, so bytes
    written before the collector opens it wait, unchanged, in the tty."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.alive = lambda: True  # is anyone still reading the other end?

    def write(self, data: bytes) -> None:
        """Whole, unless the reader is gone (then the rest is dropped: nobody can take it)."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                if not self.alive():
                    return
                time.sleep(0.005)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = None


class TcpServer:
    """A console server on 127.0.0.1 (QEMU's or ser2net's raw TCP): one connection."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 30) -> None:
        self.srv.settimeout(timeout)
        self.conn, _ = self.srv.accept()

    def write(self, data: bytes) -> None:
        try:
            self.conn.sendall(data)
        except OSError:  # the collector is gone
            pass

    def close(self) -> None:
        for s in (self.conn, self.srv):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


class Ser2net:
    """ser2net exporting a pty as raw TCP on 127.0.0.1 (Debian's ser2net 4, YAML config)."""

    def __init__(self, workdir: Path):
        self.pty = Pty()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        conf = workdir / "ser2net.yaml"
        conf.write_text("%YAML 1.1\n---\nconnection: &kt\n"
                        f"  accepter: tcp,127.0.0.1,{self.port}\n"
                        f"  connector: serialdev,{self.pty.path},115200n81,local\n"
                        "  options:\n    kickolduser: true\n")
        self.proc = subprocess.Popen(["ser2net", "-n", "-d", "-u", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"socket://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.3)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("ser2net did not start")

    def write(self, data: bytes) -> None:
        self.pty.write(data)

    @property
    def alive(self):
        return self.pty.alive

    @alive.setter
    def alive(self, fn):
        self.pty.alive = fn

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # by its PID: the process started here
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.pty.close()


def wait_open(pid: int, path: str, timeout: float = 30) -> None:
    """Until process `pid` holds `path` open (the collector its tty; ser2net its device, which it
    opens when a client connects)."""
    deadline = time.monotonic() + timeout
    fd_dir = Path(f"/proc/{pid}/fd")
    while time.monotonic() < deadline:
        try:
            if any(os.readlink(p) == path for p in fd_dir.iterdir()):
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} did not open {path}")


# -- a small filesystem to fill ----------------------------------------------------------------

class SmallFs:
    """A tmpfs of `size` bytes mounted for one trial (needs root)."""

    def __init__(self, where: Path, size: int):
        self.path = where
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(where)], check=True, capture_output=True)

    def fill(self, leave: int = 0) -> int:
        """Write a file until the disk is full (a real ENOSPC), then give back `leave` bytes."""
        n = 0
        with open(self.path / ".filler", "wb", buffering=0) as fh:
            block = b"\0" * 65536
            while True:
                try:
                    got = fh.write(block)
                except OSError:
                    break
                n += got or 0
            if leave:
                fh.truncate(max(0, n - leave))
        return n

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        try:
            SmallFs(Path(d) / "fs", 1 << 20).close()
            return True
        except (subprocess.CalledProcessError, OSError):
            return False


# -- one trial ---------------------------------------------------------------------------------

@dataclass
class Trial:
    fault: str
    source: str
    transport: str
    moment: int  # bytes sent when the fault struck
    raw_len: int = 0
    prefix_ok: bool = True
    exit_code: int | None = None
    stderr: list[str] = field(default_factory=list)
    run_verdict: str | None = None  # report.json of the run, when it wrote one
    replay_log: str | None = None
    replay_raw: str | None = None
    judged: dict = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return max(0, self.moment - self.raw_len)

    @property
    def one_line(self) -> bool:
        return len(self.stderr) <= 1 and not any("Traceback" in x for x in self.stderr)


def _collector(url: str, out: Path, timeout: float) -> subprocess.Popen:
    return subprocess.Popen(KEXECTEST + ["run", "--serial", url, "--timeout", str(timeout),
                                         "--max-time", "120", "--quiet", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _paced(write, data: bytes, rate: float, until: int, chunk: int = 256) -> int:
    """Write data[:until] at `rate` bytes/s; returns the bytes written."""
    t0 = time.monotonic()
    pos = 0
    while pos < until:
        n = min(chunk, until - pos)
        write(data[pos:pos + n])
        pos += n
        ahead = pos / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    return pos


def _replay(path: Path) -> str | None:
    """`kexectest report --json` on one file of the partial bundle: its verdict, or a note."""
    if not path.is_file():
        return None
    p = subprocess.run(KEXECTEST + ["report", "--json", str(path)], capture_output=True,
                       text=True, timeout=120)
    try:
        return json.loads(p.stdout)["verdict"]
    except (ValueError, KeyError):
        err = p.stderr.strip().splitlines()
        return f"exit {p.returncode}: {err[-1] if err else ''}"


def judge(src: Source, raw_len: int, verdict: str | None) -> str:
    """Is `verdict` honest about a capture of the first `raw_len` bytes of `src`?"""
    if verdict is None:
        return "none"
    if raw_len == 0:
        return "nothing-captured"
    if verdict.startswith("exit "):
        return "no-verdict"
    complete = raw_len >= src.payload_end and src.payload_end > 0 or raw_len >= len(src.wire)
    if complete:
        return "honest" if verdict == src.verdict else "contradicts"
    if verdict not in DEFINITE:
        return "honest"
    if verdict in ("completed", "failed-steps"):
        return "claims-completion"
    if verdict == "hung":
        return "names-hang-at-cut"
    return "honest" if verdict == src.verdict else "contradicts"


def run_trial(fault: str, src: Source, rng: random.Random, work: Path, rate: float,
              transport: str | None = None, moment: int | None = None) -> Trial:
    """Stream `src` into `kexectest run`, strike `fault` after a random number of bytes (one
    trial in five right after the last byte: while the collector lingers and writes the bundle).
    `moment` (bytes) fixes the moment instead."""
    if moment is None:
        moment = len(src.wire) if rng.random() < 0.2 else rng.randrange(0, len(src.wire))
    transport = transport or {"server-killed": "ser2net", "pty-closed": "pty",
                              "disk-full": "pty"}.get(fault, rng.choice(["pty", "tcp"]))
    trial = Trial(fault, src.name, transport, moment)
    out = work / "out"
    fs = None
    if fault == "disk-full":
        fs = SmallFs(work / "fs", max(1 << 20, 4 * len(src.wire)))
        out = fs.path
    console = {"pty": Pty, "tcp": TcpServer}.get(transport, lambda: Ser2net(work))()
    url = console.path if transport == "pty" else console.url
    proc = _collector(url, out, timeout=2.0)
    if transport != "tcp":
        console.alive = lambda: proc.poll() is None and (
            transport != "ser2net" or console.proc.poll() is None)
    try:
        if transport == "tcp":
            console.accept()
        else:  # the fault strikes a console the collector has open
            wait_open(console.proc.pid if transport == "ser2net" else proc.pid,
                      console.pty.path if transport == "ser2net" else console.path)
        write = console.write
        sent = _paced(write, src.wire, rate, moment)
        time.sleep(rng.uniform(0, 0.05))
        if fault == "collector-killed":
            proc.send_signal(signal.SIGKILL)
        elif fault == "server-killed":
            console.kill()
        elif fault == "pty-closed":
            console.close()
        elif fault == "disk-full":
            fs.fill()
            _paced(write, src.wire[sent:], rate, len(src.wire) - sent)
        trial.moment = sent
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        trial.exit_code = proc.returncode
        trial.stderr = [x for x in (err or "").splitlines() if x.strip()]
        runs = sorted(p for p in out.glob("run-*") if p.is_dir())
        if runs:
            d = runs[-1]
            raw = (d / "console.raw").read_bytes() if (d / "console.raw").is_file() else b""
            trial.raw_len = len(raw)
            trial.prefix_ok = src.wire.startswith(raw)
            try:
                trial.run_verdict = json.loads((d / "report.json").read_text())["verdict"]
            except (OSError, ValueError, KeyError):
                trial.run_verdict = None
            trial.replay_log = _replay(d / "console.log")
            trial.replay_raw = _replay(d / "console.raw")
        for key in ("run_verdict", "replay_log", "replay_raw"):
            trial.judged[key] = judge(src, trial.raw_len, getattr(trial, key))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        console.close()
        if fs is not None:
            fs.close()
    return trial


# -- the campaign ------------------------------------------------------------------------------

def campaign(faults, trials: int, rate: float, seed: int, names=None) -> list[Trial]:
    rng = random.Random(seed)
    srcs = sources(names)
    results = []
    for fault in faults:
        for i in range(trials):
            src = srcs[i % len(srcs)]
            with tempfile.TemporaryDirectory(prefix="kt-fault-") as d:
                results.append(run_trial(fault, src, rng, Path(d), rate))
    return results


def summarize(results: list[Trial]) -> str:
    out = []
    for fault in dict.fromkeys(t.fault for t in results):
        ts = [t for t in results if t.fault == fault]
        lost = [t.lost for t in ts]
        codes = collections.Counter(t.exit_code for t in ts)
        out.append(f"{fault}: {len(ts)} trials ({', '.join(sorted({t.transport for t in ts}))}); "
                   f"console.raw not a prefix: {sum(not t.prefix_ok for t in ts)}; "
                   f"more than one stderr line or a traceback: {sum(not t.one_line for t in ts)}")
        out.append(f"  bytes lost: total {sum(lost)}, max {max(lost)}, trials losing any "
                   f"{sum(1 for x in lost if x)}; exit codes {dict(sorted(codes.items(), key=str))}")
        for key, what in (("run_verdict", "run's report.json"), ("replay_log", "replay console.log"),
                          ("replay_raw", "replay console.raw")):
            got = collections.Counter(t.judged.get(key) for t in ts)
            out.append(f"  {what}: {dict(sorted(got.items(), key=str))}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="trials per fault")
    ap.add_argument("--rate", type=float, default=11520, help="bytes/s (11520: 115200 baud)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--captures", default="", help="comma-separated corpus names (real-*)")
    ap.add_argument("--json", type=Path, help="also write every trial here")
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    if "disk-full" in faults and not can_mount():
        print("disk-full: skipped (needs root and tmpfs)")
        faults.remove("disk-full")
    if "server-killed" in faults and shutil.which("ser2net") is None:
        print("server-killed: skipped (ser2net not installed)")
        faults.remove("server-killed")
    t0 = time.monotonic()
    results = campaign(faults, args.trials, args.rate, args.seed,
                       [n for n in args.captures.split(",") if n] or None)
    print(summarize(results))
    print(f"{len(results)} trials in {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([t.__dict__ | {"lost": t.lost} for t in results],
                                        indent=1))


if __name__ == "__main__":
    main()
