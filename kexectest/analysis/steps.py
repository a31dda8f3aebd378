"""Stage 2: assembled steps -> `StepResult`s, every call through its decoder; a step whose
evidence is not whole is `unknown`, with the reason and its damaged lines quoted."""

from __future__ import annotations

from . import decoders as dec
from .assemble import Assembly, Call, StepTrace
from .catalog import STEP_IDS, StepInfo, int_label, step_info
from .decoders import Regs, decode_call
from .limits import step_count
from .model import StepResult, StepStatus

OK, ERROR, HUNG, SKIPPED, UNKNOWN = (s.value for s in (StepStatus.OK, StepStatus.ERROR, StepStatus.HUNG,
                                                       StepStatus.SKIPPED, StepStatus.UNKNOWN))


def call_label(info: StepInfo, drive: int | None = None) -> str:
    s = int_label(info.int_no)
    if info.function:
        s += f" {info.function}"
    if drive is not None:
        s += f", drive {drive:02X}h"
    return s


def step_names(payload, asm: Assembly) -> list[str]:
    """The step table: the payload ELF's, else as long as the banner (or the done line) says,
    ids from the trace, then the catalogue."""
    if payload is not None and getattr(payload, "steps", None):
        return [getattr(s, "name", s) for s in payload.steps]
    count = step_count(asm.banner)
    if count is None:  # the banner lost: the done line counts the steps too
        count = step_count(asm.done)
    if count is None:
        count = max(asm.steps, default=-1) + 1
    return [asm.steps[i].name if i in asm.steps else STEP_IDS[i] if i < len(STEP_IDS)
            else f"step-{i:03d}" for i in range(count)]


def _dump_len(payload, index: int) -> int | None:
    steps = getattr(payload, "steps", None) or []
    return getattr(steps[index], "dump_len", None) if index < len(steps) else None


def _incomplete(st: StepTrace, payload) -> str | None:
    """Why the data of a step's calls is not whole (the ELF's dump length, or the length the
    step's other calls dumped), or None."""
    want = _dump_len(payload, st.index)
    ended = [c for c in st.calls if c.end is not None]
    for c in ended:
        got = len(c.data.get("", b""))
        cf = c.end.fields.get("cf") == "1"
        if want and got != want and (got or not cf):
            return f"{got} of its {want} data bytes arrived"
    sizes = [len(c.data.get("", b"")) for c in ended if c.end.fields.get("cf") == "0"]
    if len(sizes) > 1 and min(sizes) < max(sizes):
        return f"a call's data lines are missing ({min(sizes)} of {max(sizes)} bytes)"
    return None


def call_us(end) -> int | None:
    """The call's duration measured on the target (the end line's `us=`, payloads/tsc.S), or
    None: a payload without a calibrated TSC prints none, and FFFFFFFF says the count did not
    fit (71 minutes or more, or a TSC that went backwards), so it is no duration either."""
    us = end.hex("us")
    return None if us is None or us == 0xFFFFFFFF else us


def step_us(calls: list[dict]) -> int | None:
    """A step's time on the target: its calls' durations added up, None unless every ended call
    was timed."""
    times = [c.get("target_us") for c in calls]
    return sum(times) if times and None not in times else None


def _decode_call(st: StepTrace, c: Call, last: bool, n: int) -> tuple[dict, dec.Decoded]:
    regs = Regs(c.end)
    data = {k: bytes(v) for k, v in c.data.items()}
    d = decode_call(st.name, regs, data)
    if st.name == "e820" and d.status == ERROR and regs.cf and last and n > 0:
        d = dec.Decoded(OK, {"end_of_list": True})  # CF=1 after entries ends the map
    return ({"iteration": c.iteration, "registers": regs.raw(), "status": d.status,
             "reason": d.reason, "result": d.result, "data": {k: v.hex() for k, v in data.items()},
             "target_us": call_us(c.end)}, d)


def decode_step(st: StepTrace) -> tuple[str, dict, list[dict], str | None, list[dict]]:
    """status, result, calls, reason, E820 entries of one step's ended calls."""
    calls, results, reasons, e820, statuses = [], {}, [], [], []
    drives: dict[str, dict] = {}  # a per-drive step's results, by drive number
    finished = [c for c in st.calls if c.end is not None]
    for n, c in enumerate(finished):
        entry, d = _decode_call(st, c, n == len(finished) - 1, n)
        calls.append(entry)
        statuses.append(d.status)
        if d.reason and d.status == ERROR:
            reasons.append((c.iteration + ": " if c.iteration else "") + d.reason)
        if st.name == "e820":
            if d.result.get("entry"):
                e820.append(d.result["entry"])
        elif c.iteration and c.iteration.startswith("dl="):
            drives[c.iteration[3:]] = dict(d.result, status=d.status)
        else:
            results = d.result
    if st.name == "e820":
        results = {"entries": e820, "count": len(e820)}
    elif drives:
        if len(drives) < len(finished):  # the payload names the drive of every per-drive call
            reasons.append("a call without its drive (dl=) in a per-drive step: left out of "
                           "the drives' results")
        results = {"drives": drives}
    return ERROR if ERROR in statuses else OK, results, calls, "; ".join(reasons) or None, e820


def _result(index: int, name: str, st: StepTrace | None) -> StepResult:
    info = step_info(name, index, st.int_no if st else None, st.ax if st else None)
    return StepResult(id=name, index=index, title=info.title, int=info.int_no,
                      function=info.function, call=call_label(info))


def build_steps(asm: Assembly, names: list[str], payload):
    """The StepResults of every step in the table (and any beyond it), and the E820 map.  The
    step the trace stopped in is `unknown` here; the verdict makes it `hung` if it proves that."""
    out: list[StepResult] = []
    e820: list[dict] = []
    open_index = asm.open_call[0].index if asm.open_call is not None else None
    reached = max([i for i, s in asm.steps.items() if s.calls or s.skipped is not None], default=-1)
    finished = asm.done is not None
    for idx in [*range(len(names)), *sorted(set(asm.steps) - set(range(len(names))))]:
        st = asm.steps.get(idx)
        r = _result(idx, names[idx] if idx < len(names) else st.name, st)
        out.append(r)
        if st is not None and st.skipped is not None and not st.calls and not st.unknown:
            r.status, r.reason, r.result = SKIPPED, st.skipped, {"reason": st.skipped}
        elif st is not None and st.calls:
            r.status, r.result, r.calls, r.reason, got = decode_step(st)
            if st.t_first is not None and idx != open_index:
                r.duration_s = round(st.t_last - st.t_first, 6)
            why = _incomplete(st, payload)
            if why:
                st.unknown.append(why)
            if idx != open_index and not st.unknown:  # every call there, and ended
                r.target_us = step_us(r.calls)
            if got and not st.unknown:
                e820 = [{k: e[k] for k in ("base", "length", "type", "type_name")} for e in got]
        if idx == open_index:
            r.status, r.damaged = UNKNOWN, list(st.damaged)
            r.reason = "it began; no end line came before the trace stopped" + (
                "; " + "; ".join(st.unknown) if st.unknown else "")
        elif st is not None and st.unknown:
            r.status, r.damaged = UNKNOWN, list(st.damaged)
            r.reason = "evidence damaged: " + "; ".join(st.unknown)
        elif st is None and (finished and idx < len(names) or idx < reached):
            r.status, r.reason = UNKNOWN, "no line for this step arrived (lost on the wire)"
    return out, e820
