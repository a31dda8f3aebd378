"""The device behind each BIOS call, and what Linux had done to it: the evidence for why a step
failed or hung.

The BIOS's own drivers (SeaBIOS src/hw/: AHCI, virtio, NVMe, the USB host controllers) set their
devices up once at POST and need bus mastering for their DMA; Linux's drivers reprogram the same
devices, and Linux clears Bus Master Enable at kexec (`pci_device_shutdown`).  So a diagnosis
needs three pieces of evidence from the same run, and this module joins them:

- the payload's PCI scan after kexec (`state pci` / `state pcifn` records, docs/trace-format.md):
  every function and its command register as the BIOS finds it;
- the "before" snapshot (`KTSNAP`, docs/snapshot-format.md): the driver Linux had bound to each
  function, its command register while Linux ran, the kernel's input devices and EDD links;
- the decoded steps (report.json's `steps`): which calls ran, failed or hung, and the EDD 3.0
  device path each drive's `edd-params` call returned.

Which device a step uses, and from what evidence:

- int 13h (a BIOS drive, DL): the PCI function in that drive's EDD 3.0 device path (host bus
  "PCI", bus/device/function at bytes 48-50 of the `edd-params` buffer; read here from the dumped
  bytes 30-65, Phoenix layout, checksummed), else the kernel's `int13_devXX/pci_dev` link or
  `host_bus` text from the snapshot (the same BIOS's answer at boot), else the one Linux disk
  whose MBR signature is the drive's (the kernel's EDD `mbr_signature`, or the payload's own
  read) and the PCI function that disk sits on.  SeaBIOS gives a device path for ATA and virtio
  drives only, not for AHCI, NVMe or USB ones: there the signature is the evidence.  With none
  of these, the step has no device and the finding says so: a drive is never matched to a
  controller by its class.
- int 10h: the VGA function (class 0300xx); with several, the one with `boot_vga=1` in the
  snapshot.
- int 16h: the kernel's keyboards before kexec (input devices with EV_KEY and EV_REP): one on
  the i8042 (`phys` isa0060/serio...) means the PS/2 controller, which sits behind the ISA/LPC
  bridge; only keyboards on USB (`phys` usb-<bdf>-..., the host controller's address) mean the
  USB host controller.  Without the snapshot's input devices, an 8042 that answered the
  payload's `a20-kbc` step means the PS/2 controller.

Everything a finding says comes from these records; where one is missing, the finding names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# ---- names: PCI class codes (PCI Code and ID Assignment specification) -------------------------

# (class code prefix, name, kind): the longest matching prefix of the 6-digit code wins
CLASSES = (
    ("0100", "SCSI controller", "scsi"),
    ("0101", "IDE controller", "ide"),
    ("0104", "RAID controller", "raid"),
    ("0105", "ATA controller", "ata"),
    ("0106", "SATA controller", "sata"),
    ("010601", "AHCI controller", "ahci"),
    ("0107", "SAS controller", "sas"),
    ("0108", "non-volatile memory controller", "nvm"),
    ("010802", "NVMe controller", "nvme"),
    ("01", "mass-storage controller", "storage"),
    ("0200", "Ethernet controller", "net"),
    ("0300", "VGA controller", "vga"),
    ("0302", "3D controller", "display"),
    ("03", "display controller", "display"),
    ("0600", "host bridge", "host-bridge"),
    ("0601", "ISA/LPC bridge", "isa-bridge"),
    ("0604", "PCI-PCI bridge", "pci-bridge"),
    ("0607", "CardBus bridge", "cardbus-bridge"),
    ("06", "bridge", "bridge"),
    ("0C0300", "UHCI USB controller", "uhci"),
    ("0C0310", "OHCI USB controller", "ohci"),
    ("0C0320", "EHCI USB controller", "ehci"),
    ("0C0330", "xHCI USB controller", "xhci"),
    ("0C03", "USB controller", "usb"),
    ("0C05", "SMBus controller", "smbus"),
)
VIRTIO_VENDOR = 0x1AF4
# virtio device types (virtio spec 5): legacy ids 1000h + n, modern ids 1040h + type
VIRTIO_LEGACY = {0x1000: 1, 0x1001: 2, 0x1002: 5, 0x1003: 3, 0x1004: 8, 0x1005: 4, 0x1009: 9}
VIRTIO_TYPES = {1: ("virtio network device", "virtio-net"), 2: ("virtio block device", "virtio-blk"),
                3: ("virtio console", "virtio"), 4: ("virtio entropy source", "virtio"),
                5: ("virtio balloon", "virtio"), 8: ("virtio SCSI controller", "virtio-scsi"),
                9: ("virtio 9p transport", "virtio"), 16: ("virtio GPU", "virtio-gpu"),
                18: ("virtio input device", "virtio")}
USB_KINDS = frozenset({"uhci", "ohci", "ehci", "xhci", "usb"})
STORAGE_KINDS = frozenset({"scsi", "ide", "raid", "ata", "sata", "ahci", "sas", "nvm", "nvme",
                           "storage", "virtio-blk", "virtio-scsi"})

# What the BIOS's driver for a kind of device does with it (SeaBIOS src/hw/, measured facts in
# the project's notes): (driver name, what it cannot do without bus mastering) -- None: it
# needs no bus mastering (ATA by PIO, the VGA BIOS).
BIOS_DRIVERS = {
    "ahci": ("AHCI", "run its commands"), "nvme": ("NVMe", "use its queues"),
    "virtio-blk": ("virtio", "use its virtqueue"), "virtio-scsi": ("virtio-scsi", "use its virtqueue"),
    "uhci": ("UHCI", "run its schedule"), "ohci": ("OHCI", "run its schedule"),
    "ehci": ("EHCI", "run its schedule"), "xhci": ("xHCI", "run its rings"),
    "ide": ("ATA", None), "vga": ("video", None),
}

NO_PCI_EVIDENCE = "the run has neither a PCI scan nor a before-snapshot that lists PCI functions"
CMD_IO, CMD_MEMORY, CMD_BUS_MASTER = 0x1, 0x2, 0x4
EV_KEY, EV_REP = 1 << 1, 1 << 20
DISK_INT, VIDEO_INT, KEYBOARD_INT = 0x13, 0x10, 0x16
_BDF_RE = re.compile(r"^(?:([0-9a-fA-F]{4,}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_EDD_HOST_BUS_RE = re.compile(r"^PCI\s+([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")
_USB_PHYS_RE = re.compile(r"^usb-((?:[0-9a-fA-F]{4,}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])-")


def norm_bdf(bdf: str | None) -> str | None:
    """"0000:00:1F.2", "00:1f.2" -> "00:1f.2" (domain 0 dropped: the payload's configuration
    mechanism 1 reaches domain 0 only); other domains keep theirs; None if it is no address."""
    m = _BDF_RE.match(bdf or "")
    if not m:
        return None
    dom, rest = m[1], f"{m[2]}:{m[3]}.{m[4]}".lower()
    return rest if dom is None or int(dom, 16) == 0 else f"{dom.lower()}:{rest}"


def class_name(class_code: int | None, vendor: int | None = None,
               device: int | None = None) -> tuple[str, str]:
    """(name, kind) of a function: virtio devices by their id, the rest by class code."""
    if vendor == VIRTIO_VENDOR and device is not None:
        vtype = VIRTIO_LEGACY.get(device, device - 0x1040 if 0x1040 <= device <= 0x107F else None)
        if vtype is not None:
            return VIRTIO_TYPES.get(vtype, (f"virtio device type {vtype}", "virtio"))
    if class_code is None:
        return "unknown class", "unknown"
    code = f"{class_code:06X}"
    best = max((c for c in CLASSES if code.startswith(c[0])), key=lambda c: len(c[0]), default=None)
    return (best[1], best[2]) if best else (f"class {code}", "other")


# ---- the payload's PCI scan -----------------------------------------------------------------

@dataclass
class Scan:
    """The payload's PCI scan: present is None when the trace has no `state pci` line."""

    present: bool | None = None
    cf8: int | None = None
    functions: dict[str, dict] = field(default_factory=dict)  # by norm_bdf


