"""The payload's boot images (`kexectest build --image disk|iso`): their layout, and real boots of
them straight from the firmware under QEMU/SeaBIOS -- the POST baseline's capture path."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kexectest import payload as pl
from kexectest.analysis.replay import analyze_bytes
from kexectest.payload import bootimage
from kexectest.trace import split_all

QEMU = "qemu-system-x86_64"
DONE_EXIT = (0x31 << 1) | 1  # isa-debug-exit 0x31


def records(raw: bytes):
    return [ln.record for ln in split_all(raw) if ln.record is not None]


@pytest.fixture(scope="module")
def elf(built_payload, tmp_path_factory):
    return pl.patch(built_payload, tmp_path_factory.mktemp("img") / "p.elf", debug_exit=True)


@pytest.fixture(scope="module")
def images(elf, tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    return {kind: bootimage.write_image(elf, kind, d / f"p.{kind}") for kind in bootimage.KINDS}


def boot(tmp: Path, drives: list[str], *, machine="pc", bios: list[str] | None = None,
         limit=60.0, extra=(), name="boot") -> tuple[bytes, int | None, float]:
    """Boot a machine from its drives; (serial bytes, QEMU status, seconds to the last byte).
    `bios`: the firmware's own argv, its VGA included (default: SeaBIOS and the std VGA)."""
    serial = tmp / f"{name}.serial"
    argv = [QEMU, "-machine", machine, "-accel", "tcg", "-m", "256", "-display", "none",
            "-monitor", "none", "-no-reboot", "-nodefaults", "-serial",
            f"file:{serial}", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            *(["-vga", "std"] if bios is None else bios), *drives, *extra]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    return serial.read_bytes() if serial.exists() else b"", proc.returncode, time.monotonic() - start


def disk(path) -> list[str]:
    return ["-drive", f"file={path},format=raw,if=ide,index=0,snapshot=on"]


def cdrom(path) -> list[str]:
    return ["-drive", f"file={path},format=raw,media=cdrom,index=2,snapshot=on", "-boot", "d"]


# ---------------------------------------------------------------- the images themselves


