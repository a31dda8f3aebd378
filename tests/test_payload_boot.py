"""The payload booted straight from SeaBIOS under QEMU/TCG (no Linux): every step ends, the
E820 map it decodes is the map SeaBIOS itself printed on its debug console, the disk reads
return the image's known bytes, and injected hangs/resets/mirrors behave as configured."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from kexectest import payload as pl
from kexectest.analysis.core import analyze
from kexectest.lab.image import known_sector, write_disk
from kexectest.trace import split_all

pytestmark = pytest.mark.qemu

QEMU = "qemu-system-x86_64"


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    d = tmp_path_factory.mktemp("disks")
    paths = [d / "disk0.img", d / "disk1.img"]
    for i, p in enumerate(paths):
        write_disk(i, p)
    return paths


def boot(elf: Path, tmp: Path, *, machine="pc", memory=256, disks=(), wait_for: str | None = None,
         limit: float = 60.0, extra=()) -> tuple[bytes, str, int | None]:
    """Boot `elf` with -kernel; return (serial bytes, SeaBIOS debug console, exit status).
    With `wait_for`, QEMU is killed as soon as that text is on the serial line (a hang)."""
    serial, debugcon = tmp / f"serial-{machine}-{memory}.raw", tmp / f"seabios-{machine}-{memory}.log"
    argv = [QEMU, "-machine", machine, "-accel", "tcg", "-m", str(memory), "-display", "none",
            "-monitor", "none", "-no-reboot", "-serial", f"file:{serial}",
            "-chardev", f"file,id=sb,path={debugcon}", "-device", "isa-debugcon,iobase=0x402,chardev=sb",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", str(elf), *extra]
    for i, d in enumerate(disks):
        argv += ["-drive", f"file={d},format=raw,if=ide,index={i},snapshot=on"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + limit
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if wait_for and serial.exists() and wait_for.encode() in serial.read_bytes():
                time.sleep(0.5)  # would anything follow? (it must not)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    return serial.read_bytes(), debugcon.read_text(errors="replace"), proc.returncode


def payload_records(raw: bytes):
    return [ln.record for ln in split_all(raw) if ln.record is not None]


def seabios_e820(debugcon: str) -> list[dict]:
    """SeaBIOS's own map, as it printed it: "  0: 0000000000000000 - 000000000009fc00 = 1 RAM"."""
    block = debugcon.split("e820 map has", 1)[1]
    return [{"base": int(a, 16), "length": int(b, 16) - int(a, 16), "type": int(t)}
            for a, b, t in re.findall(r"^\s*\d+: ([0-9a-f]{16}) - ([0-9a-f]{16}) = (\d+)", block, re.M)]


def patched(built_payload, tmp_path, name="p.elf", **opts) -> Path:
    return pl.patch(built_payload, tmp_path / name, debug_exit=True, **opts)


@pytest.mark.parametrize("machine,memory", [("pc", 256), ("q35", 256), ("pc", 3712), ("q35", 5120)])
def test_direct_boot_every_step_answers(built_payload, disks, tmp_path, machine, memory):
    elf = patched(built_payload, tmp_path)
    raw, debugcon, status = boot(elf, tmp_path, machine=machine, memory=memory, disks=disks)
    assert status == (0x31 << 1) | 1, "the payload ends through isa-debug-exit"
    a = analyze(split_all(raw), stop_reason="final")
    report = a.to_dict()
    assert report["verdict"] == "completed", a.one_line()
    names = [s.name for s in pl.PayloadImage.open(elf).steps]
    steps = {s["id"]: s for s in report["steps"]}
    assert list(steps) == names
    ran = [s for s in report["steps"] if s["status"] != "skipped"]
    assert len(ran) >= 60 and all(s["status"] == "ok" for s in ran)
    # the firmware's answers after the hand-off, against its own account
    assert [{k: e[k] for k in ("base", "length", "type")} for e in report["e820"]] == seabios_e820(debugcon)
    assert sum(e["length"] for e in report["e820"] if e["type"] == 1) > (memory - 2) * 2**20
    for step, lba in (("read-chs", 0), ("read-lba", 1)):
        calls = steps[step]["calls"]
        assert len(calls) == 2, "one call per BIOS disk"
        for disk, call in enumerate(calls):
            assert call["iteration"] == f"dl={0x80 + disk:02X}"
            assert bytes.fromhex("".join(call["data"].values())) == known_sector(disk, lba)
    assert report["payload"]["build_id"] == pl.PayloadImage.open(elf).build_id
    # strings behind the VBE block's far pointers (in the video ROM), and QEMU's EDID
    assert steps["vbe-info"]["result"]["vendor"] == "SeaBIOS Developers"
    assert 0x101 in steps["vbe-info"]["result"]["modes"]
    assert steps["edid"]["result"]["manufacturer"] == "RHT" and steps["edid"]["result"]["checksum_valid"]
    answered = {(s["int"], s["function"]) for s in ran if s["int"]}
    assert len(answered) >= 35, sorted(answered)


