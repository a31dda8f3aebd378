"""The KTSNAP before-snapshot: collected on this host, printed, and parsed back tolerant of what
a shared serial console does to lines (prefixes, CRs, printk interleaving, damage)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kexectest.target import snapshot as sn

MEMMAP = Path("/sys/firmware/memmap")


def host_memmap() -> list[dict]:
    """/sys/firmware/memmap read here independently of the module under test."""
    if not MEMMAP.is_dir():
        pytest.skip("this kernel has no /sys/firmware/memmap")
    out = []
    for d in sorted(MEMMAP.iterdir(), key=lambda p: int(p.name)):
        out.append({"start": int((d / "start").read_text(), 16),
                    "end": int((d / "end").read_text(), 16),
                    "type": (d / "type").read_text().strip()})
    return out


def test_round_trip_of_this_host():
    lines = sn.snapshot_lines()
    assert lines[0].startswith("KTSNAP begin v=1 ") and lines[-1].startswith("KTSNAP end ")
    assert all(ln.isascii() and "\n" not in ln for ln in lines)
    snap = sn.parse_snapshot(lines)
    assert snap["complete"] and snap["bad_lines"] == 0
    assert snap["memmap"] == host_memmap()
    assert snap["kernel"]["release"] == os.uname().release
    assert snap["kernel"]["cmdline"] == Path("/proc/cmdline").read_text().strip()
    assert snap["boot_mode"] == ("efi" if Path("/sys/firmware/efi").exists() else "bios")
    want = sn.collect()
    for key in ("e820", "edd", "dmi", "basemem_kib", "e820_source"):
        assert snap[key] == want[key] or key == "edd"  # edd values come back typed


def test_printed_block_from_the_cli_parses_back(tmp_path):
    """The block `kexectest load` prints (here refused as nobody, after printing)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the loader as nobody")
    from kexectest import payload as pl
    src = pl.payload_dir() / pl.SOURCE_NAME
    if not src.is_file():
        pytest.skip(f"payload source {src} is not there yet")
    elf = pl.build(tmp_path / "k.elf")
    pub = Path("/tmp") / f"kt-snap-{os.getpid()}.elf"
    shutil.copyfile(elf, pub)
    pub.chmod(0o644)
    try:
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "kexectest", "load", str(pub)], capture_output=True, text=True, timeout=120,
            cwd="/", env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    finally:
        pub.unlink()
    assert proc.returncode == 15, proc.stderr
    snap = sn.parse_snapshot(proc.stdout.splitlines())
    assert snap and snap["complete"]
    assert snap["memmap"] == host_memmap()


def test_console_noise_prefixes_and_damage():
    lines = sn.format_lines({
        "kernel": {"release": "6.1.0-13-amd64", "machine": "x86_64",
                   "cmdline": 'console=ttyS0,115200 quiet x="y z"'},
        "boot_mode": "bios",
        "memmap": [{"start": 0, "end": 0x9FBFF, "type": "System RAM"},
                   {"start": 0xF0000, "end": 0xFFFFF, "type": "Reserved"}],
        "e820": [{"start": 0, "end": 0x9FBFF, "type": "usable"}],
        "e820_source": "kmsg",
        "edd": {"80": {"sectors": "2048", "mbr_signature": "0x1234abcd",
                       "extensions": "Fixed disk access; Enhanced Disk Drive support"}},
        "dmi": {"sys_vendor": "QEMU", "product_name": "Standard PC (i440FX + PIIX, 1996)"},
        "basemem_kib": 639, "basemem_source": "e820",
    })
    noisy = ["[    0.000000] Linux version 6.1.0 ..."]
    for i, ln in enumerate(lines):
        noisy.append(f"[  12.{i:06d}] " + ln + "\r")  # timestamp prefix and CR
        if i == 2:
            noisy.append("[  12.5] kexec_core: Starting new kernel")
    snap = sn.parse_snapshot(noisy)
    assert snap["complete"] and snap["bad_lines"] == 0
    assert snap["kernel"]["cmdline"] == 'console=ttyS0,115200 quiet x="y z"'
    assert snap["dmi"]["product_name"] == "Standard PC (i440FX + PIIX, 1996)"
    assert snap["edd"]["80"] == {"sectors": 2048, "mbr_signature": 0x1234ABCD,
                                 "extensions": "Fixed disk access; Enhanced Disk Drive support"}
    assert snap["memmap"][1] == {"start": 0xF0000, "end": 0xFFFFF, "type": "Reserved"}
    assert snap["basemem_kib"] == 639

    # a printk cutting into a line: that line fails its checksum, is counted, the block is short
    cut = list(lines)
    cut[3] = cut[3][:20] + "<6>[ 1.0] eth0: link up" + cut[3][20:]
    snap = sn.parse_snapshot(cut)
    assert snap["bad_lines"] == 1 and not snap["complete"]
    assert len(snap["memmap"]) == 1

    # a line lost entirely: the end line's count shows it
    snap = sn.parse_snapshot(lines[:3] + lines[4:])
    assert snap["bad_lines"] == 0 and not snap["complete"]

    # two blocks (load run twice): the last one wins
    second = [ln for ln in lines]
    snap = sn.parse_snapshot(lines[:5] + second)
    assert snap["complete"] and len(snap["memmap"]) == 2

    assert sn.parse_snapshot(["no snapshot here", "KT banner version=0.1.0 ~1234"]) is None


@given(st.text(max_size=60))
def test_any_value_survives_quoting(value):
    line = sn._line("dmi", [("board_name", value), ("sys_vendor", "x")])
    assert line.isascii() and "\n" not in line and "\r" not in line
    snap = sn.parse_snapshot([line])
    assert snap["dmi"] == {"board_name": value, "sys_vendor": "x"}


def test_e820_line_pattern():
    m = sn._E820_RE.search("[    0.000000] BIOS-e820: [mem 0x00000000000f0000-0x00000000000fffff]"
                           " reserved")
    assert (int(m[1], 16), int(m[2], 16), m[3]) == (0xF0000, 0xFFFFF, "reserved")
    m = sn._E820_RE.search("BIOS-e820: [mem 0x000000007ffe0000-0x000000007fffffff] ACPI data")
    assert m[3] == "ACPI data"


def test_basemem_prefers_e820():
    snap = {"e820": [{"start": 0, "end": 0x9F7FF, "type": "usable"}],
            "memmap": [{"start": 0, "end": 0x9FBFF, "type": "System RAM"}]}
    assert sn.basemem(snap) == (638, "e820")
    assert sn.basemem({"memmap": snap["memmap"]}) == (639, "memmap")
    assert sn.basemem({}) == (None, None)
