"""analysis/devices.py: the device behind each BIOS call and the cause finding for a failed or
hung one, from hand-made records and snapshots, from real captures in tests/corpus, and from one
real lab run (QEMU/TCG, SeaBIOS, Debian's kernel, a real kexec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kexectest.analysis import devices as dv
from kexectest.analysis.replay import analyze_log
from kexectest.target.snapshot import parse_snapshot
from kexectest.trace import format_line, split_all

CORPUS = Path(__file__).parent / "corpus"


# ---- hand-made evidence -----------------------------------------------------------------------

def scan_lines(*fns, present=True) -> list:
    """Trace Lines of a PCI scan: fns are (bdf, vendor, device, class, cmd[, hdr, sec, sub])."""
    body = ["KT state pci present=1 cf8=80000000" if present else "KT state pci present=0"]
    for f in fns:
        bdf, ven, dev, cls, cmd, *rest = f
        hdr = rest[0] if rest else 0
        line = (f"KT state pcifn bdf={bdf} vendor={ven:04X} device={dev:04X} class={cls:06X} "
                f"cmd={cmd:04X} hdr={hdr:02X}")
        if len(rest) == 3:
            line += f" sec={rest[1]:02X} sub={rest[2]:02X}"
        body.append(line)
    return split_all("".join(format_line(b) + "\r\n" for b in body).encode())


def snap_fn(bdf, vendor, device, cls, cmd, driver=None, boot_vga=None, power="D0"):
    return {"bdf": bdf, "vendor": vendor, "device": device, "class": cls, "cmd": cmd,
            "driver": driver, "module": driver, "power": power, "boot_vga": boot_vga}


def edd_buffer(bdf=None, host_bus=b"PCI ", interface=b"ATA     ", path_len=36, size=0x1E,
               break_checksum=False) -> bytes:
    """An int 13h AH=48h buffer as a BIOS fills it (66 bytes); bdf=None: EDD 1.x, no path."""
    b = bytearray(66)
    b[0:2] = size.to_bytes(2, "little")
    if bdf is not None:
        b[30:32] = (0xBEDD).to_bytes(2, "little")
        b[32] = path_len
        b[36:40] = host_bus
        b[40:48] = interface
        b[48:51] = bytes(bdf)
        b[65] = (-sum(b[30:65])) & 0xFF
        if break_checksum:
            b[65] ^= 0x01
    return bytes(b)


def step(sid, int_no, status="ok", calls=()):
    return {"id": sid, "int": int_no, "status": status, "calls": list(calls), "result": {}}


def call(drive=None, status="ok", data=b"", result=None):
    return {"iteration": f"dl={drive}" if drive else None, "status": status,
            "data": {"": data.hex()} if data else {}, "result": result or {}}


# a q35-like machine after Linux with ahci bound: scan after kexec, snapshot before
Q35_SCAN = scan_lines(("00:00.0", 0x8086, 0x29C0, 0x060000, 0x0103),
                      ("00:01.0", 0x1234, 0x1111, 0x030000, 0x0103),
                      ("00:1F.0", 0x8086, 0x2918, 0x060100, 0x0103, 0x80),
                      ("00:1F.2", 0x8086, 0x2922, 0x010601, 0x0503, 0x80))
Q35_SNAP = {"pci": [snap_fn("0000:00:00.0", 0x8086, 0x29C0, 0x060000, 0x0103, power="unknown"),
                    snap_fn("0000:00:01.0", 0x1234, 0x1111, 0x030000, 0x0103, "bochs-drm", 1),
                    snap_fn("0000:00:1f.0", 0x8086, 0x2918, 0x060100, 0x0103),
                    snap_fn("0000:00:1f.2", 0x8086, 0x2922, 0x010601, 0x0507, "ahci")],
            "edd": {"80": {"mbr_signature": 0x4B545330}},
            "block": [{"name": "sda", "sectors": 32768, "removable": 0, "pci": "0000:00:1f.2",
                       "mbr_signature": 0x4B545330}],
            "input": [{"id": "input0", "name": "AT Translated Set 2 keyboard",
                       "phys": "isa0060/serio0/input0", "ev": 0x120013, "pci": None}]}
AHCI_STEPS = [step("edd-params", 0x13, calls=[call("80", data=edd_buffer(size=0x1A))]),
              step("read-chs", 0x13, status="hung"), step("video-mode", 0x10, calls=[call()]),
              step("kbd-shift", 0x16, calls=[call()]), step("e820", 0x15, calls=[call()])]
AHCI_HANG = {"step": "read-chs", "drive": 0x80, "iteration": "dl=80"}


def test_class_names_for_the_classes_that_matter():
    cases = {(0x010601, None, None): ("AHCI controller", "ahci"),
             (0x010180, None, None): ("IDE controller", "ide"),
             (0x010802, None, None): ("NVMe controller", "nvme"),
             (0x010000, None, None): ("SCSI controller", "scsi"),
             (0x0C0300, None, None): ("UHCI USB controller", "uhci"),
             (0x0C0310, None, None): ("OHCI USB controller", "ohci"),
             (0x0C0320, None, None): ("EHCI USB controller", "ehci"),
             (0x0C0330, None, None): ("xHCI USB controller", "xhci"),
             (0x0C03FE, None, None): ("USB controller", "usb"),
             (0x030000, None, None): ("VGA controller", "vga"),
             (0x060100, None, None): ("ISA/LPC bridge", "isa-bridge"),
             (0x060400, None, None): ("PCI-PCI bridge", "pci-bridge"),
             (0x010000, 0x1AF4, 0x1001): ("virtio block device", "virtio-blk"),
             (0x018000, 0x1AF4, 0x1042): ("virtio block device", "virtio-blk"),
             (0x010000, 0x1AF4, 0x1004): ("virtio SCSI controller", "virtio-scsi"),
             (0x010000, 0x1AF4, 0x1048): ("virtio SCSI controller", "virtio-scsi"),
             (0xFF0000, None, None): ("class FF0000", "other"),
             (None, None, None): ("unknown class", "unknown")}
    for args, want in cases.items():
        assert dv.class_name(*args) == want, args


def test_bdf_forms_meet():
    assert dv.norm_bdf("0000:00:1F.2") == dv.norm_bdf("00:1f.2") == "00:1f.2"
    assert dv.norm_bdf("0001:02:03.4") == "0001:02:03.4"
    assert dv.norm_bdf("00:1f") is None and dv.norm_bdf(None) is None


def test_scan_from_records():
    scan = dv.read_scan(Q35_SCAN)
    assert scan.present is True and scan.cf8 == 0x80000000
    assert list(scan.functions) == ["00:00.0", "00:01.0", "00:1f.0", "00:1f.2"]
    assert scan.functions["00:1f.2"]["cmd"] == 0x0503 and scan.functions["00:1f.0"]["hdr"] == 0x80
    # a second scan in the same log (the payload entered again) replaces the first
    again = Q35_SCAN + scan_lines(("00:00.0", 0x8086, 0x1237, 0x060000, 0x0103))
    assert list(dv.read_scan(again).functions) == ["00:00.0"]
    none = dv.read_scan(scan_lines(present=False))
    assert none.present is False and none.functions == {}
    assert dv.read_scan([]).present is None
    bridged = dv.read_scan(scan_lines(("00:05.0", 0x1B36, 0x0001, 0x060400, 0x0103, 0x01, 1, 2)))
    assert bridged.functions["00:05.0"]["secondary_bus"] == 1
    assert bridged.functions["00:05.0"]["subordinate_bus"] == 2


def test_edd_device_path():
    p = dv.edd_device_path(edd_buffer((0, 1, 1)))
    assert p["bdf"] == "00:01.1" and p["interface"] == "ATA" and p["checksum_ok"] is True
    assert p["size"] == 0x1E, "SeaBIOS fills the path and leaves 30 in the size word"
    assert dv.edd_device_path(edd_buffer((0, 1, 1), break_checksum=True))["checksum_ok"] is False
    assert dv.edd_device_path(edd_buffer((0, 1, 1), path_len=44))["checksum_ok"] is None
    isa = dv.edd_device_path(edd_buffer((0xF0, 0x01, 0), host_bus=b"ISA "))
    assert isa["host_bus"] == "ISA" and "bdf" not in isa
    assert "BEDDh" in dv.edd_device_path(edd_buffer(size=0x1A))["why"]
    assert "66" in dv.edd_device_path(b"\x1a\x00" * 4)["why"]


def test_device_table_joins_before_and_after():
    table = {r["bdf"]: r for r in dv.device_table(dv.read_scan(Q35_SCAN), Q35_SNAP)}
    ahci = table["00:1f.2"]
    assert (ahci["linux_driver"], ahci["cmd_before"], ahci["cmd_after"]) == ("ahci", "0507", "0503")
    assert ahci["bus_master_before"] is True and ahci["bus_master_after"] is False
    assert ahci["class"] == "AHCI controller" and ahci["seen_by"] == ["linux", "payload"]
    # a function only one side saw is kept, with the other side's facts unknown
    only_linux = dv.device_table(dv.read_scan([]), {"pci": [snap_fn("0000:00:04.0", 0x1B36,
                                                                     0x000D, 0x0C0330, 0x0406,
                                                                     "xhci_hcd")]})
    assert only_linux[0]["bus_master_after"] is None and only_linux[0]["bus_master_before"] is True
    only_payload = dv.device_table(dv.read_scan(Q35_SCAN), None)
    assert all(r["linux_driver"] is None and r["bus_master_before"] is None for r in only_payload)
    assert dv.device_ref(only_payload[0]).keys() == set(dv.DEVICE_KEYS)


def test_drive_by_device_path_link_host_bus_and_signature():
    ide_scan = scan_lines(("00:01.1", 0x8086, 0x7010, 0x010180, 0x0101))
    snap = {"pci": [snap_fn("0000:00:01.1", 0x8086, 0x7010, 0x010180, 0x0105, "ata_piix")]}
    by_path = [step("edd-params", 0x13, calls=[call("80", data=edd_buffer((0, 1, 1)))])]
    use = dv.Devices(ide_scan, snap, by_path).disk(0x80)
    assert use.device["bdf"] == "00:01.1" and use.held_by == "ata_piix"
    assert "EDD 3.0 device path" in use.evidence and use.missing == []
    no_path = [step("edd-params", 0x13, calls=[call("80", data=edd_buffer(size=0x1A))])]
    linked = dict(snap, edd={"80": {"pci_dev": "0000:00:01.1"}})
    use = dv.Devices(ide_scan, linked, no_path).disk("80")
    assert use.device["bdf"] == "00:01.1" and "pci_dev" in use.evidence
    assert any("no EDD 3.0 device path" in m for m in use.missing)
    text = dict(snap, edd={"80": {"host_bus": "PCI \t00:01.1  channel: 0"}})
    assert dv.Devices(ide_scan, text, no_path).disk("80").device["bdf"] == "00:01.1"
    use = dv.Devices(Q35_SCAN, Q35_SNAP, AHCI_STEPS).disk("80")
    assert use.device["bdf"] == "00:1f.2" and "4B545330" in use.evidence and "sda" in use.evidence
    # the payload's own sector read gives the signature when the kernel's EDD has none
    read = AHCI_STEPS + [step("read-lba", 0x13, calls=[call("80", result={"mbr_signature": "4B545330"})])]
    snap2 = dict(Q35_SNAP, edd={})
    use = dv.Devices(Q35_SCAN, snap2, read).disk("80")
    assert use.device["bdf"] == "00:1f.2" and "after kexec" in use.evidence


def test_drive_without_evidence_is_never_matched_by_class():
    snap = dict(Q35_SNAP, block=[])
    use = dv.Devices(Q35_SCAN, snap, AHCI_STEPS).disk("80")
    assert use.device is None, "the only storage controller is not taken for the drive's"
    assert any("no EDD 3.0 device path" in m for m in use.missing)
    assert any("no Linux disks" in m for m in use.missing)
    twins = dict(Q35_SNAP, block=[dict(Q35_SNAP["block"][0]),
                                  dict(Q35_SNAP["block"][0], name="sdb", pci="0000:00:1f.3")])
    use = dv.Devices(Q35_SCAN, twins, AHCI_STEPS).disk("80")
    assert use.device is None and any("2 Linux disks (sda, sdb)" in m for m in use.missing)
    zero = dict(Q35_SNAP, edd={"80": {"mbr_signature": 0}})
    assert dv.Devices(Q35_SCAN, zero, AHCI_STEPS).disk("80").device is None
    elsewhere = [step("edd-params", 0x13, calls=[call("80", data=edd_buffer((0, 9, 0)))])]
    use = dv.Devices(Q35_SCAN, None, elsewhere).disk("80")
    assert use.device is None and any("00:09.0 is neither" in m for m in use.missing)
    broken = [step("edd-params", 0x13, calls=[call("80", data=edd_buffer((0, 0x1F, 2),
                                                                         break_checksum=True))])]
    use = dv.Devices(Q35_SCAN, None, broken).disk("80")
    assert use.device is None and any("checksum" in m for m in use.missing)
    assert dv.Devices(Q35_SCAN, None, []).disk("81").missing[0].startswith("no edd-params answer")


def test_video_is_the_vga_function():
    d = dv.Devices(Q35_SCAN, Q35_SNAP, [])
    assert d.video().device["bdf"] == "00:01.0" and d.video().held_by == "bochs-drm"
    two = Q35_SCAN + scan_lines(("00:01.0", 0x1234, 0x1111, 0x030000, 0x0103),
                                ("00:03.0", 0x1B36, 0x0100, 0x030000, 0x0103))
    snap = dict(Q35_SNAP, pci=[snap_fn("0000:00:01.0", 0x1234, 0x1111, 0x030000, 3, None),
                               snap_fn("0000:00:03.0", 0x1B36, 0x0100, 0x030000, 3, "qxl", 1)])
    use = dv.Devices(two, snap, []).video()
    assert use.device["bdf"] == "00:03.0" and "boot_vga" in use.evidence
    assert dv.Devices(two, None, []).video().device is None


def test_a_virtio_gpu_with_vga_is_the_video_function():
    """virtio-vga is named by its virtio id (a virtio GPU) and is VGA by its class code."""
    scan = scan_lines(("00:00.0", 0x8086, 0x1237, 0x060000, 0x0103),
                      ("00:02.0", 0x1AF4, 0x1050, 0x030000, 0x0103))
    use = dv.Devices(scan, None, []).video()
    assert use.device["bdf"] == "00:02.0" and use.device["class"] == "virtio GPU"


def test_keyboard_ps2_or_usb_only_by_evidence():
    xhci_scan = Q35_SCAN + scan_lines(("00:00.0", 0x8086, 0x29C0, 0x060000, 0x0103),
                                      ("00:04.0", 0x1B36, 0x000D, 0x0C0330, 0x0402),
                                      ("00:1F.0", 0x8086, 0x2918, 0x060100, 0x0103, 0x80))
    usb_kbd = {"id": "input3", "name": "QEMU QEMU USB Keyboard", "ev": 0x120013,
               "phys": "usb-0000:00:04.0-1/input0", "pci": "0000:00:04.0"}
    mouse = {"id": "input4", "name": "QEMU USB Mouse", "ev": 0x17,
             "phys": "usb-0000:00:04.0-2/input0", "pci": "0000:00:04.0"}
    xhci = snap_fn("0000:00:04.0", 0x1B36, 0x000D, 0x0C0330, 0x0406, "xhci_hcd")
    lpc = snap_fn("0000:00:1f.0", 0x8086, 0x2918, 0x060100, 0x0103)
    ps2 = Q35_SNAP["input"][0]
    use = dv.Devices(xhci_scan, {"pci": [xhci, lpc], "input": [usb_kbd, mouse]}, []).keyboard()
    assert use.device["bdf"] == "00:04.0" and use.held_by == "xhci_hcd" and not use.ps2
    both = dv.Devices(xhci_scan, {"pci": [xhci, lpc], "input": [ps2, usb_kbd]}, []).keyboard()
    assert both.device["bdf"] == "00:1f.0" and both.ps2 and both.held_by == "i8042"
    assert "USB keyboards too" in both.evidence
    mice = dv.Devices(xhci_scan, {"pci": [xhci, lpc], "input": [mouse]}, []).keyboard()
    assert mice.device is None and "no keyboard" in mice.evidence
    # no snapshot: an 8042 answering the payload is the evidence, never a USB guess
    kbc = [step("a20-kbc", 0, calls=[call()])]
    assert dv.Devices(xhci_scan, None, kbc).keyboard().device["bdf"] == "00:1f.0"
    assert dv.Devices(xhci_scan, None, [step("a20-kbc", 0, "error")]).keyboard().device is None


def test_cause_sentence_for_the_ahci_hang():
    got = dv.diagnose(Q35_SCAN, Q35_SNAP, AHCI_STEPS, AHCI_HANG)
    assert got["hang_device"] == {"bdf": "00:1f.2", "vendor": "8086", "device": "2922",
                                  "class": "AHCI controller", "linux_driver": "ahci",
                                  "bus_master_before": True, "bus_master_after": False}
    (cause,) = got["causes"]
    assert (cause["step"], cause["drive"], cause["status"]) == ("read-chs", "80", "hung")
    assert cause["sentence"] == (
        "drive 80h is on 00:1f.2, an AHCI controller held by Linux's ahci driver before kexec; "
        "bus mastering is off now (it was on before): the BIOS's AHCI driver cannot run its "
        "commands")
    assert got["steps"]["read-chs"]["device"] == got["hang_device"]
    assert got["steps"]["video-mode"]["device"]["bdf"] == "00:01.0"
    assert got["steps"]["kbd-shift"]["device"]["bdf"] == "00:1f.0"
    assert got["steps"]["e820"] == {"device": None}
    assert got["missing"] == [] and got["pci"] == {"present": True, "functions": 4}


def test_cause_findings_say_what_is_missing():
    # no snapshot: the driver before kexec and bus mastering before are not known
    got = dv.diagnose(Q35_SCAN, None, [step("edd-params", 0x13, calls=[
        call("80", data=edd_buffer((0, 0x1F, 2)))]), step("read-chs", 0x13, "hung")], AHCI_HANG)
    (cause,) = got["causes"]
    assert "its Linux driver before kexec is not known" in cause["sentence"]
    assert "bus mastering is off now: the BIOS's AHCI driver" in cause["sentence"]
    assert any("no before-snapshot" in m for m in cause["missing"])
    # no scan either: the state after kexec is not known
    got = dv.diagnose([], Q35_SNAP, AHCI_STEPS, AHCI_HANG)
    assert "state after kexec is not known" in got["causes"][0]["sentence"]
    assert any("no PCI scan" in m for m in got["missing"])
    # no device evidence at all: the storage controllers are listed as facts, not matched
    got = dv.diagnose(Q35_SCAN, dict(Q35_SNAP, block=[]), AHCI_STEPS, AHCI_HANG)
    (cause,) = got["causes"]
    assert cause["device"] is None and got["hang_device"] is None
    assert cause["sentence"].startswith("drive 80h: the BIOS gave no EDD 3.0 device path")
    assert ("Mass-storage controllers on this machine: 00:1f.2 (AHCI controller, ahci before "
            "kexec, bus mastering on before, off now)") in cause["sentence"]


def test_failed_call_on_the_second_drive_and_a_pio_controller():
    ide_scan = scan_lines(("00:01.1", 0x8086, 0x7010, 0x010180, 0x0101))
    snap = {"pci": [snap_fn("0000:00:01.1", 0x8086, 0x7010, 0x010180, 0x0105, "ata_piix")]}
    steps = [step("edd-params", 0x13, calls=[call("80", data=edd_buffer((0, 1, 1))),
                                               call("81", data=edd_buffer((0, 1, 1)))]),
             step("read-lba", 0x13, "error", calls=[call("80"), call("81", status="error")])]
    got = dv.diagnose(ide_scan, snap, steps)
    (cause,) = got["causes"]
    assert (cause["drive"], cause["status"]) == ("81", "error")
    assert cause["sentence"] == (
        "drive 81h is on 00:01.1, an IDE controller held by Linux's ata_piix driver before "
        "kexec; bus mastering is off now (it was on before); the BIOS's ATA driver needs none")
    assert set(got["steps"]["read-lba"]["drives"]) == {"80", "81"}


# ---- real captures ---------------------------------------------------------------------------

def diagnose_log(name: str) -> tuple[dict, dict, dict | None]:
    path = CORPUS / name
    lines = split_all(path.read_bytes())
    report = analyze_log(path).to_dict()
    snap = parse_snapshot(ln.text for ln in lines)
    return dv.diagnose(lines, snap, report["steps"], report["hang"]), report, snap


def test_real_lab_capture_ahci_held_by_linux():
    got, report, snap = diagnose_log("real-lab-ahci-q35.log")
    assert report["verdict"] == "hung" and report["hang"]["step"] == "read-chs"
    assert snap["complete"] and "ahci" in snap["modules"]
    dev = got["hang_device"]
    assert dev["bdf"] == "00:1f.2" and dev["linux_driver"] == "ahci"
    assert dev["bus_master_before"] is True and dev["bus_master_after"] is False
    (cause,) = got["causes"]
    assert "held by Linux's ahci driver" in cause["sentence"]
    assert "the BIOS's AHCI driver cannot run its commands" in cause["sentence"]
    assert "sda" in cause["evidence"], "SeaBIOS gives AHCI drives no device path"
    assert any("no EDD 3.0 device path" in m for m in cause["missing"])


def test_real_lab_capture_ahci_timeout_names_step_device_and_driver():
    """The issue's done-when command with its 60 s timeout: SeaBIOS's AHCI driver gives up
    after about 32 s, so the disk steps fail rather than hang; the verdict names both steps,
    the AHCI function and Linux's ahci driver."""
    a = analyze_log(CORPUS / "real-lab-ahci-driver-timeout-q35.log")
    d = a.to_dict()
    assert d["verdict"] == "failed-steps" and d["hang"] is None
    assert [c["step"] for c in d["causes"]] == ["read-chs", "read-lba"]
    assert all(c["device"] == AHCI_DEVICE and c["status"] == "error" for c in d["causes"])
    line = a.one_line()
    assert line.startswith("failed-steps: 2 of 71 steps returned errors: read-chs")
    assert line.endswith("drive 80h is on 00:1f.2, an AHCI controller held by Linux's ahci "
                         "driver before kexec; bus mastering is off now (it was on before): the "
                         "BIOS's AHCI driver cannot run its commands")
    # the same machine without the driver: nothing failed, and no Linux disk names drive 80h
    b = analyze_log(CORPUS / "real-lab-ahci-no-driver-q35.log").to_dict()
    assert b["verdict"] == "completed" and b["causes"] == []
    assert b["devices"]["drives"]["80"]["device"] is None
    assert any("no Linux disks" in m for m in b["devices"]["drives"]["80"]["missing"])


