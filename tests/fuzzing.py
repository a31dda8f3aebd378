"""The mutation fuzzer behind tests/test_fuzz.py (a bounded run in CI) and
benchmarks/bench_fuzz.py (a million inputs).

Seeds are the corpus logs (whole, and windows of them, so most inputs stay small and cheap);
mutations know the trace format: besides bit flips and dropped, doubled or joined lines, a KT
line's fields are given odd values and its checksum is made right again, so the input reaches
the record parser's checks and the analysis behind them, not just the checksum.  Every input is
made from (seed, index) alone: a crash or hang is reproduced from its index.

Both paths a user has are run: `kexectest report` (analyze_log on a file, then report.json and
summary.md) and the run path (the bytes through a Capture as a console delivers them, the
console.log it writes read back with read_log, analyze_capture with a stop reason).
"""

from __future__ import annotations

import io
import json
import random
import re
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kexectest.errors import KexectestError
from kexectest.trace import checksum

CORPUS = Path(__file__).parent / "corpus"
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
STOP_REASONS = ("timeout", "final", "eof", "lost")

# values a field or a number in a line is given: the edges of each width, past them, signs,
# prefixes, empty, and numbers far too long to be meant
INTERESTING = ["0", "00", "0000", "00000000", "FF", "FFFF", "FFFFFFFF", "7FFFFFFF", "80000000",
               "FFE0", "FFFE", "1C200", "0001", "999", "000", "1000", "128", "-1", "-0001",
               "+1", "0x10", "1_0", "", " ", "zz", "ab", "nan", "inf", "1e400", "1" * 30,
               "9" * 40, "F" * 64, "9" * 4000, "F" * 4000, "0" * 300 + "1"]
KEYS = ["dl", "i", "off", "tag", "cf", "eax", "ebx", "ecx", "edx", "esi", "edi", "ds", "es", "fl",
        "int", "ax", "steps", "errors", "div", "uart", "build", "entry", "version", "next",
        "reason", "via", "zz"]
KINDS = ["banner", "mode", "begin", "end", "data", "state", "skip", "done", "boot"]
STEP_NAMES = ["state", "e820", "edd-check", "edd-params", "dasd-type", "read-chs", "vbe-info",
              "edid", "rtc-time", "pci-bios", "int19-boot", "disk-reset", "sysconf", "x"]
TEXT_LINES = [
    "[    1.000000] Kernel panic - not syncing: Fatal exception",
    "[    1.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
    "[    1.000000] ------------[ cut here ]------------", "Call Trace:", " <TASK>", " </TASK>",
    "[    1.000000] ---[ end trace 0000000000000000 ]---", "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2",
    "INFO: task kworker:1 blocked for more than 120 seconds.",
    "[   12.000000] kexec_core: Starting new kernel", "KTLOAD exec", "SeaBIOS (version 1.16.2)",
    "Booting from Hard Disk...", "Linux version 6.1.0 (gcc) #1 SMP", "kexec_test 1.13 starting...",
    "E820 Memory Map.", "000000000009fc00 @ 0000000000000000 type: 1",
    "ffffffffffffffffffffffffffffffff @ ffffffffffffffffffff type: " + "f" * 4000,
    "Base memory size: 639", "A20 disabled.", "In real mode.", "Halting.", "Testing for APM.",
    "> > quoted", ">" * 5000, "x" * 9000, "+00001.000000\tstamped", "+" + "9" * 400 + ".0\tx",
]


def _kt(body: str) -> str:
    return f"{body} ~{checksum(body.encode('utf-8', 'replace')):04X}"


def _snap(body: str) -> str:
    return f"KTSNAP {body} ~{checksum(('KTSNAP ' + body).encode('utf-8', 'replace')):04X}"


def synthetic_lines(rng: random.Random) -> str:
    """One KT or KTSNAP line with a right checksum and odd contents."""
    r = rng.random()
    if r < 0.55:
        kind = rng.choice(KINDS)
        head = [kind]
        if kind in ("begin", "end", "data", "skip"):
            head += [f"{rng.randrange(1000):03d}", rng.choice(STEP_NAMES)]
        elif kind in ("mode", "state"):
            head.append(rng.choice(["real", "regs", "ivt", "bda", "apic"]))
        fields = [f"{rng.choice(KEYS)}={rng.choice(INTERESTING)}" for _ in range(rng.randrange(6))]
        if kind == "data":
            fields.append(f"off={rng.choice(['0000', 'FFE0', 'FFFF', '0040', '80000000'])}")
            fields.append("".join(rng.choice("0123456789ABCDEF") for _ in range(2 * rng.randrange(0, 40))))
        return _kt(" ".join(["KT"] + head + fields))
    kind = rng.choice(["e820", "memmap", "edd", "basemem", "dmi", "kernel", "begin", "end"])
    vals = " ".join(f"{k}={rng.choice(INTERESTING[:30] + ['0x' + 'f' * 4000, '9' * 5000])}"
                    for k in rng.sample(["i", "start", "end", "type", "dev", "sectors", "kib", "v",
                                         "lines", "source", "mbr_signature", "host_bus"], 4))
    return _snap(f"{kind} {vals}")


