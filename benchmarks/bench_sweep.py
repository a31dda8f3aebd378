"""Sweep benchmarks.

(a) How many consoles one sweep process can follow: loopback consoles streaming payload traces at
    115200 baud each, followed by one process (the collector's selector-based follower, the one
    `kexectest sweep` uses), for growing counts; prints CPU per console and whether it kept up
    (goal: >= 256 consoles on one core at under half of it).  Reuses bench_collector's feeder.
(b) Virtual-sweep parallel efficiency on this machine: wall time of a sweep of N QEMU machines
    (real Linux + kexec by default) against N x (one machine's wall time) / cores (goal >= 80 %).
(c) The sweep report for many machines: seconds to build sweep.json, junit.xml and report.html,
    and the report's size, for N machines whose bundles are a real capture's (report.json,
    summary.html, memory-map.svg), with the share of the size the inlined memory maps take.

    .venv/bin/python benchmarks/bench_sweep.py [--counts 64,128,256,512] [--machines 4]
        [--report-counts 16,64,256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_collector  # noqa: E402  (same directory)


def consoles(counts: list[int], seconds: float) -> None:
    print("(a) consoles followed by one process, each paced at 115200 baud")
    for n in counts:
        bench_collector.bench_many(n, seconds, timeout=5.0)


def lab_file(path: Path, n: int, via: str) -> Path:
    text = ['[defaults]', 'timeout = 30', 'qemu = { accel = "tcg" }', f'load = {{ via = "{via}" }}', '']
    for i in range(n):
        text += ["[[machine]]", f'name = "direct-{i}"', 'qemu = { machine = "pc", memory = 256, disks = 1 }', ""]
    path.write_text("\n".join(text))
    return path


def sweep_wall(lab: Path, out: Path, jobs: int) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "kexectest", "sweep", str(lab), "--jobs", str(jobs),
                        "--out", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT,
                       timeout=1800)
    wall = time.monotonic() - t0
    if p.returncode not in (0, 1):
        print(f"   sweep exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return wall


def efficiency(n: int, via: str) -> None:
    cores = os.cpu_count() or 1
    print(f"\n(b) virtual sweep parallel efficiency, {n} machines loaded via {via}, {cores} cores")
    with tempfile.TemporaryDirectory(prefix="kt-bench-sweep-") as tmp:
        one = sweep_wall(lab_file(Path(tmp, "one.toml"), 1, via), Path(tmp, "one"), 1)
        many = sweep_wall(lab_file(Path(tmp, "many.toml"), n, via), Path(tmp, "many"), cores)
    ideal = n * one / cores
    print(f"   one machine: {one:.2f} s; {n} machines: {many:.2f} s; "
          f"ideal {ideal:.2f} s; efficiency {100 * ideal / many:.0f} % (goal >= 80 %)")


def report_size(counts: list[int]) -> None:
    import json
    import shutil

    from kexectest.analysis.replay import analyze_log
    from kexectest.fleet.sweep_report import build_sweep, write_reports
    from kexectest.output.bundle import write_pages
    from kexectest.output.report import render_summary_md

    print("\n(c) the sweep report for many machines (each bundle a real capture's)")
    a = analyze_log(ROOT / "tests" / "corpus" / "real-syscall-q35.log")
    with tempfile.TemporaryDirectory(prefix="kt-bench-report-") as tmp:
        one = Path(tmp, "bundle")
        one.mkdir()
        (one / "report.json").write_text(json.dumps(a.to_dict()))
        (one / "summary.md").write_text(render_summary_md(a))
        write_pages(one, a.to_dict(), (ln.text for ln in a.lines))
        svg = (one / "memory-map.svg").stat().st_size
        for n in counts:
            root = Path(tmp, f"s{n}")
            records = []
            for i in range(n):
                shutil.copytree(one, root / f"m{i}" / "bundle")
                records.append({"machine": f"m{i}", "verdict": a.verdict, "exit_code": 0,
                                "one_line": a.summary, "bundle": f"m{i}/bundle"})
            t0 = time.perf_counter()
            write_reports(root, build_sweep(root, {"name": "bench"}, records, 0.0, 1.0))
            dt = time.perf_counter() - t0
            size = (root / "report.html").stat().st_size
            print(f"   {n:4d} machines: {dt:6.2f} s, report.html {size / 1e6:6.2f} MB "
                  f"({100 * n * svg / size:.0f} % memory maps, {size / n / 1e3:.1f} kB a machine)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="64,128,256,512")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--machines", type=int, default=4)
    ap.add_argument("--via", default="syscall", choices=["syscall", "kexec-tools", "direct"],
                    help="how the sweep's machines enter the payload (direct: no Linux, fastest)")
    ap.add_argument("--skip-consoles", action="store_true")
    ap.add_argument("--skip-lab", action="store_true", help="no QEMU sweep (part b)")
    ap.add_argument("--report-counts", default="16,64,256")
    args = ap.parse_args()
    if not args.skip_consoles:
        consoles([int(c) for c in args.counts.split(",")], args.seconds)
    if not args.skip_lab:
        efficiency(args.machines, args.via)
    report_size([int(c) for c in args.report_counts.split(",")])


if __name__ == "__main__":
    main()