def _hex(v: str | None) -> int | None:
    try:
        return int(v, 16) if v is not None else None
    except ValueError:
        return None


def read_scan(records: Iterable) -> Scan:
    """The last PCI scan in a trace, from its Records (or Lines carrying them)."""
    scan = Scan()
    for item in records:
        rec = getattr(item, "record", item)
        if rec is None or getattr(rec, "kind", None) != "state":
            continue
        f = rec.fields
        if rec.name == "pci":
            scan = Scan(present=f.get("present") == "1", cf8=_hex(f.get("cf8")))
        elif rec.name == "pcifn" and (bdf := norm_bdf(f.get("bdf"))):
            scan.functions[bdf] = {
                "vendor": _hex(f.get("vendor")), "device": _hex(f.get("device")),
                "class": _hex(f.get("class")), "cmd": _hex(f.get("cmd")), "hdr": _hex(f.get("hdr")),
                "secondary_bus": _hex(f.get("sec")), "subordinate_bus": _hex(f.get("sub"))}
    return scan


# ---- the device table ----------------------------------------------------------------------

def _bit(cmd: int | None, bit: int) -> bool | None:
    return None if cmd is None else bool(cmd & bit)


def _x(v: int | None, digits: int) -> str | None:
    return None if v is None else f"{v:0{digits}x}"


