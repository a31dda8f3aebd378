"""Transcripts of the classic kexec-tools kexec_test, read into the same Analysis, judged by the
same verdict ladder (verdict.py).

Its lines carry no step ids, so where it hung follows from which labels are printed before their
call and which results after it (shared/notes/bios-calls.md, last section): a label line without
its value names the call that hung; a result line printed after its call, when last, means the
*next* call hung; a transcript ending at `In real mode.` hung on `sti`.  Its lines carry no
checksum either: a line that is none of its known lines is damaged evidence, and makes the step
before it unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..trace import Line
from .damage import quote
from .handoff import handoff_info, kernel_end, trouble_by_phase
from .kernel import RESET_BANNERS, is_handoff, strip_ts
from .model import Analysis, Damage, Hang, Reset, StepResult, StepStatus, StopReason
from .signature import signature
from .timing import garbled_stats
from .verdict import Evidence, decide

# step id, title, int, function, [(line prefix, role)]; role: label (printed before the call),
# value (printed after it), labelvalue (label before the call, value after it on the same line)
STEPS = [
    ("start", "kexec_test started", 0, "", [("kexec_test ", "value")]),
    ("regs", "entry registers", 0, "", [("eax: ", "value"), ("esi: ", "value")]),
    ("descriptors", "descriptor tables", 0, "", [("idt: ", "value"), ("gdt: ", "value"),
                                                  ("Switching descriptors.", "label"),
                                                  ("Descriptors changed.", "value")]),
    ("pic-setup", "legacy PIC set-up and switch to real mode", 0, "", [("Legacy pic setup.", "label")]),
    ("real-mode", "real mode entered", 0, "", [("In real mode.", "value")]),
    ("sti", "enable interrupts (sti)", 0, "", [("Interrupts enabled.", "value")]),
    ("base-mem", "base memory size", 0x12, "", [("Base memory size:", "value")]),
    ("a20-disable", "A20 disable", 0, "", [("A20 disabled.", "value"), ("Can not A20 line.", "value")]),
    ("e820", "E820 memory map", 0x15, "AX=E820h", [("E820 Memory Map.", "label"), (" @ ", "value")]),
    ("e801", "E801 memory size", 0x15, "AX=E801h", [("E801  Memory size:", "value")]),
    ("mem88", "extended memory size (88h)", 0x15, "AH=88h", [("Mem88 Memory size:", "value")]),
    ("apm-check", "APM installation check", 0x15, "AX=5300h", [("Testing for APM.", "label")]),
    ("apm-disconnect", "APM disconnect", 0x15, "AX=5304h", [("APM Found disconnecting.", "label")]),
    ("apm-connect", "APM connect", 0x15, "AX=5301h", [("APM connecting.", "label")]),
    ("apm-disable", "APM disable", 0x15, "AX=5308h", [("APM disabling.", "label")]),
    ("apm-disconnect2", "APM disconnect", 0x15, "AX=5304h", [("APM disconnecting.", "label")]),
    ("apm-done", "APM test done", 0, "", [("APM test done.", "value")]),
    ("equipment", "equipment list", 0x11, "", [("Equiptment list:", "labelvalue")]),
    ("sysdesc", "system configuration table", 0x15, "AH=C0h", [("Sysdesc:", "labelvalue")]),
    ("video-type", "video type", 0x10, "AX=1A00h", [("Video type:", "labelvalue")]),
    ("cursor", "cursor position", 0x10, "AH=03h", [("Cursor Position(Row,Column):", "labelvalue")]),
    ("video-mode", "video mode", 0x10, "AH=0Fh", [("Video Mode:", "labelvalue")]),
    ("kbd-rate", "keyboard repeat rate", 0x16, "AX=0305h", [("Setting auto repeat rate", "labelvalue")]),
    ("dasd-type", "DASD type", 0x13, "AX=1500h", [("DASD type:", "labelvalue")]),
    ("edd", "EDD installation check", 0x13, "AH=41h", [("EDD:", "labelvalue")]),
    ("a20-enable", "A20 enable", 0, "", [("A20 enabled", "value"), ("A20 gate not responding!", "value")]),
    ("cli", "disable interrupts", 0, "", [("Interrupts disabled.", "value")]),
    ("protected-mode", "back to protected mode", 0, "", [("In protected mode.", "value")]),
    ("halt", "halt", 0, "", [("Halting.", "value")]),
]
_INDEX = {s[0]: i for i, s in enumerate(STEPS)}
ERROR_LINES = ("Can not A20 line.", "A20 gate not responding!")
# an E820 entry: length, base and type at their printed widths (16, 16 and 8 hex digits)
_E820 = re.compile(r"([0-9A-F]{16}) @ ([0-9A-F]{16}) type: ([0-9A-F]{8})")
_FIRST_STEPS = 5  # a transcript whose banner was damaged still starts with one of these
_MIN_MATCHES = 3


def _unquote(text: str) -> str:
    t = text
    while t.startswith(">"):
        t = t[1:].lstrip(" ") if t[1:2] in (" ", ">") or len(t) == 1 else t[1:]
    return t


def _body(text: str) -> str:
    return _unquote(strip_ts(text)).rstrip()


def match(text: str) -> tuple[int, str, str] | None:
    """(step index, role, value text) for a classic transcript line, else None."""
    t = _body(text)
    if not t:
        return None
    for i, (_sid, _title, _int, _fn, events) in enumerate(STEPS):
        for prefix, role in events:
            if prefix == " @ ":
                if " @ " in t and "type:" in t:
                    return i, role, t
                continue
            if t.startswith(prefix.rstrip()):
                if prefix == "kexec_test " and "starting" not in t:
                    continue
                return i, role, t[len(prefix):].strip()
            if role in ("labelvalue", "label") and len(t) >= 4 and prefix.startswith(t):
                return i, "label", ""  # a label cut mid-way
    return None


def _is_banner(text: str) -> bool:
    return "kexec_test " in text and "starting" in text


def classic_start(lines: list[Line]) -> int | None:
    """Index of the transcript's first line: its banner, or (the banner damaged) the first of
    its early lines after the hand-off when enough of its lines are there."""
    start = next((i for i, ln in enumerate(lines) if _is_banner(ln.text)), None)
    if start is not None:
        return start
    after = next((i + 1 for i, ln in enumerate(lines) if is_handoff(ln.text)), 0)
    hits = [(i, m[0]) for i in range(after, len(lines)) if (m := match(lines[i].text)) and m[1] != "label"]
    if len({s for _i, s in hits}) < _MIN_MATCHES or hits[0][1] > _FIRST_STEPS:
        return None
    return hits[0][0]


def looks_classic(lines: list[Line]) -> bool:
    return classic_start(lines) is not None


def _call(i: int) -> str:
    _sid, _t, n, fn, _e = STEPS[i]
    return ("builtin" if not n else f"int {n:02X}h") + (f" {fn}" if fn else "")


@dataclass
class _Read:
    """What the transcript's lines show, step by step."""

    status: dict[int, str]
    results: dict[int, dict] = field(default_factory=dict)
    e820: list[dict] = field(default_factory=list)
    last: tuple[int, str, str] | None = None
    last_at: int = -1
    reset_at: int | None = None
    damaged: dict[int, list[str]] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)  # calls whose line never arrived
    damage: Damage = field(default_factory=Damage)