def test_real_lab_capture_default_drivers():
    got, report, snap = diagnose_log("real-lab-pci-q35.log")
    assert report["verdict"] == "completed" and got["causes"] == []
    table = {r["bdf"]: r for r in got["table"]}
    assert set(table) == {dv.norm_bdf(f["bdf"]) for f in snap["pci"]}
    assert all(r["seen_by"] == ["linux", "payload"] for r in table.values())
    virtio = [r for r in table.values() if r["linux_driver"] == "virtio-pci"]
    assert virtio, "the lab loads virtio_pci for its 9p share"
    # Linux cleared bus mastering of the bound device at kexec; the unbound AHCI kept it
    assert virtio[0]["bus_master_before"] is True and virtio[0]["bus_master_after"] is False
    ahci = next(r for r in table.values() if r["kind"] == "ahci")
    assert ahci["linux_driver"] is None and ahci["bus_master_after"] is True
    assert got["steps"]["read-chs"]["device"] is None
    assert got["steps"]["kbd-shift"]["device"]["class"] == "ISA/LPC bridge"


def test_real_direct_capture_device_paths_and_bridge():
    got, report, snap = diagnose_log("real-direct-pci-pc.log")
    assert snap is None and report["verdict"] == "completed"
    assert got["pci"]["functions"] == 8
    table = {r["bdf"]: r for r in got["table"]}
    assert table["01:04.0"]["class"] == "virtio entropy source", "behind the bridge at 00:05.0"
    drives = got["steps"]["read-chs"]["drives"]
    assert drives["80"]["bdf"] == drives["81"]["bdf"] == "00:01.1"
    assert "EDD 3.0 device path" in got["steps"]["read-chs"]["evidence"]
    assert any("no before-snapshot" in m for m in got["missing"])