def device_table(scan: Scan, snapshot: dict | None) -> list[dict]:
    """Every PCI function the payload or the kernel saw, in bdf order, with the Linux driver
    before kexec and the command register before (snapshot) and after (payload's scan)."""
    before = {}
    for fn in (snapshot or {}).get("pci") or ():
        bdf = norm_bdf(fn.get("bdf"))
        if bdf:
            before[bdf] = fn
    rows = []
    for bdf in sorted(set(scan.functions) | set(before)):
        a, b = scan.functions.get(bdf, {}), before.get(bdf, {})
        vendor = a.get("vendor", b.get("vendor"))
        device = a.get("device", b.get("device"))
        code = a.get("class", b.get("class"))
        name, kind = class_name(code, vendor, device)
        rows.append({
            "bdf": bdf, "vendor": _x(vendor, 4), "device": _x(device, 4),
            "class_code": _x(code, 6), "class": name, "kind": kind,
            "linux_driver": b.get("driver") if b else None,
            "linux_module": b.get("module") if b else None,
            "power_before": b.get("power") if b else None,
            "boot_vga": b.get("boot_vga") if b else None,
            "cmd_before": _x(b.get("cmd"), 4), "cmd_after": _x(a.get("cmd"), 4),
            "bus_master_before": _bit(b.get("cmd"), CMD_BUS_MASTER),
            "bus_master_after": _bit(a.get("cmd"), CMD_BUS_MASTER),
            "memory_after": _bit(a.get("cmd"), CMD_MEMORY), "io_after": _bit(a.get("cmd"), CMD_IO),
            "seen_by": [s for s, d in (("linux", b), ("payload", a)) if d],
        })
    return rows


# report.json's `devices`: the parts of `diagnose` that describe the machine (the per-step
# devices go into `steps[].device`, the causes into `causes`)
DEVICES_KEYS = ("pci", "table", "drives", "video", "keyboard", "missing")
DEVICE_KEYS = ("bdf", "vendor", "device", "class", "linux_driver", "bus_master_before",
               "bus_master_after")


def device_ref(row: dict | None) -> dict | None:
    """A table row as report.json's `steps[].device` / `hang.device`."""
    return None if row is None else {k: row[k] for k in DEVICE_KEYS}


# ---- which device a step uses --------------------------------------------------------------

@dataclass
class Use:
    """The device one call (a step, on one drive) uses, and the evidence for it."""

    device: dict | None  # a device-table row, None when the evidence names none
    evidence: str  # where the link comes from, or why there is none
    held_by: str | None = None  # the Linux driver that had it before kexec (i8042 for PS/2)
    missing: list[str] = field(default_factory=list)
    ps2: bool = False  # the keyboard's PS/2 controller behind `device` (an ISA/LPC bridge)


def _drive_key(drive) -> str | None:
    if drive is None:
        return None
    if isinstance(drive, int):
        return f"{drive:02X}"
    s = str(drive).upper()
    return s[3:] if s.startswith("DL=") else s


def _iteration_drive(it: str | None) -> str | None:
    return it[3:].upper() if it and it.lower().startswith("dl=") else None


def _data_bytes(v) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    try:
        return bytes.fromhex(v or "")
    except ValueError:
        return b""


