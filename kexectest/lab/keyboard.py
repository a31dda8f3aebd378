"""The keyboards a lab machine can have: the QEMU devices that add each and the guest modules
that drive it (loaded with `--driver`: lab/drivers.py).

ps2 is the i8042 every pc and q35 machine has (-nodefaults keeps it): the machine's own, with
no extra argument.  usb is a USB HID keyboard on its own xHCI controller, which SeaBIOS drives
with its xHCI and USB HID code and so answers int 16h from it; Linux takes the controller over
with xhci_pci (usbhid for the keyboard).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyboard:
    name: str
    title: str
    devices: tuple[str, ...]  # the -device arguments that add it (empty: the machine's own)
    drivers: tuple[str, ...]  # the Debian kernel's drivers for it, controller first


KEYBOARDS = {k.name: k for k in (
    Keyboard("ps2", "the machine's own PS/2 keyboard (i8042)", (), ("i8042", "atkbd")),  # built in
    Keyboard("usb", "a USB keyboard on an xHCI controller",
             ("qemu-xhci,id=ktkbdbus", "usb-kbd,bus=ktkbdbus.0"), ("xhci_pci", "usbhid")),
)}
DEFAULT = "ps2"


def keyboard_of(name: str | None) -> Keyboard:
    return KEYBOARDS[name or DEFAULT]


def problem(name: str | None) -> str | None:
    """Why `name` is not a keyboard model, or None."""
    if name is None or name in KEYBOARDS:
        return None
    return f"keyboard must be one of {', '.join(KEYBOARDS)}, not {name!r}"


def keyboard_args(name: str | None) -> list[str]:
    """QEMU's arguments for the keyboard (none for the machine's own PS/2)."""
    return [a for d in keyboard_of(name).devices for a in ("-device", d)]