def _mutate_kt_line(line: str, rng: random.Random) -> str:
    """A KT line with one token changed, dropped, doubled or added; checksum made right again
    (most of the time) so that the change reaches the parser's field checks."""
    body = line.rsplit(" ~", 1)[0] if " ~" in line else line
    toks = body.split(" ")
    op = rng.randrange(6)
    i = rng.randrange(len(toks))
    if op == 0 and "=" in toks[i]:
        toks[i] = toks[i].split("=", 1)[0] + "=" + rng.choice(INTERESTING)
    elif op == 1 and len(toks) > 2:
        del toks[i]
    elif op == 2:
        toks.insert(i, toks[i])
    elif op == 3:
        toks.insert(rng.randrange(len(toks) + 1), f"{rng.choice(KEYS)}={rng.choice(INTERESTING)}")
    elif op == 4 and len(toks) > 2 and len(toks[2]) == 3:
        toks[2] = f"{rng.randrange(1000):03d}"
    else:
        toks[min(1, len(toks) - 1)] = rng.choice(KINDS)
    body = " ".join(toks)
    return _kt(body) if rng.random() < 0.85 else f"{body} ~{rng.randrange(1 << 16):04X}"


def _replace_number(line: str, rng: random.Random) -> str:
    nums = list(re.finditer(r"[0-9A-Fa-f]{2,}", line))
    if not nums:
        return line
    m = rng.choice(nums)
    return line[:m.start()] + rng.choice(INTERESTING) + line[m.end():]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """1 to 4 mutations of `data`, byte-level and line-level, some that know the trace format."""
    lines = data.decode("latin-1").split("\n")
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(14)
        n = len(lines)
        k = rng.randrange(n) if n else 0
        if op == 0 and n:  # bit flip
            s = lines[k]
            if s:
                j = rng.randrange(len(s))
                lines[k] = s[:j] + chr(ord(s[j]) ^ (1 << rng.randrange(8))) + s[j + 1:]
        elif op == 1 and n > 1:
            del lines[k]
        elif op == 2 and n:
            lines.insert(k, lines[k])
        elif op == 3 and n > 1:
            j = rng.randrange(n)
            lines[k], lines[j] = lines[j], lines[k]
        elif op == 4 and n > 1 and k + 1 < n:  # a lost line end
            lines[k:k + 2] = [lines[k] + lines[k + 1]]
        elif op == 5 and n and lines[k]:
            lines[k] = lines[k][: rng.randrange(len(lines[k]))]
        elif op in (6, 7):
            kts = [i for i, s in enumerate(lines) if "KT" in s]
            if kts:
                i = rng.choice(kts)
                pre, kt, rest = lines[i].partition("KT")
                lines[i] = pre + _mutate_kt_line("KT" + rest, rng)
        elif op == 8:
            lines.insert(k, synthetic_lines(rng))
        elif op == 9:
            lines.insert(k, rng.choice(TEXT_LINES))
        elif op == 10 and n:
            lines[k] = _replace_number(lines[k], rng)
        elif op == 11 and pool:  # splice with another seed
            other = rng.choice(pool).decode("latin-1").split("\n")
            a = rng.randrange(len(other))
            lines[k:k] = other[a:a + rng.randint(1, 30)]
        elif op == 12 and n:  # quoting, stamps, CRs, NULs
            pick = rng.choice(["> ", ">", "+00001.000000\t", "\r", "\0", "\t", "\xff\xfe"])
            for i in range(k, min(n, k + rng.randint(1, 40))):
                lines[i] = pick + lines[i]
        elif op == 13 and n:  # random bytes
            s = lines[k]
            j = rng.randrange(len(s) + 1)
            lines[k] = s[:j] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))).decode("latin-1") + s[j:]
    return "\n".join(lines).encode("latin-1")


def seeds() -> tuple[list[bytes], list[bytes]]:
    """(whole corpus logs, windows of them: the payload region and random runs of lines)."""
    whole = [p.read_bytes() for p in sorted(CORPUS.glob("*.log"))]
    windows = []
    for data in whole:
        lines = data.split(b"\n")
        first = next((i for i, ln in enumerate(lines) if b"KT " in ln or b"kexec_test" in ln), 0)
        hand = next((i for i, ln in enumerate(lines) if b"Starting new kernel" in ln), first)
        for start in sorted({max(0, hand - 3), first, first + 24, first + 60, first + 120, max(0, len(lines) - 24)}):
            if start < len(lines):
                windows.append(b"\n".join(lines[start:start + 24]))
        windows.append(b"\n".join(lines[:24]))
    return whole, [w for w in windows if w.strip()]


def make_input(index: int, whole: list[bytes], windows: list[bytes], seed: int = 0) -> bytes:
    """The fuzz input number `index` (deterministic)."""
    rng = random.Random(f"{seed}:{index}")
    base = rng.choice(whole) if rng.random() < 0.01 else rng.choice(windows)
    return mutate(base, rng, windows)


# ---- the two paths -------------------------------------------------------------------------

