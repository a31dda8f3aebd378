"""The kernel's part of a console log, read from tables: trouble blocks (panic, oops, BUG,
lockups, stalls, debuggers, kexec-tools' purgatory) quoted whole, every architecture's hand-off
lines, and reset banners.

Each table row names the source file that prints the message, so a new architecture or a new
kind of trouble is one row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .damage import strip_log_ts


@dataclass(frozen=True)
class Rule:
    """One kind of trouble.  `fatal`: the kernel cannot go on (panic, oops, BUG); `stops`: the
    kernel may never get further (fatal, or a lockup, stall or hung task) — what makes a block
    printed during the hand-off a failure of the hand-off, and one printed in the shutdown path
    before it a death before the hand-off."""

    kind: str
    fatal: bool
    stops: bool
    pattern: re.Pattern
    source: str


def _rule(kind, fatal, stops, rx, source):
    return Rule(kind, fatal, stops, re.compile(rx), source)


# order matters: the first row that matches a line names it (a "cut here" or a bare call trace
# is named by the row of a line further down its block)
TROUBLE = [
    _rule("cut-here", False, False, r"-+\[ cut here \]-+", "lib/bug.c"),
    _rule("panic", True, True, r"Kernel panic - not syncing", "kernel/panic.c"),
    _rule("kdb", True, True, r"Entering kdb \(current=", "kernel/debug/kdb/kdb_main.c"),
    _rule("oops", True, True, r"\bOops\b|Oops:", "arch/x86/kernel/dumpstack.c"),
    _rule("gpf", True, True, r"general protection fault", "arch/x86/kernel/traps.c"),
    _rule("sleeping-in-atomic", False, False,
          r"BUG: sleeping function called from (in\w+|illegal) context", "kernel/sched/core.c"),
    _rule("soft-lockup", False, True, r"BUG: soft lockup|watchdog: BUG:", "kernel/watchdog.c"),
    _rule("hard-lockup", False, True, r"Watchdog detected hard LOCKUP", "kernel/watchdog_perf.c"),
    _rule("bug", True, True, r"\bBUG: |kernel BUG at", "lib/bug.c, arch/x86/mm/fault.c"),
    _rule("warning", False, False, r"WARNING: CPU:|WARNING: at ", "kernel/panic.c __warn"),
    _rule("hung-task", False, True, r"INFO: task .* blocked for more than", "kernel/hung_task.c"),
    _rule("rcu-stall", False, True, r"rcu: INFO: .*(detected stalls|self-detected stall)",
          "kernel/rcu/tree_stall.h"),
    _rule("xmon", True, True, r"^(cpu 0x[0-9a-f]+: )?Vector: [0-9a-f]+ .* at \[",
          "arch/powerpc/xmon/xmon.c excprint"),
    _rule("purgatory-digest", True, True, r"sha256 digests do not match",
          "kexec-tools purgatory/purgatory.c verify_sha256_digest"),
    _rule("call-trace", False, False, r"^Call Trace:", "arch/x86/kernel/dumpstack.c"),
]
_BY_KIND = {r.kind: r for r in TROUBLE}
STOPS = frozenset(r.kind for r in TROUBLE if r.stops)

# one cheap pre-filter: a line is worth the table only if it holds one of these words
TROUBLE_HINTS = (b"cut here", b"panic", b"Oops", b"protection fault", b"BUG", b"WARNING", b"INFO:",
                 b"Call Trace", b"LOCKUP", b"Entering kdb", b"Vector:", b"sha256 digests")

# The old kernel's last words before the next image runs, on every architecture, and the
# loader's own marker.  Every row is a hand-off: the first one seen starts the hand-off phase.
# Each matches the whole line (its timestamp removed), so a line that merely mentions the words
# ("systemd[1]: Starting new kernel modules...", "echo Bye!") is none.
HANDOFF_RULES = [
    (re.compile(r"(kexec_core: |kexec: |^)Starting new kernel$"),
     "kernel/kexec_core.c kernel_kexec (pr_fmt 'kexec_core: '; older kernel/kexec.c without it)"),
    (re.compile(r"(^|: )Bye!$"), "arch/arm/kernel/machine_kexec.c, arch/arm64/kernel/machine_kexec.c"),
    (re.compile(r"(^|: )Bye\.\.\.$|^Will call new kernel at [0-9a-f]+ from hart id"),
     "arch/riscv/kernel/machine_kexec.c machine_kexec"),
    (re.compile(r"kexec: Starting switchover sequence\.$"),
     "arch/powerpc/kexec/core_64.c default_machine_kexec"),
    (re.compile(r"^KTLOAD exec\b"), "kexectest load, just before reboot(LINUX_REBOOT_CMD_KEXEC)"),
]
HANDOFF = ("kexec_core: Starting new kernel", "KTLOAD exec")  # the x86 lines (replay prefilter)

# kexec-tools' purgatory on the console (kexec --console-serial): its own lines, quoted
PURGATORY = re.compile(r"^I'm in purgatory$|^sha256 digests do not match|^ +digest: |^sha256_digest: ")

RESET_BANNERS = ("SeaBIOS (version", "iPXE", "Booting from", "Linux version")

KERNEL_HINTS = ("Linux version", "KTLOAD", "kexec_core", "Command line:", "BIOS-e820")

# what a replay of a large log keeps from the kernel part (trace.prefiltered_lines): the region
# from the last hand-off line on is read whole, so what only comes after it (purgatory, xmon,
# "Bye!") needs no keyword of its own
_AFTER_HANDOFF_ONLY = (b"Vector:", b"sha256 digests")
REPLAY_FILTER = {
    "keywords": tuple(h for h in TROUBLE_HINTS if h not in _AFTER_HANDOFF_ONLY)
    + (b"KTSNAP", b"Linux version", b"Command line:", b"BIOS-e820", b"kexec_test"),
    "tail_markers": (b"Starting new kernel", b"KTLOAD exec", b"Will call new kernel at",
                     b"kexec: Starting switchover"),
    "block_after": TROUBLE_HINTS,
}

_BLOCK_END = re.compile(r"---\[ end |^end Kernel panic|Rebooting in|^\[\d+\]kdb> |^\d+:mon> ")

# lines the kernel prints above a bare "Call Trace:": who and where (quoted with the trace)
_TRACE_HEAD = re.compile(r"^(NMI backtrace for cpu|CPU: \d+ PID:|Hardware name:|Workqueue:|RIP:|Code:|"
                         r"RSP:|RAX:|RDX:|RBP:|R\d+:|FS:|CS:|CR2:|DR\d:|Modules linked in:|task:\S)")

# lines that continue a block: registers, stack frames, the report lines each kind prints
_CONT = re.compile(r"^(\s|Call Trace|Call trace:|Modules linked in|CPU:|Hardware name|RIP:|RSP:|RAX:|"
                   r"RDX:|RBP:|R\d+:|FS:|CS:|CR2:|Code:|EIP:|EAX:|ESI:|DS:|Stack:|Workqueue:|<TASK>|"
                   r"</TASK>|<IRQ>|</IRQ>|<NMI>|</NMI>|\? |[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+|Kernel panic|"
                   r"---\[|\[ end|in_atomic|irqs disabled|Preemption disabled|preempt_count|"
                   r"INFO: lockdep|Kernel Offset|Tainted:|WARNING:|BUG:|Oops|general protection|"
                   r"invalid opcode|PGD |PUD |PMD |PTE |#PF:|\"echo 0 > /proc/sys/kernel/hung_task|"
                   r"task:\S|rcu: |\(detected by|Sending NMI from|NMI backtrace|Task dump for CPU|"
                   r"irq event stamp:|hardirqs |softirqs |Showing all locks|\d+ locks? held by|"
                   r"#\d+: |due to |on processor |eax = |esi = |ebp = |xds = |pc: |lr: |sp: |msr: |"
                   r"dar: |current = |paca |pid   = |enter \? for help|\[\d+\]kdb> |\d+:mon> |"
                   r"digest: |sha256_digest: )")

_TS = re.compile(r"^\s*\[\s*\d+\.\d+\](\[\s*[CT]\d+\])?\s?")

MAX_BLOCK = 80


def strip_ts(text: str) -> str:
    """Text without a console.log or kernel "[   12.345678] " timestamp prefix."""
    text = strip_log_ts(text)
    return _TS.sub("", text, count=1) if "]" in text[:24] else text


_KERNEL_HINTS_RX = re.compile("|".join(re.escape(w) for w in KERNEL_HINTS))


def is_handoff(text: str) -> bool:
    # every line of a capture comes here until the hand-off: plain substring tests first
    if not ("new kernel" in text or "Bye" in text or "KTLOAD" in text or "switchover" in text):
        return False
    body = strip_ts(text).rstrip()
    return any(rx.search(body) for rx, _src in HANDOFF_RULES)


# every TROUBLE pattern holds one of the hints: a line without any is no trouble (one search)
_HINT_RX = re.compile("|".join(re.escape(h.decode()) for h in TROUBLE_HINTS))


def trouble_kind(text: str) -> tuple[str, bool] | None:
    if not _HINT_RX.search(text):
        return None
    body = strip_ts(text)
    for rule in TROUBLE:
        if rule.pattern.search(body):
            return rule.kind, rule.fatal
    return None


def kernel_seen(texts) -> bool:
    """The lines hold the kernel's own words (its banner, command line, memory map, kexec)."""
    search = _KERNEL_HINTS_RX.search
    return any(search(t) for t in texts)


