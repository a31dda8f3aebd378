"""Replay analysis of a generated ~100 MB console log (kernel noise with traces inside, then a
payload trace) against `grep -c` over the same file.  Prints both times and the ratio
(goal: within 5x).  Usage: python benchmarks/bench_replay.py [MB]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kexectest.analysis.kernel import REPLAY_FILTER  # noqa: E402
from kexectest.analysis.replay import analyze_log  # noqa: E402
from kexectest.trace import format_line, lines_from_log  # noqa: E402

NOISE = [
    "[ {t:12.6f}] usb 1-1: new high-speed USB device number {n} using xhci_hcd",
    "[ {t:12.6f}] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "[ {t:12.6f}] audit: type=1400 audit({t:.3f}:{n}): apparmor=\"STATUS\" operation=\"profile_load\"",
    "[ {t:12.6f}] systemd[1]: Started Journal Service (pid {n}).",
]
TRACE = """[ {t:12.6f}] ------------[ cut here ]------------
[ {t:12.6f}] WARNING: CPU: 0 PID: {n} at kernel/irq/manage.c:2034 free_irq+0x2a1/0x380
[ {t:12.6f}] Call Trace:
[ {t:12.6f}]  <TASK>
[ {t:12.6f}]  device_shutdown+0x130/0x1e0
[ {t:12.6f}]  </TASK>
[ {t:12.6f}] ---[ end trace 0000000000000000 ]---"""


def make(path: Path, mb: int) -> None:
    with path.open("w") as f:
        size, n = 0, 0
        while size < mb << 20:
            block = []
            for k in range(2000):
                n += 1
                block.append(NOISE[k % 4].format(t=n / 1000, n=n))
            block.append(TRACE.format(t=n / 1000, n=n))
            s = "\n".join(block) + "\n"
            f.write(s)
            size += len(s)
        f.write("[ 99999.000000] kexec_core: Starting new kernel\n")
        f.write(format_line("KT banner version=0.1.0 build=AB entry=32 uart=03F8 div=0001 steps=071") + "\r\n")
        f.write(format_line("KT mode real") + "\r\n")
        f.write(format_line("KT begin 008 base-mem int=12 ax=0000") + "\r\n")


def main() -> None:
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "console.log"
        make(log, mb)
        subprocess.run(["grep", "-c", "KT ", str(log)], capture_output=True)  # warm the page cache
        t0 = time.perf_counter()
        subprocess.run(["grep", "-c", "KT ", str(log)], capture_output=True)
        tg = time.perf_counter() - t0
        t0 = time.perf_counter()
        a = analyze_log(log)
        ta = time.perf_counter() - t0
        print(f"log: {log.stat().st_size / 1e6:.1f} MB; verdict {a.verdict}; "
              f"kernel trouble blocks: {len(a.kernel_trouble)}")
        print(f"grep -c: {tg:.3f} s; kexectest analysis: {ta:.3f} s; ratio {ta / tg:.1f}x (goal <= 5x)")
        # where it goes: reading, finding the lines worth keeping, analysing them
        t0 = time.perf_counter()
        data = log.read_bytes()
        t1 = time.perf_counter()
        rx = re.compile(b"|".join(re.escape(k) for k in REPLAY_FILTER["keywords"]))
        hits = sum(1 for _ in rx.finditer(data))
        t2 = time.perf_counter()
        lines, _fmt = lines_from_log(data, REPLAY_FILTER)
        t3 = time.perf_counter()
        print(f"  read {t1 - t0:.3f} s; one regex pass for the {len(REPLAY_FILTER['keywords'])} "
              f"keywords ({hits} hits) {t2 - t1:.3f} s; lines_from_log {t3 - t2:.3f} s "
              f"({len(lines)} lines kept); analysis ~{ta - (t3 - t0) + (t2 - t1):.3f} s")


if __name__ == "__main__":
    main()
