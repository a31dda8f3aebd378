"""Where the time of one `kexectest lab run` goes, against a bare Linux boot of the same guest.

Prints, per phase: QEMU start -> login prompt -> kexec hand-off -> first payload line -> last
payload line -> report written; then the bare boot (QEMU start -> login prompt, nothing else)
and the payload's bytes-on-the-wire time at 115200 baud.  Goals (issue 3): the whole run under
3x the bare boot; the payload part near its wire time.

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

from kexectest import payload as pl
from kexectest.lab.image import build_image
from kexectest.lab.qemu import Qemu
from kexectest.lab.runner import run_virtual

BAUD = 115200


def _console_times(bundle: Path) -> dict[str, float | None]:
    """Seconds since capture start of the landmarks in console.log, and the KT bytes."""
    marks = {"login": None, "handoff": None, "first": None, "last": None}
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
        if text.startswith("KT "):
            marks["first"] = marks["first"] if marks["first"] is not None else t
            marks["last"] = t
            kt_bytes += len(text) + 2
    marks["kt_bytes"] = kt_bytes
    return marks


def lab_run(machine: str, memory: int, loader: str, out: Path, elf: Path) -> dict:
    t_start = time.time()
    result = run_virtual({"machine": machine, "memory": memory, "disks": 1, "accel": "auto"},
                         loader=loader, out_dir=out, payload=elf, quiet=True, timeout=30.0)
    t_end = time.time()
    env = json.loads((result.bundle_dir / "environment.json").read_text())
    capture_t0 = datetime.fromisoformat(env["timings"]["started"]).timestamp()
    offset = capture_t0 - t_start  # QEMU start -> capture start (QEMU listening)
    m = _console_times(result.bundle_dir)
    at = {k: (v + offset if isinstance(v, float) else None) for k, v in m.items()
          if k != "kt_bytes"}
    return {"verdict": result.verdict, "at": at, "end": t_end - t_start, "kt_bytes": m["kt_bytes"]}


def bare_boot(machine: str, memory: int) -> float:
    """QEMU start -> the guest's login prompt, nothing else."""
    img = build_image()
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machine", default="pc", choices=["pc", "q35"])
    ap.add_argument("--memory", type=int, default=256)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    build_image()
    elf = pl.ensure_built()
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        rows = []
        for loader in ("syscall", "kexec-tools", "direct"):
            for i in range(args.runs):
                rows.append((loader, lab_run(args.machine, args.memory, loader,
                                             Path(tmp) / f"{loader}-{i}", elf)))
    bares = [bare_boot(args.machine, args.memory) for _ in range(args.runs)]
    bare = statistics.median(bares)

    print(f"machine {args.machine}, {args.memory} MiB, runs {args.runs}, "
          f"python {sys.version.split()[0]}")
    print(f"bare Linux boot (QEMU start -> login prompt): median {bare:.2f} s "
          f"({', '.join(f'{b:.2f}' for b in bares)})")
    hdr = (f"{'loader':12} {'verdict':13} {'login':>7} {'kexec':>7} {'first':>7} {'last':>7} "
           f"{'report':>7} {'payload':>8} {'wire':>6} {'x bare':>7}")
    print(hdr)
    for loader, r in rows:
        at = r["at"]

        def f(v):
            return f"{v:7.2f}" if v is not None else "      -"
        payload_s = (at["last"] - at["first"]) if at["first"] is not None else None
        wire = r["kt_bytes"] * 10 / BAUD
        print(f"{loader:12} {r['verdict']:13} {f(at['login'])} {f(at['handoff'])} "
              f"{f(at['first'])} {f(at['last'])} {f(r['end'])} "
              f"{(f'{payload_s:8.2f}' if payload_s is not None else '       -')} {wire:6.2f} "
              f"{r['end'] / bare:7.2f}")
    print("columns: seconds since QEMU start; payload = first -> last payload line; wire = the "
          "payload's bytes at 115200 8N1; x bare = whole run / bare boot")


if __name__ == "__main__":
    main()
