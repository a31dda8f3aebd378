"""Stage 3: where the trace stopped (a hang, or where a lost console or a cut log left it) and
where a reset happened — and whether the intact evidence pins it there.

A stop is *definite* only when the last intact payload line is that step's begin line and no
damaged line follows it, on a live console whose silence was measured (a timeout) or in a saved
log (which cannot say more); between two steps only a measured silence makes it definite.
"""

from __future__ import annotations

from ..trace import Line
from .assemble import Assembly
from .catalog import step_info
from .model import Hang, Reset, StopReason
from .steps import call_label

_MEASURED = StopReason.TIMEOUT.value


def _drive(it: str | None) -> int | None:
    if it and it.startswith("dl="):
        return int(it[3:], 16)  # format-checked: two hex digits
    return None


def _last_line(lines: list[Line], end: int | None) -> str:
    for i in range(len(lines) - 1 if end is None else end - 1, -1, -1):
        if lines[i].text:
            return lines[i].text
    return ""


def where_stopped(asm: Assembly, names: list[str], lines: list[Line], stop_reason: str,
                  silence_s: float | None, end: int | None = None) -> Hang:
    """The step the trace stopped in (its begin the last intact payload line), or the gap
    between the last step that ended and the next one."""
    measured = stop_reason == _MEASURED and silence_s is not None
    last = _last_line(lines, end)
    if asm.open_call is not None:
        st, c = asm.open_call
        info = step_info(st.name, st.index, st.int_no, st.ax)
        drive = _drive(c.iteration)
        definite = not asm.damage.trailing and (measured or stop_reason == StopReason.REPLAY.value)
        return Hang(step=st.name, index=st.index, title=info.title, int=info.int_no,
                    function=info.function, call=call_label(info, drive), drive=drive,
                    iteration=c.iteration, last_line=last, silence_s=silence_s, line_index=c.line,
                    measured=measured, definite=definite)
    last_end = max((i for i, s in asm.steps.items() if s.calls or s.skipped is not None), default=-1)
    nxt = last_end + 1
    nm = names[nxt] if nxt < len(names) else None
    info = step_info(nm) if nm else None
    note = (f"after step {last_end:03d} ended, before the next began" if last_end >= 0
            else "after entering real mode, before the first step")
    return Hang(step=nm, index=nxt if nm else None, title=info.title if info else None,
                int=info.int_no if info else None, function=info.function if info else None,
                call=call_label(info) if info else None, between_steps=True, note=note,
                last_line=last, silence_s=silence_s, measured=measured,
                definite=measured and not asm.damage.trailing)


def where_reset(asm: Assembly, names: list[str], lines: list[Line]) -> Reset:
    """The step open when a reset banner came (if the payload had started)."""
    at = asm.reset_at
    banner = lines[at].text
    if not asm.started:
        return Reset(banner=banner, line_index=at, definite=True,
                     note="the machine restarted after the kexec hand-off, before the payload printed")
    h = where_stopped(asm, names, lines, StopReason.RESET.value, None, end=at)
    if asm.open_call is None:
        h.step = h.index = h.title = h.int = h.function = h.call = None
    fields = {k: getattr(h, k) for k in Hang.__dataclass_fields__}
    fields.update(line_index=at, definite=not asm.damage.trailing, measured=False)
    return Reset(**fields, banner=banner)