def edd_device_path(buf: bytes) -> dict:
    """The EDD 3.0 device path in an int 13h AH=48h buffer (Phoenix layout, 66 bytes): key BEDDh
    at 30, path length at 32, host bus at 36, interface at 40, interface path at 48 (for PCI:
    bus, device, function, channel).  Returns
    {"size", "host_bus", "interface", "bdf", "checksum_ok"} or {"size", "why"} without one."""
    size = int.from_bytes(buf[0:2], "little") if len(buf) >= 2 else None
    if len(buf) < 66:
        return {"size": size, "why": f"the buffer dumped holds {len(buf)} bytes, not 66"}
    # the key, not the size word, says a path is there (SeaBIOS fills the path and leaves 30
    # in the size word; Linux's edd.c checks the key, the length and the checksum too)
    if int.from_bytes(buf[30:32], "little") != 0xBEDD:
        return {"size": size, "why": f"no device path key (BEDDh) at offset 30 in the "
                                     f"{size}-byte table it filled"}
    plen = buf[32]
    # Phoenix (36 bytes from 30) sums to 0 within the dump; T13's 44 bytes run past it
    ok = (sum(buf[30:66]) & 0xFF == 0) if plen == 36 else None if plen == 44 else False
    out = {"size": size, "host_bus": buf[36:40].decode("ascii", "replace").strip(),
           "interface": buf[40:48].decode("ascii", "replace").strip(), "path_length": plen,
           "checksum_ok": ok}
    if out["host_bus"] == "PCI":
        out["bdf"] = f"{buf[48]:02x}:{buf[49]:02x}.{buf[50] & 7}"
    return out


def _edd_call(steps: list[dict], drive: str) -> dict | None:
    for s in steps:
        if s.get("id") == "edd-params":
            for c in s.get("calls") or ():
                if _iteration_drive(c.get("iteration")) == drive and c.get("status") != "hung":
                    return c
    return None


