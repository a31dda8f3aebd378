"""Analysis of one capture of our payload's trace: records assembled into steps, steps decoded,
the hang or reset located, the verdict.  Shared by `run`, `report`, the lab and sweeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..trace import Line, Record
from . import decoders as dec
from .before_after import before_after
from .catalog import STEP_IDS, StepInfo, int_label, step_info
from .decoders import Regs, decode_call
from .findings import state_findings
from .kernel import KERNEL_HINTS, find_trouble, strip_ts
from .livestate import LiveState
from .model import Analysis
from .signature import signature

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


_NONPRINT = re.compile(r"[^\x20-\x7e\t]")
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
        elif i < len(STEP_IDS):
            names.append(STEP_IDS[i])
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
        from ..target.snapshot import parse_snapshot
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
