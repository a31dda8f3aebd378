"""Where the time of one `kexectest lab run` goes, cold-booted against restored (warm), in one run.

Prints, per run: QEMU start -> COM1 ready -> login prompt -> kexec hand-off -> first payload
line -> last payload line -> report written; cold runs (`--cold`: a full boot) and warm runs
(restored from the shape's saved state) of the same machine, both loaders, in one process; the
warm/cold ratio; the one-time cost of saving the state; a bare Linux boot (QEMU start -> login
prompt) and the payload's bytes-on-the-wire time at 115200 baud.  Goals: issue 3, the whole cold
run under 3x the bare boot; issue 11, a warm Linux + kexec run <= 0.25x a cold one.

Then the target agent (issue 10): login -> kexec of warm runs with each way the payload gets in
-- pushed to the shell agent, pushed to the Python agent, the host's kexectest over 9p (the
way before) -- split into the push and the agent's own run; and the push of agent + payload
through a console paced at 115200 baud (benchmarks/paced_line.py) against the time its bytes
take on that wire.  Goals: login -> kexec with the agent <= 0.5 s under TCG (against about 4 s
over 9p), the push <= 1.3x its bytes' wire time.

    .venv/bin/python benchmarks/bench_lab.py [--machine pc|q35] [--memory MIB] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from paced_line import PacedLine

from kexectest import payload as pl
from kexectest.capture.session import RunOptions, run_session
from kexectest.lab import guest_python, warmstate
from kexectest.lab.image import PROMPT_RE, build_image
from kexectest.lab.qemu import Qemu
from kexectest.lab.runner import run_virtual

BAUD = 115200
GOAL_WARM_RATIO = 0.25
GOAL_LOGIN_KEXEC_S = 0.5
GOAL_PUSH_RATIO = 1.3
# (loader, agent) of the login -> kexec comparison
AGENT_ROWS = (("kexec-tools", "shell"), ("syscall", "python"), ("syscall", "9p"),
              ("kexec-tools", "9p"))


def _console_times(bundle: Path) -> dict[str, float | None]:
    """Seconds since capture start of the landmarks in console.log, and the KT bytes."""
    marks = {"login": None, "handoff": None, "first": None, "last": None, "pushed": None}
    kt_bytes = 0
    for raw in (bundle / "console.log").read_text(errors="replace").splitlines():
        stamp, _, text = raw.partition("\t")
        try:
            t = float(stamp.lstrip("+").rstrip("~"))
        except ValueError:
            continue
        if marks["login"] is None and "login:" in text:
            marks["login"] = t
        if "kexec_core: Starting new kernel" in text:
            marks["handoff"] = t
        if "KTPUSH bye" in text:
            marks["pushed"] = t
        if text.startswith("KT "):
            marks["first"] = marks["first"] if marks["first"] is not None else t
            marks["last"] = t
            kt_bytes += len(text) + 2
    marks["kt_bytes"] = kt_bytes
    return marks


def lab_run(machine: str, memory: int, loader: str, out: Path, elf: Path, img, cold: bool,
            agent: str = "auto") -> dict:
    t_start = time.time()  # the image is found beforehand: QEMU start -> report written
    result = run_virtual({"machine": machine, "memory": memory, "disks": 1, "accel": "auto"},
                         loader=loader, out_dir=out, payload=elf, quiet=True, timeout=30.0,
                         image=img, cold=cold, agent=agent)
    t_end = time.time()
    env = json.loads((result.bundle_dir / "environment.json").read_text())
    capture_t0 = datetime.fromisoformat(env["timings"]["started"]).timestamp()
    offset = capture_t0 - t_start  # QEMU start -> capture start (COM1 listening)
    m = _console_times(result.bundle_dir)
    at = {k: (v + offset if isinstance(v, float) else None) for k, v in m.items()
          if k != "kt_bytes"}
    at["ready"] = offset
    return {"verdict": result.verdict, "at": at, "end": t_end - t_start,
            "kt_bytes": m["kt_bytes"], "start": env["lab"].get("start", "?"),
            "state": env["lab"].get("warm_state")}


def bare_boot(machine: str, memory: int, img) -> float:
    """QEMU start -> the guest's login prompt, nothing else."""
    t0 = time.time()
    with Qemu(machine=machine, memory_mib=memory, accel="auto", kernel=img.kernel,
              initrd=img.initrd, append=img.cmdline, disks=img.disks[:1], share_host=True,
              time_limit=300) as q:
        s = socket.create_connection(("127.0.0.1", q.port))
        buf = b""
        while b"login: " not in buf[-200:]:
            data = s.recv(65536)
            if not data:
                raise SystemExit("guest console closed before the login prompt")
            buf += data
        t = time.time() - t0
        s.close()
    return t


