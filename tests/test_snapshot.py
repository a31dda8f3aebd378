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


# --- devices: PCI functions and drivers, modules, display and input owners ---------------------


class FakeSys:
    """A tmp directory shaped like Linux's /sys and /proc where the snapshot reads devices:
    real directories, files and relative symlinks, as sysfs lays them out."""

    def __init__(self, root: Path):
        self.sys, self.proc, self.dev = root / "sys", root / "proc", root / "dev"
        self.proc.mkdir(parents=True)
        self.dev.mkdir()
        for d in ("bus/pci/devices", "class/drm", "class/graphics", "class/input", "block"):
            (self.sys / d).mkdir(parents=True)

    def _link(self, at: Path, target: Path):
        at.parent.mkdir(parents=True, exist_ok=True)
        at.symlink_to(os.path.relpath(target, at.parent))

    def function(self, bdf, vendor, device, cls, cmd, driver=None, module=None, power="D0",
                 boot_vga=None, config=True):
        d = self.sys / "devices" / "pci0000:00" / bdf
        d.mkdir(parents=True)
        (d / "vendor").write_text(f"0x{vendor:04x}\n")
        (d / "device").write_text(f"0x{device:04x}\n")
        (d / "class").write_text(f"0x{cls:06x}\n")
        if power:
            (d / "power_state").write_text(power + "\n")
        if boot_vga is not None:
            (d / "boot_vga").write_text(f"{boot_vga}\n")
        if config:
            cfg = bytearray(64)
            cfg[0:4] = vendor.to_bytes(2, "little") + device.to_bytes(2, "little")
            cfg[4:6] = cmd.to_bytes(2, "little")
            (d / "config").write_bytes(bytes(cfg))
        self._link(d / "subsystem", self.sys / "bus" / "pci")
        self._link(self.sys / "bus" / "pci" / "devices" / bdf, d)
        if driver:
            drv = self.sys / "bus" / "pci" / "drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            self._link(d / "driver", drv)
            if module and not (drv / "module").exists():
                (self.sys / "module" / module).mkdir(parents=True, exist_ok=True)
                self._link(drv / "module", self.sys / "module" / module)
        return d

    def drm(self, card, pci_dir):
        c = pci_dir / "drm" / card
        c.mkdir(parents=True)
        self._link(c / "device", pci_dir)
        self._link(self.sys / "class" / "drm" / card, c)
        conn = pci_dir / "drm" / card / f"{card}-Virtual-1"  # a connector: not a card
        conn.mkdir()
        self._link(self.sys / "class" / "drm" / conn.name, conn)

    def fb(self, fb, name, dev_dir):
        f = dev_dir / "graphics" / fb
        f.mkdir(parents=True)
        (f / "name").write_text(name + "\n")
        self._link(f / "device", dev_dir)
        self._link(self.sys / "class" / "graphics" / fb, f)

    def input(self, n, name, phys, ev, parent: Path):
        i = parent / "input" / f"input{n}"
        (i / "capabilities").mkdir(parents=True)
        (i / "name").write_text(name + "\n")
        (i / "phys").write_text(phys + "\n")
        (i / "capabilities" / "ev").write_text(f"{ev:x}\n")
        self._link(self.sys / "class" / "input" / i.name, i)

    def disk(self, name, parent: Path, sectors, removable=0, signature=None, scsi_type=0):
        """A disk under `parent` (its device node a plain file holding the first sector)."""
        b = parent / "block" / name
        b.mkdir(parents=True)
        (parent / "type").write_text(f"{scsi_type}\n")
        (b / "size").write_text(f"{sectors}\n")
        (b / "removable").write_text(f"{removable}\n")
        self._link(b / "device", parent)
        self._link(self.sys / "block" / name, b)
        if signature is not None:
            sector = bytearray(512)
            sector[0x1B8:0x1BC] = signature.to_bytes(4, "little")
            sector[510:512] = b"\x55\xaa"
            (self.dev / name).write_bytes(bytes(sector))

    def edd(self, dev, pci_dir=None):
        e = self.sys / "firmware" / "edd" / f"int13_dev{dev}"
        e.mkdir(parents=True)
        (e / "sectors").write_text("32768\n")
        (e / "host_bus").write_text("PCI \t00:01.1  channel: 0\n")
        if pci_dir is not None:
            self._link(e / "pci_dev", pci_dir)