class Devices:
    """The device table of one run and the lookups a diagnosis makes in it."""

    def __init__(self, records: Iterable, snapshot: dict | None, steps: list[dict]):
        self.scan = read_scan(records)
        self.snapshot = snapshot
        self.steps = steps or []
        self.table = device_table(self.scan, snapshot)
        self.by_bdf = {r["bdf"]: r for r in self.table}

    # -- the evidence that is missing as a whole
    def gaps(self) -> list[str]:
        out = []
        if self.scan.present is None:
            out.append("the trace has no PCI scan (a payload without one, or a cut trace): the "
                       "command registers after kexec are not known")
        elif not self.scan.present:
            out.append("the payload found no PCI (configuration mechanism 1 did not answer)")
        if self.snapshot is None:
            out.append("the log has no before-snapshot: the Linux drivers before kexec are not "
                       "known")
        elif not self.snapshot.get("pci"):
            out.append("the before-snapshot lists no PCI functions")
        if self.snapshot is not None and not self.snapshot.get("complete", True):
            bad = self.snapshot.get("bad_lines") or 0
            out.append("the before-snapshot is not whole (" + (
                f"{bad} damaged line{'s' * (bad != 1)}, " if bad else "") + "or lines lost): "
                "what its missing lines said is not known")
        return out

    @property
    def has_evidence(self) -> bool:
        """The run carries device evidence at all: a PCI scan line, or a before-snapshot that
        lists PCI functions (one from a kexectest that did not list them carries none)."""
        return self.scan.present is not None or bool((self.snapshot or {}).get("pci"))

    def _of_kind(self, kinds) -> list[dict]:
        return [r for r in self.table if r["kind"] in kinds]

    # -- int 13h
    def disk(self, drive) -> Use:
        key = _drive_key(drive)
        if key is None:
            return Use(None, "the call names no drive")
        missing = []
        call = _edd_call(self.steps, key)
        path = None
        if call is None:
            missing.append(f"no edd-params answer for drive {key}h in the trace")
        else:
            data = call.get("data") or {}
            path = edd_device_path(_data_bytes(data.get("", b"")))
            if "why" in path:
                missing.append(f"the BIOS gave no EDD 3.0 device path for drive {key}h: "
                               f"{path['why']}")
            elif path["checksum_ok"] is False:
                missing.append(f"drive {key}h's EDD 3.0 device path fails its checksum (length "
                               f"{path['path_length']}): not used")
                path = None
            elif path["checksum_ok"] is None:
                missing.append(f"drive {key}h's EDD 3.0 device path is in the 44-byte T13 layout, "
                               "whose checksum lies past the 66 bytes dumped: not checked")
            elif "bdf" not in path:
                missing.append(f"drive {key}h's EDD 3.0 device path names host bus "
                               f"{path['host_bus']!r}, not a PCI function")
                path = None
        if path and "bdf" in path:
            return self._at(path["bdf"], f"EDD 3.0 device path of drive {key}h after kexec: "
                            f"host bus PCI {path['bdf']}, interface {path['interface'] or '?'}",
                            missing)
        edd = ((self.snapshot or {}).get("edd") or {}).get(key) or {}
        link = norm_bdf(edd.get("pci_dev"))
        if link:
            return self._at(link, f"the kernel's EDD link int13_dev{key}/pci_dev at boot", missing)
        m = _EDD_HOST_BUS_RE.match(str(edd.get("host_bus") or ""))
        if m:
            bdf = f"{m[1]}:{m[2]}.{int(m[3])}".lower()
            return self._at(bdf, f"the kernel's EDD host_bus for drive {key}h at boot", missing)
        if self.snapshot is not None:
            missing.append(f"the before-snapshot has no EDD PCI link for drive {key}h")
        found = self._by_signature(key, edd, missing)
        if found:
            return self._at(found[0], found[1], missing)
        return Use(None, "; ".join(missing) or f"no evidence names drive {key}h's controller",
                   missing=missing)

    def _by_signature(self, key: str, edd: dict, missing: list[str]) -> tuple[str, str] | None:
        """The one Linux disk whose MBR signature is the BIOS drive's: the kernel's EDD keeps
        the signature the BIOS read at boot; the payload read it again after kexec."""
        sig, source = edd.get("mbr_signature"), "the kernel's EDD at boot"
        if not isinstance(sig, int):
            sig, source = self._read_signature(key), "the payload's sector read after kexec"
        if sig is None:
            missing.append(f"drive {key}h's MBR signature is neither in the before-snapshot's EDD "
                           "nor in a sector the payload read")
            return None
        if sig == 0:
            missing.append(f"drive {key}h's MBR signature is 00000000, which names no disk")
            return None
        disks = (self.snapshot or {}).get("block") or []
        same = [d for d in disks if d.get("mbr_signature") == sig]
        if not disks:
            missing.append("the before-snapshot lists no Linux disks to match the MBR signature "
                           "against")
            return None
        if len(same) != 1:
            names = ", ".join(d["name"] for d in same)
            missing.append(f"drive {key}h's MBR signature {sig:08X} ({source}) is on "
                           f"{len(same)} Linux disks{' (' + names + ')' if names else ''}")
            return None
        bdf = norm_bdf(same[0].get("pci"))
        if bdf is None:
            missing.append(f"drive {key}h's MBR signature {sig:08X} is on {same[0]['name']}, which "
                           "sits on no PCI function")
            return None
        return bdf, (f"drive {key}h's MBR signature {sig:08X} ({source}) is on Linux's "
                     f"{same[0]['name']} only, which sits on {bdf}")

    def _read_signature(self, key: str) -> int | None:
        for s in self.steps:
            if s.get("id") in ("read-chs", "read-lba"):
                for c in s.get("calls") or ():
                    if _iteration_drive(c.get("iteration")) == key and c.get("status") == "ok":
                        v = (c.get("result") or {}).get("mbr_signature")
                        if isinstance(v, str) and re.fullmatch(r"[0-9A-Fa-f]{8}", v):
                            return int(v, 16)
        return None

    def _at(self, bdf: str, evidence: str, missing: list[str]) -> Use:
        row = self.by_bdf.get(bdf)
        if row is None:
            return Use(None, evidence, missing=missing + [
                f"{bdf} is neither in the payload's PCI scan nor in the before-snapshot"])
        return Use(row, evidence, row["linux_driver"], missing)

    # -- int 10h
    def video(self) -> Use:
        # by class code: a virtio GPU with VGA (virtio-vga) is named by its virtio id
        vgas = [r for r in self.table
                if r["kind"] == "vga" or str(r.get("class_code") or "").startswith("0300")]
        if not vgas and not self.has_evidence:
            return Use(None, NO_PCI_EVIDENCE)
        if not vgas:
            return Use(None, "no VGA-class function (0300xx) in the scan or the snapshot")
        if len(vgas) == 1:
            return Use(vgas[0], "the only VGA-class function (0300xx)", vgas[0]["linux_driver"])
        boot = [r for r in vgas if r["boot_vga"] == 1]
        if len(boot) == 1:
            return Use(boot[0], "the VGA function with boot_vga=1 in the before-snapshot",
                       boot[0]["linux_driver"])
        return Use(None, f"{len(vgas)} VGA functions and no single boot_vga=1 among them")

    # -- int 16h
    def keyboards(self) -> list[dict] | None:
        """The kernel's keyboards before kexec (EV_KEY and EV_REP), None without input lines."""
        inputs = (self.snapshot or {}).get("input") or []
        if not inputs:
            return None
        return [i for i in inputs if (i.get("ev") or 0) & (EV_KEY | EV_REP) == EV_KEY | EV_REP]

    def keyboard(self) -> Use:
        kbds = self.keyboards()
        isa = self._of_kind({"isa-bridge"})
        if kbds is None:
            kbc = next((s for s in self.steps if s.get("id") == "a20-kbc"), None)
            if kbc is not None and kbc.get("status") == "ok":
                return self._ps2(isa, "no input devices in a before-snapshot; an 8042 answered "
                                      "the payload's a20-kbc step at port 64h after kexec")
            return Use(None, "no input devices in a before-snapshot and no 8042 answer in the trace")
        ps2 = [k for k in kbds if (k.get("phys") or "").startswith("isa0060/serio")]
        usb = [k for k in kbds if (k.get("phys") or "").startswith("usb-")]
        if ps2:
            also = (f"; USB keyboards too ({', '.join(repr(k.get('name')) for k in usb)}), but "
                    "the PS/2 one is the evidence used" if usb else "")
            return self._ps2(isa, f"the kernel's keyboard {ps2[0].get('name')!r} on the i8042 "
                                  f"({ps2[0].get('phys')}){also}", held_by="i8042")
        if usb:
            hosts = []
            for k in usb:
                m = _USB_PHYS_RE.match(k.get("phys") or "")
                bdf = norm_bdf(k.get("pci")) or (norm_bdf(m[1]) if m else None)
                if bdf and bdf not in hosts:
                    hosts.append(bdf)
            if len(hosts) == 1:
                return self._at(hosts[0], f"the kernel's only keyboards are on USB "
                                f"({usb[0].get('name')!r}, {usb[0].get('phys')})", [])
            return Use(None, f"the kernel's keyboards are on USB behind {len(hosts)} host "
                             f"controllers ({', '.join(hosts) or 'none named'})")
        return Use(None, "no keyboard among the kernel's input devices before kexec")

    def _ps2(self, isa: list[dict], evidence: str, held_by: str | None = None) -> Use:
        if len(isa) == 1:
            return Use(isa[0], evidence + f"; the PS/2 controller sits behind the ISA/LPC bridge "
                       f"{isa[0]['bdf']}", held_by, ps2=True)
        return Use(None, evidence + f"; {len(isa)} ISA/LPC bridges, so none is named", held_by,
                   ps2=True)

    # -- one step
    def use(self, step: dict, drive=None) -> Use | None:
        """The device `step` uses (on `drive` for int 13h), None for steps that use none."""
        n = step.get("int")
        if n == DISK_INT:
            if drive is None:
                drives = [_iteration_drive(c.get("iteration")) for c in step.get("calls") or ()]
                drive = next((d for d in drives if d), None)
            return self.disk(drive)
        if n == VIDEO_INT:
            return self.video()
        if n == KEYBOARD_INT:
            return self.keyboard()
        return None