def paced_push(machine: str, memory: int, img, elf: Path, agent: str, out: Path) -> dict:
    """One warm run whose console is paced at 115200 baud: the push's time and bytes."""
    image = guest_python.python_image(img) if agent == "python" else img
    q = Qemu(machine=machine, memory_mib=memory, accel="auto", kernel=image.kernel,
             initrd=image.initrd, append=image.cmdline, disks=image.disks[:1], share_host=False,
             no_reboot=False, time_limit=400, out_dir=out)
    warmstate.launch(q)
    with q:
        line = PacedLine(q.port, BAUD)
        try:
            result = run_session(RunOptions(
                serial_url=line.url, login=image.login, password=image.password,
                prompt=PROMPT_RE, push=True, push_agent=agent,
                via="syscall" if agent == "python" else "kexec-tools", payload_elf=elf,
                timeout=30.0, out_dir=out, quiet=True, command_line=["bench_lab", "paced"]))
        finally:
            line.close()
    env = json.loads((result.bundle_dir / "environment.json").read_text())
    return {"verdict": result.verdict, **env["push"]}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machine", default="pc", choices=["pc", "q35"])
    ap.add_argument("--memory", type=int, default=256)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    img = build_image()
    elf = pl.ensure_built()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        # an untimed first warm run: the shape's state exists before anything is measured
        first = lab_run(args.machine, args.memory, "syscall", Path(tmp) / "prime", elf, img,
                        cold=False)
        for loader in ("syscall", "kexec-tools"):
            for i in range(args.runs):  # alternate, so both see the same machine load
                for cold in (True, False):
                    kind = "cold" if cold else "warm"
                    rows.append((loader, lab_run(args.machine, args.memory, loader,
                                                 Path(tmp) / f"{loader}-{kind}-{i}", elf, img,
                                                 cold)))
        for i in range(args.runs):
            rows.append(("direct", lab_run(args.machine, args.memory, "direct",
                                           Path(tmp) / f"direct-{i}", elf, img, False)))
        agent_rows = []
        for loader, agent in AGENT_ROWS:  # a first run saves the state of each guest
            lab_run(args.machine, args.memory, loader, Path(tmp) / f"prime-{agent}", elf, img,
                    cold=False, agent=agent)
        for i in range(args.runs):
            for loader, agent in AGENT_ROWS:
                agent_rows.append((loader, agent, lab_run(
                    args.machine, args.memory, loader, Path(tmp) / f"{agent}-{loader}-{i}", elf,
                    img, cold=False, agent=agent)))
        paced = [(agent, paced_push(args.machine, args.memory, img, elf, agent,
                                    Path(tmp) / f"paced-{agent}-{i}"))
                 for i in range(args.runs) for agent in ("shell", "python")]
    bares = [bare_boot(args.machine, args.memory, img) for _ in range(args.runs)]
    bare = _median(bares)
    meta = {}
    if first["state"]:
        meta = json.loads((Path(first["state"]) / warmstate.META_FILE).read_text())

    print(f"machine {args.machine}, {args.memory} MiB, runs {args.runs}, "
          f"python {sys.version.split()[0]}")
    print(f"bare Linux boot (QEMU start -> login prompt): median {bare:.2f} s "
          f"({', '.join(f'{b:.2f}' for b in bares)})")
    if meta:
        print(f"saved state: {meta['size'] / 1e6:.0f} MB, made once per shape in "
              f"{meta['boot_s'] + meta['save_s']:.1f} s (boot {meta['boot_s']:.1f} s, save "
              f"{meta['save_s']:.2f} s), {meta['qemu_version']}, SeaBIOS "
              f"{meta['seabios_version']}")
    hdr = (f"{'loader':12} {'start':5} {'verdict':13} {'ready':>6} {'login':>7} {'kexec':>7} "
           f"{'first':>7} {'last':>7} {'report':>7} {'payload':>8} {'wire':>6} {'x bare':>7}")
    print(hdr)

    def f(v):
        return f"{v:7.2f}" if v is not None else "      -"
    for loader, r in rows:
        at = r["at"]
        payload_s = (at["last"] - at["first"]) if at["first"] is not None else None
        wire = r["kt_bytes"] * 10 / BAUD
        print(f"{loader:12} {r['start']:5} {r['verdict']:13} {at['ready']:6.2f} "
              f"{f(at['login'])} {f(at['handoff'])} {f(at['first'])} {f(at['last'])} "
              f"{f(r['end'])} "
              f"{(f'{payload_s:8.2f}' if payload_s is not None else '       -')} {wire:6.2f} "
              f"{r['end'] / bare:7.2f}")
    print("columns: seconds since QEMU start; ready = COM1 waiting for the collector; payload = "
          "first -> last payload line; wire = the payload's bytes at 115200 8N1; x bare = whole "
          "run / bare boot")
    for loader in ("syscall", "kexec-tools"):
        cold = _median([r["end"] for lo, r in rows if lo == loader and r["start"] == "cold"])
        warm = _median([r["end"] for lo, r in rows if lo == loader and r["start"] == "warm"])
        ratio = warm / cold
        print(f"{loader:12} QEMU start -> report written: cold {cold:.2f} s, warm {warm:.2f} s, "
              f"warm/cold {ratio:.2f} (goal <= {GOAL_WARM_RATIO}: "
              f"{'met' if ratio <= GOAL_WARM_RATIO else 'not met'})")

    print_agents(agent_rows, paced)


