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


# ---- EDD 3.0 device path information (int 13h AH=48h, the 66-byte buffer) ---------------------

def edd_buffer(bus: bytes, iface: bytes, ipath: bytes, dpath: bytes, length: int = 36) -> bytearray:
    """An int 13h 48h result laid out as EDD 3.0 specifies: 30 bytes of drive parameters, then
    the device path information from offset 1Eh (key BEDDh, length, host bus, interface,
    interface path, device path, reserved, checksum making bytes 1Eh..41h sum to 0)."""
    b = bytearray(66)
    struct.pack_into("<HHIIIQH", b, 0, 0x42, 0x0002, 1024, 16, 63, 1032192, 512)
    struct.pack_into("<I", b, 26, 0xF000C0F4)  # DPTE at F000:C0F4
    struct.pack_into("<H", b, 30, 0xBEDD)
    b[32] = length
    b[36:40] = bus.ljust(4)
    b[40:48] = iface.ljust(8)
    b[48:56] = ipath.ljust(8, b"\0")
    b[56:64] = dpath.ljust(8, b"\0")
    b[65] = (-sum(b[30:65])) & 0xFF
    return b


def _dpi(buf) -> dict:
    d = decode_call("edd-params", regs(edx=0x80), {"": bytes(buf)})
    assert d.status == "ok"
    return d.result["device_path_info"]


def test_edd_device_path_pci_ata_master_and_slave():
    dpi = _dpi(edd_buffer(b"PCI", b"ATA", bytes([0, 1, 1, 0]), bytes([0])))
    assert dpi["layout"] == "EDD 3.0" and dpi["length"] == 36 and dpi["checksum_valid"] is True
    assert (dpi["host_bus"], dpi["interface"]) == ("PCI", "ATA")
    assert dpi["interface_path"] == {"bus": 0, "slot": 1, "function": 1, "channel": 0}
    assert dpi["device_path"] == {"device": "master"}
    slave = _dpi(edd_buffer(b"PCI", b"ATA", bytes([2, 0x1F, 2, 1]), bytes([1])))
    assert slave["interface_path"] == {"bus": 2, "slot": 31, "function": 2, "channel": 1}
    assert slave["device_path"] == {"device": "slave"}


def test_edd_device_path_by_interface():
    cases = [
        (b"ISA", b"ATA", struct.pack("<H", 0x1F0), bytes([1]),
         {"base_address": 0x1F0}, {"device": "slave"}),
        (b"PCI", b"ATAPI", bytes([0, 1, 1, 1]), bytes([0, 2]),
         {"bus": 0, "slot": 1, "function": 1, "channel": 1}, {"device": "master", "lun": 2}),
        (b"PCI", b"SCSI", bytes([0, 4, 0, 0]), bytes([5]),
         {"bus": 0, "slot": 4, "function": 0, "channel": 0}, {"lun": 5}),
        (b"PCIX", b"USB", bytes([3, 0, 7, 0]), struct.pack("<Q", 0x0123456789ABCDEF),
         {"bus": 3, "slot": 0, "function": 7, "channel": 0}, {"serial_number": "0123456789ABCDEF"}),
        (b"XPRS", b"1394", bytes([1, 0, 0, 0]), struct.pack("<Q", 0x00E0_18FF_FE00_1234),
         {"bus": 1, "slot": 0, "function": 0, "channel": 0}, {"guid": "00E018FFFE001234"}),
        (b"HTPT", b"FIBRE", bytes([0, 2, 0, 0]), struct.pack("<Q", 0x5000_C500_1234_5678),
         {"bus": 0, "slot": 2, "function": 0, "channel": 0}, {"wwn": "5000C50012345678"}),
        (b"PCI", b"SATA", bytes([0, 0x1F, 2, 0xFF]), bytes([3]),  # channel FFh: not used
         {"bus": 0, "slot": 31, "function": 2, "channel": None}, {"port": 3}),
        (b"PCI", b"RAID", bytes([0, 5, 0, 0]), struct.pack("<I", 7),
         {"bus": 0, "slot": 5, "function": 0, "channel": 0}, {"array_number": 7}),
        (b"PCI", b"I2O", bytes([0, 6, 0, 0]), struct.pack("<Q", 0xABCDEF),
         {"bus": 0, "slot": 6, "function": 0, "channel": 0}, {"identity_tag": "0000000000ABCDEF"}),
        (b"IBND", b"SCSI", bytes(8), bytes([1]), {}, {"lun": 1}),  # InfiniBand: path reserved
    ]
    for bus, iface, ipath, dpath, want_ipath, want_dpath in cases:
        dpi = _dpi(edd_buffer(bus, iface, ipath, dpath))
        assert dpi["interface_path"] == want_ipath, (bus, iface)
        assert dpi["device_path"] == want_dpath, (bus, iface)
        assert dpi["checksum_valid"] is True and dpi["host_bus_name"] and dpi["interface_name"]


