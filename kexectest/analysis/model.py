"""The analysis result, typed: one `Analysis` (the report) per capture, made of `StepResult`s,
a `Hang` or `Reset` location, `Trouble` blocks and a `Damage` account.  output/ renders it into
report.json (`to_dict()`, described field by field in docs/report.schema.json), summary.md and
the terminal.

Every part also answers `part["key"]` and `part.get("key")`, so code written against the
report.json dictionaries reads the typed objects unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

from ..errors import Verdict
from ..trace import Line

SCHEMA_VERSION = 1  # docs/report.schema.json; raised when a report.json key changes meaning

VERDICTS = tuple(v.value for v in Verdict)


class StepStatus(str, enum.Enum):
    """What the trace proves about one step."""

    OK = "ok"
    ERROR = "error"
    HUNG = "hung"
    SKIPPED = "skipped"
    NOT_REACHED = "not-reached"
    # a line of the step was damaged or lost (bad checksum, a gap in the sequence, a masked
    # secret): the trace says nothing certain about this step, the line is quoted
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


STEP_STATUSES = tuple(s.value for s in StepStatus)


class StopReason(str, enum.Enum):
    """Why the capture ended, as the analysis is told (capture/session.py maps its own)."""

    FINAL = "final"  # the payload's done line (or the int 19h chain) was seen
    TIMEOUT = "timeout"  # silence on a live console for the silence timeout: measured
    MAX_TIME = "max-time"  # the overall time limit: the capture was cut short
    RESET = "reset"
    INTERRUPTED = "interrupted"  # Ctrl-C
    EOF = "eof"  # the console closed (end of stream)
    LOST = "lost"  # the console connection broke
    REPLAY = "replay"  # a saved log: nothing is known about how it ended
    STAGE_FAILED = "stage-failed"  # login, password, power: the test never started
    COMMAND_FAILED = "command-failed"  # the trigger command failed on the target

    def __str__(self) -> str:
        return self.value


STOP_REASONS = tuple(s.value for s in StopReason)
CONSOLE_LOST = frozenset({StopReason.EOF.value, StopReason.LOST.value})
INFRASTRUCTURE = frozenset({StopReason.STAGE_FAILED.value, StopReason.COMMAND_FAILED.value})


class _View:
    """Dataclass parts that also read like the report.json dictionaries they become."""

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if f.metadata.get("report", True)}


def _plain(v):
    if isinstance(v, _View):
        return v.to_dict()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@dataclass
class StepResult(_View):
    """One step of the payload (or of the classic kexec_test) as the trace shows it."""

    id: str
    index: int
    title: str
    int: int
    function: str
    call: str
    status: str = StepStatus.NOT_REACHED.value
    result: dict = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    reason: str | None = None
    damaged: list[str] = field(default_factory=list)  # the damaged lines, quoted (at most 4)
    duration_s: float | None = None
    # the PCI function the step's call ran on (devices.DEVICE_KEYS), None for steps that use
    # no device or whose device no evidence in the run names
    device: dict | None = None
    # the step's time measured on the target (its calls' TSC-timed durations, payloads/tsc.S),
    # in microseconds; None where the payload timed none of it or not all of it
    target_us: int | None = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["duration_s"] is None:
            del d["duration_s"]  # a hung or never-timed step has no duration
        return d


@dataclass
class Hang(_View):
    """Where the trace stopped: the step that hung, or where the intact trace ends."""

    step: str | None = None
    index: int | None = None
    title: str | None = None
    int: int | None = None
    function: str | None = None
    call: str | None = None
    drive: int | None = None
    iteration: str | None = None
    between_steps: bool = False
    note: str | None = None
    last_line: str = ""
    silence_s: float | None = None
    line_index: int | None = None
    # the silence after the last line was measured on a live console (a timeout), not
    # inferred from a saved log or cut short by a lost console or a time limit
    measured: bool = False
    # the intact trace pins the stop here (its last intact line, nothing damaged after it)
    definite: bool = False
    device: dict | None = None  # the PCI function the call in progress ran on (as a step's)


@dataclass
class Reset(Hang):
    """Where a reset happened: the location, and the banner that proves it."""

    banner: str = ""


@dataclass
class Trouble(_View):
    """One kernel trouble block (panic, oops, lockup, ...), quoted whole."""

    kind: str
    fatal: bool
    line: int
    title: str
    block: list[str]
    # "before-handoff": the old kernel before its hand-off line; "handoff": after it, before
    # any payload line (machine_shutdown, machine_kexec, purgatory); "after-payload"
    phase: str = "before-handoff"


@dataclass
class Damage(_View):
    """How much of the evidence was damaged or lost, so no verdict rests on it unseen."""

    lines: int = 0  # damaged payload lines in all (the kinds below)
    bad_checksum: int = 0
    malformed: int = 0  # checksum verified, but a field out of the payload's own limits
    unparsed: int = 0  # a payload line whose "KT " prefix or tail was hit: not parsed as one
    noise: int = 0  # bytes the payload never prints, where it was running
    scrubbed: int = 0  # a secret was masked in it: not the wire's text
    duplicated: int = 0  # a line repeated on the wire (ignored; harmless)
    gaps: int = 0  # breaks in the step sequence, where a line was lost (or damaged)
    unknown_steps: int = 0
    trailing: bool = False  # the trace ends in damaged lines: where it stopped is unknown
    quoted: list[str] = field(default_factory=list)  # the first damaged lines (at most 12)


@dataclass
class Analysis(_View):
    """The report of one capture: what report.json holds, and the lines for context quotes."""

    verdict: str
    source: str = "payload"
    summary: str = ""
    hang: Hang | None = None
    reset: Reset | None = None
    steps: list[StepResult] = field(default_factory=list)
    e820: list[dict] = field(default_factory=list)
    payload: dict = field(default_factory=lambda: {"version": None, "build_id": None})
    kernel_trouble: list[Trouble] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    before_after: dict = field(default_factory=dict)
    # the device behind each BIOS call (analysis/devices.py): the PCI functions before and
    # after kexec, the drives', the VGA's and the keyboard's, and what evidence is missing
    devices: dict = field(default_factory=dict)
    # one per failed or hung call that uses a device: the device, the Linux driver that held
    # it before kexec, bus mastering before and after, in a plain sentence
    causes: list[dict] = field(default_factory=list)
    signature: dict = field(default_factory=dict)
    garbled: dict = field(default_factory=dict)
    damage: Damage = field(default_factory=Damage)
    timing: dict = field(default_factory=dict)
    handoff: dict = field(default_factory=dict)
    # the boot_params page the payload was handed (its bzImage doors), decoded and set against
    # the BIOS's answers (analysis/handoff_params.py); None when it was entered without one
    handoff_params: dict | None = None
    hints: list[str] = field(default_factory=list)
    stop_reason: str = StopReason.REPLAY.value
    # the capture's lines, for context quotes; not part of report.json
    lines: list[Line] = field(default_factory=list, repr=False, metadata={"report": False})

    def one_line(self) -> str:
        return self.summary

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **super().to_dict()}

    def context(self, around: int | None = None, before: int = 8, after: int = 2) -> list[str]:
        """Console lines around a line index (default: the end of the capture)."""
        if not self.lines:
            return []
        i = len(self.lines) - 1 if around is None else around
        return [ln.text for ln in self.lines[max(0, i - before): i + after + 1]]


Report = Analysis  # the name other tools use for it
