"""The hand-off page: the payload's `state bootparams` / `bp*` lines decoded into report.json's
`handoff_params`, set against the BIOS's answers of the same trace, every difference classed;
a bad page (counts past its tables, a setup_data chain that loops or leaves 4 GiB, a page the
payload could not reach) reported and never crashed on.  The lines are made with the trace
format's own checksum, and the whole trace goes through the analysis as a capture would."""

from __future__ import annotations

import pytest

from kexectest.analysis.core import analyze
from kexectest.output.report import render_summary_md
from kexectest.trace import split_all
from kexectest.trace.format import format_line

from reportschema import assert_valid_report

RAM_MAP = [(0x0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
           (0x100000, 0x7FEE0000, 1), (0x7FFE0000, 0x20000, 2)]


def kt(body: str) -> str:
    return format_line(f"KT {body}")


def page_lines(e820=RAM_MAP, *, count=None, edd=(("80", 0x8000),), setup=((0x99090, 9, 0x20, 0),),
               more=False, cmdline=b"", hi=0, overwritten=False, mode=3, cols=80,
               alt_mem_k=None):
    count = len(e820) if count is None else count
    head = f"state bootparams door=02 addr=00098000 hi={hi:08X}"
    if hi:
        return [kt(head)]
    if overwritten:
        return [kt(head + " overwritten=1")]
    alt = alt_mem_k if alt_mem_k is not None else (0x7FFDFFFF >> 10) - 1024
    first = setup[0][0] if setup else 0
    out = [kt(f"{head} loader=D0 e820={min(count, 255):02X} edd={len(edd):02X} mbr=01 "
              f"ext_mem_k=FC00 alt_mem_k={alt:08X} rsdp_hi=00000000 rsdp=000F59B0 "
              f"cmdline={0x99000 if cmdline else 0:08X} cmdline_hi=00000000 setup_hi=00000000 "
              f"setup={first:08X} version=020C secure_boot=00"),
           kt(f"state bpscreen mode={mode:02X} cols={cols:02X} lines=19 isvga=01 points=0010 "
              "page=0000 x=00 y=03 lfb=00000000 lfb_size=00000000 width=0000 height=0000 "
              "depth=0000 linelength=0000 ext_lfb=00000000"),
           kt("state bpapm version=0102 cseg=F000 offset=0000A000 cseg_16=F000 dseg=0040 "
              "flags=0003 cseg_len=FFF0 cseg_16_len=FFF0 dseg_len=FFFF")]
    for i, (base, length, t) in enumerate(e820[:128]):
        out.append(kt(f"state bpe820 n={i:02X} base_hi={base >> 32:08X} base={base & 0xFFFFFFFF:08X} "
                      f"len_hi={length >> 32:08X} len={length & 0xFFFFFFFF:08X} type={t:08X}"))
    out.append(kt("state bpmbr n=00 sig=1234ABCD"))
    for i, (dev, sectors) in enumerate(edd):
        out.append(kt(f"state bpedd n={i:02X} device={dev} version=30 support=0007 cyl=001E "
                      "heads=0F spt=3F plen=001E pflags=0002 pcyl=00000020 pheads=00000010 "
                      f"pspt=0000003F sectors_hi=00000000 sectors={sectors:08X} bps=0200"))
    for i, (addr, t, length, _next) in enumerate(setup):
        out.append(kt(f"state bpsetup n={i:02X} addr_hi=00000000 addr={addr:08X} type={t:08X} "
                      f"len={length:08X}"))
    if more:
        out.append(kt(f"state bpsetup n={len(setup):02X} addr_hi=00000000 "
                      f"addr={setup[0][0]:08X} more=1"))
    for at in range(0, min(len(cmdline), 256), 16):
        chunk = cmdline[at:at + 16].ljust(16, b"\0")
        words = " ".join(f"b{j}={chunk[4 * j:4 * j + 4].hex().upper()}" for j in range(4))
        out.append(kt(f"state bpcmdline len={len(cmdline):04X} at={at:04X} {words}"))
    return out


def e820_step(e820=RAM_MAP, index=9):
    """The E820 step as the payload prints it: one call per entry (runner.S's E820 loop)."""
    out = []
    for i, (base, length, t) in enumerate(e820):
        nxt = 0 if i == len(e820) - 1 else i + 1
        out.append(kt(f"begin {index:03d} e820 int=15 ax=E820 i={i:03d}"))
        out.append(kt(f"end {index:03d} e820 i={i:03d} cf=0 eax=534D4150 ebx={nxt:08X} "
                      "ecx=00000014 edx=534D4150 esi=00000000 edi=00003570 ds=2000 es=2000 "
                      "fl=0246"))
        raw = (base.to_bytes(8, "little") + length.to_bytes(8, "little") + t.to_bytes(4, "little")
               + b"\1\0\0\0")
        out.append(kt(f"data {index:03d} e820 i={i:03d} off=0000 {raw.hex().upper()}"))
    return out


def trace(page) -> list[str]:
    lines = [kt("banner version=0.1.0 build=00112233445566778899AABBCCDDEEFF00112233 entry=64 "
                "via=bzimage uart=03F8 div=0001 steps=071")]
    return lines + page


def run(lines):
    raw = ("\r\n".join(lines) + "\r\n").encode()
    a = analyze(split_all(raw), stop_reason="replay")
    d = a.to_dict()
    assert_valid_report(d)
    return a, d["handoff_params"]


def test_page_is_decoded_like_the_top_level_e820():
    _, hp = run(trace(page_lines(cmdline=b"console=ttyS0,115200 panic=-1")))
    assert hp["readable"] and not hp["problems"]
    assert hp["e820"][3] == {"base": 0x100000, "length": 0x7FEE0000, "type": 1,
                             "type_name": "usable"}
    assert hp["e820_entries"] == len(RAM_MAP) == len(hp["e820"])
    assert hp["loader"].startswith("kexec") and hp["protocol"] == "2.12"
    assert hp["setup_data"] == [{"addr": 0x99090, "type": 9, "type_name": "RNG_SEED",
                                 "len": 0x20}]
    assert hp["cmdline"] == "console=ttyS0,115200 panic=-1"
    assert hp["edd"][0]["device"] == "80" and hp["edd"][0]["sectors"] == 0x8000
    assert hp["edd_mbr_sig_buffer"] == ["1234ABCD"]
    assert hp["screen_info"]["orig_video_mode"] == 3
    assert hp["door"] == "64-bit"
    assert hp["apm_bios_info"]["version"] == 0x0102 and hp["apm_bios_info"]["dseg"] == 0x40


def test_no_page_no_section():
    a, hp = run([kt("banner version=0.1.0 build=00112233445566778899AABBCCDDEEFF00112233 "
                    "entry=64 via=kexec uart=03F8 div=0001 steps=071")])
    assert hp is None and "Hand-off vs firmware" not in render_summary_md(a)


def test_same_map_no_e820_difference_and_a_summary_table():
    a, hp = run(trace(page_lines()) + e820_step())
    assert [x for x in hp["differences"] if x["field"] == "e820"] == []
    row = next(r for r in hp["fields"] if r["field"] == "e820")
    assert row["same"] is True and row["firmware"].startswith(f"{len(RAM_MAP)} entries")
    md = render_summary_md(a)
    assert "### Hand-off vs firmware" in md and "| e820 |" in md


@pytest.mark.parametrize("change,cls,text", [
    # the kernel reserved part of the firmware's RAM for itself: safe
    ([(0x0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2), (0x100000, 0x1000, 128),
      (0x101000, 0x7FEDF000, 1), (0x7FFE0000, 0x20000, 2)], "expected", "reserved for itself"),
    # a firmware reserved range lost from the page
    (RAM_MAP[:4], "wrong", "lost"),
    # the firmware's reserved range handed over as RAM
    (RAM_MAP[:4] + [(0x7FFE0000, 0x20000, 1)], "wrong", "as usable RAM"),
])
def test_e820_differences_are_classed(change, cls, text):
    _, hp = run(trace(page_lines(e820=change)) + e820_step())
    diffs = [x for x in hp["differences"] if x["field"] == "e820"]
    assert len(diffs) == 1 and diffs[0]["class"] == cls and text in diffs[0]["why"], diffs


def test_count_past_the_table_is_reported_not_followed():
    big = [(0x100000 * i, 0x1000, 1) for i in range(1, 131)]
    _, hp = run(trace(page_lines(e820=big, count=200)))
    assert len(hp["e820"]) == 128
    assert any("past the table's 128" in p for p in hp["problems"])


def test_setup_data_loop_is_reported():
    _, hp = run(trace(page_lines(setup=[(0x99090, 9, 0x20, 0)] * 16, more=True)))
    assert any("past 16 links" in p for p in hp["problems"])
    assert any("loop" in p for p in hp["problems"])


def test_page_out_of_reach():
    _, hp = run(trace(page_lines(hi=1)))
    assert hp["readable"] is False and "above 4 GiB" in hp["problems"][0]
    _, hp = run(trace(page_lines(overwritten=True)))
    assert hp["readable"] is False and "overwritten" in hp["problems"][0]
    assert hp["differences"] == []


def test_lost_page_lines_are_reported():
    lines = page_lines()
    del lines[4]  # one bpe820 line lost on the wire
    _, hp = run(trace(lines))
    assert any("arrived intact" in p for p in hp["problems"])


def test_e820_entries_past_128_come_from_setup_e820_ext():
    """A map longer than the page's table goes on in SETUP_E820_EXT setup_data (type 1)."""
    table = [(0x100000 * i, 0x1000, 1) for i in range(1, 129)]
    more = [(0x100000 * i, 0x1000, 2) for i in range(129, 132)]
    lines = page_lines(e820=table, setup=[(0x99090, 1, 20 * len(more), 0)])
    at = next(i for i, ln in enumerate(lines) if "bpsetup" in ln) + 1
    ext = [kt(f"state bpe820ext n={i:04X} base_hi=00000000 base={b:08X} len_hi=00000000 "
              f"len={n:08X} type={t:08X}") for i, (b, n, t) in enumerate(more)]
    _, hp = run(trace(lines[:at] + ext + lines[at:]))
    assert len(hp["e820"]) == 131 and hp["e820_ext_entries"] == 3 and not hp["problems"]
    assert hp["e820"][-1] == {"base": 0x100000 * 131, "length": 0x1000, "type": 2,
                              "type_name": "reserved"}
    _, hp = run(trace(lines[:at] + ext[:2] + lines[at:]))  # one lost on the wire
    assert any("SETUP_E820_EXT entries arrived intact" in p for p in hp["problems"])
