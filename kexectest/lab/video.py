"""The video models a lab machine can have: the QEMU device that adds each, its option ROM
(SeaBIOS's VGA BIOS, which answers int 10h), and the guest DRM driver that takes the device
over (loaded with `--driver`: lab/drivers.py).

The machine's own video (None) is the firmware's (lab/firmware.py): QEMU's standard VGA, which
every lab run before video models had; `std` is the same command line (and so the same saved
warm state).  The Bochs BIOS runs no PCI option ROM, so it has its own VGA only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Video:
    name: str
    title: str
    args: tuple[str, ...]  # QEMU's arguments for it (-nodefaults: no other video device)
    rom: str | None  # the VGA BIOS QEMU loads for it (/usr/share/seabios)
    driver: str | None  # the Debian kernel's DRM module for it


VIDEOS = {v.name: v for v in (
    Video("std", "QEMU's standard VGA (Bochs VBE)", ("-vga", "std"), "vgabios-stdvga.bin",
          "bochs"),
    Video("cirrus", "a Cirrus Logic GD5446", ("-device", "cirrus-vga"), "vgabios-cirrus.bin",
          "cirrus"),
    Video("virtio-vga", "a virtio GPU with VGA compatibility", ("-device", "virtio-vga"),
          "vgabios-virtio.bin", "virtio_gpu"),
    Video("bochs-display", "a Bochs display without legacy VGA", ("-device", "bochs-display"),
          "vgabios-bochs-display.bin", "bochs"),
    Video("none", "no video device (int 10h: the firmware's own handler only)", (), None, None),
)}
DEFAULT = "std"  # the machine's own: the firmware's VGA


def video_of(name: str | None) -> Video:
    return VIDEOS[name or DEFAULT]


def own_video(name: str | None) -> bool:
    """Whether the machine has the firmware's own VGA (lab/firmware.py's arguments)."""
    return name is None or name == DEFAULT


def problem(name: str | None, firmware: str = "seabios") -> str | None:
    """Why `name` is not a video model of a machine with `firmware`, or None."""
    if name is not None and name not in VIDEOS:
        return f"video must be one of {', '.join(VIDEOS)}, not {name!r}"
    if firmware != "seabios" and not own_video(name):
        return (f"firmware {firmware} runs no PCI option ROM (docs/firmware.md): its video is "
                f"its own VGA only, not video {name!r}")
    return None


def video_args(name: str | None) -> list[str]:
    """QEMU's arguments for the video model, in place of the firmware's own VGA."""
    return list(video_of(name).args)