@pytest.fixture
def fake(tmp_path):
    """A q35-like machine under Linux: AHCI bound to ahci, the VGA to bochs-drm with its fbdev,
    an xHCI with a USB keyboard on it, the i8042's keyboard, an unbound SMBus function."""
    f = FakeSys(tmp_path)
    f.function("0000:00:00.0", 0x8086, 0x29C0, 0x060000, 0x0000, power="unknown")
    vga = f.function("0000:00:01.0", 0x1234, 0x1111, 0x030000, 0x0003, "bochs-drm", "bochs",
                     boot_vga=1)
    xhci = f.function("0000:00:04.0", 0x1B36, 0x000D, 0x0C0330, 0x0406, "xhci_hcd", "xhci_pci")
    f.function("0000:00:1f.0", 0x8086, 0x2918, 0x060100, 0x0103, "lpc_ich", "lpc_ich")
    ahci = f.function("0000:00:1f.2", 0x8086, 0x2922, 0x010601, 0x0407, "ahci", "ahci")
    f.function("0000:00:1f.3", 0x8086, 0x2930, 0x0C0500, 0x0103, power=None, config=False)
    f.drm("card0", vga)
    f.fb("fb0", "bochs-drmdrmfb", vga)
    plat = f.sys / "devices" / "platform" / "i8042" / "serio0"
    plat.mkdir(parents=True)
    f.input(0, "Power Button", "LNXPWRBN/button/input0", 0x3, f.sys / "devices" / "LNXPWRBN:00")
    f.input(1, "AT Translated Set 2 keyboard", "isa0060/serio0/input0", 0x120013, plat)
    f.input(3, "QEMU QEMU USB Keyboard", "usb-0000:00:04.0-1/input0", 0x120013,
            xhci / "usb1" / "1-1" / "1-1:1.0" / "0003:0627:0001.0001")
    f.edd("80", ahci)
    f.edd("81")
    f.disk("sda", ahci / "ata1" / "host0" / "target0:0:0" / "0:0:0:0", 32768, signature=0x4B545330)
    f.disk("sr0", ahci / "ata2" / "host1" / "target1:0:0" / "1:0:0:0", 2048, removable=1,
           signature=0x11111111, scsi_type=5)  # an optical drive: never read
    f.disk("sdb", xhci / "usb2" / "2-1" / "2-1:1.0" / "host6" / "target6:0:0" / "6:0:0:0",
           65536, removable=1, signature=0x22222222)  # a USB stick: read
    f.disk("sdc", xhci / "usb2" / "2-2" / "2-2:1.0" / "host7" / "target7:0:0" / "7:0:0:0",
           0, removable=1, signature=0x33333333)  # a card reader without a card: not read
    loop = f.sys / "devices" / "virtual" / "block" / "loop0"  # no device under it: left out
    loop.mkdir(parents=True)
    f._link(f.sys / "block" / "loop0", loop)
    (f.proc / "modules").write_text(
        "ahci 45056 0 - Live 0x0000000000000000\n"
        "libahci 49152 1 ahci, Live 0x0000000000000000\n"
        "bochs 16384 0 - Live 0x0000000000000000\n")
    return f


def test_devices_read_from_a_sysfs_tree(fake):
    got = sn.read_devices(fake.sys, fake.proc, fake.dev)
    pci = {fn["bdf"]: fn for fn in got["pci"]}
    assert list(pci) == sorted(pci) and len(pci) == 6
    assert pci["0000:00:1f.2"] == {"bdf": "0000:00:1f.2", "vendor": 0x8086, "device": 0x2922,
                                   "class": 0x010601, "cmd": 0x0407, "driver": "ahci",
                                   "module": "ahci", "power": "D0", "boot_vga": None}
    assert pci["0000:00:01.0"]["boot_vga"] == 1 and pci["0000:00:01.0"]["module"] == "bochs"
    assert pci["0000:00:00.0"]["driver"] is None and pci["0000:00:00.0"]["power"] == "unknown"
    smbus = pci["0000:00:1f.3"]
    assert smbus["cmd"] is None and smbus["power"] is None and smbus["driver"] is None
    assert got["modules"] == ["ahci", "libahci", "bochs"]
    assert got["drm"] == [{"id": "card0", "device": "0000:00:01.0", "subsystem": "pci",
                           "driver": "bochs-drm"}]
    assert got["fb"] == [{"id": "fb0", "name": "bochs-drmdrmfb", "device": "0000:00:01.0",
                          "subsystem": "pci", "driver": "bochs-drm"}]
    inputs = {i["id"]: i for i in got["input"]}
    assert inputs["input1"] == {"id": "input1", "name": "AT Translated Set 2 keyboard",
                                "phys": "isa0060/serio0/input0", "ev": 0x120013, "pci": None}
    assert inputs["input3"]["pci"] == "0000:00:04.0" and inputs["input3"]["ev"] == 0x120013
    assert [i["id"] for i in got["input"]] == ["input0", "input1", "input3"]
    assert got["block"] == [
        {"name": "sda", "sectors": 32768, "removable": 0, "pci": "0000:00:1f.2",
         "mbr_signature": 0x4B545330},
        {"name": "sdb", "sectors": 65536, "removable": 1, "pci": "0000:00:04.0",
         "mbr_signature": 0x22222222},
        {"name": "sdc", "sectors": 0, "removable": 1, "pci": "0000:00:04.0", "mbr_signature": None},
        {"name": "sr0", "sectors": 2048, "removable": 1, "pci": "0000:00:1f.2",
         "mbr_signature": None}]
    edd = sn.read_edd(fake.sys / "firmware" / "edd")
    assert edd["80"]["pci_dev"] == "0000:00:1f.2" and "pci_dev" not in edd["81"]
    assert edd["80"]["host_bus"] == "PCI \t00:01.1  channel: 0"


