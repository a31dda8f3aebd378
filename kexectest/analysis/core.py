"""Analysis of one capture of our payload's trace, as stages: records assembled into steps
(assemble.py), steps decoded (steps.py), the kernel's part read by phase (handoff.py), the stop
or reset located (location.py), the verdict ladder (verdict.py), timing (timing.py), and what
surrounds the verdict (findings, before/after, signature).  Shared by `run`, `report`, the lab
and sweeps.
"""

from __future__ import annotations

from ..target.snapshot import parse_snapshot
from ..trace import Line
from . import catalog
from .assemble import Assembly, assemble
from .before_after import before_after
from .devices import DEVICES_KEYS, diagnose
from .findings import state_findings
from .handoff import handoff_info, kernel_end, trouble_by_phase
from .handoff_params import handoff_params
from .limits import step_count
from .location import where_reset, where_stopped
from .model import Analysis, StepStatus
from .signature import signature
from .steps import build_steps, step_names
from .timing import garbled_stats, payload_timing
from .verdict import Evidence, decide

_ANSWERED = frozenset({StepStatus.OK.value, StepStatus.ERROR.value, StepStatus.SKIPPED.value,
                       StepStatus.UNKNOWN.value})


def analyze(lines: list[Line], *, stop_reason: str = "replay", silence_s: float | None = None,
            payload=None, stats: dict | None = None) -> Analysis:
    """The verdict and everything around it, from the lines of one capture.  With `payload`
    (the ELF that ran), its own step table names the steps (titles, optional services)."""
    with catalog.using(payload):
        return _analyze(lines, stop_reason, silence_s, payload, stats)


def _analyze(lines, stop_reason, silence_s, payload, stats) -> Analysis:
    names_of = _elf_names(payload)
    asm = assemble(lines, names_of)
    names = step_names(payload, asm)
    a = Analysis(verdict="", stop_reason=stop_reason, lines=lines)
    a.steps, a.e820 = build_steps(asm, names, payload)
    _chain(asm, a)
    first_payload = min([x for x in (asm.first_kt, *asm.damaged_at[:1]) if x is not None], default=None)
    kend = kernel_end(asm.handoff_at, first_payload, asm.reset_at, len(lines))
    texts = [ln.text for ln in lines]
    a.kernel_trouble = trouble_by_phase(texts, asm.handoff_at, kend)
    a.handoff = handoff_info(lines, asm.handoff_at, kend)
    a.garbled = garbled_stats(lines, asm.handoff_at, stats)
    e = _evidence(asm, a, names, stop_reason, silence_s, texts[:kend])
    verdict, a.summary, a.hints = decide(e)
    a.verdict = verdict.value
    _place(a, e, verdict.value)
    a.damage = asm.damage
    a.damage.unknown_steps = sum(1 for s in a.steps if s.status == StepStatus.UNKNOWN.value)
    a.timing = payload_timing(lines, asm.payload_lines, asm.banner)
    _identity(a, asm, payload)
    snap = parse_snapshot(ln.text for ln in lines[:kend + 1])
    _devices(a, [lines[i] for i in asm.payload_lines], snap)
    _surroundings(a, snap)
    a.handoff_params = handoff_params(asm.bootparams, a.e820, a.steps)
    return a


def _elf_names(payload):
    steps = getattr(payload, "steps", None) or []
    if not steps:
        return None
    names = [getattr(s, "name", s) for s in steps]
    return lambda i: names[i] if 0 <= i < len(names) else None


def _evidence(asm: Assembly, a: Analysis, names, stop_reason, silence_s, kernel_texts) -> Evidence:
    """What the assembled trace proved, for the verdict ladder."""
    done_missing = (asm.done is None and asm.started and asm.open_call is None
                    and not asm.damage.trailing and asm.reset_at is None and bool(a.steps)
                    and all(s.status in _ANSWERED for s in a.steps[:len(names)]))
    running = asm.started and asm.done is None and not done_missing and asm.reset_at is None
    stopped = where_stopped(asm, names, a.lines, stop_reason, silence_s) if running else None
    reset = where_reset(asm, names, a.lines) if asm.reset_at is not None else None
    return Evidence(
        source="payload", stop_reason=stop_reason, silence_s=silence_s, started=asm.started,
        payload_seen=asm.payload_seen, finished=asm.done is not None or done_missing,
        done_missing=done_missing, stopped=stopped, reset=reset, steps=a.steps,
        trouble=a.kernel_trouble, handoff_seen=asm.handoff_at is not None,
        kernel_texts=kernel_texts, garbled=a.garbled, damage=asm.damage)


