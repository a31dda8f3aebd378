"""Stage 4: the verdict ladder, one table for our payload's trace and the classic kexec_test's.

`Evidence` is what a trace proved (each source fills it in its own way); `LADDER` is read top
down and the first row whose condition holds gives the verdict and words the summary.  Damaged
or lost lines never count as the firmware's answer: a trace that ends in them, or a step whose
lines are damaged, leads to `garbled` (or whatever the intact lines still prove).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import Verdict
from .kernel import kernel_seen, stops, strip_ts
from .model import CONSOLE_LOST, INFRASTRUCTURE, Damage, Hang, Reset, StepResult, StopReason

_STOP_WORDS = {"eof": "console lost (end of stream)", "lost": "console lost (connection broke)",
               "max-time": "capture cut short by the overall time limit",
               "interrupted": "interrupted by the user", "final": "capture stopped",
               "reset": "capture stopped on a reset it could not show",
               "stage-failed": "a stage failed", "command-failed": "the trigger command failed"}


@dataclass
class Evidence:
    source: str  # "payload" | "classic"
    stop_reason: str
    silence_s: float | None
    started: bool  # intact payload (or classic) lines arrived
    payload_seen: bool  # payload lines arrived, intact or damaged
    finished: bool  # the done line (Halting.), or every step of the table accounted for
    done_missing: bool  # finished without its done line
    stopped: Hang | None  # where a running trace stopped
    reset: Reset | None
    steps: list[StepResult]
    trouble: list[dict]  # Trouble dicts with their phase
    handoff_seen: bool
    kernel_texts: list[str]  # the kernel's part of the log
    garbled: dict = field(default_factory=dict)
    damage: Damage = field(default_factory=Damage)

    @property
    def kernel_seen(self) -> bool:
        """The log holds the kernel's own lines (read only when a rung asks)."""
        return kernel_seen(self.kernel_texts)

    def status(self, s: str) -> list[StepResult]:
        return [x for x in self.steps if x.status == s]


@dataclass(frozen=True)
class Rung:
    verdict: Verdict
    holds: Callable[[Evidence], bool]
    words: Callable[[Evidence], str]
    hints: tuple[str, ...] = ()


def _loc(e: Evidence, h: Hang | None) -> str:
    if h is None:  # damage before any step could be placed (a start line not read)
        return "the start"
    if e.source == "classic" and h.step:
        return f"classic step {h.step} ({h.call})"
    if h.step and not h.between_steps:
        return f"step {h.index:03d} {h.step} ({h.call})"
    return h.note + (f" (next: {h.index:03d} {h.step})" if h.step and h.index is not None else "")


def _damage(e: Evidence) -> str:
    d = e.damage
    parts = [f"{d.lines} damaged line{'s' * (d.lines != 1)}"] if d.lines else []
    if d.gaps:
        parts.append(f"{d.gaps} gap{'s' * (d.gaps != 1)} in the step sequence")
    n = len(_unknown(e))
    if n:
        parts.append(f"{n} step{'s' * (n != 1)} unknown")
    return ", ".join(parts)


def _unknown(e: Evidence) -> list[StepResult]:
    """Steps the damage left unknown (not the one the trace stopped in)."""
    at = e.stopped.index if e.stopped is not None and not e.stopped.between_steps else None
    return [s for s in e.status("unknown") if s.index != at]


def _running(e: Evidence) -> bool:
    return e.started and not e.finished and e.reset is None


def _infra(e):
    fatal = next((t for t in e.trouble if t["fatal"]), None)
    return (f"infrastructure-error: {_STOP_WORDS[e.stop_reason]} before the test ran"
            + (f"; the kernel log shows: {strip_ts(fatal['title'])}" if fatal else "")
            + " (the stage's message is in environment.json)")


def _reset(e):
    r = e.reset
    where = (f"during {_loc(e, r)}" if r.step and r.definite else
             "after the payload started" + (" (the lines before it were damaged)" if not r.definite else ""))
    return f"reset {where}: '{r.banner[:60]}' appeared"


def _failed(e):
    bad = e.status("error")
    s = (f"failed-steps: {len(bad)} of {len(e.steps)} steps returned errors: "
         + ", ".join(x.id + (f" ({x.reason})" if x.reason else "") for x in bad[:5])
         + (" ..." if len(bad) > 5 else ""))
    return s + (f"; {_damage(e)}" if e.damage.lines or _unknown(e) else "")