# ---- one real lab run ------------------------------------------------------------------------

@pytest.mark.qemu
def test_lab_guest_shows_its_pci_functions_with_their_drivers(tmp_path, built_payload, lab_image):
    """q35 through a real kexec: the snapshot lists every PCI function with its Linux driver
    (virtio_pci is bound for the 9p share, so the run takes the 9p way in), and the payload's
    scan after kexec the same ones."""
    from kexectest.lab.runner import run_virtual
    result = run_virtual("q35", out_dir=tmp_path, payload=built_payload, image=lab_image,
                         quiet=True, accel="tcg", timeout=20.0, agent="9p")
    console = (result.bundle_dir / "console.log").read_bytes()
    report = json.loads((result.bundle_dir / "report.json").read_text())
    lines = split_all(console)
    snap = parse_snapshot(ln.text for ln in lines)
    assert snap["complete"] and snap["bad_lines"] == 0
    assert "virtio_pci" in snap["modules"] and "edd" in snap["modules"]
    drivers = {f["bdf"]: f["driver"] for f in snap["pci"]}
    assert "virtio-pci" in drivers.values()
    assert all(f["cmd"] is not None for f in snap["pci"]), "root reads every command word"
    got = dv.diagnose(lines, snap, report["steps"], report["hang"])
    assert got["pci"]["present"] is True
    assert {r["bdf"] for r in got["table"] if "payload" in r["seen_by"]} == \
        {dv.norm_bdf(b) for b in drivers}
    bound = [r for r in got["table"] if r["linux_driver"] == "virtio-pci"]
    assert all(r["bus_master_before"] and r["bus_master_after"] is False for r in bound)
    kbd = got["steps"]["kbd-shift"]["device"]
    assert kbd["class"] == "ISA/LPC bridge" and "i8042" in got["steps"]["kbd-shift"]["evidence"]
    # q35's AHCI without Linux's ahci driver (the lab's default): the run completes, and the
    # report's own device table says the controller was unbound and kept bus mastering
    assert report["verdict"] == "completed" and report["causes"] == []
    ahci = next(r for r in report["devices"]["table"] if r["class"] == "AHCI controller")
    assert ahci["linux_driver"] is None and ahci["bus_master_after"] is True


