"""The kernel's part of a console log: trouble blocks (panic, oops, BUG, lockups, warnings)
found by a table of patterns and quoted whole, the hand-off line, and reset banners."""

from __future__ import annotations

import re

# (kind, fatal, pattern on the text with any "[  12.345678] " prefix removed)
TROUBLE = [
    ("cut-here", False, re.compile(r"-+\[ cut here \]-+")),
    ("panic", True, re.compile(r"Kernel panic - not syncing")),
    ("oops", True, re.compile(r"\bOops\b|Oops:")),
    ("gpf", True, re.compile(r"general protection fault")),
    ("sleeping-in-atomic", False, re.compile(r"BUG: sleeping function called from (in\w+|illegal) context")),
    ("soft-lockup", False, re.compile(r"BUG: soft lockup|watchdog: BUG:")),
    ("bug", True, re.compile(r"\bBUG: |kernel BUG at")),
    ("warning", False, re.compile(r"WARNING: CPU:|WARNING: at ")),
    ("hung-task", False, re.compile(r"INFO: task .* blocked for more than")),
    ("rcu-stall", False, re.compile(r"rcu: INFO: .*detected stalls")),
    ("call-trace", False, re.compile(r"^Call Trace:")),
]


# one cheap pre-filter over raw bytes: a line is worth a regex only if it contains one of these
TROUBLE_HINTS = (b"cut here", b"panic", b"Oops", b"protection fault", b"BUG", b"WARNING", b"INFO:",
                 b"Call Trace")


_BLOCK_END = re.compile(r"---\[ end |^end Kernel panic|Rebooting in")


# lines the kernel prints above a bare "Call Trace:": who and where (quoted with the trace)
_TRACE_HEAD = re.compile(r"^(NMI backtrace for cpu|CPU: \d+ PID:|Hardware name:|Workqueue:|RIP:|Code:|"
                         r"RSP:|RAX:|RDX:|RBP:|R\d+:|FS:|CS:|CR2:|DR\d:|Modules linked in:)")


_CONT = re.compile(r"^(\s|Call Trace|Modules linked in|CPU:|Hardware name|RIP:|RSP:|RAX:|RDX:|RBP:|R\d+:|"
                   r"FS:|CS:|CR2:|Code:|EIP:|EAX:|ESI:|DS:|Stack:|Workqueue:|<TASK>|</TASK>|<IRQ>|</IRQ>|"
                   r"\? |[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+|Kernel panic|---\[|\[ end|in_atomic|irqs disabled|"
                   r"Preemption disabled|preempt_count|INFO: lockdep|Kernel Offset|Call trace:|Tainted:|"
                   r"WARNING:|BUG:|Oops|general protection|invalid opcode|PGD |PUD |PMD |PTE |#PF:)")


_TS = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?")


MAX_BLOCK = 80


HANDOFF = ("kexec_core: Starting new kernel", "KTLOAD exec")


RESET_BANNERS = ("SeaBIOS (version", "iPXE", "Booting from", "Linux version")


KERNEL_HINTS = ("Linux version", "KTLOAD", "kexec_core", "Command line:", "BIOS-e820")


# what a replay of a large log keeps from the kernel part (trace.prefiltered_lines)
REPLAY_FILTER = {
    "keywords": TROUBLE_HINTS + (b"KTSNAP", b"Linux version", b"Command line:", b"BIOS-e820", b"kexec_test"),
    "tail_markers": tuple(h.encode() for h in HANDOFF),
    "block_after": TROUBLE_HINTS,
}


def strip_ts(text: str) -> str:
    """Text without a kernel "[   12.345678] " timestamp prefix."""
    return _TS.sub("", text, count=1) if "]" in text[:20] else text


# every TROUBLE pattern holds one of the hints: a line without any is no trouble (one search)
_HINT_RX = re.compile("|".join(re.escape(h.decode()) for h in TROUBLE_HINTS))


def trouble_kind(text: str) -> tuple[str, bool] | None:
    if not _HINT_RX.search(text):
        return None
    body = strip_ts(text)
    for kind, fatal, rx in TROUBLE:
        if rx.search(body):
            return kind, fatal
    return None


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
        j = first + 1
        while j < stop and j - i < MAX_BLOCK:
            body = strip_ts(texts[j])
            if _BLOCK_END.search(body):
                j += 1
                break
            if not _CONT.match(body) and not body.startswith(" "):
                break
            j += 1
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