def _finished_unknown(e):
    n = len(e.status("unknown"))
    return (f"garbled: the payload ran to the end but {n} of {len(e.steps)} steps are unknown "
            f"({_damage(e)}); no intact line shows a failure")


def _completed(e):
    if e.source == "classic":
        s = ("completed: classic kexec_test answered every call (its 'Halting.' line did not arrive)"
             if e.done_missing else "completed: classic kexec_test reached Halting.")
    else:
        s = f"completed: all {len(e.steps)} steps answered" + (
            " (its done line did not arrive)" if e.done_missing else "")
    return s + (f" ({_damage(e)}, none in a step)" if e.damage.lines else "")


def _cut(e):
    h = e.stopped
    words = _STOP_WORDS.get(e.stop_reason, f"capture stopped ({e.stop_reason})")
    if e.stop_reason == "interrupted":
        return f"interrupted during {_loc(e, h)}"
    return (f"interrupted: {words} during {_loc(e, h)}: the run's end was not seen, "
            "so this is not a measured hang")


def _trailing(e):
    return (f"garbled: the trace ends in damaged lines after {_loc(e, e.stopped)}: where it "
            f"stopped is unknown ({_damage(e)})")


def _hung(e):
    h = e.stopped
    s = f"hung at {_loc(e, h)}"
    if h.measured:
        s += f" after {h.silence_s:.1f} s of silence"
    else:
        s += " (a saved log: the silence after its last line was not measured)"
    if e.source == "classic" and h.note:
        s += f": {h.note}"
    if e.damage.lines or _unknown(e):
        s += f"; {_damage(e)}"
    return s


def _log_ends(e):
    h = e.stopped
    return (f"interrupted: the log ends {h.note if h.between_steps else 'during ' + _loc(e, h)}"
            + (f" (next: {h.index:03d} {h.step})" if h.between_steps and h.step else "")
            + ": no silence was measured, so it is not a hang the trace proves (a cut log or a "
            "lost line)")


def _all_damaged(e):
    return (f"garbled: {e.damage.lines} payload lines arrived, none intact "
            f"({e.damage.bad_checksum} bad checksum, {e.damage.unparsed} unparsed)")


def _handoff_block(e):
    return next(t for t in e.trouble if t["phase"] == "handoff" and stops(t["kind"]))


def _in_handoff(e):
    t = _handoff_block(e)
    then = (f"; then '{strip_ts(e.reset.banner)[:48]}' (a crash kernel or a debugger, not a reset)"
            if e.reset is not None else "")
    return (f"died-in-handoff: {strip_ts(t['title'])} (after the kernel's hand-off line, "
            f"before any payload line){then}")


def _before_handoff_block(e):
    fatal = [t for t in e.trouble if t["phase"] == "before-handoff" and t["fatal"]]
    if fatal:
        return fatal[0]
    if not e.handoff_seen:
        return next((t for t in e.trouble if t["phase"] == "before-handoff" and stops(t["kind"])), None)
    return None


def _died_before(e):
    t = _before_handoff_block(e)
    if t is None:
        return "died-before-handoff: the kernel log never showed the kexec hand-off message"
    return f"died-before-handoff: {strip_ts(t['title'])}" + (
        "" if t["fatal"] else " (the kernel stalled before its hand-off line)")


def _garbled_stats(e):
    g = e.garbled
    if not _smeared(g):
        return (f"garbled: {g['noisy_lines']} of {g['lines']} lines hold bytes a console never "
                "prints (line noise): what the machine did cannot be read from them")
    return (f"garbled: {g['bytes']} bytes, {g['bad_checksum_lines']} bad-checksum lines, "
            f"{g['ratio_nonprintable']:.0%} non-printable (baud mismatch or line noise)")


def _smeared(g: dict) -> bool:
    ratio = g["nonprintable"] / g["bytes"] if g["bytes"] else 0.0
    return g["bytes"] >= 64 and (ratio > 0.15 or g["bad_checksum_lines"] >= 3)