# ---- the diagnosis in the report (analysis core, report.json, summary.md, terminal) ---------

AHCI_DEVICE = {"bdf": "00:1f.2", "vendor": "8086", "device": "2922", "class": "AHCI controller",
               "linux_driver": "ahci", "bus_master_before": True, "bus_master_after": False}


def test_report_names_the_device_of_every_step_and_leads_with_the_cause():
    from reportschema import assert_valid_report
    a = analyze_log(CORPUS / "real-lab-ahci-q35.log")
    d = a.to_dict()
    assert_valid_report(d)
    assert d["hang"]["device"] == AHCI_DEVICE
    steps = {s["id"]: s for s in d["steps"]}
    assert steps["read-chs"]["device"] == steps["edd-params"]["device"] == AHCI_DEVICE
    assert steps["video-mode"]["device"]["class"] == "VGA controller"
    assert steps["kbd-shift"]["device"]["class"] == "ISA/LPC bridge"
    assert steps["e820"]["device"] is None and steps["a20-test"]["device"] is None
    (cause,) = d["causes"]
    assert (cause["step"], cause["index"], cause["drive"], cause["status"]) == ("read-chs", 44, "80",
                                                                                "hung")
    assert a.one_line() == (
        "hung at step 044 read-chs (int 13h AX=0201h, drive 80h) (a saved log: the silence after "
        "its last line was not measured): drive 80h is on 00:1f.2, an AHCI controller held by "
        "Linux's ahci driver before kexec; bus mastering is off now (it was on before): the BIOS's "
        "AHCI driver cannot run its commands")
    # every PCI function of the scan, not the last one only
    assert [f["bdf"] for f in d["state"]["pci"]["functions"]] == [
        "00:00.0", "00:01.0", "00:02.0", "00:1F.0", "00:1F.2", "00:1F.3"]
    assert d["state"]["pci"]["present"] == "1" and "pcifn" not in d["state"]
    assert {r["bdf"] for r in d["devices"]["table"]} == {"00:00.0", "00:01.0", "00:02.0",
                                                          "00:1f.0", "00:1f.2", "00:1f.3"}
    assert d["devices"]["drives"]["80"]["device"] == AHCI_DEVICE
    assert "sda" in d["devices"]["drives"]["80"]["evidence"]


