"""Payload benchmark: its size, and how long its trace takes against the time its bytes need on
the wire at 115200 baud (goal: within 1.2x), with the classic kexec-tools kexec_test run in the
same lab, the same way, as the baseline.

    .venv/bin/python benchmarks/bench_payload.py [--runs N] [--no-classic]

Ours is measured twice: booted straight from SeaBIOS (`--loader direct`) and after a real
kexec from the lab's Linux (`--loader syscall`).  The classic test is loaded by the lab guest's
own kexec-tools (`--type=elf-x86`, as its documentation says) through the same collector.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kexectest import payload as pl  # noqa: E402

CLASSIC = Path("/usr/lib/x86_64-linux-gnu/kexec-tools/kexec_test.static")
WIRE_BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def lab_run(loader: str, out: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--loader", loader,
                        "--out", str(out), "--quiet", "--json", "--timeout", "30"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    start = p.stdout.find("{")
    if start < 0:
        raise SystemExit(f"lab run --loader {loader} printed no report: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout[start:])


def classic_run(out: Path) -> dict:
    """The classic test in the same lab: the guest's kexec-tools loads it from the host share."""
    from kexectest.lab import image as lab_image
    from kexectest.lab.qemu import Qemu
    from kexectest.capture.session import RunOptions, run_session

    img = lab_image.build_image()
    cmd = (f"kexec -l /host{CLASSIC} --type=elf-x86 && kexec -e")
    with Qemu(machine="pc", memory_mib=256, kernel=img.kernel, initrd=img.initrd,
              append=img.cmdline, disks=img.disks[:1], share_host=True, time_limit=300,
              out_dir=out) as q:
        res = run_session(RunOptions(serial_url=q.serial_url, login="root", password=img.password,
                                     command=cmd, timeout=10, out_dir=out, quiet=True,
                                     command_line=["bench_payload.py", "classic"]))
    return json.loads((res.bundle_dir / "report.json").read_text())


def figures(name: str, report: dict) -> dict:
    t = report.get("timing") or {}
    payload_s, nbytes = t.get("payload_s"), t.get("payload_bytes")
    wire = (nbytes or 0) * WIRE_BITS_PER_BYTE / 115200
    return {"run": name, "verdict": report.get("verdict"), "lines": t.get("payload_lines"),
            "bytes": nbytes, "first_to_last_s": payload_s, "wire_s": round(wire, 4),
            "ratio": round(payload_s / wire, 3) if payload_s and wire else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-classic", action="store_true")
    args = ap.parse_args()

    elf = pl.ensure_built()
    img = pl.PayloadImage.open(elf)
    loaded = sum(s.memsz for s in img.segments)
    print(f"payload: {elf.stat().st_size} bytes on disk, {loaded} bytes loaded "
          f"({loaded / 1024:.1f} KiB of the 56 KiB budget), {len(img.steps)} steps")
    if CLASSIC.exists():
        print(f"classic kexec_test.static: {CLASSIC.stat().st_size} bytes on disk")

    rows = []
    with tempfile.TemporaryDirectory(prefix="kt-bench-") as tmp:
        for loader in ("direct", "syscall"):
            for i in range(args.runs if loader == "direct" else 1):
                rows.append(figures(f"kexectest {loader}", lab_run(loader, Path(tmp, f"{loader}{i}"))))
        if not args.no_classic and CLASSIC.exists():
            try:
                rows.append(figures("classic kexec_test (kexec-tools)", classic_run(Path(tmp, "classic"))))
            except Exception as exc:  # the baseline must not hide our own figures
                print(f"classic baseline failed: {exc}")
    print(f"\n{'run':36} {'verdict':12} {'lines':>6} {'bytes':>7} {'first->last s':>14} "
          f"{'wire s':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['run']:36} {str(r['verdict']):12} {str(r['lines']):>6} {str(r['bytes']):>7} "
              f"{str(r['first_to_last_s']):>14} {r['wire_s']:>8} {str(r['ratio']):>6}")
    direct = [r["ratio"] for r in rows if r["run"] == "kexectest direct" and r["ratio"]]
    if direct:
        print(f"\nkexectest direct: median ratio to wire time {statistics.median(direct):.3f} "
              f"(goal <= 1.2; QEMU's UART does not pace at the baud rate, so < 1 means the payload "
              f"is never the bottleneck)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
