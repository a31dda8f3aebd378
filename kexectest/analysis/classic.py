"""Transcripts of the classic kexec-tools kexec_test, read into the same Analysis shape.

Its lines carry no step ids, so where it hung follows from which labels are printed before their
call and which results after it (shared/notes/bios-calls.md, last section): a label line without
its value names the call that hung; a result line printed after its call, when last, means the
*next* call hung; a transcript ending at `In real mode.` hung on `sti`.
"""

from __future__ import annotations

from ..trace import Line
from .kernel import HANDOFF, KERNEL_HINTS, RESET_BANNERS, find_trouble, strip_ts
from .model import Analysis
from .signature import signature

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


def _unquote(text: str) -> str:
    t = text
    while t.startswith(">"):
        t = t[1:].lstrip(" ") if t[1:2] in (" ", ">") or len(t) == 1 else t[1:]
    return t


def match(text: str) -> tuple[int, str, str] | None:
    """(step index, role, value text) for a classic transcript line, else None."""
    t = _unquote(strip_ts(text)).rstrip()
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


def looks_classic(lines: list[Line]) -> bool:
    return any("kexec_test " in ln.text and "starting" in ln.text for ln in lines)


def _call(i: int) -> str:
    _sid, _t, n, fn, _e = STEPS[i]
    return ("builtin" if not n else f"int {n:02X}h") + (f" {fn}" if fn else "")


def analyze_classic(lines: list[Line], *, stop_reason: str = "replay",
                    silence_s: float | None = None) -> Analysis:
    """The Analysis of a classic kexec_test transcript (steps named after its labels)."""
    start = next((i for i, ln in enumerate(lines) if "kexec_test " in ln.text and "starting" in ln.text), None)
    a = Analysis(verdict="", source="classic", stop_reason=stop_reason, lines=lines)
    kend = start if start is not None else len(lines)
    handoff = next((i for i in range(kend) if any(h in lines[i].text for h in HANDOFF)), None)
    a.kernel_trouble = find_trouble([ln.text for ln in lines[:kend]])
    a.handoff = {"seen": handoff is not None, "line": lines[handoff].text if handoff is not None else None}
    status = {i: "not-reached" for i in range(len(STEPS))}
    results: dict[int, dict] = {}
    last: tuple[int, str, str] | None = None
    reset_at = None
    e820 = []
    for n in range(start if start is not None else len(lines), len(lines)):
        text = lines[n].text
        if n > start and ("kexec_test " in text and "starting" in text or any(b in text for b in RESET_BANNERS)):
            reset_at = n
            break
        m = match(text)
        if m is None:
            continue
        i, role, value = m
        last = m
        status[i] = "ok"
        if _unquote(strip_ts(text)).strip() in ERROR_LINES:
            status[i] = "error"
        if value and role != "label":
            if STEPS[i][0] == "e820" and " @ " in value:
                try:
                    ln_s, rest = value.split(" @ ")
                    base_s, typ = rest.split(" type: ")
                    if max(len(ln_s), len(base_s), len(typ)) > 16:
                        raise ValueError("wider than an E820 field")
                    e820.append({"base": int(base_s, 16), "length": int(ln_s, 16), "type": int(typ, 16)})
                except ValueError:
                    pass
                results[i] = {"entries": e820}
            else:
                results[i] = {"text": value}
    if last is None and start is not None:  # the start line was found, behind text match() does not strip
        last, status[0] = (0, "value", ""), "ok"
    a.e820 = e820
    hang_i = between = None
    finished = last is not None and STEPS[last[0]][0] == "halt"
    if last is not None and not finished:
        i, role, value = last
        if role == "label" or (role == "labelvalue" and not value):
            hang_i, between = i, False
        elif i + 1 < len(STEPS):
            hang_i = i + 1
            between = STEPS[hang_i][4][0][1] != "value"
        if hang_i is not None:
            status[hang_i] = "hung"
    for i, (sid, title, n, fn, _e) in enumerate(STEPS):
        a.steps.append({"id": sid, "index": i, "title": title, "int": n, "function": fn, "call": _call(i),
                        "status": status[i], "result": results.get(i, {}), "calls": [],
                        "reason": "the BIOS refused" if status[i] == "error" else None})
    a.payload = {"version": (lines[start].text.split("kexec_test ", 1)[1].split()[0]
                             if start is not None else None), "build_id": None}
    last_line = next((ln.text for ln in reversed(lines[:reset_at] if reset_at else lines) if ln.text), "")
    errors = [s for s in a.steps if s["status"] == "error"]
    if start is None:
        a.verdict = "no-output" if not any(any(h in ln.text for h in KERNEL_HINTS) for ln in lines) or handoff \
            else "died-before-handoff"
        if any(t["fatal"] for t in a.kernel_trouble):
            a.verdict = "died-before-handoff"
        a.summary = f"{a.verdict}: no kexec_test line"
    elif reset_at is not None:
        a.verdict = "reset"
        a.reset = {"step": STEPS[hang_i][0] if hang_i is not None else None, "banner": lines[reset_at].text,
                   "line_index": reset_at}
        a.summary = f"reset: '{lines[reset_at].text[:60]}' appeared"
    elif finished:
        a.verdict = "failed-steps" if errors else "completed"
        a.summary = (f"failed-steps: {', '.join(s['id'] for s in errors)}" if errors
                     else "completed: classic kexec_test reached Halting.")
    else:
        a.verdict = "interrupted" if stop_reason == "interrupted" else "hung"
        sid, title = STEPS[hang_i][0], STEPS[hang_i][1]
        note = None
        if between:
            note = f"after '{_unquote(strip_ts(last_line))}', before the label of the next call"
        elif sid == "e801":
            note = "the E820 loop ended or its next call hung (E820 prints after each call)"
        elif sid == "sti":
            note = "transcript ends at 'In real mode.': interrupts enabled and never came back"
        a.hang = {"step": sid, "index": hang_i, "title": title, "int": STEPS[hang_i][2],
                  "function": STEPS[hang_i][3], "call": _call(hang_i), "drive": 0x80 if sid in ("dasd-type", "edd") else None,
                  "between_steps": bool(between), "note": note, "last_line": last_line, "silence_s": silence_s}
        a.summary = f"{a.verdict} at classic step {sid} ({_call(hang_i)})" + (f": {note}" if note else "")
    a.signature = signature(a, None)
    return a