def test_devices_round_trip_through_a_noisy_console(fake):
    snap = {"kernel": {"release": "6.1.0-13-amd64", "machine": "x86_64", "cmdline": ""},
            "boot_mode": "bios", "edd": sn.read_edd(fake.sys / "firmware" / "edd"),
            **sn.read_devices(fake.sys, fake.proc, fake.dev)}
    lines = sn.format_lines(snap)
    assert lines[0].startswith("KTSNAP begin v=1 ")
    kinds = [ln.split()[1] for ln in lines]
    assert kinds.count("pci") == 6 and kinds.count("input") == 3 and "modules" in kinds
    unbound = next(ln for ln in lines if "bdf=0000:00:00.0" in ln)
    assert ' driver="" ' in unbound
    assert " cmd=" not in next(ln for ln in lines if "bdf=0000:00:1f.3" in ln)
    noisy = [f"[  3.{i:06d}] {ln}\r" for i, ln in enumerate(lines)]
    noisy.insert(4, "[  3.5] ata1: SATA link up 1.5 Gbps")
    back = sn.parse_snapshot(noisy)
    assert back["complete"] and back["bad_lines"] == 0
    for key in ("pci", "modules", "drm", "fb", "input", "block"):
        assert back[key] == snap[key], key
    assert back["edd"]["80"]["pci_dev"] == "0000:00:1f.2"
    # a damaged pci line is dropped and counted, the rest stand alone
    cut = list(lines)
    i = kinds.index("pci")
    cut[i] = cut[i].replace("0x8086", "0x8087", 1)
    back = sn.parse_snapshot(cut)
    assert back["bad_lines"] == 1 and not back["complete"] and len(back["pci"]) == 5


def test_modules_split_over_lines_and_read_back_in_order(tmp_path):
    names = [f"module_{i:03d}_with_a_long_name" for i in range(40)]
    (tmp_path / "modules").write_text("".join(f"{n} 16384 0 - Live 0x0\n" for n in names))
    mods = sn.read_modules(tmp_path / "modules")
    assert mods == names
    lines = [ln for ln in sn.format_lines({"modules": mods}) if " modules " in ln]
    assert len(lines) > 1
    for ln in lines:
        run = ln.split(" names=", 1)[1].rsplit(" ~", 1)[0]
        assert len(run) <= sn.MODULES_PER_LINE
    assert sn.parse_snapshot(sn.format_lines({"modules": mods}))["modules"] == names
    # no module loaded: one empty line, read back as an empty list; no /proc/modules: no line
    (tmp_path / "modules").write_text("")
    assert sn.read_modules(tmp_path / "modules") == []
    empty = sn.format_lines({"modules": []})
    assert any('KTSNAP modules i=0 names="" ' in ln for ln in empty)
    assert sn.parse_snapshot(empty)["modules"] == []
    assert sn.read_modules(tmp_path / "absent") is None
    none = sn.format_lines({"modules": None})
    assert not any(" modules " in ln for ln in none)
    assert sn.parse_snapshot(none)["modules"] is None


def test_this_hosts_pci_functions_round_trip():
    """The host's own /sys/bus/pci: each function's command word is bytes 4-5 of its config."""
    root = Path("/sys/bus/pci/devices")
    if not root.is_dir() or not any(root.iterdir()):
        pytest.skip("no PCI functions on this host")
    snap = sn.collect()
    assert {fn["bdf"] for fn in snap["pci"]} == {d.name for d in root.iterdir()}
    for fn in snap["pci"]:
        cfg = (root / fn["bdf"] / "config").read_bytes()
        assert fn["cmd"] == int.from_bytes(cfg[4:6], "little")
        assert fn["vendor"] == int.from_bytes(cfg[0:2], "little")
        link = root / fn["bdf"] / "driver"
        assert fn["driver"] == (os.readlink(link).rsplit("/", 1)[1] if link.exists() else None)
    back = sn.parse_snapshot(sn.format_lines(snap))
    assert back["complete"] and back["pci"] == snap["pci"] and back["modules"] == snap["modules"]
    assert back["block"] == snap["block"]
    for disk in snap["block"]:  # each disk's controller is in its own sysfs path
        assert disk["pci"] is None or disk["pci"] in os.path.realpath(f"/sys/block/{disk['name']}")