# ---- cause findings ------------------------------------------------------------------------

def _on_off(v: bool | None) -> str:
    return {True: "on", False: "off", None: "not known"}[v]


def cause_sentence(subject: str, use: Use) -> str:
    """One plain sentence from the facts in `use`: where the call ran, who held the device,
    bus mastering before and after, and what the BIOS's driver needs."""
    row = use.device
    if row is None:
        return f"{subject}: {use.evidence}; so the device it ran on is not known"
    if use.ps2:
        held = (f"; Linux's {use.held_by} driver had it before kexec" if use.held_by else "")
        return (f"{subject} is on the PS/2 controller (i8042) behind {row['bdf']}, "
                f"{_article(row['class'])} {row['class']}{held}; the BIOS's PS/2 keyboard code "
                "uses port I/O and needs no bus mastering")
    what = f"{subject} is on {row['bdf']}, {_article(row['class'])} {row['class']}"
    if use.held_by:
        what += f" held by Linux's {use.held_by} driver before kexec"
    elif "linux" in row["seen_by"]:
        what += " with no Linux driver bound before kexec"
    else:
        what += " (its Linux driver before kexec is not known)"
    bm_b, bm_a = row["bus_master_before"], row["bus_master_after"]
    if bm_a is None:
        tail = "its state after kexec is not known (no PCI scan of it in the trace)"
    else:
        was = f" (it was {_on_off(bm_b)} before)" if bm_b is not None and bm_b != bm_a else ""
        tail = f"bus mastering is {_on_off(bm_a)} now{was}"
        bios = BIOS_DRIVERS.get(row["kind"])
        if bios and bios[1] and bm_a is False:
            tail += f": the BIOS's {bios[0]} driver cannot {bios[1]}"
        elif bios and bios[1] is None:
            tail += f"; the BIOS's {bios[0]} driver needs none"
        if row["memory_after"] is False and row["kind"] != "ide":
            tail += "; memory decoding is off now"
    return f"{what}; {tail}"


