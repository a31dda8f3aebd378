"""The POST baseline: the same machine's answers fresh from power-on against its answers after
kexec, step by step.

A hang or a wrong answer after kexec only means something next to what the same firmware said
when nothing ran before it.  `compare` takes two reports (the `Analysis.to_dict()` shape: the
payload booted from its disk or ISO image at POST, and the payload after kexec) and lists every
step whose status or decoded answer differs.  Values that change by nature -- tick counts, the
RTC clock, the state each entry path leaves (registers, A20, the cursor) -- are left out by the
rules of `RULES`, the one table of them (docs/trace-format.md, "The POST baseline").

Captures that cannot be compared are refused with one line naming what differs
(`KexectestError`, exit 10): different payload builds, different machines (PCI functions, the
DMI identity or the lab machine where both captures carry it), a trace that is not our payload's.

Pure: dicts in, a dict out (plus `pci_functions`, which reads a capture's PCI scan lines).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import Exit, KexectestError

# ---------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Rule:
    """Fields left out of the comparison: `step` and `field` are fnmatch patterns over step ids
    and dotted field paths (`drives.*.sectors`); `why` is what the report says about them."""

    id: str
    step: str
    field: str
    why: str


RULES: tuple[Rule, ...] = (
    Rule("ticks", "ticks*", "ticks", "the BIOS tick count runs on by itself"),
    Rule("midnight", "ticks*", "midnight", "the tick count's midnight flag follows the clock"),
    Rule("tick-window", "tick-advance", "before", "a tick count, runs on by itself"),
    Rule("tick-window", "tick-advance", "after", "a tick count, runs on by itself"),
    Rule("rtc", "rtc-*", "*", "the real-time clock's time and date run on by themselves"),
    Rule("bda-ticks", "state", "bda.ticks", "the BDA tick count runs on by itself"),
    Rule("entry-apic", "apic-fix", "*", "the local APIC as the entry path left it, and its repair"),
    Rule("entry-pic", "pic-init", "old_*", "the 8259 masks the entry path left"),
    Rule("entry-idt", "idt-real", "*_at_entry", "the IDT register the entry path left"),
    Rule("entry-a20", "a20-test", "a20_enabled", "A20 as the entry path left it"),
    Rule("entry-a20", "a20-query", "a20_enabled", "A20 as the entry path left it"),
    Rule("entry-a20", "a20-fast", "port92_before", "port 92h as the entry path left it"),
    Rule("entry-apm", "apm-disconnect", "was_connected",
         "whether the previous system left APM connected"),
    Rule("entry-video", "video-cursor", "*", "the cursor where the last text printed left it"),
    Rule("entry-video", "video-mode", "*", "the video mode the previous system left"),
    Rule("entry-keyboard", "kbd-shift", "*", "the keyboard LEDs and shift keys left behind"),
    Rule("entry-keyboard", "kbd-ext-shift", "*", "the keyboard LEDs and shift keys left behind"),
    Rule("entry-keyboard", "kbd-pending", "*", "a key somebody pressed"),
)

# state groups: how the payload was entered differs by nature (the loader's registers and
# modes, the previous kernel's APIC and PIC); the firmware's own data (BDA, IVT) is compared
STATE_GROUPS = ("bda", "ivt")
# a tick-advance delta counts ticks in a fixed window: only whether it moved is an answer
_BY_NATURE_COUNTS = {("tick-advance", "delta")}
# steps whose answer is one of these statuses carry a result worth comparing
_ANSWERED = ("ok", "error", "skipped")


def _rule_for(step: str, field: str) -> Rule | None:
    for r in RULES:
        if fnmatch.fnmatchcase(step, r.step) and fnmatch.fnmatchcase(field, r.field):
            return r
    return None


def rules_table() -> list[dict]:
    """The rules as the documentation and the report show them."""
    return [{"rule": r.id, "step": r.step, "field": r.field, "why": r.why} for r in RULES]


# ---------------------------------------------------------------- identity


def pci_functions(lines: Iterable) -> dict[str, str] | None:
    """bdf -> "VVVV:DDDD" from a capture's `state pcifn` lines (trace records), or None when
    the capture has no complete PCI scan (no `state pci present=1`, or damaged lines in it)."""
    present, out, damaged = False, {}, False
    in_state = False
    for ln in lines:
        rec = getattr(ln, "record", None)
        if rec is None:
            if in_state and getattr(ln, "bad_checksum", False):
                damaged = True
            continue
        if rec.kind == "begin" and rec.name == "state":
            in_state = True
        elif rec.kind == "end" and rec.name == "state":
            break
        elif rec.kind == "state" and rec.name == "pci":
            present = rec.fields.get("present") == "1"
        elif rec.kind == "state" and rec.name == "pcifn" and rec.fields.get("bdf"):
            out[rec.fields["bdf"]] = f"{rec.fields.get('vendor')}:{rec.fields.get('device')}"
    return out if present and not damaged else None


@dataclass
class Capture:
    """One side of the comparison: its report, where it came from, what it says it is."""

    report: dict
    source: str
    environment: dict | None = None
    pci: dict[str, str] | None = None

    @property
    def via(self) -> str | None:
        return (self.report.get("payload") or {}).get("via")


def _lab_machine(env: dict | None) -> dict | None:
    lab = (env or {}).get("lab") or {}
    m = lab.get("machine")
    if not isinstance(m, dict):
        return None
    shape = {k: m.get(k) for k in ("machine", "memory", "smp", "disks") if k in m}
    if lab.get("firmware"):
        shape["firmware"] = lab["firmware"]
    return shape or None


def _refuse(what: str) -> None:
    raise KexectestError(f"baseline refused: {what}", Exit.BAD_INPUT)


def check_comparable(post: Capture, kexec: Capture) -> None:
    """One line (exit 10) naming what makes the two captures incomparable; None when they are."""
    for name, c in (("POST", post), ("after-kexec", kexec)):
        if c.report.get("source") != "payload":
            _refuse(f"the {name} capture {c.source} is not a trace of this payload "
                    f"(source {c.report.get('source')})")
        if not (c.report.get("payload") or {}).get("build_id"):
            _refuse(f"the {name} capture {c.source} has no intact payload banner "
                    f"(verdict {c.report.get('verdict')}): nothing to compare")
    if post.via == "kexec":
        _refuse(f"the POST capture {post.source} was entered by kexec (banner via=kexec), not "
                "from the firmware: boot the disk or ISO image (kexectest build --image)")
    a, b = post.report["payload"]["build_id"], kexec.report["payload"]["build_id"]
    if a != b:
        _refuse(f"different payload builds: POST {a}, after kexec {b}")
    fa = (post.report.get("before_after") or {}).get("firmware")
    fb = (kexec.report.get("before_after") or {}).get("firmware")
    if fa and fb and fa != fb:
        key = next(k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k))
        _refuse(f"different machines: DMI {key} is {fa.get(key)!r} at POST, "
                f"{fb.get(key)!r} after kexec")
    la, lb = _lab_machine(post.environment), _lab_machine(kexec.environment)
    if la and lb and la != lb:
        key = next(k for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k))
        _refuse(f"different machines: lab {key} is {la.get(key)} at POST, {lb.get(key)} "
                "after kexec")
    if post.pci is not None and kexec.pci is not None and post.pci != kexec.pci:
        bdf = next(k for k in sorted(set(post.pci) | set(kexec.pci))
                   if post.pci.get(k) != kexec.pci.get(k))
        _refuse(f"different machines: PCI {bdf} is {post.pci.get(bdf) or 'absent'} at POST, "
                f"{kexec.pci.get(bdf) or 'absent'} after kexec")


# ---------------------------------------------------------------- flattening


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves; lists of dicts by index (`entries[3].base`), other lists whole."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        out[f"{prefix}.count" if prefix else "count"] = len(value)
        return out
    return {prefix: value}


def _drive_names(report: dict) -> dict[str, str]:
    """BIOS drive number -> the name its per-drive answers are compared under: the disk's MBR
    signature (read by read-chs) where it is set and unique, so a boot from a USB stick that
    renumbers the BIOS drives is no difference; else the drive number."""
    step = next((s for s in report.get("steps", []) if s["id"] == "read-chs"), None)
    drives = ((step or {}).get("result") or {}).get("drives") or {}
    sigs = {dl: d.get("mbr_signature") for dl, d in drives.items()
            if isinstance(d, dict) and d.get("mbr_signature") not in (None, "00000000")}
    unique = {s for s in sigs.values() if list(sigs.values()).count(s) == 1}
    return {dl: f"disk {sig}" for dl, sig in sigs.items() if sig in unique}


def _per_drive(result: dict, names: dict[str, str]) -> dict:
    if not isinstance(result.get("drives"), dict):
        return result
    out = dict(result)
    out["drives"] = {names.get(dl, dl): v for dl, v in result["drives"].items()}
    return out


def _label(name: str, post_names: dict[str, str], kexec_names: dict[str, str]) -> str:
    """A drive's label in a field path: its BIOS number, both numbers when they differ."""
    a = next((dl for dl, n in post_names.items() if n == name), None)
    b = next((dl for dl, n in kexec_names.items() if n == name), None)
    if a is None and b is None:
        return name
    if a == b or a is None or b is None:
        return b or a
    return f"{a}@post={b}"


