"""The step catalogue: each step's id, interrupt, canonical function, title, and whether a
healthy BIOS may lack the service.  Decoders, the analysis and the reports name steps from here.

Nothing is written down here: the catalogue is read from a payload ELF, whose STEP lines
(payloads/steps.S) carry all of it (docs/payload.md).  Which ELF: the one `using(payload)`
selected for the analysis at hand (a run's payload, `--payload`), else the default payload that
`payload.ensure_built` builds from payloads/ with binutils, read once per process.

Without any ELF (no binutils and nothing built) the catalogue is empty, and says why: a step
then keeps the id, number and interrupt its own begin line prints, its title says the step
table is missing instead of inventing one, and no service counts as optional (a "not
supported" answer stays an error, with its reason).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import KexectestError

if TYPE_CHECKING:  # pyelftools is imported only when a catalogue is first read
    from ..payload.image import PayloadImage


@dataclass(frozen=True)
class StepInfo:
    index: int
    id: str
    int_no: int  # 0 = built-in routine
    function: str  # canonical: "AX=E820h", "AH=88h", "" for built-ins / int 11h-style calls
    title: str
    optional: bool = False  # a healthy BIOS may lack the service


def _from_begin_line(name: str, index: int | None, int_no: int | None, ax: int | None,
                     why: str) -> StepInfo:
    """What the trace alone says about a step: its id, number, interrupt and AX; no title."""
    fn = f"AX={ax:04X}h" if ax is not None and int_no else ""
    return StepInfo(index if index is not None else -1, name, int_no or 0, fn, f"untitled ({why})")


@dataclass(frozen=True)
class Catalog:
    """One payload's step table as the analysis uses it."""

    steps: dict[str, StepInfo]  # in row order
    source: str  # the ELF it was read from ("path (build id)"), "" without one
    missing: str | None = None  # why titles are unknown (no ELF, an ELF without metadata)

    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.steps)

    @cached_property
    def optional(self) -> frozenset[str]:
        return frozenset(s.id for s in self.steps.values() if s.optional)

    def info(self, name: str, index: int | None = None, int_no: int | None = None,
             ax: int | None = None) -> StepInfo:
        """The step's info; for a step the table does not know, what its begin line says."""
        info = self.steps.get(name)
        if info is not None:
            return info
        return _from_begin_line(name, index, int_no, ax,
                                self.missing or "not in the payload's step table")


def from_image(img: "PayloadImage") -> Catalog:
    source = f"{img.path} (build {img.build_id or img.sha256[:16]})"
    if not img.step_meta:  # an ELF from before .kt_step_meta: ids and interrupts, no titles
        why = f"{img.path} has no step metadata"
        return Catalog({s.name: _from_begin_line(s.name, s.index, s.int, s.eax & 0xFFFF, why)
                        for s in img.steps}, source, why)
    return Catalog({s.name: StepInfo(s.index, s.name, s.int, s.function, s.title or s.name,
                                     s.optional) for s in img.steps}, source)


_default: Catalog | None = None
_default_lock = threading.Lock()


def default() -> Catalog:
    """The default payload's catalogue, built (if its sources changed) and read once."""
    global _default
    if _default is not None:
        return _default
    with _default_lock:
        if _default is None:
            from ..payload.build import ensure_built
            from ..payload.image import PayloadImage

            try:
                _default = from_image(PayloadImage.open(ensure_built()))
            except KexectestError as exc:
                _default = Catalog({}, "", f"no step table: no payload ELF: {exc}")
    return _default


def for_payload(payload: "PayloadImage | Path | str | None") -> Catalog:
    """The catalogue of a payload ELF (an image or its path); the default one for None."""
    from ..payload.image import PayloadImage

    if isinstance(payload, (str, Path)):
        payload = PayloadImage.open(payload)
    if not isinstance(payload, PayloadImage):
        return default()  # None, or an object that only lists the steps' names
    return from_image(payload)


_selected: contextvars.ContextVar[Catalog | None] = contextvars.ContextVar(
    "kexectest_catalog", default=None)


@contextmanager
def using(payload: "PayloadImage | Path | str | None") -> Iterator[Catalog]:
    """Within the block (this thread or task only), the catalogue is that payload's: an
    analysis of a run names steps from the ELF the run loaded."""
    token = _selected.set(for_payload(payload))
    try:
        yield _selected.get()
    finally:
        _selected.reset(token)


def current() -> Catalog:
    selected = _selected.get()
    return default() if selected is None else selected


# The names callers import: live views of the current catalogue.

class _Steps(Mapping):
    def __getitem__(self, name: str) -> StepInfo:
        return current().steps[name]

    def __iter__(self):
        return iter(current().steps)

    def __len__(self) -> int:
        return len(current().steps)

    def __repr__(self) -> str:
        return f"STEPS({list(self)})"


class _StepIds(Sequence):
    def __getitem__(self, i):
        return current().ids[i]

    def __len__(self) -> int:
        return len(current().ids)

    def __repr__(self) -> str:
        return f"STEP_IDS({list(self)})"


class _Optional(Set):
    def __contains__(self, name) -> bool:
        return name in current().optional

    def __iter__(self):
        return iter(current().optional)

    def __len__(self) -> int:
        return len(current().optional)

    def __repr__(self) -> str:
        return f"OPTIONAL_SERVICES({sorted(self)})"


STEPS: Mapping[str, StepInfo] = _Steps()
STEP_IDS: Sequence[str] = _StepIds()
# Services a healthy BIOS may simply not have (need=optional in steps.S): their "not supported"
# answer describes the firmware, it is not a failure after kexec.
OPTIONAL_SERVICES: Set[str] = _Optional()


def step_info(name: str, index: int | None = None, int_no: int | None = None,
              ax: int | None = None) -> StepInfo:
    """The step's info; for a step the table does not know, one made from its begin line."""
    return current().info(name, index, int_no, ax)


def int_label(int_no: int) -> str:
    return "builtin" if int_no == 0 else f"int {int_no:02X}h"