def report_path(data: bytes, workdir: Path, render_terminal: bool = False) -> str:
    """`kexectest report LOG`: the file analysed, report.json and summary.md made."""
    from kexectest.analysis.replay import analyze_log
    from kexectest.output.report import render_summary_md
    log = workdir / "fuzz.log"
    log.write_bytes(data)
    try:
        a = analyze_log(log)
    except KexectestError:
        return "bad-input"  # one line and its exit code: handled
    _outputs(a, render_terminal)
    render_summary_md(a, {"log": str(log)})
    return a.verdict


def run_path(data: bytes, workdir: Path, stop_reason: str, chunk: int = 0,
             render_terminal: bool = False) -> str:
    """`kexectest run`: the bytes through a Capture as they arrive (in chunks), its console.log
    read back with read_log, analysed with the capture's stop reason, report.json made
    (summary.md's renderer is the report path's)."""
    from kexectest.analysis.replay import analyze_capture
    from kexectest.capture.capture import LOG_NAME, Capture, read_log
    cdir = workdir / "capture"
    for name in ("console.raw", LOG_NAME):
        try:
            (cdir / name).unlink()
        except FileNotFoundError:
            pass
    now = [0.0]
    cap = Capture(cdir, clock=lambda: now[0])
    cap.arm(0.0)
    step = chunk or max(1, len(data))
    for pos in range(0, len(data), step):
        now[0] += 0.01
        cap.feed(data[pos:pos + step], now[0])
    cap.close()
    lines = list(read_log(cdir / LOG_NAME))
    a = analyze_capture(lines, stop_reason=stop_reason,
                        silence_s=30.0 if stop_reason == "timeout" else None)
    _outputs(a, render_terminal)
    return a.verdict


def _outputs(a, render_terminal: bool) -> None:
    """report.json as write_report_json writes it; the terminal table when asked."""
    json.dumps(a.to_dict(), default=str)  # the C encoder: what indent=1 refuses, it refuses too
    if render_terminal:
        from rich.console import Console

        from kexectest.output.report import render_terminal as render
        render(a, Console(file=io.StringIO(), width=100, highlight=False, soft_wrap=False))


# ---- outcomes ------------------------------------------------------------------------------

class Hang(Exception):
    """The input ran past its time limit."""


@dataclass
class Outcome:
    kind: str  # "ok" | "crash" | "hang"
    signature: str = ""
    detail: str = ""


def signature(exc: BaseException) -> str:
    """Exception type and the innermost frame in kexectest (and, when the exception rose in a
    library below it, that frame too): one root cause, one signature."""
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if "/kexectest/" in f.filename]
    sig = type(exc).__name__
    if ours:
        f = ours[-1]
        sig += f" at {f.filename.rsplit('/kexectest/', 1)[-1]}:{f.name}:{f.lineno}"
    if tb and (not ours or tb[-1] is not ours[-1]):
        f = tb[-1]
        sig += f" in {Path(f.filename).name}:{f.name}"
    return sig


def _on_alarm(*_):
    raise Hang()


def run_one(data: bytes, workdir: Path, index: int, time_limit: float,
            terminal_every: int = 0) -> Outcome:
    """One input through both paths (the run path with one of the stop reasons, in turn);
    an exception is a crash, running past `time_limit` seconds a hang."""
    term = bool(terminal_every) and index % terminal_every == 0
    armed = [True]

    def on_alarm(*_):
        if armed[0]:
            raise Hang()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        try:
            report_path(data, workdir, render_terminal=term)
            run_path(data, workdir, STOP_REASONS[index % len(STOP_REASONS)], chunk=(index % 7) * 97,
                     render_terminal=term)
            armed[0] = False
            return Outcome("ok")
        except Hang:
            armed[0] = False
            return Outcome("hang", "hang", f"over {time_limit} s")
        except Exception as exc:  # noqa: BLE001 - every exception (MemoryError too) is a finding
            armed[0] = False
            return Outcome("crash", signature(exc), f"{type(exc).__name__}: {str(exc)[:200]}")
    except Hang:  # the limit fell while an exception was on its way out: still over the limit
        return Outcome("hang", "hang", f"over {time_limit} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def minimise(data: bytes, still_fails: Callable[[bytes], bool], budget: int = 400) -> bytes:
    """A smaller input that still fails: runs of lines removed (halving the run size), then
    bytes cut from the ends of the remaining lines."""
    lines = data.split(b"\n")
    tries = 0
    size = max(1, len(lines) // 2)
    while size >= 1 and tries < budget:
        i, shrunk = 0, False
        while i < len(lines) and tries < budget:
            cand = lines[:i] + lines[i + size:]
            tries += 1
            if cand and still_fails(b"\n".join(cand)):
                lines, shrunk = cand, True
            else:
                i += size
        if not shrunk:
            size //= 2
    for k in range(len(lines)):
        cut = len(lines[k]) // 2
        while cut >= 1 and tries < budget:
            tries += 1
            cand = lines[:k] + [lines[k][:len(lines[k]) - cut]] + lines[k + 1:]
            if still_fails(b"\n".join(cand)):
                lines = cand
            else:
                cut //= 2
    return b"\n".join(lines)
