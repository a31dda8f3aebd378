"""Stage 1: the lines of a capture -> the payload's steps, each call's records and data, and an
account of every line that was damaged, lost or repeated.

The payload prints a fixed sequence (runner.S): per call a `begin`, its `end`, then its data
lines at offsets 0, 32, 64, ...; per step its calls in order (E820 `i=000, 001, ...` while EBX is
not 0; drives `dl=80, 81, ...`) or one `skip`; steps in table order.  A record that does not fit
that sequence shows a line was lost even when nothing of it arrived: the step is marked
unknown with the reason, and nothing is read from a data block past its first hole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..trace import Line, Record
from .catalog import STEP_IDS
from .damage import damaged_kind, quote, step_ref
from .limits import DATA_CHUNK, malformed
from .handoff_params import GROUPS as BOOTPARAMS_GROUPS
from .livestate import LiveState
from .model import Damage

MAX_QUOTED = 12  # damaged lines quoted in the report
MAX_STEP_QUOTES = 4  # and per step
MAX_REASONS = 6  # reasons a step is unknown, kept (the count of gaps goes on)


@dataclass
class Call:
    iteration: str | None
    begin: Record | None = None
    end: Record | None = None
    data: dict[str, bytearray] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)  # tag -> "ended" (a short chunk) or "broken"
    line: int = -1  # index of its begin (or end) line


@dataclass
class StepTrace:
    index: int
    name: str
    int_no: int | None = None
    ax: int | None = None
    calls: list[Call] = field(default_factory=list)
    skipped: str | None = None
    unknown: list[str] = field(default_factory=list)  # why the step's evidence is not whole
    last_begun: Call | None = None  # its latest call with a begin line
    damaged: list[str] = field(default_factory=list)  # its damaged lines, quoted
    t_first: float | None = None  # capture time of its first and last line: the step's
    t_last: float | None = None   # duration, for the sweep report's time-per-step chart


@dataclass
class Assembly:
    steps: dict[int, StepTrace] = field(default_factory=dict)
    banner: Record | None = None
    done: Record | None = None
    state: dict[str, dict] = field(default_factory=dict)
    live: LiveState = field(default_factory=LiveState)
    handoff_at: int | None = None
    first_kt: int | None = None
    reset_at: int | None = None
    payload_lines: list[int] = field(default_factory=list)  # intact payload records
    damaged_at: list[int] = field(default_factory=list)
    open_call: tuple[StepTrace, Call] | None = None  # begun, not ended, when the trace stops
    last_kind: str | None = None  # kind of the last intact step record
    damage: Damage = field(default_factory=Damage)
    # the hand-off page's lines (state bootparams, bp*: analysis/handoff_params.py), in order
    bootparams: list[Record] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return bool(self.payload_lines)

    @property
    def payload_seen(self) -> bool:
        """Payload lines arrived, intact or damaged, after the hand-off."""
        return self.started or bool(self.damaged_at)


def _state_value(v: str):
    if len(v) in (2, 4, 8) and all(c in "0123456789ABCDEF" for c in v):
        return int(v, 16)
    return v


def _state(state: dict, rec: Record) -> None:
    """One `state` line into its group; the PCI scan's `pcifn` lines, one per function, are
    kept as the list `state["pci"]["functions"]` (a `pci` line starts a new scan)."""
    fields = {k: _state_value(v) for k, v in rec.fields.items()}
    if rec.name == "pci":
        state["pci"] = {**fields, "functions": []}
    elif rec.name == "pcifn":
        state.setdefault("pci", {"functions": []})["functions"].append(fields)
    else:
        state[rec.name] = fields


def _iter_number(it: str | None) -> int | None:
    if not it:
        return None
    key, _, v = it.partition("=")
    return int(v, 16) if key == "dl" else int(v)


class _Sequencer:
    """Feeds step records in order and notices every break in the payload's sequence."""

    def __init__(self, asm: Assembly, names):
        self.asm = asm
        self.names = names  # index -> expected step id, or None
        self.cur: tuple[StepTrace, Call] | None = None  # begun, not ended
        self.last: tuple[StepTrace, Call] | None = None  # ended: its data lines come next
        self.prev: StepTrace | None = None  # step of the last step record
        self.pending: list[tuple[int, str]] = []  # damaged lines not yet given to a step

    def step(self, rec: Record, t: float | None) -> StepTrace:
        st = self.asm.steps.get(rec.step)
        if st is None:
            st = self.asm.steps[rec.step] = StepTrace(rec.step, rec.name)
        elif st.name != rec.name:
            self.unknown(st, f"named {st.name} and {rec.name} in one trace")
        if t is not None:
            st.t_first = t if st.t_first is None else st.t_first
            st.t_last = t
        return st

    def unknown(self, st: StepTrace, why: str, gap: bool = False) -> None:
        self.asm.damage.gaps += gap
        if why not in st.unknown and len(st.unknown) < MAX_REASONS:
            st.unknown.append(why)

    def damaged(self, i: int, text: str) -> None:
        """A damaged line: to the step it still names, else to the step of the step record
        before it (settled when the next one arrives)."""
        ref = step_ref(text)
        if ref is not None:
            idx, name = ref
            st = self.asm.steps.get(idx)
            known = (self.names(idx) if self.names else None) or (st.name if st else None) or (
                STEP_IDS[idx] if idx < len(STEP_IDS) else None)
            if known == name:
                if st is None:
                    st = self.asm.steps[idx] = StepTrace(idx, name)
                self._blame(st, text)
                return
        self.pending.append((i, text))

    def _blame(self, st: StepTrace, text: str) -> None:
        self.unknown(st, "a damaged line")
        if len(st.damaged) < MAX_STEP_QUOTES:
            st.damaged.append(quote(text))

    def settle(self) -> None:
        """Damaged lines since the last step record belong to its step (a skip line stands
        alone: lines after it belong to no step)."""
        if self.pending and self.prev is not None and self.asm.last_kind != "skip":
            for _i, text in self.pending:
                self._blame(self.prev, text)
        self.pending.clear()

    def feed(self, rec: Record, i: int, t: float | None) -> None:
        self.settle()
        st = self.step(rec, t)
        if self.prev is not None and st.index < self.prev.index:
            self.unknown(st, f"out of sequence (after step {self.prev.index:03d})")
            self.unknown(self.prev, f"out of sequence (step {st.index:03d} came after it)")
        getattr(self, "_" + rec.kind)(st, rec, i)
        self.prev = st
        self.asm.last_kind = rec.kind

    def _close_open(self, why: str) -> None:
        if self.cur is not None:
            self.unknown(self.cur[0], why, gap=True)
            self.cur = None

    def _begin(self, st: StepTrace, rec: Record, i: int) -> None:
        self._close_open("its end line is missing")
        if self.last is not None and self.last[0] is not st:
            self._check_loop_ended(*self.last)
        n = _iter_number(rec.iteration)
        prev = st.last_begun
        if n is not None:
            first = 0x80 if rec.iteration.startswith("dl=") else 0
            want = first if prev is None else (_iter_number(prev.iteration) or 0) + 1
            if n != want:
                self.unknown(st, f"its call {rec.iteration} came where {want:X} was due"
                             if n > want else f"its call {rec.iteration} came again", gap=True)
        elif prev is not None or st.skipped is not None:
            self.unknown(st, "its begin line came twice", gap=True)
        st.int_no, st.ax = rec.hex("int"), rec.hex("ax")
        call = st.last_begun = Call(rec.iteration, begin=rec, line=i)
        st.calls.append(call)
        self.cur, self.last = (st, call), None

    def _end(self, st: StepTrace, rec: Record, i: int) -> None:
        if self.cur is not None and self.cur[0] is st and self.cur[1].iteration == rec.iteration:
            call = self.cur[1]
        else:
            self._close_open("its end line is missing")
            self.unknown(st, "its begin line is missing", gap=True)
            call = Call(rec.iteration, line=i)
            st.calls.append(call)
        call.end = rec
        self.cur, self.last = None, (st, call)

    def _data(self, st: StepTrace, rec: Record, i: int) -> None:
        if self.last is None or self.last[0] is not st or self.last[1].iteration != rec.iteration:
            self._close_open("its end line is missing")
            self.unknown(st, "data lines without their call's end line", gap=True)
            return
        call = self.last[1]
        tag = rec.fields.get("tag", "")
        buf = call.data.setdefault(tag, bytearray())
        off = int(rec.fields["off"], 16)  # format-checked: 4 hex digits, within 64 KiB
        state = call.whole.get(tag)
        if state == "broken":
            return  # past the first hole nothing is read (the hole is counted once)
        if state == "ended" or off != len(buf):
            self.unknown(st, "data lines past the end of its dump" if state else
                         f"data lines missing at offset {len(buf):04X}", gap=True)
            call.whole[tag] = "broken"
            return
        buf += rec.data
        if len(rec.data) < DATA_CHUNK:
            call.whole[tag] = "ended"  # a short chunk is a dump's last

    def _skip(self, st: StepTrace, rec: Record, i: int) -> None:
        self._close_open("its end line is missing")
        if st.calls:
            self.unknown(st, "skipped after it ran")
        st.skipped = rec.fields.get("reason", "")
        self.last = None

    def _check_loop_ended(self, st: StepTrace, call: Call) -> None:
        """An E820 call that returned a continuation is followed by the next call."""
        if call.end is None or not (call.iteration or "").startswith("i="):
            return
        if call.end.fields.get("cf") == "0" and call.end.hex("ebx", 0):
            self.unknown(st, "its next E820 call is missing (EBX was not 0)", gap=True)

    def finish(self) -> None:
        self.settle()  # damaged lines at the end belong to the last step, as any others
        if self.cur is not None:
            self.asm.open_call = self.cur
        elif self.last is not None and self.asm.done is not None:
            self._check_loop_ended(*self.last)


