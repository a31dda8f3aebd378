"""The virtual lab's video models and keyboards (issue 9): the QEMU arguments each gives, the
bounds a machine's shape checks, and real lab runs (QEMU/TCG, SeaBIOS, Debian's kernel, a real
kexec) whose int 10h and int 16h steps answer on them."""

from __future__ import annotations

import json

import pytest

from kexectest.errors import KexectestError
from kexectest.fleet.labfile import load_lab
from kexectest.lab import keyboard as kbd
from kexectest.lab import video as vid
from kexectest.lab.qemu import Qemu
from kexectest.lab.shape import Shape

# ---- pure units ------------------------------------------------------------------------------


def argv(**kw) -> list[str]:
    return Qemu(**kw).guest_argv()


def test_the_machines_own_video_and_keyboard_keep_the_command_line():
    today = argv()
    assert today[today.index("-vga") + 1] == "std", "the firmware's own VGA, as before"
    assert argv(video="std") == today, "std is the machine's own: the same saved state"
    assert argv(keyboard="ps2") == today and argv(video=None, keyboard=None) == today
    assert argv(firmware="bochs", video="std", kernel=None) == argv(firmware="bochs",
                                                                     kernel=None)


@pytest.mark.parametrize("name,device", [("cirrus", "cirrus-vga"), ("virtio-vga", "virtio-vga"),
                                         ("bochs-display", "bochs-display")])
def test_each_video_model_is_its_device_and_no_other_vga(name, device):
    a = argv(video=name)
    assert "-vga" not in a and a[a.index(device) - 1] == "-device"
    assert a.count("-device") == 2, "the model and isa-debug-exit, nothing else"


def test_video_none_has_no_video_device():
    a = argv(video="none")
    assert "-vga" not in a and not any("vga" in x.lower() or "display," in x for x in a[1:])


def test_every_video_model_names_its_rom_and_driver():
    for v in vid.VIDEOS.values():
        assert (v.rom is None) == (v.driver is None) == (not v.args), v.name
    assert vid.VIDEOS["cirrus"].driver == "cirrus"
    assert vid.VIDEOS["virtio-vga"].driver == "virtio_gpu"


def test_usb_keyboard_on_its_own_xhci():
    a = argv(keyboard="usb")
    i = a.index("qemu-xhci,id=ktkbdbus")
    assert a[i - 1] == "-device" and a[i + 1:i + 3] == ["-device", "usb-kbd,bus=ktkbdbus.0"]
    both = argv(keyboard="usb", disk_bus="usb-xhci", disks=[])
    assert "qemu-xhci,id=ktbus" not in both, "no disks: no disk controller"
    assert kbd.KEYBOARDS["usb"].drivers == ("xhci_pci", "usbhid")


def test_shape_bounds():
    assert Shape(video="cirrus", keyboard="usb").problems() == []
    assert Shape(video="vga").problems() == [
        ("video", "video must be one of std, cirrus, virtio-vga, bochs-display, none, not 'vga'")]
    assert Shape(keyboard="ps/2").problems() == [
        ("keyboard", "keyboard must be one of ps2, usb, not 'ps/2'")]
    (key, why), = Shape(firmware="bochs", video="virtio-vga").problems()
    assert key == "video" and "runs no PCI option ROM" in why
    assert Shape(firmware="bochs", video="std").problems() == []
    with pytest.raises(KexectestError, match="lab: keyboard must be one of"):
        Shape.of("pc", keyboard="serial")


def test_lab_file_keys(tmp_path):
    f = tmp_path / "lab.toml"
    f.write_text('[[machine]]\nname = "v"\n[machine.qemu]\nvideo = "cirrus"\nkeyboard = "usb"\n'
                 'drivers = ["cirrus", "xhci_pci"]\n')
    m = load_lab(f).machine("v")
    assert (m.qemu.video, m.qemu.keyboard, m.drivers) == ("cirrus", "usb",
                                                          ["cirrus", "xhci_pci"])
    f.write_text('[[machine]]\nname = "v"\n[machine.qemu]\nvideo = "ega"\n')
    with pytest.raises(KexectestError, match="qemu.video must be one of"):
        load_lab(f)


# ---- real lab runs ---------------------------------------------------------------------------

def lab_run(tmp_path, built_payload, lab_image, drivers=(), **shape):
    from kexectest.lab.runner import run_virtual
    from reportschema import assert_valid_report

    result = run_virtual("pc", out_dir=tmp_path, payload=built_payload, image=lab_image,
                         quiet=True, accel="tcg", timeout=20.0, drivers=list(drivers), **shape)
    report = json.loads((result.bundle_dir / "report.json").read_text())
    env = json.loads((result.bundle_dir / "environment.json").read_text())
    assert_valid_report(report)
    for key, value in shape.items():
        assert env["lab"]["machine"][key] == value
    return result, report, env



@pytest.mark.qemu
def test_cirrus_vga_bios_answers_int_10h_after_kexec(tmp_path, built_payload, lab_image):
    """A Cirrus GD5446 (its own VGA BIOS, vgabios-cirrus) with no Linux driver: every int 10h
    step answers on it except the EDID read, which the Cirrus VGA BIOS does not give."""
    result, report, env = lab_run(tmp_path, built_payload, lab_image, video="cirrus")
    video = [s for s in report["steps"] if s["int"] == 0x10]
    assert len(video) >= 10
    assert all(s["device"]["vendor"] == "1013" for s in video), "Cirrus Logic's function"
    bad = {s["id"]: s["status"] for s in video if s["status"] != "ok"}
    assert bad == {"edid": "error"}, bad
    assert next(s for s in video if s["id"] == "video-mode")["result"]["mode"] == 3
    assert "cirrus-vga" in env["lab"]["qemu_argv"] and "-vga" not in env["lab"]["qemu_argv"]


@pytest.mark.qemu
def test_usb_keyboard_int_16h_answers_after_kexec(tmp_path, built_payload, lab_image):
    """A USB keyboard on its own xHCI controller, no Linux driver for it: the int 16h steps
    answer (no key pressed, so the read is skipped for having none)."""
    result, report, env = lab_run(tmp_path, built_payload, lab_image, keyboard="usb")
    kbd_steps = {s["id"]: s for s in report["steps"] if s["int"] == 0x16}
    assert {"kbd-shift", "kbd-pending", "kbd-read"} <= set(kbd_steps)
    assert all(s["status"] == "ok" for k, s in kbd_steps.items() if k != "kbd-read")
    assert kbd_steps["kbd-pending"]["result"]["key_pending"] is False
    assert kbd_steps["kbd-read"]["status"] == "skipped"
    assert kbd_steps["kbd-read"]["result"]["reason"] == "nokey"
    xhci = [r for r in report["devices"]["table"] if r["class"] == "xHCI USB controller"]
    assert len(xhci) == 1 and xhci[0]["linux_driver"] is None
    assert "usb-kbd,bus=ktkbdbus.0" in env["lab"]["qemu_argv"]