def test_edd_device_path_unknown_interface_damaged_checksum_and_short_dumps():
    unknown = _dpi(edd_buffer(b"PCI", b"NVME", bytes([1, 0, 0, 0]), bytes([9, 9])))
    assert unknown["interface"] == "NVME" and unknown["interface_name"] is None
    assert unknown["device_path"] == {}  # no layout known: the raw bytes stay in the result
    raw = decode_call("edd-params", regs(), {"": bytes(edd_buffer(b"PCI", b"NVME", b"", bytes([9, 9])))})
    assert raw.result["device_path"] == "0909000000000000"
    bad = edd_buffer(b"PCI", b"ATA", bytes([0, 1, 1, 0]), bytes([0]))
    bad[65] ^= 0x01
    assert _dpi(bad)["checksum_valid"] is False
    # the EDD-4 layout (44 bytes, a 16-byte device path) runs past the 66 bytes dumped
    scsi = edd_buffer(b"PCI", b"SCSI", bytes([0, 4, 0, 0]), b"", length=44)
    scsi[56:66] = struct.pack("<HQ", 3, 2)  # target id, then the LUN's qword: bytes 56..65
    long = _dpi(scsi)
    assert long["layout"] == "EDD-4" and long["checksum_valid"] is None and "36 of its 44" in long["note"]
    assert long["device_path"] == {"id": 3, "lun": 2}
    fibre = edd_buffer(b"PCI", b"FIBRE", bytes([0, 4, 0, 0]), b"", length=44)
    fibre[56:66] = struct.pack("<Q", 0x5000C50012345678) + b"\1\0"
    assert _dpi(fibre)["device_path"] == {"wwn": "5000C50012345678"}  # its LUN lies past the dump
    odd = _dpi(edd_buffer(b"PCI", b"ATA", b"", b"", length=0xFF))
    assert odd["layout"] is None and "length 255" in odd["note"]
    for size in (31, 33, 40, 50, 57, 60):  # cut anywhere: decoded as far as it goes
        cut = bytes(edd_buffer(b"PCI", b"ATA", bytes([0, 1, 1, 0]), bytes([1])))[:size]
        d = decode_call("edd-params", regs(), {"": cut})
        assert d.status == "ok" and "undecodable" not in (d.reason or "")


def test_edd_device_path_of_a_real_seabios_capture():
    """The lab's SeaBIOS (q35/pc IDE disks): PCI 00:01.1, channel 0, drive 80h master, 81h slave."""
    from pathlib import Path

    from kexectest.analysis.replay import analyze_log
    a = analyze_log(Path(__file__).parent / "corpus" / "real-edd-two-disks.log")
    drives = next(s for s in a.steps if s["id"] == "edd-params")["result"]["drives"]
    for dl, who in (("80", "master"), ("81", "slave")):
        dpi = drives[dl]["device_path_info"]
        assert dpi["layout"] == "EDD 3.0" and dpi["checksum_valid"] is True
        assert dpi["interface_path"] == {"bus": 0, "slot": 1, "function": 1, "channel": 0}
        assert dpi["device_path"] == {"device": who}


# ---- no decoder raises, whatever the registers and dumps ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kexectest.analysis.decoders import DECODERS  # noqa: E402

_reg_value = st.one_of(st.integers(0, 0xFFFFFFFF).map(lambda v: f"{v:08X}"),
                       st.integers(0, 0xFFFF).map(lambda v: f"{v:04X}"),
                       st.sampled_from(["", "-1", "0x10", "zz", "9" * 40, "FFFFFFFFFFFFFFFFFFFF"]))
_fields = st.dictionaries(st.sampled_from(["cf", "eax", "ebx", "ecx", "edx", "esi", "edi", "ds", "es", "fl"]),
                          _reg_value)
_dumps = st.dictionaries(st.sampled_from(["", "buffer", "oem", "vendor", "product", "rev", "modes", "x"]),
                         st.binary(max_size=600), max_size=4)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(DECODERS)), _fields, st.sampled_from(["0", "1", "2", ""]), _dumps)
def test_every_decoder_survives_missing_fields_short_data_and_odd_values(name, fields, cf, dumps):
    import json
    if cf:
        fields = {**fields, "cf": cf}
    r = Regs(Record("end", 0, name, fields, None, None))
    for v in r.raw().values():
        assert 0 <= v <= 0xFFFFFFFF
    d = DECODERS[name](r, dumps)  # called directly: no catch to hide a decoder's exception
    assert d.status in ("ok", "error")
    json.dumps(d.result, allow_nan=False)  # report.json stays JSON


def test_rtc_and_pci_versions_that_are_not_bcd_are_said_so():
    bad_time = decode_call("rtc-time", regs(ecx=0x1A30, edx=0x0000), {})
    assert bad_time.status == "error" and "not BCD" in bad_time.reason and "CH=1Ah" in bad_time.reason
    assert decode_call("rtc-date", regs(ecx=0x2024, edx=0x0315), {}).result["date"] == "2024-03-15"
    pci = decode_call("pci-bios", regs(eax=1, ebx=0x021F, edx=0x20494350), {})
    assert pci.status == "ok" and pci.result["version"] == "02h.1Fh"
    assert edid_manufacturer(b"\0" * 8 + b"\x00\x00") == "???" and edid_manufacturer(b"\0" * 9) == ""
