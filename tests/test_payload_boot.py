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


# --- the PCI scan in the state step (payloads/pci.S) ------------------------------------------


def boot_and_query_pci(elf: Path, tmp: Path, *, machine: str, extra=(), limit: float = 60.0):
    """Boot `elf` (no debug-exit: it halts when done), wait for its `done` line, then ask QEMU
    itself for its PCI devices over QMP (`query-pci`): an account of the machine independent of
    the payload.  Returns (serial bytes, QMP's device list)."""
    import json
    import socket
    serial, sock = tmp / f"serial-pci-{machine}.raw", tmp / f"qmp-{machine}.sock"
    argv = [QEMU, "-machine", machine, "-accel", "tcg", "-m", "256", "-display", "none",
            "-monitor", "none", "-no-reboot", "-serial", f"file:{serial}",
            "-qmp", f"unix:{sock},server=on,wait=off", "-kernel", str(elf), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + limit
    try:
        while b"KT done " not in (serial.read_bytes() if serial.exists() else b""):
            assert proc.poll() is None and time.monotonic() < deadline, "the payload never finished"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            f = s.makefile("rw")

            def ask(cmd):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while "return" not in (msg := json.loads(f.readline())):
                    assert "error" not in msg, msg
                return msg["return"]
            f.readline()  # the greeting
            ask("qmp_capabilities")
            buses = ask("query-pci")
    finally:
        proc.kill()
        proc.wait(10)
    return serial.read_bytes(), buses


def qmp_functions(buses) -> dict[str, dict]:
    """QMP's devices by bdf, every bus behind bridges included (class without prog-if)."""
    out = {}

    def walk(devices):
        for d in devices:
            bdf = f"{d['bus']:02X}:{d['slot']:02X}.{d['function']:X}"
            out[bdf] = {"vendor": d["id"]["vendor"], "device": d["id"]["device"],
                        "class16": d["class_info"]["class"]}
            br = d.get("pci_bridge")
            if br:
                out[bdf].update(sec=br["bus"]["secondary"], sub=br["bus"]["subordinate"])
                walk(br.get("devices", []))
    for b in buses:
        walk(b["devices"])
    return out


def pci_lines(raw: bytes):
    """(the pci record, the pcifn records) the payload printed, all inside step 000."""
    recs = payload_records(raw)
    first_begin = next(i for i, r in enumerate(recs) if r.kind == "begin")
    state_end = next(i for i, r in enumerate(recs) if r.kind == "end")
    head = [r for r in recs[first_begin:state_end] if r.kind == "state" and r.name == "pci"]
    fns = [r for r in recs[first_begin:state_end] if r.kind == "state" and r.name == "pcifn"]
    assert len(head) == 1 and recs[first_begin].name == "state" and recs[state_end].name == "state"
    assert not [r for r in recs if r.kind == "state" and r.name in ("pci", "pcifn")
                and r not in head + fns], "PCI lines only inside the state step"
    return head[0], fns


def scanned(fns) -> dict[str, dict]:
    out = {}
    for r in fns:
        f = r.fields
        assert re.fullmatch(r"[0-9A-F]{2}:[01][0-9A-F]\.[0-7]", f["bdf"]), f
        assert all(re.fullmatch(r"[0-9A-F]{%d}" % n, f[k]) for k, n in
                   (("vendor", 4), ("device", 4), ("class", 6), ("cmd", 4), ("hdr", 2))), f
        assert f["bdf"] not in out, "each function once"
        out[f["bdf"]] = {"vendor": int(f["vendor"], 16), "device": int(f["device"], 16),
                         "class16": int(f["class"], 16) >> 8, "class": int(f["class"], 16),
                         "cmd": int(f["cmd"], 16), "hdr": int(f["hdr"], 16)}
        if "sec" in f:
            out[f["bdf"]].update(sec=int(f["sec"], 16), sub=int(f["sub"], 16))
    return out


def assert_scan_matches_qemu(fns, buses):
    got = scanned(fns)
    want = qmp_functions(buses)
    assert {b: {k: v for k, v in d.items() if k in ("vendor", "device", "class16", "sec", "sub")}
            for b, d in got.items()} == want
    for bdf, d in got.items():  # functions 1-7 only where function 0 says multi-function
        if not bdf.endswith(".0"):
            assert got[bdf[:-1] + "0"]["hdr"] & 0x80, bdf
    return got


def test_pci_scan_on_pc_lists_what_qemu_has(built_payload, disks, tmp_path):
    raw, buses = boot_and_query_pci(pl.patch(built_payload, tmp_path / "p.elf"), tmp_path,
                                    machine="pc", extra=["-drive", f"file={disks[0]},format=raw,"
                                                         "if=ide,index=0,snapshot=on"])
    head, fns = pci_lines(raw)
    assert head.fields["present"] == "1" and re.fullmatch(r"[0-9A-F]{8}", head.fields["cf8"])
    got = assert_scan_matches_qemu(fns, buses)
    assert (got["00:00.0"]["vendor"], got["00:00.0"]["device"]) == (0x8086, 0x1237)  # i440FX
    assert got["00:01.0"]["class16"] == 0x0601 and got["00:01.0"]["hdr"] & 0x80  # PIIX3 ISA
    assert got["00:01.1"]["class16"] == 0x0101  # PIIX3 IDE
    assert got["00:01.1"]["cmd"] & 0x1, "SeaBIOS drives the IDE disk by I/O ports"
    vga = [b for b, d in got.items() if d["class16"] == 0x0300]
    assert vga and got[vga[0]]["cmd"] & 0x3, "the VGA decodes I/O and memory"
    # each PCI line stands alone: its own checksum was verified by the parser
    assert len(fns) == len(got) >= 5


def test_pci_scan_on_q35_lists_the_ich9_functions(built_payload, disks, tmp_path):
    raw, buses = boot_and_query_pci(pl.patch(built_payload, tmp_path / "p.elf"), tmp_path,
                                    machine="q35", extra=["-drive", f"file={disks[0]},format=raw,"
                                                          "if=ide,index=0,snapshot=on"])
    _, fns = pci_lines(raw)
    got = assert_scan_matches_qemu(fns, buses)
    assert (got["00:00.0"]["vendor"], got["00:00.0"]["device"]) == (0x8086, 0x29C0)
    assert got["00:1F.0"]["class16"] == 0x0601 and got["00:1F.0"]["hdr"] & 0x80  # ICH9 LPC
    assert got["00:1F.2"]["class"] == 0x010601, "SATA, AHCI interface"
    assert got["00:1F.2"]["cmd"] & 0x4, "SeaBIOS's AHCI driver set bus mastering for the disk"
    assert got["00:1F.3"]["class16"] == 0x0C05  # SMBus
    assert any(d["class16"] == 0x0300 for d in got.values())


def test_pci_scan_walks_behind_bridges(built_payload, tmp_path):
    """Two bridges deep on pc: a bus is reached only through its bridge's secondary number."""
    extra = ["-device", "pci-bridge,id=br1,chassis_nr=1,addr=5",
             "-device", "pci-bridge,id=br2,bus=br1,chassis_nr=2,addr=3",
             "-device", "virtio-rng-pci,bus=br2,addr=4", "-device", "qemu-xhci,bus=br1,addr=7"]
    raw, buses = boot_and_query_pci(pl.patch(built_payload, tmp_path / "p.elf"), tmp_path,
                                    machine="pc", extra=extra)
    _, fns = pci_lines(raw)
    got = assert_scan_matches_qemu(fns, buses)
    outer = got["00:05.0"]
    assert outer["class16"] == 0x0604 and outer["hdr"] & 0x7F == 1
    inner_bdf = f"{outer['sec']:02X}:03.0"
    inner = got[inner_bdf]
    assert inner["sec"] != outer["sec"] and outer["sec"] < inner["sec"] <= outer["sub"]
    assert got[f"{inner['sec']:02X}:04.0"]["vendor"] == 0x1AF4  # virtio, two buses down
    assert got[f"{outer['sec']:02X}:07.0"]["class"] == 0x0C0330  # xHCI
    buses_seen = [int(b[:2], 16) for b in got]
    assert buses_seen == sorted(buses_seen), "buses in ascending order"


def test_no_pci_prints_one_line_and_goes_on(built_payload, tmp_path):
    """isapc has no PCI host bridge: configuration mechanism 1 does not answer."""
    elf = patched(built_payload, tmp_path)
    raw, _, status = boot(elf, tmp_path, machine="isapc", memory=64)
    head, fns = pci_lines(raw)
    assert head.fields == {"present": "0"} and fns == []
    recs = payload_records(raw)
    assert status == (0x31 << 1) | 1 and recs[-1].kind == "done"


def test_banner_says_how_the_payload_was_entered(built_payload, tmp_path):
    """-kernel enters through multiboot (EAX = 2BADB002h at kt_entry32): `via=multiboot`; the
    same ELF entered at kt_entry32 by kexec-tools says `via=kexec` (the lab tests show it)."""
    raw, _, status = boot(patched(built_payload, tmp_path), tmp_path)
    banner = payload_records(raw)[0]
    assert banner.kind == "banner" and status == (0x31 << 1) | 1
    assert (banner.fields["entry"], banner.fields["via"]) == ("32", "multiboot")
    assert "drive" not in banner.fields, "drive= only after the payload's own boot loaders"
    regs = next(r for r in payload_records(raw) if r.kind == "state" and r.name == "regs")
    assert regs.fields["eax"] == "2BADB002"
