"""The buses the lab disks can sit on: the QEMU devices that put them there (SeaBIOS boots them
as drives 80h, 81h in disk order), and the devices Linux must drive, controller first, before it
has the disk (lab/drivers.py reads them).

The modaliases are the ones the lab's guest kernel shows for QEMU's models (sysfs `modalias`,
measured on pc and q35): they are matched against the kernel's module aliases, so a module a
working disk needs (sd_mod behind AHCI, usb-storage behind xHCI) is found as Linux finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_SCSI_DISK = ("scsi:t-0x00", "the SCSI disk Linux makes of it")
_USB_STORAGE = ("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",
                "QEMU's USB storage interface (bulk-only)")


@dataclass(frozen=True)
class Bus:
    name: str
    title: str
    machines: tuple[str, ...]  # the QEMU machine types that have (or take) the controller
    controller: str | None  # the -device that adds the controller (None: the machine's own)
    disk: str | None  # the -device of one disk ({drive}, {index}, {boot}), None: if=ide
    chain: tuple[tuple[str, str], ...]  # (modalias, what) from the controller to the disk


BUSES = {b.name: b for b in (
    Bus("ide", "the PIIX IDE controller of QEMU's pc", ("pc",), None, None,
        (("pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80", "the PIIX IDE controller"),
         _SCSI_DISK)),
    Bus("ahci", "an ICH9 AHCI controller, q35's own", ("pc", "q35"), "ahci,id=ktbus",
        "ide-hd,drive={drive},bus=ktbus.{index},bootindex={boot}",
        (("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", "the AHCI controller"),
         _SCSI_DISK)),
    Bus("virtio-blk", "one virtio block device per disk", ("pc", "q35"), None,
        "virtio-blk-pci,drive={drive},bootindex={boot}",
        (("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00", "the virtio PCI function"),
         ("virtio:d00000002v00001AF4", "the virtio block device"))),
    Bus("virtio-scsi", "a virtio SCSI controller", ("pc", "q35"), "virtio-scsi-pci,id=ktbus",
        "scsi-hd,drive={drive},bus=ktbus.0,bootindex={boot}",
        (("pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00", "the virtio PCI function"),
         ("virtio:d00000008v00001AF4", "the virtio SCSI controller"), _SCSI_DISK)),
    Bus("nvme", "one NVMe controller per disk", ("pc", "q35"), None,
        "nvme,drive={drive},serial=kexectest{index},bootindex={boot}",
        (("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", "the NVMe controller"),)),
    Bus("usb-ehci", "USB storage on an EHCI controller", ("pc", "q35"), "usb-ehci,id=ktbus",
        "usb-storage,drive={drive},bus=ktbus.0,bootindex={boot}",
        (("pci:v00008086d000024CDsv00001AF4sd00001100bc0Csc03i20", "the EHCI controller"),
         _USB_STORAGE, _SCSI_DISK)),
    Bus("usb-xhci", "USB storage on an xHCI controller", ("pc", "q35"), "qemu-xhci,id=ktbus",
        "usb-storage,drive={drive},bus=ktbus.0,bootindex={boot}",
        (("pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", "the xHCI controller"),
         _USB_STORAGE, _SCSI_DISK)),
)}
DEFAULT = {"pc": "ide", "q35": "ahci"}  # the machine's own controller: QEMU's if=ide disks


def bus_of(machine: str, name: str | None) -> Bus:
    return BUSES[name or DEFAULT[machine]]


def own_controller(machine: str, name: str | None) -> bool:
    """Whether the disks sit on the machine's own controller (QEMU's if=ide disks)."""
    return name is None or name == DEFAULT.get(machine)


def problem(machine: str, name: str | None) -> str | None:
    """Why `name` cannot carry the disks of `machine`, or None."""
    if name is None:
        return None
    if name not in BUSES:
        return f"disk_bus must be one of {', '.join(BUSES)}, not {name!r}"
    if machine in DEFAULT and machine not in BUSES[name].machines:
        return (f"disk_bus {name} is not on a {machine} machine: its own disk controller is "
                f"{BUSES[DEFAULT[machine]].title}; use disk_bus {DEFAULT[machine]}")
    return None


def disk_args(machine: str, name: str | None, disks: list[Path]) -> list[str]:
    """QEMU's arguments for the lab disks on this bus (snapshot=on: never written).  The
    machine's own controller takes them as if=ide, as the lab always did; every other bus
    gets bootindex 1, 2, .. so SeaBIOS numbers them 80h, 81h in disk order."""
    if not disks:
        return []
    bus = BUSES.get(name or DEFAULT.get(machine, ""))
    if bus is None or own_controller(machine, bus.name):
        return [a for i, d in enumerate(disks)
                for a in ("-drive", f"file={d},format=raw,if=ide,index={i},snapshot=on")]
    out = ["-device", bus.controller] if bus.controller else []
    for i, d in enumerate(disks):
        drive = f"ktdisk{i}"
        out += ["-drive", f"file={d},format=raw,if=none,id={drive},snapshot=on",
                "-device", bus.disk.format(drive=drive, index=i, boot=i + 1)]
    return out
