"""Collector benchmark: one process following many consoles paced at 115200 baud.

Prints (a) the CPU the one follower process spends per console while every console streams a
payload trace at full 115200-baud line rate (goal: 256 consoles under half a core), and (b) the
delay from the end of the silence timeout to the verdict: the follower's own detection delay for
every console, and the full `run_session` path (re-read the log, analyse) for one console
(goal: under 100 ms).

    .venv/bin/python benchmarks/bench_collector.py [--consoles 256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from kexectest import trace
from kexectest.capture import capture, follower, transport
from kexectest.capture.session import RunOptions, run_session

BYTES_PER_S = 11520  # 115200 baud 8N1


def _trace_stream() -> bytes:
    """A long payload trace (begin/end/data lines), repeated by the feeder; no final line."""
    out = []  # no banner: a banner seen twice means a reset
    for i in range(200):
        out.append(trace.format_line(f"KT begin {i:03d} e820 int=15 ax=E820 i={i}"))
        out.append(trace.format_line(f"KT end {i:03d} e820 i={i} cf=0 eax=534D4150 ebx=00000001 "
                                     "ecx=00000014 edx=00000000 esi=00000000 edi=00000000 "
                                     "ds=2000 es=2000 fl=0202"))
        out.append(trace.format_line(f"KT data {i:03d} e820 i={i} off=0000 "
                                     "0000000000000000 00FC090000000000 01000000"))
    return "".join(x + "\r\n" for x in out).encode()


def _feeder(n: int, seconds: float, tick: float, conn) -> None:
    """Child process: owns the pty masters, writes each console at 115200 baud, then goes
    silent (so every console ends in a silence timeout) and waits to be told to exit."""
    masters, paths = [], []
    for _ in range(n):
        m, s = os.openpty()
        masters.append(m)
        paths.append(os.ttyname(s))
        os.set_blocking(m, False)
    conn.send(paths)
    conn.recv()  # collector has opened everything
    data = _trace_stream()
    per_tick = int(BYTES_PER_S * tick)
    pos = [(i * 997) % len(data) for i in range(n)]  # consoles out of phase
    start = time.monotonic()
    next_t = start
    while time.monotonic() - start < seconds:
        for i, m in enumerate(masters):
            p = pos[i]
            chunk = data[p:p + per_tick]
            if len(chunk) < per_tick:
                chunk += data[: per_tick - len(chunk)]
            try:
                os.write(m, chunk)
            except BlockingIOError:
                pass
            pos[i] = (p + per_tick) % len(data)
        next_t += tick
        time.sleep(max(0.0, next_t - time.monotonic()))
    conn.send("silent")
    conn.recv()


def bench_many(n: int, seconds: float, timeout: float, tick: float | None = None) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * n + 256)), hard))
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_feeder, args=(n, seconds, 0.02, child))
    proc.start()
    paths = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix="kt-bench-"))
    fol = follower.Follower(tick=tick)
    caps, ports = [], []
    for i, path in enumerate(paths):
        port = transport.open_port(transport.SerialSettings(path))
        cap = capture.Capture(tmp / f"c{i:03d}")
        fol.add(port, cap, timeout=timeout)
        caps.append(cap)
        ports.append(port)
    for cap in caps:  # hand-off now: setting up 256 consoles takes a while
        cap.arm()
    parent.send("go")
    cpu0, wall0 = time.process_time(), time.monotonic()
    stream_cpu = stream_wall = None
    while fol.step():
        if stream_cpu is None and parent.poll():
            parent.recv()
            stream_cpu, stream_wall = time.process_time() - cpu0, time.monotonic() - wall0
    fol.close()
    parent.send("bye")
    proc.join(10)
    for cap, port in zip(caps, ports):
        cap.close()
        port.close()
    total_bytes = sum(c.bytes for c in caps)
    reasons = {c.stop_reason for c in caps}
    if stream_cpu is None:
        from collections import Counter
        sys.exit(f"consoles stopped before the stream ended: "
                 f"{Counter((c.stop_reason, c.stop_detail) for c in caps).most_common(5)}")
    delays = [c.stop_time - c.deadline_hit for c in caps if c.deadline_hit is not None]
    cores = stream_cpu / stream_wall
    print(f"consoles: {n}, streaming {stream_wall:.1f} s at 115200 baud each, "
          f"received {total_bytes / 1e6:.1f} MB ({total_bytes / stream_wall / n:.0f} B/s per "
          f"console, wire rate {BYTES_PER_S})")
    print(f"follower wake-up period: {follower._tick(n) * 1000:.0f} ms"
          f"{' (automatic)' if tick is None else ''}")
    print(f"follower CPU while streaming: {cores:.3f} cores total, "
          f"{cores / n * 1000:.2f} millicores per console "
          f"(goal: {n} consoles under 0.5 core: {'met' if cores < 0.5 else 'NOT met'})")
    print(f"stop reasons: {sorted(reasons)}; silence-timeout detection delay over {len(delays)} "
          f"consoles: median {statistics.median(delays) * 1000:.1f} ms, "
          f"max {max(delays) * 1000:.1f} ms")


def bench_verdict(timeout: float) -> None:
    """One full run_session on a pty that hangs: deadline -> verdict (log re-read + analysis)."""
    m, s = os.openpty()
    path = os.ttyname(s)
    data = _trace_stream()[:20000]

    def feed():
        time.sleep(0.3)
        for i in range(0, len(data), 64):
            os.write(m, data[i:i + 64])
            time.sleep(64 / BYTES_PER_S)
    threading.Thread(target=feed, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="kt-bench-"))
    res = run_session(RunOptions(serial_url=path, timeout=timeout, out_dir=tmp,
                                 command_line=["bench"]))
    os.close(s)
    os.close(m)
    print(f"run_session: verdict '{res.verdict}', silence timeout end -> verdict "
          f"{res.timings['verdict_delay_s'] * 1000:.1f} ms "
          f"(goal < 100 ms; {len(data)} bytes captured)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--consoles", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--tick", type=float, default=None, help="fixed follower tick (default: automatic)")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_many(args.consoles, args.seconds, args.timeout, args.tick)
    bench_verdict(args.timeout)


if __name__ == "__main__":
    main()
