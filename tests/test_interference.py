"""labs/interference.toml, the interference matrix: every disk bus of the lab without and with a
Linux driver, and (qemu) a small subset of it swept for real, its report naming the driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kexectest.fleet.labfile import load_lab
from kexectest.lab import diskbus

LAB = Path(__file__).resolve().parents[1] / "labs" / "interference.toml"


def test_every_disk_bus_is_in_the_matrix_without_and_with_a_driver():
    lab = load_lab(LAB)
    by_bus: dict[str, list] = {}
    for m in lab.machines:
        assert m.kind == "virtual" and m.load.get("via") == "syscall" and not m.baseline
        by_bus.setdefault(m.qemu.disk_bus, []).append(m)
        assert m.qemu.machine in diskbus.BUSES[m.qemu.disk_bus].machines, m.name
    assert set(by_bus) == set(diskbus.BUSES), "the lab's buses (lab/diskbus.py), every one"
    for bus, ms in by_bus.items():
        assert any(not m.drivers for m in ms), f"{bus}: a configuration with no driver"
        assert any(m.drivers for m in ms), f"{bus}: a configuration with a Linux driver"
    # a pair the findings can use: the same shape, one with the driver and one without
    shapes = {}
    for m in lab.machines:
        shapes.setdefault((m.qemu.machine, m.qemu.disk_bus), set()).add(tuple(m.drivers))
    assert {(), ("ahci",)} <= shapes[("q35", "ahci")] and {(), ("ahci",)} <= shapes[("pc", "ahci")]



def test_every_video_model_and_keyboard_is_in_the_matrix_without_and_with_its_driver():
    from kexectest.lab import keyboard as kbd
    from kexectest.lab import video as vid

    lab = load_lab(LAB)
    video = {}
    for m in lab.machines:
        if "video" in m.tags:
            video.setdefault(m.qemu.video or vid.DEFAULT, set()).add(tuple(m.drivers))
    assert set(video) == set(vid.VIDEOS), "every video model (lab/video.py)"
    for name, sets in video.items():
        assert vid.VIDEOS[name].driver is None or (vid.VIDEOS[name].driver,) in sets, name
    assert () in video["none"] and () in video["cirrus"]
    usb = {tuple(m.drivers) for m in lab.machines if m.qemu.keyboard == "usb"}
    assert usb == {(), kbd.KEYBOARDS["usb"].drivers}
    assert all("keyboard" in m.tags for m in lab.machines if m.qemu.keyboard == "usb")


@pytest.mark.qemu
def test_a_small_matrix_names_the_driver_and_what_makes_the_disk_work(tmp_path, lab_image):
    """q35's AHCI without and with ahci, swept for real (TCG, SeaBIOS, Debian's kernel, real
    kexec): the disk concern's cell of the one with ahci is red and names ahci, the other is
    green, and both report.html and summary.md say that without ahci the disk service works."""
    out = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "kexectest", "sweep", str(LAB), "--only",
                        "q35-ahci,q35-ahci-ahci", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 3, p.stdout + p.stderr  # the worst machine hung
    sweep = json.loads((out / "sweep.json").read_text())
    m = {x["name"]: x for x in sweep["machines"]}
    assert m["q35-ahci"]["verdict"] == "completed" and m["q35-ahci-ahci"]["verdict"] == "hung"
    assert m["q35-ahci-ahci"]["lab"]["drivers"] == ["ahci"] and m["q35-ahci"]["lab"]["drivers"] == []
    html = (out / "report.html").read_text()
    row = html[html.index('data-machine="q35-ahci-ahci"'):]
    row = row[:row.index("</tr>")]
    assert 'data-group-status="hung" data-bdf="00:1f.2" data-driver="ahci"' in row
    assert 'data-answers-on="q35-ahci"' in html
    md = (out / "summary.md").read_text()
    (line,) = [x for x in md.splitlines() if x.startswith("| q35-ahci-ahci |")]
    assert "**hung** read-chs hung: 00:1f.2 held by ahci" in line
    assert ("q35-ahci, the same machine without it, answers every disk step: without ahci the "
            "BIOS's disk service works there") in md