def test_summary_and_terminal_lead_with_the_cause():
    import io

    from rich.console import Console

    from kexectest.output.report import render_summary_md, render_terminal
    a = analyze_log(CORPUS / "real-lab-ahci-q35.log")
    md = render_summary_md(a)
    head = md.split("\n")[2]
    assert head.startswith("**hung at step 044 read-chs") and "held by Linux's ahci driver" in head
    why = md.index("### Why: the device behind the call")
    assert why < md.index("Last lines:")
    assert "- evidence: drive 80h's MBR signature 4B545330" in md
    assert "| 00:1f.2 | 8086:2922 | AHCI controller | ahci | 0507 | 0503 | on -> off |" in md
    assert "| 00:02.0 | 1af4:1009 | virtio 9p transport | virtio-pci | 0507 | 0503 | on -> off |" in md
    out = io.StringIO()
    render_terminal(a, Console(file=out, width=400, color_system=None))
    first, second = out.getvalue().splitlines()[:2]
    assert "drive 80h is on 00:1f.2" in first and "ahci" in first
    assert second.startswith("cause: 044 read-chs (hung, drive 80h): drive 80h is on 00:1f.2")


def test_a_cut_capture_names_the_device_but_claims_no_cause():
    """The console lost during read-chs: where it stopped has a device, but no hang is proven,
    so there is no cause and the one-line verdict does not give one."""
    from kexectest.analysis.replay import analyze_capture
    lines = split_all((CORPUS / "real-lab-ahci-q35.log").read_bytes())
    a = analyze_capture(lines, stop_reason="eof")
    assert a.verdict == "interrupted" and a.hang.device == AHCI_DEVICE
    assert a.causes == [] and "00:1f.2" not in a.one_line()


