"""The lab's firmware: QEMU's own SeaBIOS, or Debian's Bochs BIOS -- and what each needs on the
QEMU command line to boot the payload and Linux (measured: docs/firmware.md).

The Bochs BIOS (package bochsbios) under QEMU 7.2: it reads no fw_cfg files, so none of QEMU's
option ROMs run under it (-kernel's linuxboot and multiboot ROMs, a PCI VGA's ROM: its PCI code
reads the ROM BAR while the device's memory decoding is still off); with a local APIC its POST
stalls (it enables the APIC with LINT0 masked, and the 8259's timer interrupt never arrives);
it drives disks by IDE ports only (no AHCI).  So a Bochs machine here has no local APIC (one
CPU), the LGPL VGA BIOS (package vgabios) put at C0000 by QEMU's loader device, its disks on
IDE (q35: an ISA IDE controller), and boots Linux from an ISOLINUX CD (lab/linuxcd.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import Exit, KexectestError

FIRMWARES = ("seabios", "bochs")


@dataclass(frozen=True)
class Firmware:
    name: str
    bios: Path | None  # -bios; None: QEMU's default (SeaBIOS)
    package: str | None  # the Debian package that has `bios`
    vga_rom: Path | None  # a VGA BIOS the lab places at C0000; None: the VGA's own ROM
    vga_package: str | None
    kernel_boot: bool  # QEMU's -kernel works (its option ROMs run)
    local_apic: bool  # the guest CPU may have a local APIC
    max_smp: int
    linux_machines: tuple[str, ...]  # machine types Linux + kexec runs on
    post_machines: tuple[str, ...]  # machine types that boot the payload's images


SEABIOS = Firmware("seabios", None, None, None, None, True, True, 64, ("pc", "q35"), ("pc", "q35"))
BOCHS = Firmware("bochs", Path("/usr/share/bochs/BIOS-bochs-latest"), "bochsbios",
                 Path("/usr/share/vgabios/vgabios.stdvga.bin"), "vgabios", False, False, 1,
                 ("pc",), ("pc", "q35"))
BY_NAME = {f.name: f for f in (SEABIOS, BOCHS)}


def get(name: str) -> Firmware:
    fw = BY_NAME.get(name)
    if fw is None:
        raise KexectestError(f"lab: firmware must be {' or '.join(FIRMWARES)}, not {name!r}",
                             Exit.CONFIG)
    return fw


def check_installed(fw: Firmware) -> None:
    for path, package in ((fw.bios, fw.package), (fw.vga_rom, fw.vga_package)):
        if path is not None and not path.is_file():
            raise KexectestError(f"lab: {path} not found (apt-get install {package})",
                                 Exit.MISSING_TOOL)


def isa_ide(fw: Firmware, machine: str) -> bool:
    """Disks on an ISA IDE controller: the Bochs BIOS on q35 (whose own is AHCI)."""
    return fw is BOCHS and machine == "q35"


def max_drives(fw: Firmware, machine: str) -> int:
    """Drives (disks and the CD) the machine's IDE takes."""
    return 2 if isa_ide(fw, machine) else 4


def qemu_argv(fw: Firmware, machine: str, video: list[str] | None = None) -> list[str]:
    """-bios, -cpu and the VGA for this firmware on this machine type (`video`: a video
    model's arguments in place of the firmware's own VGA: lab/video.py)."""
    a: list[str] = []
    if fw.bios is not None:
        a += ["-bios", str(fw.bios)]
    if not fw.local_apic:
        a += ["-cpu", "qemu64,-apic"]
    if video is not None:
        a += video
    elif fw.vga_rom is not None:
        a += ["-device", "VGA,romfile=",
              "-device", f"loader,file={fw.vga_rom},addr=0xc0000,force-raw=on"]
    else:
        a += ["-vga", "std"]
    return a


def drive_argv(fw: Firmware, machine: str, disks: list[Path], cdrom: Path | None) -> list[str]:
    """The disks (snapshot=on: shared images stay untouched) and the CD, in BIOS order."""
    a: list[str] = []
    if isa_ide(fw, machine):
        a += ["-device", "isa-ide,id=isaide"]
        units = [("hd", d) for d in disks] + ([("cd", cdrom)] if cdrom else [])
        for unit, (kind, path) in enumerate(units):
            media = ",media=cdrom" if kind == "cd" else ""
            a += ["-drive", f"file={path},format=raw,if=none,id=kt{unit}{media},snapshot=on",
                  "-device", f"ide-{kind},drive=kt{unit},bus=isaide.0,unit={unit}"]
        return a
    for i, d in enumerate(disks):
        a += ["-drive", f"file={d},format=raw,if=ide,index={i},snapshot=on"]
    if cdrom is not None:
        a += ["-drive", f"file={cdrom},format=raw,media=cdrom,if=ide,index=3,snapshot=on"]
    return a