def _noisy(g: dict) -> bool:
    """Line noise leaves invalid bytes and control characters in many lines (one in five)."""
    return g.get("lines", 0) >= 5 and g.get("noisy_lines", 0) * 5 >= g.get("lines", 0)


def is_garbled(g: dict) -> bool:
    """A baud mismatch smears every byte; line noise damages many lines."""
    return _smeared(g) or _noisy(g)


_NOISE_HINTS = ("check the baud rate on both ends (the payload's divisor and the collector's --baud)",
                "check the cable and ground; line noise damages bytes")

LADDER: list[Rung] = [
    Rung(Verdict.INFRASTRUCTURE_ERROR,
         lambda e: not e.payload_seen and e.stop_reason in INFRASTRUCTURE, _infra),
    Rung(Verdict.RESET, lambda e: e.started and e.reset is not None, _reset),
    Rung(Verdict.FAILED_STEPS, lambda e: e.finished and bool(e.status("error")), _failed),
    Rung(Verdict.GARBLED, lambda e: e.finished and bool(e.status("unknown")), _finished_unknown,
         _NOISE_HINTS),
    Rung(Verdict.COMPLETED, lambda e: e.finished, _completed),
    Rung(Verdict.INTERRUPTED, lambda e: _running(e) and e.stop_reason not in (
        StopReason.TIMEOUT.value, StopReason.REPLAY.value), _cut),
    Rung(Verdict.GARBLED, lambda e: _running(e) and e.damage.trailing, _trailing, _NOISE_HINTS),
    Rung(Verdict.HUNG, lambda e: _running(e) and e.stopped.definite, _hung),
    Rung(Verdict.INTERRUPTED, _running, _log_ends),
    Rung(Verdict.GARBLED, lambda e: e.payload_seen and not e.started, _all_damaged, _NOISE_HINTS),
    Rung(Verdict.DIED_IN_HANDOFF, lambda e: e.handoff_seen and any(
        t["phase"] == "handoff" and stops(t["kind"]) for t in e.trouble), _in_handoff),
    # without its hand-off line on a noisy console, the line may be among the damaged ones: the
    # trouble cannot be placed before it
    Rung(Verdict.DIED_BEFORE_HANDOFF, lambda e: _before_handoff_block(e) is not None and (
        e.handoff_seen or not _noisy(e.garbled)), _died_before),
    Rung(Verdict.GARBLED, lambda e: is_garbled(e.garbled), _garbled_stats, _NOISE_HINTS),
    Rung(Verdict.INTERRUPTED, lambda e: e.stop_reason == StopReason.INTERRUPTED.value,
         lambda e: "interrupted before the payload printed anything"),
    Rung(Verdict.INTERRUPTED, lambda e: e.stop_reason in CONSOLE_LOST,
         lambda e: f"interrupted: {_STOP_WORDS[e.stop_reason]} "
                   + ("after the hand-off, " if e.handoff_seen else "")
                   + "before any payload line: nothing shows what the machine did next"),
    Rung(Verdict.RESET, lambda e: e.reset is not None,
         lambda e: f"reset after the kexec hand-off, before the payload printed: '{e.reset.banner[:60]}'"),
    Rung(Verdict.NO_OUTPUT, lambda e: e.handoff_seen,
         lambda e: "no-output: the kernel handed over to the payload but no payload line arrived",
         ("wrong UART base (the payload's uart= vs the port this cable is on)",
          "wrong baud rate (payload divisor vs --baud)", "cable / null-modem / console server port",
          "the payload died before programming the UART (entry mode, load address)")),
    Rung(Verdict.DIED_BEFORE_HANDOFF, lambda e: e.kernel_seen, _died_before,
         ("kexec may have failed or the machine rebooted instead: read the kernel log above",)),
    Rung(Verdict.NO_OUTPUT, lambda e: True,
         lambda e: "no-output: no payload line and no hand-off message seen either",
         ("nothing recognisable arrived: check the serial URL, baud rate and cable",
          "the kernel never handed over (was kexec run?)")),
]


def decide(e: Evidence) -> tuple[Verdict, str, list[str]]:
    """The verdict, its one-line summary and hints: the first rung of the ladder that holds."""
    for rung in LADDER:
        if rung.holds(e):
            return rung.verdict, rung.words(e), list(rung.hints)
    raise AssertionError("the ladder's last rung always holds")