def stops(kind: str) -> bool:
    """A block of this kind can be the reason the kernel got no further."""
    return kind in STOPS


def find_trouble(texts: list[str], start: int = 0, stop: int | None = None) -> list[dict]:
    """Trouble blocks in texts[start:stop], each quoted whole (its first line to the end marker or
    the last continuation line)."""
    stop = len(texts) if stop is None else stop
    out: list[dict] = []
    search = _HINT_RX.search
    i = start
    for first in [k for k in range(start, stop) if search(texts[k])]:  # only these can begin one
        if first < i:
            continue  # quoted in the block before
        hit = trouble_kind(texts[first])
        if not hit:
            continue
        kind, fatal = hit
        head = first
        if kind == "call-trace":  # take in the header lines that name the CPU, task and machine
            while head > max(i, start) and _TRACE_HEAD.match(strip_ts(texts[head - 1])):
                head -= 1
        i = head
        j = _block_end(texts, first + 1, stop, i)
        block = texts[i:j]
        for t in block[1:]:  # a "cut here" or call trace names the real kind further down
            k2 = trouble_kind(t)
            if k2 and kind in ("cut-here", "call-trace") and k2[0] not in ("cut-here", "call-trace"):
                kind, fatal = k2
            elif k2 and k2[1]:
                fatal = True
        title = next((strip_ts(t).strip() for t in block if trouble_kind(t) and
                      trouble_kind(t)[0] not in ("cut-here", "call-trace")), strip_ts(block[0]).strip())
        out.append({"kind": kind, "fatal": fatal, "line": i, "title": title, "block": block})
        i = j
    return out


def _block_end(texts: list[str], j: int, stop: int, head: int) -> int:
    while j < stop and j - head < MAX_BLOCK:
        body = strip_ts(texts[j])
        if _BLOCK_END.search(body):
            return j + 1
        if not _CONT.match(body) and not body.startswith(" "):
            break
        j += 1
    return j


def purgatory_lines(texts: list[str]) -> list[str]:
    """kexec-tools' purgatory lines, as printed."""
    return [t for t in texts if ("purgatory" in t or "digest" in t)
            and PURGATORY.search(strip_ts(t).rstrip())]


def rule_source(kind: str) -> str:
    r = _BY_KIND.get(kind)
    return r.source if r else ""