def _read(lines: list[Line], start: int) -> _Read:
    r = _Read(status={i: StepStatus.NOT_REACHED.value for i in range(len(STEPS))})
    pending: list[str] = []
    prev = None
    for n in range(start, len(lines)):
        text = lines[n].text
        if text == prev and text.strip():
            r.damage.duplicated += 1  # the wire repeated it: its banner twice is no reset
            continue
        prev = text
        if n > start and (_is_banner(text) or any(b in text for b in RESET_BANNERS)):
            r.reset_at = n
            break
        m = match(text)
        if m is None:
            if _body(text).strip():
                pending.append(text)
                r.damage.lines += 1
                r.damage.unparsed += 1
                if len(r.damage.quoted) < 12:
                    r.damage.quoted.append(quote(text))
            continue
        i, role, value = m
        if pending:
            r.damaged.setdefault(r.last[0] if r.last else 0, []).extend(pending)
            pending = []
        r.last, r.last_at = m, n
        r.status[i] = StepStatus.ERROR.value if _body(text).strip() in ERROR_LINES else StepStatus.OK.value
        if not value or role == "label":
            continue
        if STEPS[i][0] == "e820" and " @ " in value:
            e = _E820.fullmatch(value.strip())
            if e is None:
                r.damaged.setdefault(i, []).append(text)
                continue
            r.e820.append({"base": int(e[2], 16), "length": int(e[1], 16), "type": int(e[3], 16)})
            r.results[i] = {"entries": r.e820}
        else:
            r.results[i] = {"text": value}
    if pending:
        r.damaged.setdefault(r.last[0] if r.last else 0, []).extend(pending)
        r.damage.trailing = True
    _lost_lines(r)
    return r


# The APM chain may stop early, and only at two points (Debian kexec-tools 2.0.25's
# kexec_test.static, disassembled): after the install check (CF=1 or BX != 'PM') and after the
# connect (CF=1), each straight to 'APM test done.'.  So its calls come in pairs, each pair whole
# or absent, the second only after the first: a call is lost when its partner or a later pair
# was printed.
_APM_PAIRS = (("apm-disconnect", "apm-connect"), ("apm-disable", "apm-disconnect2"))


def _lost_lines(r: _Read) -> None:
    """Its lines come in one fixed order: a call missing before the last line seen was lost."""
    if r.last is None:
        return
    seen = {STEPS[i][0] for i, st in r.status.items() if st != StepStatus.NOT_REACHED.value}
    for i in range(r.last[0]):
        sid = STEPS[i][0]
        if r.status[i] != StepStatus.NOT_REACHED.value:
            continue
        pair = next((k for k, p in enumerate(_APM_PAIRS) if sid in p), None)
        if pair is not None and not seen & {x for p in _APM_PAIRS[pair:] for x in p}:
            continue  # the chain stopped before this pair
        r.lost.append(i)
        r.damage.gaps += 1