def test_a_scan_that_finds_no_pci_is_said_and_the_report_goes_on():
    """An ISA machine: configuration mechanism 1 does not answer.  The report says so, the
    verdict stands, and the snapshot's evidence is still used (with the state after kexec not
    known)."""
    from kexectest.analysis.replay import analyze_bytes
    from reportschema import assert_valid_report
    out = []
    for raw in (CORPUS / "real-lab-ahci-q35.log").read_text().splitlines():
        if "KT state pcifn" in raw:
            continue
        if "KT state pci " in raw:
            raw = raw.split("\t")[0] + "\t" + format_line("KT state pci present=0")
        out.append(raw)
    d = analyze_bytes(("\n".join(out) + "\n").encode()).to_dict()
    assert_valid_report(d)
    assert d["verdict"] == "hung" and d["hang"]["step"] == "read-chs"
    assert d["devices"]["pci"] == {"present": False, "functions": 0}
    assert d["state"]["pci"] == {"present": "0", "functions": []}
    assert any("found no PCI" in m for m in d["devices"]["missing"])
    assert d["hang"]["device"]["bus_master_after"] is None
    (cause,) = d["causes"]
    assert "its state after kexec is not known" in cause["sentence"]
    assert any("found no PCI" in m for m in cause["missing"])


def test_old_logs_keep_their_one_line_verdict():
    """A run without device evidence (no scan, no snapshot of PCI functions) says nothing more
    in its one-line verdict; its cause finding says what is missing."""
    a = analyze_log(CORPUS / "hung-edd-params.log")
    assert a.one_line().endswith("(a saved log: the silence after its last line was not measured)")
    (cause,) = a.causes
    assert cause["device"] is None and "neither a PCI scan nor a before-snapshot" in cause["sentence"]


def test_schema_device_keys_are_the_codes():
    from reportschema import schema
    s = schema()
    dev = s["$defs"]["device"]["oneOf"][1]
    assert tuple(dev["required"]) == dv.DEVICE_KEYS == tuple(dev["properties"])
    assert tuple(s["properties"]["devices"]["required"]) == dv.DEVICES_KEYS
    row = dv.device_table(dv.read_scan(Q35_SCAN), Q35_SNAP)[0]
    assert set(s["$defs"]["device_row"]["required"]) == set(row)
    cause = dv.diagnose(Q35_SCAN, Q35_SNAP, AHCI_STEPS, AHCI_HANG)["causes"][0]
    assert set(s["$defs"]["cause"]["required"]) == set(cause)
