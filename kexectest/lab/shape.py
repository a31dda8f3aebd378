"""The shape of a virtual machine (QEMU machine type, memory, CPUs, lab disks and the bus they
are on, accelerator, firmware, video model, keyboard).

One definition for lab files, `kexectest lab run` and sweeps, so a machine means the same
wherever it is written down and is checked against the same bounds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import Exit, KexectestError
from . import diskbus
from . import firmware as fw
from . import keyboard as kbd
from . import video as vid
from .image import MAX_DISKS  # the disks with known content the lab builds

MACHINES = ("pc", "q35")
ACCELS = ("auto", "tcg", "kvm")
MIN_MEMORY, MAX_MEMORY = 64, 1024 * 1024


@dataclasses.dataclass
class Shape:
    machine: str = "pc"
    memory: int = 256
    smp: int = 1
    disks: int = 1
    accel: str = "auto"
    disk_bus: str | None = None  # lab/diskbus.py; None: the machine's own (if=ide)
    firmware: str = "seabios"
    video: str | None = None  # lab/video.py; None: the machine's own (the firmware's VGA)
    keyboard: str | None = None  # lab/keyboard.py; None: the machine's own (PS/2)

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every value out of bounds; empty when the shape is usable."""
        out = []
        if self.machine not in MACHINES:
            out.append(("machine", f"machine must be pc or q35, not {self.machine!r}"))
        if not isinstance(self.memory, int) or not MIN_MEMORY <= self.memory <= MAX_MEMORY:
            out.append(("memory", f"memory must be {MIN_MEMORY}..{MAX_MEMORY} MiB, not {self.memory}"))
        if not isinstance(self.smp, int) or not 1 <= self.smp <= 64:
            out.append(("smp", f"smp must be 1..64, not {self.smp}"))
        if not isinstance(self.disks, int) or not 0 <= self.disks <= MAX_DISKS:
            out.append(("disks", f"disks must be 0..{MAX_DISKS} (the lab's disks), not {self.disks}"))
        if self.accel not in ACCELS:
            out.append(("accel", f"accel must be auto, tcg or kvm, not {self.accel!r}"))
        bus = diskbus.problem(self.machine, self.disk_bus)
        if bus:
            out.append(("disk_bus", bus))
        for key, why in (("video", vid.problem(self.video, self.firmware)),
                         ("keyboard", kbd.problem(self.keyboard))):
            if why:
                out.append((key, why))
        f = fw.BY_NAME.get(self.firmware)
        if f is None:
            out.append(("firmware", f"firmware must be {' or '.join(fw.FIRMWARES)}, "
                                    f"not {self.firmware!r}"))
        elif isinstance(self.smp, int) and self.smp > f.max_smp:
            out.append(("smp", f"smp must be 1 with firmware {f.name} (no local APIC: "
                               f"docs/firmware.md), not {self.smp}"))
        elif f.name != "seabios" and not bus and not diskbus.own_controller(self.machine,
                                                                            self.disk_bus):
            out.append(("disk_bus", f"firmware {f.name} boots from the machine's own IDE "
                                    f"only, not disk_bus {self.disk_bus!r}"))
        return out

    @classmethod
    def of(cls, machine: Any = None, **overrides) -> "Shape":
        """From a machine name, a dict, or any object with those attributes; keyword overrides
        win.  Raises one line (Exit.CONFIG) for an unknown key or a value out of bounds."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if machine is None or isinstance(machine, str):
            base = {"machine": machine or "pc"}
        elif isinstance(machine, dict):
            base = dict(machine)
        else:
            base = {name: getattr(machine, name) for name in fields if hasattr(machine, name)}
        base.update({k: v for k, v in overrides.items() if v is not None})
        if "memory_mib" in base:
            base["memory"] = base.pop("memory_mib")
        unknown = set(base) - fields
        if unknown:
            raise KexectestError(f"lab: unknown machine key(s) {', '.join(sorted(unknown))}",
                                 Exit.CONFIG)
        shape = cls(**{k: v for k, v in base.items() if v is not None})
        for _, message in shape.problems():
            raise KexectestError(f"lab: {message}", Exit.CONFIG)
        return shape
