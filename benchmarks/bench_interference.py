"""The interference matrix and a bisect, timed on this machine.

(a) `kexectest sweep labs/interference.toml`: wall time, lab runs per minute, and each machine's
    seconds (the slowest are the hung ones: their silence timeout is part of the run).
(b) `kexectest bisect` on q35's AHCI over four drivers of which only ahci breaks the disk step:
    wall time, probes, probes per minute, and the same command again (resumed from the journal:
    no probe run).

    .venv/bin/python benchmarks/bench_interference.py [--out DIR] [--skip-sweep] [--skip-bisect]

The sweep's directory (DIR/sweep) keeps report.html and summary.md: docs/interference.md is
made from one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEXECTEST = [sys.executable, "-m", "kexectest"]
BISECT_DRIVERS = "loop,dm_mod,crc32c_generic,ahci"


def sweep(out: Path) -> None:
    t0 = time.monotonic()
    p = subprocess.run([*KEXECTEST, "sweep", str(ROOT / "labs/interference.toml"), "--out",
                        str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    data = json.loads((out / "sweep.json").read_text())
    ms = data["machines"]
    print(f"(a) interference matrix: {len(ms)} machines in {wall:.0f} s wall "
          f"({len(ms) / wall * 60:.1f} runs per minute on {os.cpu_count()} cores), exit "
          f"{p.returncode}; {', '.join(f'{n} {v}' for v, n in data['counts'].items())}")
    for m in sorted(ms, key=lambda m: -(m.get("seconds") or 0)):
        print(f"    {m['name']:<30} {m.get('seconds') or 0:6.1f} s  {m['verdict']}")
    print(f"    report: {out / 'report.html'}, table: {out / 'summary.md'}")


def bisect(out: Path) -> None:
    argv = [*KEXECTEST, "bisect", str(ROOT / "labs/interference.toml"), "q35-ahci-unrelated",
            "--step", "read-chs", "--drivers", BISECT_DRIVERS, "--out", str(out), "--json"]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        print(f"(b) bisect failed (exit {p.returncode}): {p.stderr.strip()}")
        return
    res = json.loads(p.stdout)
    n = len(res["probes"])
    print(f"(b) bisect over {BISECT_DRIVERS}: culprit {','.join(res['culprit'])} after {n} "
          f"probes in {wall:.0f} s wall ({n / wall * 60:.1f} probes per minute)")
    for x in res["probes"]:
        print(f"    {','.join(x['drivers']) or '(none)':<40} step {x['step_status']:<12} "
              f"{x['verdict']}")
    t0 = time.monotonic()
    again = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    same = again.returncode == 0 and json.loads(again.stdout) == res
    print(f"    the same command again: {time.monotonic() - t0:.1f} s, "
          f"{'the same answer from the journal' if same else 'DIFFERENT: ' + again.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-bisect", action="store_true")
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="bench-interference-"))
    if not a.skip_sweep:
        sweep(out / "sweep")
    if not a.skip_bisect:
        bisect(out / "bisect")


if __name__ == "__main__":
    main()