def cause_suggestion(step: dict, use: Use) -> str | None:
    """What to try next so that the BIOS answers, when this run's evidence makes the chain
    whole: a Linux driver held the device, bus mastering is off after kexec, and the BIOS's
    driver for that device needs it.  Only what the evidence implies (keep that driver off the
    device before kexec); whether it is the only cause is for `kexectest bisect` or a matrix
    cell to say.  None where a link of the chain is missing."""
    row = use.device
    if row is None or not use.held_by or use.ps2 or row["bus_master_after"] is not False:
        return None
    bios = BIOS_DRIVERS.get(row["kind"])
    if not bios or not bios[1]:
        return None
    drv = use.held_by
    return (f"load the payload from a Linux that leaves {row['bdf']} unbound: one in "
            f"which the {drv} driver never binds it (its module blacklisted, or not built), "
            f"so that {drv} never drives the device the BIOS's {bios[0]} driver set up (kernels with "
            "4d4c10f763d7, 2025, clear bus mastering of unbound devices at kexec too); "
            f"`kexectest bisect` with the machine's drivers tells whether {drv} alone breaks "
            f"{step.get('id')}")


def _article(name: str) -> str:
    """"an AHCI controller", "an xHCI ...", "a USB ...", "a VGA ...": by how the name is said."""
    said_with_vowel = name[:1] in "AEIOaeio" or name.startswith(("NVMe", "xHCI", "SMBus"))
    return "an" if said_with_vowel else "a"


def _subject(step: dict, drive: str | None) -> str:
    if step.get("int") == DISK_INT and drive:
        return f"drive {drive}h"
    return {VIDEO_INT: "the video BIOS's display", KEYBOARD_INT: "the keyboard"}.get(
        step.get("int"), f"step {step.get('id')}")


def cause_findings(dev: Devices, hang: dict | None = None) -> list[dict]:
    """A finding for every failed call and the hung one, where the step uses a device."""
    out = []
    for step in dev.steps:
        status = step.get("status")
        calls = [c for c in step.get("calls") or () if c.get("status") == "error"]
        targets: list[tuple[str | None, str]] = []
        # a step is hung only where the verdict says so (a cut capture's last step is not)
        if status == "hung":
            here = hang if hang and hang.get("step") == step.get("id") else {}
            targets.append((_iteration_drive(here.get("iteration"))
                            or _drive_key(here.get("drive")), "hung"))
        targets += [(_iteration_drive(c.get("iteration")), "error") for c in calls]
        if status == "error" and not calls:
            targets.append((None, "error"))
        for drive, how in targets:
            use = dev.use(step, drive)
            if use is None:
                continue
            sentence = cause_sentence(_subject(step, drive), use)
            if use.device is None and step.get("int") == DISK_INT:
                sentence += ". " + _storage_facts(dev)
            out.append({"step": step.get("id"), "index": step.get("index"), "drive": drive,
                        "status": how, "subject": _subject(step, drive),
                        "device": device_ref(use.device), "held_by": use.held_by,
                        "evidence": use.evidence, "sentence": sentence,
                        "suggestion": cause_suggestion(step, use),
                        "missing": use.missing + dev.gaps()})
    return out


