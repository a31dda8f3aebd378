"""The analysis on the second firmware: real captures under Debian's Bochs BIOS (tests/corpus/
real-bochs-*.log, docs/firmware.md) read by the same decoders and verdicts as SeaBIOS's -- its
E820 layout, EDD 3.0 on an ISA host bus, its VBE, no video BIOS at all, no PCI."""

from __future__ import annotations

from pathlib import Path

from kexectest.analysis.replay import analyze_bytes, analyze_log

CORPUS = Path(__file__).parent / "corpus"


def report(name: str) -> dict:
    return analyze_log(CORPUS / f"{name}.log").to_dict()


def steps(d: dict) -> dict:
    return {s["id"]: s for s in d["steps"]}


def test_bochs_e820_layout_above_4g_is_read_as_it_was_printed():
    d = report("real-bochs-post-pc-5g")
    raw = (CORPUS / "real-bochs-post-pc-5g.log").read_bytes()
    assert raw.count(b" e820 i=") // 2 == len(d["e820"]) == 7  # begin and end per entry
    usable = sum(e["length"] for e in d["e820"] if e["type"] == 1)
    assert 5120 * 2**20 - usable < 2 * 2**20, "every MiB but the firmware's own"
    high = [e for e in d["e820"] if e["base"] >= 2**32]
    assert high == [{"base": 2**32, "length": 2 * 2**30, "type": 1, "type_name": "usable"}]
    assert not any(e["base"] == 0x9FC00 for e in d["e820"]), "no SeaBIOS-sized EBDA hole"
    assert steps(d)["mem88"]["result"]["kib_above_1m"] == 0xFFC0


def test_bochs_edd_on_an_isa_host_bus():
    for name in ("real-bochs-post-pc", "real-bochs-post-q35"):
        edd = steps(report(name))["edd-params"]["result"]["drives"]["80"]
        assert (edd["host_bus"], edd["interface"], edd["status"]) == ("ISA", "ATA", "ok")
        assert edd["sectors"] == 2048, "the 1 MiB disk image"
        assert int(edd["device_path"], 16) == 0, "no PCI device path"


def test_no_video_bios_and_no_pci_are_not_supported_services():
    d = steps(report("real-bochs-post-isapc"))
    for sid in ("vbe-info", "vbe-mode-info", "vbe-set-mode", "ddc-caps", "edid", "video-dcc"):
        assert d[sid]["status"] == "ok" and d[sid]["result"]["supported"] is False, sid
    assert d["pci-bios"]["result"] == {"present": False, "supported": False}
    assert d["tick-advance"]["status"] == "ok" and d["tick-advance"]["result"]["delta"] > 0


def test_bochs_vbe_is_read_from_its_own_strings():
    d = steps(report("real-bochs-post-pc"))
    info = d["vbe-info"]["result"]
    assert info["signature"] == "VESA" and info["version"] == "2.0"
    assert info["oem"].startswith("Bochs VBE") and "LGPL" in info["vendor"]
    assert d["ddc-caps"]["result"]["ddc2"] is True


def test_interrupts_off_after_a_bios_call_no_longer_read_as_a_dead_timer():
    """The Bochs BIOS's PCI calls return with IF=0 (fl=0086 after pci-bios); the tick check
    turns interrupts on for its window, so on every Bochs capture the timer ticks."""
    for path in sorted(CORPUS.glob("real-bochs-*.log")):
        d = analyze_log(path).to_dict()
        s = steps(d)
        assert s["tick-advance"]["status"] == "ok" and s["tick-advance"]["result"]["delta"] > 0, path
    fl = int(steps(report("real-bochs-post-pc"))["pci-bios"]["calls"][0]["registers"]["fl"])
    assert not fl & 0x200


def test_errors_beside_a_damaged_step_are_garbled_and_named():
    """A finished trace with an error and a step whose line was damaged: not failed-steps (its
    steps are not all there), garbled, and the intact error is still named."""
    raw = (CORPUS / "failed-steps.log").read_bytes()
    line = next(ln for ln in raw.split(b"\n") if b" end 008 base-mem " in ln)
    hurt = raw.replace(line, line.replace(b"cf=0", b"cf=1"), 1)  # the checksum no longer holds
    d = analyze_bytes(hurt).to_dict()
    assert steps(d)["base-mem"]["status"] == "unknown" and steps(d)["e801"]["status"] == "error"
    assert d["verdict"] == "garbled"
    assert "1 of 71 steps are unknown" in d["summary"] and "e801" in d["summary"]
    assert analyze_bytes(raw).to_dict()["verdict"] == "failed-steps"


def test_services_a_healthy_bios_may_lack_are_information_under_bochs():
    """The Bochs BIOS's own answers (docs/firmware.md): no int 15h AH=86h wait, no EDID from a
    display without DDC, no EGA/VGA BIOS and no PCI BIOS on isapc -- optional services answered
    'not supported', so every Bochs capture is completed."""
    for path in sorted(CORPUS.glob("real-bochs-*.log")):
        d = analyze_log(path).to_dict()
        assert d["verdict"] == "completed", (path.name, d["summary"])
        assert steps(d)["wait"]["result"] == {"ah": 0x86, "supported": False}, path.name
    pc = steps(report("real-bochs-post-pc"))
    assert pc["edid"]["result"]["supported"] is False and pc["edid"]["result"]["ax"] == 0x014F
    assert pc["ddc-caps"]["result"]["ddc2"] is True, "the adapter has DDC; the display gave none"
    isa = steps(report("real-bochs-post-isapc"))
    assert isa["video-ega"]["result"] == {"ega": False, "supported": False}
    assert isa["pci-find-vga"]["result"] == {"supported": False}


def test_other_bios_answers_decode_as_what_they_say():
    """A PCI BIOS that finds no VGA (AH=86h, SeaBIOS on isapc) answered; one that is absent
    (FFh, the Bochs BIOS) or lacks the function (81h) does not support it; any other status is
    still an error.  The 014Fh of DDC and EDID names the display, an unchanged AX the BIOS."""
    from kexectest.analysis.decoders import decode_call
    from test_decoders import regs
    assert decode_call("pci-find-vga", regs(cf=1, eax=0x8600), {}).result == {"found": False}
    for ah in (0x81, 0xFF):
        d = decode_call("pci-find-vga", regs(cf=1, eax=ah << 8), {})
        assert d.status == "ok" and d.result == {"supported": False}
    assert decode_call("pci-find-vga", regs(cf=1, eax=0x8700), {}).status == "error"
    for sid in ("ddc-caps", "edid"):
        d = decode_call(sid, regs(eax=0x014F), {})
        assert d.status == "ok" and d.result["supported"] is False and "display" in d.reason
        assert decode_call(sid, regs(eax=0x024F), {}).status == "error", "other VBE failures"
    assert decode_call("wait", regs(cf=1, eax=0x8600), {}).result["supported"] is False
    assert decode_call("wait", regs(cf=1, eax=0x8300), {}).status == "error"