def assemble(lines: list[Line], names=None) -> Assembly:
    """All payload evidence of a capture, with every damaged or missing line accounted for.
    `names(index)` gives the step id the payload ELF has for an index (None without it)."""
    asm = Assembly()
    seq = _Sequencer(asm, names)
    live, dmg, prev_text = asm.live, asm.damage, None
    for i, ln in enumerate(lines):
        rec = ln.record
        if rec is not None and ln.text == prev_text:
            dmg.duplicated += 1
            continue
        prev_text = ln.text if rec is not None else prev_text
        why = live.feed(ln)
        if live.handoff_seen and asm.handoff_at is None:
            asm.handoff_at = i
        if why == "reset":
            asm.reset_at = i
            break
        if live.chain_line is not None:
            break  # the firmware booted again after int 19h: the run is over
        if rec is None and asm.handoff_at is None and not asm.started:
            continue  # the kernel's part (read for damage below if no hand-off line follows)
        kind = damaged_kind(ln, asm.started and asm.done is None)
        if kind is None and rec is not None:
            kind = "malformed" if malformed(rec, ln.text) else None
        if kind is not None:
            _damaged(asm, seq, i, kind, ln.text)
            continue
        if rec is None:
            continue
        asm.payload_lines.append(i)
        asm.first_kt = i if asm.first_kt is None else asm.first_kt
        if rec.kind == "banner":
            asm.banner = asm.banner or rec
        elif rec.kind == "state" and rec.name in BOOTPARAMS_GROUPS:
            asm.bootparams.append(rec)
        elif rec.kind == "state":
            _state(asm.state, rec)
        elif rec.kind == "done":
            seq.settle()
            seq._close_open("its end line is missing")
            asm.done = rec
        elif rec.kind in ("begin", "end", "data", "skip"):
            seq.feed(rec, i, ln.t)
    if asm.handoff_at is None:  # no hand-off line: it may be one of the damaged ones
        _damage_before_payload(asm, lines)
    seq.finish()
    last = asm.payload_lines[-1] if asm.payload_lines else -1
    # the trace ends in damaged lines: where it stopped cannot be read from it
    dmg.trailing = asm.done is None and bool(asm.damaged_at) and asm.damaged_at[-1] > last
    return asm


def _damage_before_payload(asm: Assembly, lines: list[Line]) -> None:
    """Without a hand-off line, damaged payload lines may sit anywhere before the first intact
    one (the hand-off line itself may be among them); they belong to no step."""
    end = asm.first_kt if asm.first_kt is not None else (asm.reset_at or len(lines))
    found = [(i, kind, ln.text) for i, ln in enumerate(lines[:end])
             if ln.record is None and (kind := damaged_kind(ln, False))]
    for _i, kind, text in found:
        _count(asm.damage, kind, text)
    asm.damaged_at = [i for i, _k, _t in found] + asm.damaged_at


def _damaged(asm: Assembly, seq: _Sequencer, i: int, kind: str, text: str) -> None:
    _count(asm.damage, kind, text)
    asm.damaged_at.append(i)
    if asm.done is None:
        seq.damaged(i, text)


def _count(dmg: Damage, kind: str, text: str) -> None:
    setattr(dmg, kind, getattr(dmg, kind) + 1)
    dmg.lines += 1
    if len(dmg.quoted) < MAX_QUOTED:
        dmg.quoted.append(quote(text))
