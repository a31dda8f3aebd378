"""Decoders on known register values and buffers."""

from __future__ import annotations

import struct

from kexectest.analysis.catalog import STEPS
from kexectest.analysis.decoders import Regs, decode_call, decode_edid, e820_entry, edid_manufacturer
from kexectest.trace import Record


def regs(cf=0, **r) -> Regs:
    f = {"cf": str(cf)}
    for k in ("eax", "ebx", "ecx", "edx", "esi", "edi"):
        f[k] = f"{r.get(k, 0):08X}"
    f.update(ds="2000", es=f"{r.get('es', 0x2000):04X}", fl=f"{r.get('fl', 0x202):04X}")
    return Regs(Record("end", 0, "x", f, None, None))


def test_table_is_the_payload_order():
    assert STEPS["e820"].index == 9 and STEPS["int19-boot"].index == 70
    assert STEPS["edd-params"].function == "AH=48h" and STEPS["edd-params"].int_no == 0x13


def test_e820_types():
    for typ, name in ((1, "usable"), (2, "reserved"), (3, "ACPI reclaimable"), (4, "ACPI NVS"),
                      (5, "unusable"), (6, "disabled"), (7, "persistent")):
        e = e820_entry(struct.pack("<QQII", 0x100000, 0x7EE0000, typ, 1))
        assert e["type_name"] == name and e["base"] == 0x100000 and e["length"] == 0x7EE0000
    d = decode_call("e820", regs(eax=0x534D4150, ebx=1, ecx=20), {"": struct.pack("<QQI", 0, 0x9FC00, 1)})
    assert d.status == "ok" and d.result["entry"]["length"] == 0x9FC00
    assert decode_call("e820", regs(eax=0x1234), {}).status == "error"


def test_edid_manufacturer_and_mode():
    b = bytearray(128)
    b[0:8] = bytes.fromhex("00FFFFFFFFFFFF00")
    b[8:10] = bytes.fromhex("4914")  # RHT: R=18 H=8 T=20 -> 0 10010 01000 10100
    b[17] = 24
    b[54:56] = (10800).to_bytes(2, "little")
    b[56], b[58], b[59], b[61] = 0x00, 0x40, 0x00, 0x30
    b[127] = (-sum(b[:127])) % 256
    assert edid_manufacturer(bytes(b)) == "RHT"
    e = decode_edid(bytes(b))
    assert e["year"] == 2014 and e["checksum_valid"] and e["preferred_mode"]["width"] == 1024
    assert e["preferred_mode"]["height"] == 768
    b[127] ^= 1
    assert not decode_edid(bytes(b))["checksum_valid"]


def test_vbe_strings_and_failure_modes():
    buf = bytearray(512)
    buf[0:4] = b"VESA"
    struct.pack_into("<H", buf, 4, 0x0300)
    struct.pack_into("<H", buf, 18, 256)
    d = decode_call("vbe-info", regs(eax=0x004F), {"buffer": bytes(buf), "oem": b"SeaBIOS VBE(C) 2011\0junk",
                                                   "modes": struct.pack("<3H", 0x100, 0x101, 0xFFFF)})
    assert d.status == "ok" and d.result["oem"] == "SeaBIOS VBE(C) 2011" and d.result["version"] == "3.0"
    assert d.result["modes"] == [0x100, 0x101] and d.result["total_memory_kib"] == 16384
    same = decode_call("vbe-info", regs(eax=0x4F00), {})
    # VESA is optional firmware: "not supported" is information, not a failure after kexec
    assert same.status == "ok" and same.result["supported"] is False and "unchanged" in same.reason
    assert decode_call("vbe-info", regs(eax=0x014F), {}).status == "error"


def test_success_rules():
    assert decode_call("edd-check", regs(eax=0x3000, ebx=0xAA55, ecx=7), {}).result["version"] == "3.0"
    no_edd = decode_call("edd-check", regs(ebx=0x55AA), {})  # BX unchanged: no EDD on that drive
    assert no_edd.status == "ok" and no_edd.result["supported"] is False
    pci = decode_call("pci-bios", regs(eax=1, ebx=0x0210, ecx=0, edx=0x20494350), {})
    assert pci.status == "ok" and pci.result["version"] == "2.10"
    no_pci = decode_call("pci-bios", regs(eax=1, edx=0), {})
    assert no_pci.status == "ok" and no_pci.result == {"present": False, "supported": False}
    nsup = decode_call("mem88", regs(cf=1, eax=0x8600), {})
    assert nsup.status == "error" and "not supported" in nsup.reason
    assert decode_call("tick-advance", regs(cf=1, eax=5, ebx=5), {}).status == "error"
    assert decode_call("unknown-step", regs(cf=1, eax=0x0100), {}).status == "error"
    assert decode_call("unknown-step", regs(), {}).status == "ok"
    apm = decode_call("apm-check", regs(eax=0x0102, ebx=0x504D, ecx=3), {})
    assert apm.result["version"] == "1.2" and apm.result["pm32"]


def test_disk_and_system_values():
    g = decode_call("disk-geometry", regs(ecx=0xFFFF, edx=0x0F02), {}).result
    assert g == {"cylinders": 1024, "heads": 16, "sectors_per_track": 63, "drives": 2}
    sec = bytearray(512)
    sec[0x1B8:0x1BC] = bytes.fromhex("78563412")
    sec[510:] = b"\x55\xaa"
    r = decode_call("read-chs", regs(eax=1), {"": bytes(sec)}).result
    assert r["mbr_signature"] == "12345678" and r["boot_signature"]
    eq = decode_call("equipment", regs(eax=0x4227), {}).result
    assert eq["ps2_mouse"] and eq["fpu"] and eq["serial_ports"] == 1 and eq["floppies"] == 1
    assert decode_call("dasd-type", regs(eax=0x0300, ecx=1, edx=0), {}).result["sectors"] == 65536
    assert decode_call("rtc-date", regs(ecx=0x2024, edx=0x0315), {}).result["date"] == "2024-03-15"
    assert decode_call("video-dcc", regs(eax=0x1A, ebx=8), {}).result["active"] == "VGA color"
    # short or odd buffers never raise
    assert decode_call("edd-params", regs(), {"": b"\x1e\x00"}).status == "ok"
    assert decode_call("sysconf", regs(), {"": b"\x01"}).status == "ok"


def test_unsupported_optional_service_is_not_an_error_but_a_broken_required_one_is():
    hint = decode_call("cpu-mode-hint", regs(eax=0x8600, cf=1), {})
    assert hint.status == "ok" and hint.result["supported"] is False and "AH=86h" in hint.reason
    mem = decode_call("mem88", regs(eax=0x8600, cf=1), {})
    assert mem.status == "error"
    apm_busy = decode_call("apm-connect-rm", regs(eax=0x0200, cf=1), {})
    assert apm_busy.status == "error"  # a real APM error, not absence