def print_agents(rows, paced) -> None:
    """The target agent's figures: login -> kexec by way in, and the push against the wire."""
    print("login -> kexec (warm runs, median s): push = login -> the receiver's bye, agent = "
          "bye -> kexec")
    for loader, agent in AGENT_ROWS:
        runs = [r for lo, ag, r in rows if (lo, ag) == (loader, agent)]
        total = _median([r["at"]["handoff"] - r["at"]["login"] for r in runs
                         if r["at"]["handoff"] is not None])
        pushed = [r["at"]["pushed"] for r in runs if r["at"]["pushed"] is not None]
        split = ""
        if pushed:
            push_s = _median([r["at"]["pushed"] - r["at"]["login"] for r in runs
                              if r["at"]["pushed"] is not None])
            agent_s = _median([r["at"]["handoff"] - r["at"]["pushed"] for r in runs
                               if r["at"]["pushed"] is not None and r["at"]["handoff"]])
            split = f" (push {push_s:.2f}, agent {agent_s:.2f})"
        verdicts = ",".join(sorted({r["verdict"] for r in runs}))
        print(f"  {agent:6} {loader:11} {total:6.2f}{split}  [{verdicts}]")
    print(f"  goal with the agent: <= {GOAL_LOGIN_KEXEC_S} s under TCG")
    print(f"push of agent + payload through a console paced at {BAUD} baud (8N1):")
    for agent in ("shell", "python"):
        got = [p for ag, p in paced if ag == agent]
        if not got:
            continue
        wire = _median([p["wire_bytes"] * 10 / BAUD for p in got])
        raw = _median([p["file_bytes"] * 10 / BAUD for p in got])
        took = _median([p["seconds"] for p in got])
        print(f"  {agent:6} files {got[0]['file_bytes']} B ({raw:.2f} s on the wire as they "
              f"are), sent {got[0]['wire_bytes']} B ({'gzip + ' if got[0]['compressed'] else ''}"
              f"base64 + frames: {wire:.2f} s), push {took:.2f} s = {took / wire:.2f}x its "
              f"bytes' wire time (goal <= {GOAL_PUSH_RATIO}), {took / raw:.2f}x the files' own, "
              f"resent chunks {sum(p['resent_chunks'] for p in got)}")


if __name__ == "__main__":
    main()