def test_report_command_on_a_saved_direct_boot_log(built_payload, disks, tmp_path):
    """`kexectest report LOG` on the raw log of a direct boot: >= 35 distinct BIOS calls."""
    import json
    import sys
    raw, _, _ = boot(patched(built_payload, tmp_path), tmp_path, disks=disks)
    log = tmp_path / "direct.log"
    log.write_bytes(raw)
    p = subprocess.run([sys.executable, "-m", "kexectest", "report", str(log), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    calls = {(s["int"], s["function"]) for s in report["steps"] if s["int"] and s["status"] == "ok"}
    assert len(calls) >= 35 and report["verdict"] == "completed"


@pytest.mark.parametrize("step", ["sti", "e820", "edd-params", "vbe-info", "wait"])
def test_injected_hang_leaves_that_steps_begin_line_last(built_payload, disks, tmp_path, step):
    elf = patched(built_payload, tmp_path, hang_at=step)
    index = pl.PayloadImage.open(elf).step_index(step)
    raw, _, status = boot(elf, tmp_path, disks=disks, wait_for=f" {index:03d} {step} int=", limit=30)
    assert status != (0x31 << 1) | 1, "a hung payload never reaches its end"
    last = payload_records(raw)[-1]
    assert (last.kind, last.step, last.name) == ("begin", index, step)
    a = analyze(split_all(raw), stop_reason="timeout", silence_s=30.0)
    assert a.verdict == "hung" and a.to_dict()["hang"]["step"] == step


def test_injected_reset_triple_faults_right_after_the_begin_line(built_payload, disks, tmp_path):
    elf = patched(built_payload, tmp_path, reset_at="read-lba")
    raw, _, status = boot(elf, tmp_path, disks=disks, limit=30)
    assert status == 0, "a triple fault with -no-reboot ends QEMU normally, not via debug-exit"
    last = payload_records(raw)[-1]
    assert (last.kind, last.name) == ("begin", "read-lba")


def test_skip_and_int19_chain_boot_the_disk_again(built_payload, disks, tmp_path):
    elf = patched(built_payload, tmp_path, skip=["e820", "vbe-info"], int19=True)
    raw, _, status = boot(elf, tmp_path, disks=disks, limit=30)
    recs = payload_records(raw)
    skipped = {r.name: r.fields.get("reason") for r in recs if r.kind == "skip"}
    assert skipped["e820"] == "config" and skipped["vbe-info"] == "config"
    assert "int19-boot" not in skipped
    done = [r for r in recs if r.kind == "done"]
    assert done and done[0].fields.get("next") == "int19"
    # the firmware booted again: SeaBIOS's int 19h ran the first boot device (QEMU's -kernel
    # option ROM), which entered the payload once more, and the payload saw its BDA marker
    again = [r for r in recs if r.kind == "boot"]
    assert len(again) == 1 and recs[-1] is again[0]
    assert sum(1 for r in recs if r.kind == "banner") == 1
    report = analyze(split_all(raw), stop_reason="final").to_dict()
    chain = next(s for s in report["steps"] if s["id"] == "int19-boot")
    assert chain["status"] == "ok" and chain["result"]["booted_again"] is True
    # the same run cut off before the firmware came back: int 19h did not boot anything
    cut = raw[:raw.index(b"KT boot ")]
    chain = next(s for s in analyze(split_all(cut), stop_reason="timeout").to_dict()["steps"]
                 if s["id"] == "int19-boot")
    assert chain["status"] == "error" and chain["result"]["booted_again"] is False
    assert status == (0x31 << 1) | 1


def test_mirror_to_port_e9_carries_the_same_trace(built_payload, tmp_path):
    elf = patched(built_payload, tmp_path, e9_mirror=True, vga_mirror=True, uart_base=0x2F8)
    e9 = tmp_path / "e9.log"
    raw, _, status = boot(elf, tmp_path, extra=["-chardev", f"file,id=e9,path={e9}",
                                                "-device", "isa-debugcon,iobase=0xe9,chardev=e9"])
    assert status == (0x31 << 1) | 1
    assert raw == b"", "COM1 stays silent when the payload prints on COM2's base (no UART there)"
    mirrored = payload_records(e9.read_bytes())
    assert mirrored[0].kind == "banner" and mirrored[0].fields["uart"] == "02F8"
    assert mirrored[-1].kind == "done"


def test_baud_divisor_is_programmed_and_reported(built_payload, tmp_path):
    elf = patched(built_payload, tmp_path, baud=9600)
    raw, _, _ = boot(elf, tmp_path)
    banner = payload_records(raw)[0]
    assert banner.kind == "banner" and banner.fields["div"] == "000C"