def headline(causes: list[dict], dev: Devices) -> str | None:
    """What the one-line verdict says after it: the hung call's cause (else the first failed
    call's) when its device is known; when the run carries device evidence that does not name
    it, which piece is missing; nothing for a run without any device evidence."""
    if not causes:
        return None
    cause = next((c for c in causes if c["status"] == "hung"), causes[0])
    if cause["device"] is not None:
        return cause["sentence"]
    if not dev.has_evidence:
        return None
    missing = cause["missing"] or [cause["evidence"]]
    more = len(missing) - 1
    return (f"the device behind {cause['subject']} is not known: {missing[0]}"
            + (f" (and {more} more piece{'s' * (more != 1)} of evidence missing)" if more else ""))


def _use(use: Use) -> dict:
    return {"device": device_ref(use.device), "evidence": use.evidence, "held_by": use.held_by,
            "missing": list(use.missing)}


def _storage_facts(dev: Devices) -> str:
    """The mass-storage controllers as facts, for a drive whose controller no evidence names."""
    rows = [r for r in dev.table if r["kind"] in STORAGE_KINDS]
    if not rows and not dev.has_evidence:
        return NO_PCI_EVIDENCE[:1].upper() + NO_PCI_EVIDENCE[1:]
    if not rows:
        return "No mass-storage controller is in the PCI scan or the before-snapshot"
    parts = []
    for r in rows:
        drv = (f"{r['linux_driver']} before kexec" if r["linux_driver"] else
               "no Linux driver before kexec" if "linux" in r["seen_by"] else
               "Linux driver not known")
        parts.append(f"{r['bdf']} ({r['class']}, {drv}, bus mastering "
                     f"{_on_off(r['bus_master_before'])} before, {_on_off(r['bus_master_after'])} "
                     "now)")
    return "Mass-storage controllers on this machine: " + "; ".join(parts)


def storage_controllers(dev: Devices) -> list[dict]:
    """The machine's mass-storage controllers: listed as facts beside a drive with no device
    path, never matched to it."""
    return [device_ref(r) for r in dev.table if r["kind"] in STORAGE_KINDS]


# ---- the whole of it, in report.json's shape -----------------------------------------------

def diagnose(records: Iterable, snapshot: dict | None, steps: list[dict],
             hang: dict | None = None) -> dict:
    """The device part of a report: the table, each step's device (`steps[].device`), the hung
    call's (`hang.device`), cause findings, and the evidence missing as a whole."""
    dev = Devices(records, snapshot, steps)
    hang_drive = (_iteration_drive(hang.get("iteration")) or _drive_key(hang.get("drive"))
                  if hang else None)
    per_step = {}
    hang_device = None
    all_drives: list[str] = []
    for step in dev.steps:
        hung_here = bool(hang) and hang.get("step") == step.get("id")
        calls = step.get("calls") or ()
        drives = list(dict.fromkeys(d for d in (_iteration_drive(c.get("iteration"))
                                                for c in calls) if d))
        if hung_here and hang_drive and hang_drive not in drives:
            drives.append(hang_drive)
        if step.get("int") == DISK_INT:
            all_drives += [d for d in drives if d not in all_drives]
        if step.get("int") == DISK_INT and drives:
            uses = {d: dev.disk(d) for d in drives}
            bad = [d for c in calls if c.get("status") == "error"
                   and (d := _iteration_drive(c.get("iteration")))]
            # the drive that matters: the one it hung on, else the first that failed, else 80h..
            focus = hang_drive if hung_here and hang_drive else bad[0] if bad else drives[0]
            use = uses[focus]
            entry = {"device": device_ref(use.device), "evidence": use.evidence,
                     "drives": {d: device_ref(u.device) for d, u in uses.items()}}
        else:
            use = dev.use(step)
            entry = ({"device": device_ref(use.device), "evidence": use.evidence} if use
                     else {"device": None})
        per_step[step.get("id")] = entry
        if hung_here:
            hang_device = entry["device"]
    causes = cause_findings(dev, hang)
    return {"pci": {"present": dev.scan.present, "functions": len(dev.scan.functions)},
            "table": dev.table, "steps": per_step, "hang_device": hang_device,
            "drives": {d: _use(dev.disk(d)) for d in sorted(all_drives)},
            "video": _use(dev.video()), "keyboard": _use(dev.keyboard()),
            "causes": causes, "headline": headline(causes, dev),
            "storage_controllers": storage_controllers(dev), "missing": dev.gaps()}