# ---------------------------------------------------------------- the comparison


def _state_step(report: dict) -> dict:
    state = report.get("state") or {}
    return {g: state[g] for g in STATE_GROUPS if isinstance(state.get(g), dict)}


def compare(post: Capture, kexec: Capture) -> dict:
    """report.json's `baseline`: {"source", "post", "differences": [{"step", "field", "post",
    "after_kexec"}], "left_out": [{"rule", "why", "fields"}]}.  Refuses incomparable captures."""
    check_comparable(post, kexec)
    pa, pb = post.report, kexec.report
    steps_a = {s["id"]: s for s in pa.get("steps", [])}
    steps_b = {s["id"]: s for s in pb.get("steps", [])}
    names_a, names_b = _drive_names(pa), _drive_names(pb)
    common = set(names_a.values()) & set(names_b.values())  # disks both captures name
    names_a = {dl: n for dl, n in names_a.items() if n in common}
    names_b = {dl: n for dl, n in names_b.items() if n in common}
    boot_drive = (pa.get("payload") or {}).get("drive")
    diffs: list[dict] = []
    left: dict[str, int] = {}

    def field_diffs(step: str, a: dict, b: dict, relabel: bool) -> None:
        fa, fb = _flatten(a), _flatten(b)
        for path in sorted(set(fa) | set(fb), key=lambda p: (p.split(".")[0], p)):
            va, vb = fa.get(path, "absent"), fb.get(path, "absent")
            if (step, path) in _BY_NATURE_COUNTS:
                va, vb = (va != 0 if va != "absent" else va), (vb != 0 if vb != "absent" else vb)
            if va == vb:
                continue
            rule = _rule_for(step, path)
            if rule is not None:
                left[rule.id] = left.get(rule.id, 0) + 1
                continue
            shown = path
            if relabel and path.startswith("drives."):
                name, _, rest = path[len("drives."):].partition(".")
                dl = _label(name, names_a, names_b)
                if "absent" in (va, vb):  # a drive only one capture has: one difference
                    if boot_drive and dl == boot_drive and vb == "absent":
                        left["post-boot-medium"] = left.get("post-boot-medium", 0) + 1
                        continue
                    va, vb = ("absent" if va == "absent" else "present",
                              "absent" if vb == "absent" else "present")
                    rest = ""
                    if any(d["step"] == step and d["field"] == f"drives.{dl}" for d in diffs):
                        continue
                shown = f"drives.{dl}" + (f".{rest}" if rest else "")
            diffs.append({"step": step, "field": shown, "post": va, "after_kexec": vb})

    field_diffs("state", _state_step(pa), _state_step(pb), relabel=False)
    for sid in list(steps_a) + [s for s in steps_b if s not in steps_a]:
        a, b = steps_a.get(sid), steps_b.get(sid)
        sa, sb = (a or {}).get("status", "absent"), (b or {}).get("status", "absent")
        if sa != sb:
            diffs.append({"step": sid, "field": "status", "post": sa, "after_kexec": sb})
        if a and b and sa in _ANSWERED and sb in _ANSWERED:
            field_diffs(sid, _per_drive(a.get("result") or {}, names_a),
                        _per_drive(b.get("result") or {}, names_b), relabel=True)
    why = {r.id: r.why for r in RULES}
    why["post-boot-medium"] = "the medium the POST capture was booted from, gone after kexec"
    return {
        "source": post.source,
        "post": {"verdict": pa.get("verdict"), "summary": pa.get("summary"),
                 "via": post.via, "build_id": pa["payload"]["build_id"]},
        "differences": diffs,
        "left_out": [{"rule": k, "why": why[k], "fields": n} for k, n in left.items()],
    }
