"""Analysis of a console capture: verdict, hang location, kernel trouble, machine state,
before/after, signature.  Shared by `run`, `report`, the lab and sweeps.

Works on `trace.Line`s; kernel-log patterns are a table (TROUBLE), not code paths.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from . import decoders as dec
from .decoders import Regs, StepInfo, decode_call, int_label, step_info
from .trace import Line, Record

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


# ---- live state ------------------------------------------------------------------------------

class LiveState:
    """Fed every Line as it arrives; knows the current step, steps done, whether the payload
    finished, and whether a reset was seen.  Used by the capture loop to decide when to stop."""

    def __init__(self) -> None:
        self.current: tuple[int, str] | None = None
        self.steps_done = 0
        self.payload_started = False
        self.done = False
        self.handoff_seen = False
        self.reset_line: str | None = None
        # after "done ... next=int19": what shows the firmware booted again (or None yet)
        self.awaiting_chain = False
        self.chain_line: str | None = None
        self._ended: set[int] = set()

    def feed(self, line: Line) -> str | None:
        rec = line.record
        if rec is None:
            text = line.text
            if not self.payload_started:
                if not self.handoff_seen and any(h in text for h in HANDOFF):
                    self.handoff_seen = True
                elif self.handoff_seen and any(b in text for b in RESET_BANNERS):
                    self.reset_line = text
                    return "reset"
            elif not self.done and any(b in text for b in RESET_BANNERS):
                self.reset_line = text
                return "reset"
            elif self.awaiting_chain and any(b in text for b in RESET_BANNERS):
                return self._chained(text)  # int 19h booted the firmware's next device
            return None
        kind = rec.kind
        if kind == "boot" or (kind == "banner" and self.awaiting_chain):
            return self._chained(line.text)
        if kind == "banner" and self.payload_started and not self.done:
            self.reset_line = line.text
            return "reset"
        self.payload_started = True
        if kind == "begin":
            self.current = (rec.step, rec.name)
        elif kind in ("end", "skip"):
            self.current = None
            if rec.step not in self._ended:
                self._ended.add(rec.step)
                self.steps_done += 1
        elif kind == "done":
            self.current = None
            self.done = True
            if rec.fields.get("next") == "int19":
                self.awaiting_chain = True  # the int19-boot step is the last word
                return None
            return "final"
        return None

    def _chained(self, text: str) -> str:
        self.awaiting_chain = False
        self.chain_line = text
        return "final"


# ---- step assembly ---------------------------------------------------------------------------

@dataclass
class _Call:
    iteration: str | None
    begin: Record | None = None
    end: Record | None = None
    data: dict[str, bytearray] = field(default_factory=dict)
    line: int = -1  # index of its begin (or end) line


@dataclass
class _Step:
    index: int
    name: str
    int_no: int | None = None
    ax: int | None = None
    calls: list[_Call] = field(default_factory=list)
    skipped: str | None = None
    t_first: float | None = None  # capture time of its first and last line: the step's
    t_last: float | None = None   # duration, for the sweep report's time-per-step chart

    def call_for(self, it: str | None, want_open: bool) -> _Call | None:
        for c in reversed(self.calls):
            if c.iteration == it and (not want_open or c.end is None):
                return c
        return None


def _state_value(v: str):
    if len(v) in (2, 4, 8) and all(c in "0123456789ABCDEF" for c in v):
        return int(v, 16)
    return v


VERDICTS = ("completed", "failed-steps", "hung", "reset", "no-output", "garbled",
            "died-before-handoff", "interrupted")
_NONPRINT = re.compile(r"[^\x20-\x7e\t]")
_CODE_VECTORS = ("v08", "v10", "v13", "v15", "v16", "v1A", "v19")


@dataclass
class Analysis:
    verdict: str
    source: str = "payload"
    summary: str = ""
    hang: dict | None = None
    reset: dict | None = None
    steps: list[dict] = field(default_factory=list)
    e820: list[dict] = field(default_factory=list)
    payload: dict = field(default_factory=lambda: {"version": None, "build_id": None})
    kernel_trouble: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    before_after: dict = field(default_factory=dict)
    signature: dict = field(default_factory=dict)
    garbled: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    handoff: dict = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)
    stop_reason: str = "replay"
    errors: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list, repr=False)  # for context quotes

    def one_line(self) -> str:
        return self.summary

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict, "summary": self.summary, "source": self.source,
            "hang": self.hang, "reset": self.reset, "steps": self.steps, "e820": self.e820,
            "payload": self.payload, "kernel_trouble": self.kernel_trouble, "state": self.state,
            "findings": self.findings, "before_after": self.before_after, "signature": self.signature,
            "garbled": self.garbled, "timing": self.timing, "handoff": self.handoff,
            "hints": self.hints, "stop_reason": self.stop_reason,
        }

    def context(self, around: int | None = None, before: int = 8, after: int = 2) -> list[str]:
        """Console lines around a line index (default: the end of the capture)."""
        if not self.lines:
            return []
        i = len(self.lines) - 1 if around is None else around
        return [ln.text for ln in self.lines[max(0, i - before): i + after + 1]]


def _step_names(payload, banner: Record | None, seen: dict[int, _Step]) -> list[str]:
    if payload is not None and getattr(payload, "steps", None):
        return [getattr(s, "name", s) for s in payload.steps]
    count = None
    if banner is not None:
        try:
            count = int(banner.fields.get("steps", ""), 10)
        except ValueError:
            count = None
    if count is None:
        count = max(seen, default=-1) + 1
    names = []
    for i in range(count):
        if i in seen:
            names.append(seen[i].name)
        elif i < len(dec.STEP_IDS):
            names.append(dec.STEP_IDS[i])
        else:
            names.append(f"step-{i:03d}")
    return names


def _data_dict(c: _Call) -> dict:
    return {k: bytes(v) for k, v in c.data.items()}


def _drive(it: str | None) -> int | None:
    if it and it.startswith("dl="):
        try:
            return int(it[3:], 16)
        except ValueError:
            return None
    return None


def _decode_step(st: _Step, info: StepInfo) -> tuple[str, dict, list[dict], str | None, list[dict]]:
    """status, result, calls, reason, e820 entries for one step that began."""
    calls, results, reasons, e820 = [], {}, [], []
    statuses = []
    finished = [c for c in st.calls if c.end is not None]
    for n, c in enumerate(finished):
        regs = Regs(c.end)
        d = decode_call(st.name, regs, _data_dict(c))
        last = n == len(finished) - 1
        if st.name == "e820" and d.status == "error" and regs.cf and last and n > 0:
            d = dec.Decoded("ok", {"end_of_list": True})  # CF=1 after entries ends the map
        calls.append({"iteration": c.iteration, "registers": regs.raw(), "status": d.status,
                      "reason": d.reason, "result": d.result,
                      "data": {k: v.hex() for k, v in _data_dict(c).items()}})
        statuses.append(d.status)
        if d.reason and d.status == "error":
            reasons.append((c.iteration + ": " if c.iteration else "") + d.reason)
        if st.name == "e820":
            ent = d.result.get("entry")
            if ent:
                e820.append(ent)
        elif c.iteration and c.iteration.startswith("dl="):
            results.setdefault("drives", {})[c.iteration[3:]] = dict(d.result, status=d.status)
        else:
            results = d.result
    if st.name == "e820":
        results = {"entries": e820, "count": len(e820)}
    status = "error" if "error" in statuses else "ok"
    return status, results, calls, "; ".join(reasons) or None, e820


# ---- findings, before/after, signature -------------------------------------------------------

def state_findings(state: dict) -> list[dict]:
    """What the machine looked like at entry, as findings a human should read."""
    out = []
    for vec in _CODE_VECTORS:
        v = state.get("ivt", {}).get(vec)
        if isinstance(v, str) and ":" in v:
            try:
                seg, off = (int(x, 16) for x in v.split(":"))
            except ValueError:
                continue
            lin = seg * 16 + off
            if lin < 0xC0000:
                out.append({"kind": "ivt-rewritten", "vector": vec[1:],
                            "text": f"IVT vector {vec[1:]}h -> {v} (linear {lin:05X}h) is not in ROM: "
                                    "rewritten by earlier software (DOS/loadlin-style hook)"})
    apic = state.get("apic", {})
    if apic and apic.get("present") not in (0, "0"):
        svr, lvt0 = apic.get("svr"), apic.get("lvt0")
        if isinstance(svr, int) and not svr & 0x100:
            out.append({"kind": "apic-disabled", "text": f"local APIC was software-disabled at entry (SVR={svr:08X}h)"})
        if isinstance(lvt0, int) and lvt0 & 0x10000:
            out.append({"kind": "lvt0-masked", "text": f"APIC LVT0 was masked at entry ({lvt0:08X}h): 8259 "
                                                       "interrupts could not reach the CPU"})
        if apic.get("fixed") in (1, "1"):
            out.append({"kind": "apic-repaired", "text": "payload reprogrammed the local APIC to virtual wire"})
    pic = state.get("pic", {})
    if pic.get("mask1") == 0xFF:
        out.append({"kind": "pic-masked", "text": "master 8259 fully masked at entry (timer, keyboard IRQs off)"})
    if pic.get("mask2") == 0xFF:
        out.append({"kind": "pic-masked", "text": "slave 8259 fully masked at entry (RTC, disk IRQs off)"})
    cr0 = state.get("cpu", {}).get("cr0")
    if isinstance(cr0, int) and cr0 & 0x80000000:
        out.append({"kind": "paging-on", "text": f"paging was enabled at entry (CR0={cr0:08X}h)"})
    return out


_E820_NAMES = {"usable": 1, "system ram": 1, "reserved": 2, "acpi data": 3, "acpi tables": 3,
               "acpi reclaimable": 3, "acpi nvs": 4, "acpi non-volatile storage": 4, "unusable": 5,
               "unusable memory": 5, "disabled": 6, "persistent memory": 7, "persistent (type 7)": 7,
               "persistent memory (legacy)": 12, "persistent (type 12)": 12}


def e820_type(t) -> int | None:
    if isinstance(t, int):
        return t
    s = str(t).strip().lower()
    if s.isdigit():
        return int(s)
    m = re.search(r"type (\d+)", s)
    return _E820_NAMES.get(s, int(m[1]) if m else None)


def _merged(ranges: list[tuple[int, int, object]]) -> list[tuple[int, int, object]]:
    """Sorted ranges (inclusive ends) with touching ranges of one type merged."""
    out: list[list] = []
    for s, e, t in sorted(ranges, key=lambda r: (r[0], r[1])):
        if out and out[-1][2] == t and s <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e, t])
    return [tuple(r) for r in out]


def _rng(r) -> dict:
    return {"start": r[0], "end": r[1], "type": r[2],
            "text": f"{r[0]:016X}-{r[1]:016X} {dec.E820_TYPES.get(r[2], r[2])}"}


def before_after(snap: dict | None, e820: list[dict], steps: list[dict]) -> dict:
    """The kernel's view before kexec against the payload's answers after it."""
    if not snap:
        return {"available": False, "differences": []}
    diffs: list[str] = []
    out: dict = {"available": True, "differences": diffs}
    by_id = {s["id"]: s for s in steps}
    done = lambda sid: by_id.get(sid, {}).get("status") in ("ok", "error")  # noqa: E731
    src = "e820" if snap.get("e820") else "memmap"
    before = [(x["start"], x["end"], e820_type(x.get("type"))) for x in snap.get(src) or []]
    if before and e820 and done("e820"):
        after = [(x["base"], x["base"] + x["length"] - 1, x["type"]) for x in e820 if x["length"]]
        b, a = set(_merged(before)), set(_merged(after))
        only_b, only_a = sorted(b - a), sorted(a - b)
        out["e820"] = {"source": src, "same": not only_b and not only_a,
                       "only_before": [_rng(r) for r in only_b], "only_after": [_rng(r) for r in only_a]}
        for r in only_b:
            diffs.append(f"E820 before only: {_rng(r)['text']}")
        for r in only_a:
            diffs.append(f"E820 after only: {_rng(r)['text']}")
    kib = snap.get("basemem_kib")
    base = by_id.get("base-mem", {}).get("result", {}).get("kib")
    if kib is not None and base is not None:
        out["base_memory"] = {"before_kib": kib, "after_kib": base, "same": kib == base}
        if kib != base:
            diffs.append(f"base memory: {kib} KiB before, {base} KiB after")
    edd_b = {re.sub(r".*?([0-9a-fA-F]{2})$", r"\1", k).upper(): v for k, v in (snap.get("edd") or {}).items()}
    drives_after = by_id.get("edd-check", {}).get("result", {}).get("drives", {})
    params = by_id.get("edd-params", {}).get("result", {}).get("drives", {})
    if (edd_b or drives_after) and done("edd-check"):
        out["drives"] = {"before": sorted(edd_b), "after": sorted(drives_after)}
        if sorted(edd_b) != sorted(drives_after) and edd_b:
            diffs.append(f"BIOS drives: {', '.join(sorted(edd_b)) or 'none'} before, "
                         f"{', '.join(sorted(drives_after)) or 'none'} after")
        reads = by_id.get("read-chs", {}).get("result", {}).get("drives", {})
        legacy = by_id.get("disk-geometry", {}).get("result", {}).get("drives", {})
        compared = out["drives"]["compared"] = {}
        for dr, info in sorted(edd_b.items()):
            if not isinstance(info, dict):
                continue
            p, rd, g = params.get(dr, {}), reads.get(dr, {}), legacy.get(dr, {})
            pairs = {  # what the kernel's EDD saw at boot -> what the BIOS answers after kexec
                "sectors": (_num(info.get("sectors")), p.get("sectors")),
                "mbr_signature": (_num(info.get("mbr_signature")), _num(rd.get("mbr_signature"), 16)),
                "heads": (_num(info.get("default_heads")), p.get("heads")),
                "sectors_per_track": (_num(info.get("default_sectors_per_track")), p.get("sectors_per_track")),
                "legacy_cylinders": (_plus1(info.get("legacy_max_cylinder")), g.get("cylinders")),
                "legacy_heads": (_plus1(info.get("legacy_max_head")), g.get("heads")),
                "legacy_sectors_per_track": (_num(info.get("legacy_sectors_per_track")),
                                             g.get("sectors_per_track")),
                "host_bus": (_word(info.get("host_bus")), _word(p.get("host_bus"))),
                "interface": (_word(info.get("interface")), _word(p.get("interface"))),
            }
            seen = {k: v for k, v in pairs.items() if v[0] is not None and v[1] is not None}
            compared[dr] = sorted(seen)
            for k, (bv, av) in seen.items():
                if bv != av:
                    shown = (f"{bv:08X}h", f"{av:08X}h") if k == "mbr_signature" else (bv, av)
                    diffs.append(f"drive {dr}h {k}: {shown[0]} before, {shown[1]} after")
    return out


def _num(v, base: int = 0) -> int | None:
    """An int from a snapshot or decoder value ("32768", "0x4b545330", 32768); None if absent."""
    if isinstance(v, int):
        return v
    try:
        return int(str(v).strip(), base)
    except (TypeError, ValueError):
        return None


def _plus1(v) -> int | None:
    """A maximum index (EDD's legacy_max_*) as a count."""
    n = _num(v)
    return None if n is None else n + 1


def _word(v) -> str | None:
    return (str(v).split() or [""])[0] if v else None


def _norm(s: str) -> str:
    s = strip_ts(s)
    s = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\+0x[0-9a-f]+/0x[0-9a-f]+", "X", s)
    s = re.sub(r"\d+", "N", s)
    return re.sub(r"\s+", " ", s).strip()


def signature(a: Analysis, snap: dict | None) -> dict:
    dmi = (snap or {}).get("dmi") or {}
    fw = " ".join(x for x in (dmi.get("bios_vendor"), dmi.get("bios_version")) if x)
    parts = [a.verdict]
    title = a.verdict
    loc = a.hang or a.reset
    if loc and loc.get("step"):
        fn = loc.get("call") or ""
        parts += [loc["step"], fn]
        title += f" in {loc['step']}" + (f" ({fn})" if fn else "")
    if a.verdict == "failed-steps":
        bad = sorted(s["id"] for s in a.steps if s["status"] == "error")
        parts += bad
        title += ": " + ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "")
    if a.verdict == "died-before-handoff":
        fatal = [t for t in a.kernel_trouble if t["fatal"]]
        t = _norm(fatal[0]["title"]) if fatal else "no hand-off"
        parts.append(t)
        title += f": {t}"
    parts.append(fw)
    if fw:
        title += f" [{fw}]"
    return {"id": hashlib.sha1("|".join(parts).encode()).hexdigest()[:12], "title": title}


