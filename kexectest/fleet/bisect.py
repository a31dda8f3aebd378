"""`kexectest bisect`: the smallest set of a machine's guest drivers that still breaks a BIOS step.

Delta debugging (Zeller's ddmin) over the drivers, each probe a whole lab run through real kexec
with that subset loaded before `kexectest load`.  A probe's outcome is the step's own status in
that run: `fail` (error, hung), `pass` (ok), or `unresolved` (the run never reached or could not
tell the step); ddmin reduces only on `fail`.  Before reducing, the full set must fail (else
the failure does not reproduce: nothing to bisect) and the empty set is run once, because a
one-driver answer is only a culprit when the step passes without it.

A probe that ends for an infrastructure reason (a lab stage failing, an infrastructure-error
verdict, a capture interrupted) proves nothing about the drivers: it is retried once, and a
second such end stops the bisect with one line; it is never an outcome, so never a culprit.

Every finished probe is one fsynced journal line (fleet/journal.py) in the bisect's directory;
run again with the same machine, step and drivers, the bisect reads them back and runs only
the probes it has not got.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import Exit, KexectestError
from ..fsutil import make_dirs
from . import journal as journal_mod
from .labfile import Machine

FAIL, PASS, UNRESOLVED = "fail", "pass", "unresolved"
FAILING_STATUS = {"error", "hung"}
PASSING_STATUS = {"ok"}
# verdicts that say the run never became a test of the drivers
INFRASTRUCTURE_VERDICTS = {"infrastructure-error", "interrupted"}
# failures of the input or of the host that a retry cannot change: the bisect ends with them
FATAL_CODES = {Exit.USAGE, Exit.BAD_INPUT, Exit.MISSING_TOOL, Exit.PAYLOAD_LIMITS,
               Exit.UNKNOWN_STEP, Exit.LAB_BUILD, Exit.NO_SPACE, Exit.CONFIG, Exit.INTERNAL}


def outcome_of(step_status: str | None) -> str:
    if step_status in FAILING_STATUS:
        return FAIL
    if step_status in PASSING_STATUS:
        return PASS
    return UNRESOLVED


def _chunks(items: list, n: int) -> list[list]:
    """ITEMS cut into N pieces as even as they go, order kept."""
    out, start = [], 0
    for i in range(n):
        end = start + (len(items) - start) // (n - i)
        out.append(items[start:end])
        start = end
    return [c for c in out if c]


def ddmin(items: list, test: Callable[[list], str]) -> list:
    """A 1-minimal subset of ITEMS for which TEST says FAIL, given that TEST(ITEMS) is FAIL:
    removing any one element of the answer no longer fails (Zeller and Hildebrandt 2002).
    TEST is called with subsets in ITEMS' order; it may be called twice with one subset, so
    it should remember its answers."""
    current, n = list(items), 2
    while len(current) >= 2:
        pieces = _chunks(current, n)
        reduced = False
        for piece in pieces:
            if test(piece) == FAIL:
                current, n, reduced = piece, 2, True
                break
        if not reduced and len(pieces) > 2:
            for piece in pieces:
                rest = [x for x in current if x not in piece]
                if test(rest) == FAIL:
                    current, n, reduced = rest, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return current


@dataclass
class Probe:
    """One lab run with a subset of the drivers, as the journal and `--json` have it."""

    drivers: list[str]
    outcome: str
    verdict: str
    step_status: str | None
    one_line: str = ""
    bundle: str | None = None
    seconds: float = 0.0
    resumed: bool = False

    def public(self) -> dict:
        return {"drivers": self.drivers, "verdict": self.verdict,
                "step_status": self.step_status}


@dataclass
class BisectResult:
    step: str
    machine: str
    drivers: list[str]
    culprit: list[str]
    probes: list[Probe] = field(default_factory=list)
    note: str = ""  # what the culprit means when it is not a reduction (fails with none)

    def to_json(self) -> dict:
        return {"step": self.step, "culprit": self.culprit,
                "probes": [p.public() for p in self.probes]}

    def one_line(self) -> str:
        runs = sum(1 for p in self.probes if not p.resumed)
        if not self.culprit:
            return f"bisect: {self.note}"
        return (f"bisect: {self.step} on {self.machine} fails with "
                f"{', '.join(self.culprit)} loaded and passes without "
                f"{'it' if len(self.culprit) == 1 else 'any one of them'}: "
                f"{len(self.probes)} probes ({runs} run now)")


    def suggestion(self) -> str | None:
        """What would make the BIOS work, from two probes of this bisect: the culprit alone
        failing, and the largest set without all of it answering; None when the probes do not
        hold both."""
        if not self.culprit:
            return None
        alone = next((i for i, p in enumerate(self.probes, 1)
                      if sorted(p.drivers) == sorted(self.culprit) and p.outcome == FAIL), None)
        passing = [(i, p) for i, p in enumerate(self.probes, 1)
                   if p.outcome == PASS and not set(self.culprit) <= set(p.drivers)]
        if alone is None or not passing:
            return None
        i, p = max(passing, key=lambda ip: len(ip[1].drivers))
        names = ", ".join(self.culprit)
        return (f"what would make the BIOS work: {self.step} fails with {names} alone (probe "
                f"{alone}) and answers with {', '.join(p.drivers) or 'no drivers'} loaded "
                f"(probe {i}): load the payload from a Linux without {names} (booted with "
                f"modprobe.blacklist={','.join(self.culprit)}, or {names} not built)")


def _key(drivers) -> str:
    return ",".join(sorted(drivers))


class Bisect:
    """One bisect: a lab machine, the step, the drivers, its directory and journal.

    `run_probe(machine, out_dir)` runs the machine (its drivers already replaced) and returns
    the session's result; `on_event(kind, info)` hears "start" (drivers), "probe" (a Probe,
    finished or read back) and "infrastructure" (drivers, one line) for the live view."""

    def __init__(self, machine: Machine, step: str, drivers: list[str], out_dir: Path,
                 run_probe: Callable, on_event: Callable[[str, object], None] | None = None):
        if machine.kind != "virtual":
            raise KexectestError(f"bisect: machine {machine.name!r} is not a lab machine (no "
                                 "qemu table): each probe loads its drivers in the lab's Linux",
                                 Exit.CONFIG)
        seen: list[str] = []
        for d in drivers:
            if d not in seen:
                seen.append(d)
        if not seen:
            raise KexectestError(f"bisect: no drivers to bisect: machine {machine.name!r} has "
                                 "no qemu.drivers; give --drivers A,B,...", Exit.USAGE)
        self.machine, self.step, self.drivers = machine, step, seen
        self.out = Path(out_dir)
        self.run_probe = run_probe
        self.on_event = on_event or (lambda kind, info: None)
        self.cache: dict[str, Probe] = {}
        self.probes: list[Probe] = []  # in the order the bisect asked for them

    # -- the journal -----------------------------------------------------------------------
    def _open_journal(self) -> None:
        make_dirs(self.out)
        old = journal_mod.read(self.out)
        start = next((r for r in old if r["event"] == "bisect-start"), None)
        want = {"machine": self.machine.name, "step": self.step, "drivers": self.drivers}
        if start is not None:
            have = {k: start.get(k) for k in want}
            if have != want:
                raise KexectestError(
                    f"{self.out}: holds the bisect of {have['step']} on {have['machine']} over "
                    f"{','.join(have['drivers'] or [])}: use another --out", Exit.USAGE)
        for rec in old:
            if rec["event"] == "probe":
                p = Probe(drivers=list(rec["drivers"]), outcome=rec["outcome"],
                          verdict=rec["verdict"], step_status=rec.get("step_status"),
                          one_line=rec.get("one_line", ""), bundle=rec.get("bundle"),
                          seconds=rec.get("seconds", 0.0), resumed=True)
                self.cache[_key(p.drivers)] = p
        self.journal = journal_mod.Journal(self.out)
        if start is None:
            self.journal.write("bisect-start", **want)

    # -- one probe -------------------------------------------------------------------------
    def probe(self, drivers: list[str]) -> str:
        key = _key(drivers)
        if key in self.cache:
            p = self.cache[key]
            if p not in self.probes:
                self.probes.append(p)
                self.on_event("probe", p)
            return p.outcome
        p = self._run(drivers)
        self.cache[key] = p
        self.probes.append(p)
        self.journal.write("probe", drivers=p.drivers, outcome=p.outcome, verdict=p.verdict,
                           step_status=p.step_status, one_line=p.one_line, bundle=p.bundle,
                           seconds=p.seconds)
        self.on_event("probe", p)
        return p.outcome

    def _run(self, drivers: list[str]) -> Probe:
        last = ""
        for attempt in (1, 2):
            n = len(list(self.out.glob("probe-*"))) + 1
            name = "-".join(drivers) if drivers else "none"
            out = self.out / f"probe-{n:02d}-{name[:80]}"
            self.on_event("start", list(drivers))
            m = dataclasses.replace(self.machine, drivers=list(drivers), baseline=False)
            t0 = time.monotonic()
            try:
                res = self.run_probe(m, out)
            except KexectestError as exc:
                if exc.code in FATAL_CODES:
                    raise
                code, last = exc.code, str(exc)
            else:
                verdict = str(res.verdict)
                one = res.analysis.one_line() if getattr(res, "analysis", None) else verdict
                if verdict not in INFRASTRUCTURE_VERDICTS:
                    status = next((s.status for s in res.analysis.steps if s.id == self.step),
                                  None)
                    bundle = getattr(res, "bundle_dir", None)
                    return Probe(drivers=list(drivers), outcome=outcome_of(status),
                                 verdict=verdict, step_status=status, one_line=one,
                                 bundle=str(bundle) if bundle else None,
                                 seconds=round(time.monotonic() - t0, 1))
                code, last = Exit(res.exit_code) if res.exit_code else Exit.LAB_STAGE, one
            self.journal.write("probe-infrastructure", drivers=list(drivers), attempt=attempt,
                               one_line=last, exit_code=int(code))
            self.on_event("infrastructure", (list(drivers), last))
        raise KexectestError(
            f"bisect: the probe with {','.join(drivers) or 'no drivers'} ended twice for an "
            f"infrastructure reason ({last}); no conclusion drawn, the journal in {self.out} "
            "keeps the probes so far", code)

    # -- the bisect ------------------------------------------------------------------------
    def run(self) -> BisectResult:
        self._open_journal()
        try:
            return self._bisect()
        finally:
            self.journal.close()

    def _bisect(self) -> BisectResult:
        full = self.probe(self.drivers)
        result = BisectResult(step=self.step, machine=self.machine.name,
                              drivers=self.drivers, culprit=[], probes=self.probes)
        if full != FAIL:
            p = self.cache[_key(self.drivers)]
            raise KexectestError(
                f"bisect: {self.step} does not fail on {self.machine.name} with "
                f"{','.join(self.drivers)} loaded (step {p.step_status or 'absent'}, verdict "
                f"{p.verdict}): nothing to bisect", Exit.NOT_REPRODUCED)
        if self.probe([]) == FAIL:
            result.note = (f"{self.step} fails on {self.machine.name} with none of "
                           f"{','.join(self.drivers)} loaded too: no driver of the set is "
                           "needed for the failure")
        else:
            result.culprit = ddmin(self.drivers, self.probe)
        self.journal.write("bisect-end", culprit=result.culprit)
        return result
