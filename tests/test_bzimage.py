"""The payload as a bzImage: its setup header against the boot protocol's rules
(Documentation/arch/x86/boot.rst) and the kernel's own bzImage loader's checks, read here from
raw offsets rather than through bzimage.FIELDS; every damaged field refused by name; the same
file from either ELF reader and from a patched ELF; and (qemu) the real-mode door booted by
QEMU's own Linux loader."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from kexectest import payload as pl
from kexectest.errors import Exit
from kexectest.payload import bzimage
from kexectest.payload.config import CONFIG_MAGIC
from kexectest.target.elf import PayloadFile


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kexectest", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def bz(built_payload) -> bytes:
    return bzimage.make(pl.PayloadImage.open(built_payload))


def u8(b, off):
    return b[off]


def u16(b, off):
    return struct.unpack_from("<H", b, off)[0]


def u32(b, off):
    return struct.unpack_from("<I", b, off)[0]


def test_header_follows_the_boot_protocol(bz, built_payload):
    img = pl.PayloadImage.open(built_payload)
    assert bz[0x1FE:0x200] == b"\x55\xAA"
    assert bz[0x202:0x206] == b"HdrS"
    assert u16(bz, 0x206) >= 0x020C                       # kexec_file_load's minimum
    assert u8(bz, 0x211) & 0x01                           # LOADED_HIGH
    assert u16(bz, 0x236) & 0x03 == 0x03                  # XLF_KERNEL_64, above 4G
    assert u8(bz, 0x234) == 1                             # relocatable
    align = u32(bz, 0x230)
    assert align >= 4096 and align & (align - 1) == 0
    assert u32(bz, 0x238) >= 31                           # cmdline + elfcorehdr= room
    setup_len = (u8(bz, 0x1F1) + 1) * 512
    pm = bz[setup_len:]
    assert u32(bz, 0x1F4) * 16 == len(pm)                 # syssize in paragraphs
    assert u32(bz, 0x260) >= len(pm)                      # init_size
    assert bz[0x200] == 0xEB                              # the real-mode entry's short jump
    target = 0x202 + bz[0x201]
    assert 0x202 + 4 <= target < setup_len and target - 0x1F1 <= 0x7B
    assert bz[target] == 0xFA                             # lands on code (cli), not zeros
    seg = img.segments[0]
    load = img.data[seg.offset:seg.offset + seg.filesz].ljust(seg.memsz, b"\0")
    assert pm[0x400:0x400 + len(load)] == load            # the part's copy of the payload
    assert bz[0x400:0x400 + len(load)] == load            # the setup's copy
    assert pm[0x200:0x203] == b"\x49\x89\xf0"             # 64-bit entry: mov %rsi,%r8
    assert pm[0:2] == b"\x89\x25"                          # 32-bit entry: mov %esp,abs


def test_built_bzimage_passes_every_check(bz):
    checks = bzimage.header_checks(bz)
    assert checks and all(level == "ok" for level, _ in checks), checks


def test_either_reader_makes_the_same_file(bz, built_payload):
    assert bzimage.make(PayloadFile.open(built_payload)) == bz


def test_patched_elf_makes_a_patched_bzimage(built_payload, tmp_path):
    elf = pl.patch(built_payload, tmp_path / "p.elf", baud=9600, debug_exit=True)
    data = bzimage.make(pl.PayloadImage.open(elf))
    img = pl.PayloadImage.open(elf)
    cfg = img.data[img.config_offset:img.config_offset + 64]
    assert data.count(cfg) == 2 and data.count(CONFIG_MAGIC) == 2  # setup and part alike
    assert bzimage.make(pl.PayloadImage.open(built_payload)).count(cfg) == 0


BREAKS = [  # (field named in the error, offset, bytes written)
    ("header", 0x202, b"HdrX"),
    ("boot_flag", 0x1FE, b"\x00\x00"),
    ("version", 0x206, struct.pack("<H", 0x020B)),
    ("loadflags", 0x211, b"\x00"),
    ("xloadflags", 0x236, struct.pack("<H", 0x0002)),
    ("xloadflags", 0x236, struct.pack("<H", 0x0001)),
    ("setup_sects", 0x1F1, b"\xff"),
    ("jump", 0x200, b"\x90\x90"),
    ("jump", 0x200, b"\xeb\x7f"),
    ("syssize", 0x1F4, struct.pack("<I", 1)),
    ("init_size", 0x260, struct.pack("<I", 0x100)),
    ("relocatable_kernel", 0x234, b"\x00"),
    ("kernel_alignment", 0x230, struct.pack("<I", 0x1001)),
    ("cmdline_size", 0x238, struct.pack("<I", 20)),
]


@pytest.mark.parametrize("field,offset,raw", BREAKS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BREAKS)])
def test_every_broken_field_is_refused_by_name(bz, field, offset, raw):
    data = bytearray(bz)
    data[offset:offset + len(raw)] = raw
    errors = [m for level, m in bzimage.header_checks(bytes(data)) if level == "error"]
    assert errors and errors[0].startswith(f"{field}:"), errors


def test_short_file_is_refused():
    assert bzimage.header_checks(b"\0" * 600)[0][0] == "error"


def test_elf_without_the_sections_is_refused_in_one_line(built_payload, tmp_path):
    img = pl.PayloadImage.open(built_payload)
    img._sections = {}
    with pytest.raises(bzimage.BzImageError, match="built before the bzImage"):
        bzimage.make(img)


def test_build_writes_both_and_inspect_checks_the_header(tmp_path):
    proc = run_cli("build", "-o", tmp_path / "k.elf")
    assert proc.returncode == 0, proc.stderr
    bz = tmp_path / "k.bzImage"
    assert str(bz) in proc.stdout and "boot protocol 2.12" in proc.stdout
    doc = json.loads(run_cli("inspect", bz, "--json").stdout)
    assert doc["format"] == "bzimage" and doc["header"]["header"] == "HdrS"
    assert "KERNEL_64" in doc["xloadflags"]
    assert all(c["level"] == "ok" for c in doc["checks"])
    text = run_cli("inspect", bz).stdout
    assert "code32_start" in text and "0x100000" in text
    only = run_cli("build", "--format", "bzimage", "-o", tmp_path / "only.bz")
    assert only.returncode == 0 and (tmp_path / "only.bz").read_bytes() == bz.read_bytes()
    data = bytearray(bz.read_bytes())
    data[0x236:0x238] = b"\0\0"
    broken = tmp_path / "broken.bzImage"
    broken.write_bytes(bytes(data))
    proc = run_cli("inspect", broken)
    assert proc.returncode == Exit.PAYLOAD_LIMITS
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "xloadflags" in lines[0]


@pytest.mark.qemu
def test_real_mode_door_boots_from_qemus_linux_loader(built_payload, tmp_path):
    """QEMU -kernel takes a bzImage like any Linux loader: setup at 1000:0, entered at
    1020:0 in real mode, the protected-mode part at 1 MiB; the payload runs every step."""
    from kexectest.analysis.core import analyze
    from kexectest.trace import split_all

    elf = pl.patch(built_payload, tmp_path / "p.elf", debug_exit=True)
    bz = tmp_path / "p.bzImage"
    bz.write_bytes(bzimage.make(pl.PayloadImage.open(elf)))
    serial = tmp_path / "serial.raw"
    proc = subprocess.run(["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256",
                           "-display", "none", "-monitor", "none", "-no-reboot",
                           "-serial", f"file:{serial}", "-device",
                           "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", str(bz)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == (0x31 << 1) | 1, proc.stderr
    report = analyze(split_all(serial.read_bytes()), stop_reason="final").to_dict()
    assert report["payload"]["via"] == "setup" and report["payload"]["entry"] in (16, "16")
    assert report["verdict"] == "completed", report["verdict"]