# ---- the analysis ----------------------------------------------------------------------------

def call_label(info: StepInfo, drive: int | None = None) -> str:
    s = int_label(info.int_no)
    if info.function:
        s += f" {info.function}"
    if drive is not None:
        s += f", drive {drive:02X}h"
    return s


def _garbled_stats(lines: list[Line], stats: dict | None) -> dict:
    if stats is not None:
        return stats
    nbytes = nonprint = bad = 0
    for ln in lines:
        nbytes += len(ln.text)
        nonprint += len(_NONPRINT.findall(ln.text))
        bad += ln.bad_checksum
    return {"bytes": nbytes, "nonprintable": nonprint, "bad_checksum_lines": bad}


def _is_garbled(g: dict) -> bool:
    ratio = g["nonprintable"] / g["bytes"] if g["bytes"] else 0.0
    return g["bytes"] >= 64 and (ratio > 0.15 or g["bad_checksum_lines"] >= 3)


def analyze(lines: list[Line], *, stop_reason: str = "replay", silence_s: float | None = None,
            payload=None, stats: dict | None = None) -> Analysis:
    """The verdict and everything around it, from the lines of one capture."""
    live = LiveState()
    steps: dict[int, _Step] = {}
    banner: Record | None = None
    done: Record | None = None
    state: dict[str, dict] = {}
    reset_at = handoff_at = first_kt = None
    payload_lines: list[int] = []
    open_step: _Step | None = None
    for i, ln in enumerate(lines):
        why = live.feed(ln)
        if live.handoff_seen and handoff_at is None:
            handoff_at = i
        if why == "reset":
            reset_at = i
            break
        if live.chain_line is not None:
            break  # the firmware booted again after int 19h: the run is over
        rec = ln.record
        if rec is None:
            continue
        payload_lines.append(i)
        if first_kt is None:
            first_kt = i
        k = rec.kind
        if k == "banner":
            banner = rec
        elif k == "state":
            state[rec.name] = {key: _state_value(v) for key, v in rec.fields.items()}
        elif k == "done":
            done = rec
        elif k in ("begin", "end", "data", "skip"):
            st = steps.get(rec.step)
            if st is None:
                st = steps[rec.step] = _Step(rec.step, rec.name)
            if ln.t is not None:
                if st.t_first is None:
                    st.t_first = ln.t
                st.t_last = ln.t
            if k == "begin":
                st.int_no, st.ax = rec.hex("int"), rec.hex("ax")
                st.calls.append(_Call(rec.iteration, begin=rec, line=i))
                open_step = st
            elif k == "end":
                c = st.call_for(rec.iteration, want_open=True)
                if c is None:
                    c = _Call(rec.iteration, line=i)
                    st.calls.append(c)
                c.end = rec
                open_step = None
            elif k == "data":
                c = st.call_for(rec.iteration, want_open=False) or _Call(rec.iteration, line=i)
                if c not in st.calls:
                    st.calls.append(c)
                tag = rec.fields.get("tag", "")
                off = rec.hex("off", 0) or 0
                buf = c.data.setdefault(tag, bytearray())
                if len(buf) < off + len(rec.data):
                    buf.extend(b"\0" * (off + len(rec.data) - len(buf)))
                buf[off:off + len(rec.data)] = rec.data
            else:
                st.skipped = rec.fields.get("reason", "")
                open_step = None
    if live.handoff_seen and handoff_at is None:
        handoff_at = 0
    a = Analysis(verdict="", stop_reason=stop_reason, lines=lines)
    a.state = state
    a.findings = state_findings(state)
    if banner is not None:
        build = banner.fields.get("build")  # printed upper case; ELF tools show build ids lower case
        a.payload = {"version": banner.fields.get("version"), "build_id": build.lower() if build else None,
                     "entry": banner.fields.get("entry"), "uart": banner.fields.get("uart"),
                     "steps": int(banner.fields["steps"]) if banner.fields.get("steps", "").isdigit() else None}
        want = getattr(payload, "build_id", None)
        if want and banner.fields.get("build") and want.upper() != banner.fields["build"].upper():
            a.findings.append({"kind": "build-mismatch", "text": f"trace build id {banner.fields['build']} "
                                                                  f"does not match the payload ELF ({want})"})
    # kernel section: everything before the hand-off (or the payload's first line)
    kend = handoff_at if handoff_at is not None else (first_kt if first_kt is not None else
                                                      (reset_at if reset_at is not None else len(lines)))
    texts = [ln.text for ln in lines[:kend + 1 if handoff_at is not None else kend]]
    a.kernel_trouble = find_trouble(texts)
    a.handoff = {"seen": handoff_at is not None,
                 "line": lines[handoff_at].text if handoff_at is not None else None}

    # steps
    names = _step_names(payload, banner, steps)
    hang_idx = None
    finished = done is not None
    if live.payload_started and not finished:
        if open_step is not None:
            hang_idx = open_step.index
        else:
            hang_idx = -1  # between steps
    last_seen = max(steps, default=-1)
    for idx, name in enumerate(names):
        st = steps.get(idx)
        info = step_info(name, idx, st.int_no if st else None, st.ax if st else None)
        entry = {"id": name, "index": idx, "title": info.title, "int": info.int_no,
                 "function": info.function, "call": call_label(info), "status": "not-reached",
                 "result": {}, "calls": [], "reason": None}
        if st is not None and st.skipped is not None and not st.calls:
            entry.update(status="skipped", reason=st.skipped, result={"reason": st.skipped})
        elif st is not None and st.calls:
            status, result, calls, reason, e820 = _decode_step(st, info)
            entry.update(status=status, result=result, calls=calls, reason=reason)
            if st.t_first is not None and idx != hang_idx:
                entry["duration_s"] = round(st.t_last - st.t_first, 6)
            if e820:
                a.e820 = [{"base": e["base"], "length": e["length"], "type": e["type"],
                           "type_name": e["type_name"]} for e in e820]
            if idx == hang_idx:
                entry["status"] = "hung"
        elif finished and idx <= last_seen:
            entry["reason"] = "no line for this step"
        a.steps.append(entry)
    if done is not None and done.fields.get("next") == "int19":
        chain = next((e for e in a.steps if e["id"] == "int19-boot"), None)
        if chain is not None and live.chain_line is not None:
            chain.update(status="ok", result={"booted_again": True, "evidence": live.chain_line})
        elif chain is not None:
            chain.update(status="error", result={"booted_again": False},
                         reason="nothing booted after int 19h within the capture")
    for idx in sorted(set(steps) - set(range(len(names)))):  # steps beyond the announced count
        st = steps[idx]
        info = step_info(st.name, idx, st.int_no, st.ax)
        status, result, calls, reason, _ = _decode_step(st, info)
        a.steps.append({"id": st.name, "index": idx, "title": info.title, "int": info.int_no,
                        "function": info.function, "call": call_label(info),
                        "status": "hung" if idx == hang_idx else status,
                        "result": result, "calls": calls, "reason": reason})

    # location of a hang / reset
    def where(st: _Step | None, silence: float | None) -> dict:
        last_line = next((ln.text for ln in reversed(lines[:reset_at] if reset_at else lines) if ln.text), "")
        if st is None:
            last_end = max((i for i, s in steps.items() if s.calls or s.skipped is not None), default=-1)
            nxt = last_end + 1
            nm = names[nxt] if nxt < len(names) else None
            return {"step": nm, "index": nxt if nm else None, "title": (step_info(nm).title if nm else None),
                    "int": step_info(nm).int_no if nm else None, "function": step_info(nm).function if nm else None,
                    "call": call_label(step_info(nm)) if nm else None, "drive": None, "between_steps": True,
                    "note": f"after step {last_end:03d} ended, before the next began" if last_end >= 0
                    else "after entering real mode, before the first step",
                    "last_line": last_line, "silence_s": silence}
        info = step_info(st.name, st.index, st.int_no, st.ax)
        c = st.calls[-1] if st.calls else None
        drive = _drive(c.iteration) if c else None
        return {"step": st.name, "index": st.index, "title": info.title, "int": info.int_no,
                "function": info.function, "call": call_label(info, drive), "drive": drive,
                "iteration": c.iteration if c else None, "between_steps": False,
                "last_line": last_line, "silence_s": silence, "line_index": c.line if c else None}

    # garbled statistics: after the hand-off when it was seen (the kernel console may be fine)
    gl = lines[handoff_at + 1:] if handoff_at is not None and stats is None else lines
    g = _garbled_stats(gl, stats)
    g["bad_checksum_lines"] = sum(1 for ln in lines if ln.bad_checksum) if stats is None else g["bad_checksum_lines"]
    g["ratio_nonprintable"] = round(g["nonprintable"] / g["bytes"], 4) if g["bytes"] else 0.0
    a.garbled = g

    # timing
    if payload_lines:
        ts = [lines[i].t for i in payload_lines if lines[i].t is not None]
        nbytes = sum(len(lines[i].text) + 2 for i in payload_lines)
        baud = 115200
        if banner is not None:
            div = banner.hex("div", 1) or 1
            baud = 115200 // div
        a.timing = {"first_payload_t": ts[0] if ts else None, "last_payload_t": ts[-1] if ts else None,
                    "payload_s": round(ts[-1] - ts[0], 6) if ts else None, "payload_bytes": nbytes,
                    "baud": baud, "wire_s": round(nbytes * 10 / baud, 6), "payload_lines": len(payload_lines)}

    # verdict
    fatal = [t for t in a.kernel_trouble if t["fatal"]]
    errors = [s for s in a.steps if s["status"] == "error"]
    if live.payload_started:
        if reset_at is not None:
            cur = open_step
            a.verdict = "reset"
            a.reset = dict(where(cur, None) if cur else {"step": None}, banner=lines[reset_at].text,
                           line_index=reset_at)
            if cur is not None:
                for s in a.steps:
                    if s["index"] == cur.index:
                        s["status"] = "hung"
            a.summary = (f"reset during step {cur.index:03d} {cur.name} ({a.reset['call']}): "
                         if cur else "reset after the payload started: ") + f"'{lines[reset_at].text[:60]}' appeared"
        elif finished:
            a.verdict = "failed-steps" if errors else "completed"
            n = len(a.steps)
            if errors:
                a.summary = (f"failed-steps: {len(errors)} of {n} steps returned errors: "
                             + ", ".join(s["id"] + (f" ({s['reason']})" if s["reason"] else "") for s in errors[:5])
                             + (" ..." if len(errors) > 5 else ""))
            else:
                a.summary = f"completed: all {n} steps answered"
        else:
            st = open_step
            a.hang = where(st, silence_s)
            a.verdict = "interrupted" if stop_reason == "interrupted" else "hung"
            h = a.hang
            loc = (f"step {h['index']:03d} {h['step']} ({h['call']})" if h["step"] and not h["between_steps"]
                   else (f"{h['note']}" + (f" (next: {h['index']:03d} {h['step']})" if h["step"] else "")))
            if a.verdict == "interrupted":
                a.summary = f"interrupted during {loc}"
            else:
                a.summary = f"hung at {loc}" + (f" after {silence_s:.1f} s of silence" if silence_s is not None else "")
    else:
        if fatal:
            a.verdict = "died-before-handoff"
            a.summary = f"died-before-handoff: {strip_ts(fatal[0]['title'])}"
        elif _is_garbled(g):
            a.verdict = "garbled"
            a.summary = (f"garbled: {g['bytes']} bytes, {g['bad_checksum_lines']} bad-checksum lines, "
                         f"{g['ratio_nonprintable']:.0%} non-printable (baud mismatch or line noise)")
            a.hints = ["check the baud rate on both ends (the payload's divisor and the collector's --baud)",
                       "check the cable and ground; line noise damages bytes"]
        elif stop_reason == "interrupted":
            a.verdict = "interrupted"
            a.summary = "interrupted before the payload printed anything"
        elif reset_at is not None:
            a.verdict = "reset"
            a.reset = {"step": None, "banner": lines[reset_at].text, "line_index": reset_at,
                       "note": "the machine restarted after the kexec hand-off, before the payload printed"}
            a.summary = f"reset after the kexec hand-off, before the payload printed: '{lines[reset_at].text[:60]}'"
        elif handoff_at is not None:
            a.verdict = "no-output"
            a.summary = "no-output: the kernel handed over to the payload but no payload line arrived"
            a.hints = ["wrong UART base (the payload's uart= vs the port this cable is on)",
                       "wrong baud rate (payload divisor vs --baud)", "cable / null-modem / console server port",
                       "the payload died before programming the UART (entry mode, load address)"]
        elif any(any(h in ln.text for h in KERNEL_HINTS) for ln in lines):
            a.verdict = "died-before-handoff"
            a.summary = "died-before-handoff: the kernel log never showed the kexec hand-off message"
            a.hints = ["kexec may have failed or the machine rebooted instead: read the kernel log above"]
        else:
            a.verdict = "no-output"
            a.summary = "no-output: no payload line and no hand-off message seen either"
            a.hints = ["nothing recognisable arrived: check the serial URL, baud rate and cable",
                       "the kernel never handed over (was kexec run?)"]
    snap = None
    try:
        from .snapshot import parse_snapshot
        snap = parse_snapshot(ln.text for ln in lines[:kend + 1])
    except ImportError:
        snap = None
    a.before_after = before_after(snap, a.e820, a.steps)
    if snap and snap.get("dmi"):
        a.before_after["firmware"] = {k: snap["dmi"].get(k) for k in ("sys_vendor", "product_name", "bios_vendor",
                                                                       "bios_version", "bios_date") if snap["dmi"].get(k)}
    if snap and snap.get("kernel"):
        a.before_after["kernel"] = snap["kernel"]
    a.signature = signature(a, snap)
    return a