def _place(a: Analysis, e: Evidence, verdict: str) -> None:
    """The located stop becomes the report's hang (a reset its reset); the step the trace
    stopped in is `hung` only when the verdict says so, or when a reset cut it short."""
    # a "Linux version" line after a crash in the hand-off is a crash kernel's or a debugger's
    # banner, not a reset: the report's reset is the verdict's
    a.reset = e.reset if verdict == "reset" else None
    a.hang = e.stopped
    loc = e.stopped if verdict == "hung" else (e.reset if verdict == "reset" and e.reset.definite
                                              and e.started else None)
    if loc is None or loc.between_steps or loc.index is None:
        return
    for s in a.steps:
        if s.index == loc.index:
            s.status, s.reason, s.duration_s = StepStatus.HUNG.value, None, None


def _chain(asm: Assembly, a: Analysis) -> None:
    """After `done ... next=int19`: did the firmware boot again (the int19-boot step)?"""
    if asm.done is None or asm.done.fields.get("next") != "int19":
        return
    chain = next((s for s in a.steps if s.id == "int19-boot"), None)
    if chain is None:
        return
    if asm.live.chain_line is not None:
        chain.status, chain.result = StepStatus.OK.value, {"booted_again": True,
                                                           "evidence": asm.live.chain_line}
    else:
        chain.status, chain.result = StepStatus.ERROR.value, {"booted_again": False}
        chain.reason = "nothing booted after int 19h within the capture"


def _identity(a: Analysis, asm: Assembly, payload) -> None:
    """The payload's banner and the machine state at entry."""
    a.state = asm.state
    a.findings = state_findings(asm.state)
    b = asm.banner
    if b is None:
        return
    build = b.fields.get("build")  # printed upper case; ELF tools show build ids lower case
    a.payload = {"version": b.fields.get("version"), "build_id": build.lower() if build else None,
                 "entry": b.fields.get("entry"), "uart": b.fields.get("uart"), "steps": step_count(b)}
    # how it was entered (payloads/entry16.S), where the banner says: older builds do not
    a.payload.update({k: b.fields[k] for k in ("via", "drive") if b.fields.get(k)})
    want = getattr(payload, "build_id", None)
    if want and build and want.upper() != build.upper():
        a.findings.append({"kind": "build-mismatch",
                           "text": f"trace build id {build} does not match the payload ELF ({want})"})


def _devices(a: Analysis, records: list[Line], snap: dict | None) -> None:
    """The device behind every step (the payload's PCI scan, the EDD device paths, the
    snapshot's drivers), a cause for every failed or hung call, and the one-line verdict led
    by the cause of the call that stopped the run."""
    loc = a.hang or a.reset
    got = diagnose(records, snap, a.steps, loc)
    for s in a.steps:
        s.device = got["steps"].get(s.id, {}).get("device")
    if loc is not None and not loc.between_steps:
        loc.device = got["hang_device"]
    a.devices = {k: got[k] for k in DEVICES_KEYS}
    a.causes = got["causes"]
    if got["headline"]:
        a.summary = f"{a.summary}: {got['headline']}"


def _surroundings(a: Analysis, snap: dict | None) -> None:
    """The kernel's view before kexec against the payload's answers, and the signature."""
    a.before_after = before_after(snap, a.e820, a.steps)
    if snap and snap.get("dmi"):
        a.before_after["firmware"] = {k: snap["dmi"].get(k) for k in (
            "sys_vendor", "product_name", "bios_vendor", "bios_version", "bios_date") if snap["dmi"].get(k)}
    if snap and snap.get("kernel"):
        a.before_after["kernel"] = snap["kernel"]
    a.signature = signature(a, snap)
