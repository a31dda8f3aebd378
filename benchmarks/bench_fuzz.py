"""The long fuzz run: at least a million mutated logs through both paths a user has
(`kexectest report` and the run path), on every core, each input under a time limit.

Prints the inputs run, inputs per second, crashes grouped by signature (count, first input,
its message, and a minimised reproducer), hangs (an input past the time limit, or a worker that
stopped answering), and the peak memory of a worker.  Inputs are made from (seed, index) alone
(tests/fuzzing.py), so any finding is reproduced with `--only INDEX`.

    .venv/bin/python benchmarks/bench_fuzz.py [--inputs 1000000] [--workers 2] [--time-limit 5]
                                              [--memory-limit-mb 4096] [--save DIR] [--only INDEX]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import fuzzing  # noqa: E402

BLOCK = 500


def _workdir() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix="kexectest-fuzz-", dir=base))


def _limit_memory(mb: int) -> None:
    """An address-space limit: an input that would take more fails with MemoryError (a crash)."""
    if mb:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


def _worker(slot: int, tasks, results, current, started, args) -> None:
    """Runs blocks of indices from `tasks`; before each input its index and start time go to the
    shared arrays, so the parent can name the input of a worker that stopped answering."""
    _limit_memory(args.memory_limit_mb)
    parent = os.getppid()
    whole, windows = fuzzing.seeds()
    work = _workdir()
    while True:
        try:
            block = tasks.get(timeout=1)
        except queue.Empty:
            if os.getppid() != parent:
                return  # the run was stopped
            continue
        if block is None:
            return
        lo, hi = block
        found, slowest = [], 0.0
        for i in range(lo, hi):
            data = fuzzing.make_input(i, whole, windows, args.seed)
            current[slot], started[slot] = i, time.monotonic()
            t0 = time.perf_counter()
            out = fuzzing.run_one(data, work, i, args.time_limit, terminal_every=args.terminal_every)
            slowest = max(slowest, time.perf_counter() - t0)
            if out.kind != "ok":
                found.append((i, out.kind, out.signature, out.detail))
        started[slot] = 0.0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        results.put(("block", slot, (lo, hi, found, slowest, rss)))


def run(args) -> dict:
    ctx = mp.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    current, started = ctx.Array("q", args.workers), ctx.Array("d", args.workers)
    for lo in range(args.start, args.start + args.inputs, BLOCK):
        tasks.put((lo, min(lo + BLOCK, args.start + args.inputs)))
    procs: dict[int, mp.Process] = {}

    def spawn(slot: int) -> None:
        started[slot] = 0.0
        p = ctx.Process(target=_worker, args=(slot, tasks, results, current, started, args), daemon=True)
        p.start()
        procs[slot] = p

    for slot in range(args.workers):
        spawn(slot)
    stats = {"inputs": 0, "found": [], "slowest": 0.0, "rss_kib": 0, "killed": 0}
    t0 = time.perf_counter()
    next_print = t0 + 60
    hard_limit = 3 * args.time_limit + 10
    while stats["inputs"] < args.inputs:
        try:
            _kind, slot, (lo, hi, found, slowest, rss) = results.get(timeout=1)
            stats["inputs"] += hi - lo
            stats["found"] += found
            stats["slowest"] = max(stats["slowest"], slowest)
            stats["rss_kib"] = max(stats["rss_kib"], rss)
        except queue.Empty:
            pass
        now = time.monotonic()
        for slot, p in list(procs.items()):
            stuck = started[slot] and now - started[slot] > hard_limit and p.is_alive()
            died = not p.is_alive()
            if stuck or died:
                # stuck where the time-limit signal cannot reach (inside one C call): a hang;
                # or the worker died (killed by the kernel, a crash of the interpreter)
                i = current[slot]
                if stuck:
                    p.kill()
                p.join()
                stats["killed"] += 1
                stats["found"].append((i, "hang", "hang (worker killed)", f"no answer in {hard_limit:.0f} s")
                                      if stuck else (i, "crash", "worker died", f"exit code {p.exitcode}"))
                block_lo = args.start + (i - args.start) // BLOCK * BLOCK
                block_hi = min(block_lo + BLOCK, args.start + args.inputs)
                stats["inputs"] += i + 1 - block_lo  # the rest of its block runs again
                if i + 1 < block_hi:
                    tasks.put((i + 1, block_hi))
                spawn(slot)
        if time.perf_counter() > next_print:
            next_print += 60
            el = time.perf_counter() - t0
            print(f"  ... {stats['inputs']} inputs in {el:.0f} s ({stats['inputs'] / el:.0f}/s), "
                  f"{len(stats['found'])} findings", flush=True)
    for _ in procs:
        tasks.put(None)
    for p in procs.values():
        p.join(timeout=5)
    stats["elapsed"] = time.perf_counter() - t0
    return stats


def report(stats: dict, args) -> None:
    whole, windows = fuzzing.seeds()
    crashes = [f for f in stats["found"] if f[1] == "crash"]
    hangs = [f for f in stats["found"] if f[1] == "hang"]
    print(f"inputs: {stats['inputs']}  in {stats['elapsed']:.0f} s: {stats['inputs'] / stats['elapsed']:.0f} "
          f"inputs/s on {args.workers} workers (seed {args.seed}, time limit {args.time_limit} s, "
          f"memory limit {args.memory_limit_mb} MiB)")
    print(f"crashes: {len(crashes)} ({len({c[2] for c in crashes})} signatures)   hangs: {len(hangs)}   "
          f"slowest input: {stats['slowest']:.2f} s   peak worker memory: {stats['rss_kib'] / 1024:.0f} MiB")
    groups = Counter(c[2] for c in crashes)
    work = _workdir()
    for sig, n in groups.most_common():
        i, _k, _s, detail = next(c for c in crashes if c[2] == sig)
        print(f"\n  {n:7d}  {sig}\n           first: input {i}: {detail}")
        data = fuzzing.make_input(i, whole, windows, args.seed)
        if not args.minimise:
            print(f"           input ({len(data)} bytes): {data[:300]!r}")
            continue
        small = fuzzing.minimise(data, lambda d: fuzzing.run_one(d, work, i, args.time_limit).signature == sig)
        print(f"           minimised ({len(small)} bytes): {small[:300]!r}")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"crash-{i}.log").write_bytes(small)
    for i, _k, sig, detail in hangs[:20]:
        print(f"\n  hang: input {i}: {sig}: {detail}")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"hang-{i}.log").write_bytes(fuzzing.make_input(i, whole, windows, args.seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--start", type=int, default=0, help="first input index")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--memory-limit-mb", type=int, default=4096, help="address space per worker (0: none)")
    ap.add_argument("--terminal-every", type=int, default=200, help="render the terminal table for every Nth input")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, help="write minimised crashing inputs and hanging inputs here")
    ap.add_argument("--no-minimise", dest="minimise", action="store_false",
                    help="print each signature's first input as it is")
    ap.add_argument("--only", type=int, help="run one input (by index) in this process and show its traceback")
    args = ap.parse_args()
    if args.only is not None:
        whole, windows = fuzzing.seeds()
        data = fuzzing.make_input(args.only, whole, windows, args.seed)
        work = _workdir()
        print(f"input {args.only}: {len(data)} bytes: {data[:400]!r}")
        fuzzing.report_path(data, work, render_terminal=True)
        fuzzing.run_path(data, work, fuzzing.STOP_REASONS[args.only % 4], chunk=(args.only % 7) * 97,
                         render_terminal=True)
        print("no exception")
        return
    stats = run(args)
    _limit_memory(args.memory_limit_mb)  # minimising re-runs the inputs here: same limit
    report(stats, args)


if __name__ == "__main__":
    main()