def test_disk_image_layout(elf, images):
    img = pl.PayloadImage.open(elf)
    data = images["disk"].read_bytes()
    seg = bootimage.load_segment(img)
    count = -(-len(seg) // 512)
    assert len(data) == bootimage.DISK_BYTES and data[510:512] == b"\x55\xaa"
    assert data[512:512 + len(seg)] == seg, "the payload's load segment from LBA 1"
    assert data[512 + len(seg):] == bytes(len(data) - 512 - len(seg)), "zeros after it"
    at = data.index(bootimage.PARAMS_MAGIC)
    assert at + bootimage._PARAMS.size <= 0x1B8, "the parameter block lies in the code area"
    _, off, seg16, n, first, uart, nuart, table = bootimage._PARAMS.unpack_from(data, at)
    assert (off, seg16) == (img.symbols["kt_entry16"] - img.kt_base, img.kt_base >> 4)
    assert (n, first, uart) == (count, 1, img.config.uart_base)
    assert nuart == 6 and table[:2] == b"\x03\x80", "DLAB first, as the payload programs it"
    # the one partition: active, non-FS data, over LBA 1..end, its CHS in 64 heads x 32 sectors
    boot, chs0, ptype, chs1, lba, sectors = struct.unpack_from("<B3sB3sII", data, 0x1BE)
    assert (boot, ptype, lba, sectors) == (0x80, 0xDA, 1, bootimage.DISK_BYTES // 512 - 1)
    assert chs0 == bytes((0, 2, 0)) and chs1 == bytes((63, 32, 0))
    assert data[0x1CE:0x1FE] == bytes(48)
    sig = struct.unpack_from("<I", data, 0x1B8)[0]
    assert f"{sig:08x}" == img.build_id[:8], "the MBR signature names the build"


def test_iso_is_el_torito_no_emulation_with_the_payload(elf, images):
    out = subprocess.run(["xorriso", "-indev", str(images["iso"]), "-report_el_torito", "plain"],
                         capture_output=True, text=True).stdout
    row = next(ln for ln in out.splitlines() if ln.startswith("El Torito boot img"))
    cols = row.split(":", 1)[1].split()  # N Pltf B Emul Ld_seg Hdpt Ldsiz LBA
    assert cols[1:5] == ["BIOS", "y", "none", "0x0000"] and cols[6] == "4", row
    lba = int(row.split()[-1])
    iso = images["iso"].read_bytes()
    boot_file = iso[lba * 2048:]
    img = pl.PayloadImage.open(elf)
    seg = bootimage.load_segment(img)
    assert boot_file[2048:2048 + len(seg)] == seg, "the payload right after the loader's sector"
    assert struct.unpack_from("<I", boot_file, 12)[0] == lba, "xorriso filled the boot info table"
    assert iso.count(img.data) == 1, "the exact ELF rides along for --payload"


def test_build_image_command_and_its_bad_input(tmp_path):
    exe = [sys.executable, "-m", "kexectest", "build"]
    out = tmp_path / "stick.img"
    p = subprocess.run(exe + ["--image", "disk", "-o", str(out), "--uart-base", "0x2f8"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    data = out.read_bytes()
    at = data.index(bootimage.PARAMS_MAGIC)
    assert bootimage._PARAMS.unpack_from(data, at)[5] == 0x2F8, "the options configure the image"
    assert "disk image" in p.stdout and str(out) in p.stdout
    p = subprocess.run(exe + ["--baud", "9600"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--image" in p.stderr
    p = subprocess.run(exe + ["--image", "floppy"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_a_payload_without_the_real_mode_entry_is_refused(built_payload, tmp_path):
    """An ELF from before kt_entry16 cannot be booted by the loaders: one line, exit 12."""
    from elftools.elf.elffile import ELFFile

    from kexectest.errors import Exit, KexectestError
    data = bytearray(built_payload.read_bytes())
    with open(built_payload, "rb") as f:
        elf = ELFFile(f)
        strtab = elf.get_section_by_name(".strtab")
        at = strtab["sh_offset"] + strtab.data().index(b"kt_entry16\0")
    data[at:at + 10] = b"kt_entryXX"
    old = tmp_path / "old.elf"
    old.write_bytes(bytes(data))
    with pytest.raises(KexectestError) as ei:
        bootimage.write_image(old, "disk", tmp_path / "x.img")
    assert ei.value.code == Exit.PAYLOAD_LIMITS and "kt_entry16" in str(ei.value)


# ---------------------------------------------------------------- booted by SeaBIOS


@pytest.mark.qemu
@pytest.mark.parametrize("machine", ["pc", "q35"])
@pytest.mark.parametrize("kind", ["disk", "iso"])
def test_image_boots_from_the_firmware_and_completes(images, elf, tmp_path, machine, kind):
    drives = disk(images["disk"]) if kind == "disk" else cdrom(images["iso"])
    raw, status, _ = boot(tmp_path, drives, machine=machine)
    assert status == DONE_EXIT, "the payload ran to its end and left through isa-debug-exit"
    recs = records(raw)
    banner = recs[0]
    assert banner.kind == "banner" and banner.fields["entry"] == "16"
    assert banner.fields["via"] == ("disk" if kind == "disk" else "cd")
    # the BIOS drive the loader read it from: the first hard disk, or the CD's number
    assert banner.fields["drive"] == "80" if kind == "disk" else int(banner.fields["drive"], 16) >= 0xE0
    state = {r.name: r.fields for r in recs if r.kind == "state"}
    assert state["regs"]["edx"][-2:] == banner.fields["drive"], "DL as the firmware passed it"
    assert state["desc"]["idt_base"] == "00000000" and state["desc"]["idt_limit"] == "03FF", \
        "entered from real mode: the IVT is the IDT"
    a = analyze_bytes(raw, pl.PayloadImage.open(elf))
    d = a.to_dict()
    assert d["verdict"] == "completed", a.summary
    assert (d["payload"]["via"], d["payload"]["entry"]) == (banner.fields["via"], "16")
    ran = [s for s in d["steps"] if s["status"] != "skipped"]
    assert len(ran) >= 50 and all(s["status"] == "ok" for s in ran)
    if kind == "disk":  # the image is the machine's only hard disk: the payload reads itself
        calls = next(s for s in d["steps"] if s["id"] == "read-lba")["calls"]
        first = bytes.fromhex("".join(calls[0]["data"].values()))
        assert first == bootimage.load_segment(pl.PayloadImage.open(elf))[:512]


def run_capture(tmp: Path, drives: list[str], *, timeout: float, elf=None) -> tuple[int, dict]:
    """`kexectest run` on the console of a machine booting from `drives` (passive: nothing but
    the firmware before the payload); (exit status, report.json)."""
    from kexectest.lab.qemu import free_port
    port = free_port()
    argv = [QEMU, "-machine", "pc", "-accel", "tcg", "-m", "256", "-display", "none",
            "-monitor", "none", "-no-reboot", "-nodefaults", "-vga", "std",
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on", *drives]
    q = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        p = subprocess.run([sys.executable, "-m", "kexectest", "run", "--serial",
                            f"socket://127.0.0.1:{port}", "--timeout", str(timeout),
                            "--max-time", "90", *(["--payload", str(elf)] if elf else []),
                            "--out", str(tmp / "runs"), "--quiet"],
                           capture_output=True, text=True, timeout=120)
    finally:
        q.kill()
        q.wait(10)
    bundle = next(d for d in (tmp / "runs").iterdir() if d.is_dir())
    return p.returncode, json.loads((bundle / "report.json").read_text())


@pytest.mark.qemu
def test_run_captures_a_firmware_boot_of_the_image(images, elf, tmp_path):
    """The bundle a user attaches to a hardware bug report: the machine's firmware boots the
    disk image and `kexectest run` captures it as usual."""
    code, rep = run_capture(tmp_path, disk(images["disk"]), timeout=20, elf=elf)
    assert code == 0, rep["summary"]
    assert rep["verdict"] == "completed" and rep["payload"]["via"] == "disk"
    assert rep["stop_reason"] == "final" and not rep["handoff"]["seen"]


@pytest.mark.qemu
@pytest.mark.parametrize("medium", ["disk-as-cd", "iso-as-disk"])
def test_an_image_on_a_medium_that_does_not_boot_shows_no_banner(images, tmp_path, medium):
    """The wrong medium (the disk image as a CD, the ISO as a hard disk): the firmware boots
    nothing, no payload banner arrives, and the report says so."""
    drives = cdrom(images["disk"]) if medium == "disk-as-cd" else disk(images["iso"])
    code, rep = run_capture(tmp_path, drives, timeout=4)
    assert code == 5 and rep["verdict"] == "no-output"
    assert "no payload line" in rep["summary"] and rep["payload"]["build_id"] is None
    assert rep["stop_reason"] == "timeout"


# ---------------------------------------------------------------- booted by the Bochs BIOS


def bochs_machine(machine: str, image: Path, on_cd: bool) -> tuple[list[str], list[str]]:
    """(firmware argv, drive argv) the lab uses for the Bochs BIOS (lab/firmware.py); isapc,
    no lab machine, has no PCI VGA: the plain ISA VGA without a video BIOS."""
    from kexectest.lab import firmware as fw
    if machine == "isapc":
        return ["-bios", str(fw.BOCHS.bios), "-vga", "none"], disk(image)
    drives = fw.drive_argv(fw.BOCHS, machine, [] if on_cd else [image], image if on_cd else None)
    return fw.qemu_argv(fw.BOCHS, machine), drives + ["-boot", "d" if on_cd else "c"]


@pytest.mark.qemu
@pytest.mark.parametrize("machine,kind", [("pc", "disk"), ("pc", "iso"), ("q35", "disk"),
                                          ("isapc", "disk")])
def test_image_boots_under_the_bochs_bios(images, elf, tmp_path, machine, kind):
    """The second firmware boots both images wherever it works (docs/firmware.md), and every
    step answers: what it lacks reads as a service it does not have."""
    bios, drives = bochs_machine(machine, images[kind], kind == "iso")
    raw, status, took = boot(tmp_path, drives, machine=machine, bios=bios, limit=90)
    assert status == DONE_EXIT, f"no end after {took:.1f} s: {raw[-300:]!r}"
    d = analyze_bytes(raw, pl.PayloadImage.open(elf)).to_dict()
    assert d["verdict"] == "completed", d["summary"]
    assert d["payload"]["via"] == ("cd" if kind == "iso" else "disk")
    steps = {s["id"]: s for s in d["steps"]}
    assert steps["tick-advance"]["result"]["delta"] > 0
    assert steps["wait"]["result"].get("supported") is False, "the Bochs BIOS has no AH=86h"
    if machine != "isapc":  # the lab's LGPL VGA BIOS at C0000 answers VBE
        assert steps["vbe-info"]["result"]["oem"].startswith("Bochs VBE")