def _stop(r: _Read, lines: list[Line], stop_reason: str, silence_s: float | None) -> Hang | None:
    """Where the transcript stopped, from its last line's role."""
    if r.last is None or STEPS[r.last[0]][0] == "halt":
        return None
    i, role, value = r.last
    if role == "label" or (role == "labelvalue" and not value):
        hang_i, between = i, False
    elif i + 1 < len(STEPS):
        hang_i, between = i + 1, STEPS[i + 1][4][0][1] != "value"
    else:
        return None
    sid, title = STEPS[hang_i][0], STEPS[hang_i][1]
    last_line = next((ln.text for ln in reversed(lines[:r.reset_at] if r.reset_at else lines) if ln.text), "")
    note = None
    if between:
        note = f"after '{_body(last_line)}', before the label of the next call"
    elif sid == "e801":
        note = "the E820 loop ended or its next call hung (E820 prints after each call)"
    elif sid == "sti":
        note = "transcript ends at 'In real mode.': interrupts enabled and never came back"
    measured = stop_reason == StopReason.TIMEOUT.value and silence_s is not None
    return Hang(step=sid, index=hang_i, title=title, int=STEPS[hang_i][2], function=STEPS[hang_i][3],
                call=_call(hang_i), drive=0x80 if sid in ("dasd-type", "edd") else None,
                between_steps=between, note=note, last_line=last_line, silence_s=silence_s,
                line_index=r.last_at, measured=measured,
                definite=not r.damage.trailing and (measured or stop_reason == StopReason.REPLAY.value))


def _steps(r: _Read) -> list[StepResult]:
    out = []
    for i, (sid, title, n, fn, _e) in enumerate(STEPS):
        s = StepResult(id=sid, index=i, title=title, int=n, function=fn, call=_call(i),
                       status=r.status[i], result=r.results.get(i, {}),
                       reason="the BIOS refused" if r.status[i] == StepStatus.ERROR.value else None)
        if i in r.damaged:
            s.status, s.damaged = StepStatus.UNKNOWN.value, [quote(t) for t in r.damaged[i][:4]]
            s.reason = "evidence damaged: a line that is none of kexec_test's"
        elif i in r.lost:
            s.status, s.reason = StepStatus.UNKNOWN.value, "no line for this call arrived (lost on the wire)"
        out.append(s)
    return out


def analyze_classic(lines: list[Line], *, stop_reason: str = "replay",
                    silence_s: float | None = None) -> Analysis:
    """The Analysis of a classic kexec_test transcript (steps named after its labels)."""
    start = classic_start(lines)
    a = Analysis(verdict="", source="classic", stop_reason=stop_reason, lines=lines)
    handoff = next((i for i in range(start if start is not None else len(lines)) if is_handoff(lines[i].text)), None)
    r = _read(lines, start) if start is not None else _Read(status={i: "not-reached" for i in range(len(STEPS))})
    kend = kernel_end(handoff, start, r.reset_at, len(lines))
    texts = [ln.text for ln in lines]
    a.kernel_trouble = trouble_by_phase(texts, handoff, kend)
    a.handoff = handoff_info(lines, handoff, kend)
    a.steps, a.e820, a.damage = _steps(r), r.e820, r.damage
    a.damage.unknown_steps = sum(1 for s in a.steps if s.status == StepStatus.UNKNOWN.value)
    # every BIOS call answered once 'In protected mode.' is printed; 'Halting.' only follows
    last_id = STEPS[r.last[0]][0] if r.last is not None else None
    finished = last_id in ("halt", "protected-mode") and not (last_id != "halt" and r.damage.trailing)
    stop = _stop(r, lines, stop_reason, silence_s) if not finished else None
    reset = None
    if r.reset_at is not None:
        loc = stop or Hang()
        reset = Reset(**{k: getattr(loc, k) for k in Hang.__dataclass_fields__}, banner=lines[r.reset_at].text)
        reset.line_index, reset.definite = r.reset_at, not r.damage.trailing
    a.garbled = garbled_stats(lines, handoff)
    e = Evidence(source="classic", stop_reason=stop_reason, silence_s=silence_s, started=start is not None,
                 payload_seen=start is not None, finished=finished, done_missing=last_id == "protected-mode",
                 stopped=stop if reset is None else None, reset=reset, steps=a.steps, trouble=a.kernel_trouble,
                 handoff_seen=handoff is not None, kernel_texts=texts[:kend], garbled=a.garbled,
                 damage=a.damage)
    verdict, a.summary, a.hints = decide(e)
    a.verdict = verdict.value
    a.hang, a.reset = e.stopped, reset
    if verdict.value in ("hung", "reset") and (reset or stop) and (reset or stop).index is not None:
        a.steps[(reset or stop).index].status = StepStatus.HUNG.value
    a.payload = {"version": (lines[start].text.split("kexec_test ", 1)[1].split()[0]
                             if start is not None and _is_banner(lines[start].text) else None), "build_id": None}
    a.before_after = {"available": False, "differences": []}  # the classic test takes no snapshot
    a.signature = signature(a, None)
    return a
