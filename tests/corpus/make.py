"""Writes the hand-made corpus logs (run: python tests/corpus/make.py [--check] [--out DIR]).

Each log is a console capture as the collector sees it; checksums are computed with
kexectest.trace.format_line, so a log is exactly what a payload would print.  The steps, their
numbers, interrupts and functions come from the payload ELF (built from payloads/ as
`kexectest build` does), the one step table.  Expected files are golden files
(tests/test_corpus.py): a new log gets a note, `pytest --update-corpus` fills it in.  Real
captured logs sit beside these (their names start with "real-").  `--check` writes nothing
and lists the logs whose bytes would change.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
from kexectest import payload as pl  # noqa: E402
from kexectest.trace import checksum, format_line  # noqa: E402

IMG = pl.PayloadImage.open(pl.ensure_built())
STEPS = {s.name: s for s in IMG.steps}  # id -> the payload's row, in table order
STEP_IDS = list(STEPS)
F_DRIVE = IMG.symbols["F_DRIVE"]  # row flag: once per BIOS hard disk (payloads/macros.S)
OUT = HERE
CHECK: list[str] | None = None  # with --check: the logs whose bytes would change

BUILD = "5C0F3A1B2C3D4E5F60718293A4B5C6D7E8F90123"
KERNEL_PRE = """\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)
[    0.000000] Command line: console=ttyS0,115200
[    0.000000] BIOS-provided physical RAM map:
[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable
[    0.000000] BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved
[    0.000000] BIOS-e820: [mem 0x00000000000f0000-0x00000000000fffff] reserved
[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x0000000007fdffff] usable
[    0.000000] BIOS-e820: [mem 0x0000000007fe0000-0x0000000007ffffff] reserved
[    0.000000] BIOS-e820: [mem 0x00000000fffc0000-0x00000000ffffffff] reserved
[    1.234567] Run /init as init process
~ # kexectest load /payload.elf --exec --yes"""
HANDOFF = "[   20.100000] kexec_core: Starting new kernel"
E820 = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2), (0x100000, 0x7EE0000, 1),
        (0x7FE0000, 0x20000, 2), (0xFFFC0000, 0x40000, 2)]


def kt(body: str) -> str:
    return format_line("KT " + body)


def regs(cf=0, eax=0, ebx=0, ecx=0, edx=0, esi=0, edi=0, ds=0x2000, es=0x2000, fl=0x0202):
    return (f"cf={cf} eax={eax:08X} ebx={ebx:08X} ecx={ecx:08X} edx={edx:08X} esi={esi:08X} "
            f"edi={edi:08X} ds={ds:04X} es={es:04X} fl={fl:04X}")


def data_lines(idx, name, blob: bytes, qual="", tag=None):
    out = []
    q = f" {qual}" if qual else ""
    t = f" tag={tag}" if tag else ""
    for off in range(0, len(blob), 32):
        out.append(kt(f"data {idx:03d} {name}{q}{t} off={off:04X} {blob[off:off + 32].hex().upper()}"))
    return out


def edid_block() -> bytes:
    b = bytearray(128)
    b[0:8] = bytes.fromhex("00FFFFFFFFFFFF00")
    v = (ord("R") - 64) << 10 | (ord("H") - 64) << 5 | (ord("T") - 64)
    b[8:10] = v.to_bytes(2, "big")
    b[10:12] = (0x1234).to_bytes(2, "little")
    b[12:16] = (0).to_bytes(4, "little")
    b[16], b[17], b[18], b[19] = 42, 24, 1, 4
    t = bytearray(18)
    t[0:2] = (10800).to_bytes(2, "little")
    t[2], t[4] = 1024 & 0xFF, (1024 >> 8) << 4
    t[5], t[7] = 768 & 0xFF, (768 >> 8) << 4
    b[54:72] = t
    b[127] = (-sum(b[:127])) % 256
    return bytes(b)


def sector(sig: int) -> bytes:
    b = bytearray(b"KEXECTEST-DISK" + bytes(498))
    b[0x1B8:0x1BC] = sig.to_bytes(4, "little")
    b[510:512] = b"\x55\xaa"
    return bytes(b)


def step_lines(idx: int, name: str, ivt13="F000:E3FE", apic_svr=0x1FF, errors=()):
    """Begin/end/data lines of one step with plausible SeaBIOS answers."""
    info = STEPS[name]
    ax = 0
    out = []

    def call(qual="", **r):
        q = f" {qual}" if qual else ""
        out.append(kt(f"begin {idx:03d} {name} int={info.int:02X} ax={ax:04X}{q}"))
        if name in errors:
            r = dict(cf=1, eax=0x8600)
        out.append(kt(f"end {idx:03d} {name}{q} {regs(**r)}"))

    if name == "state":
        out.append(kt(f"begin 000 state int=00 ax=0000"))
        out += [kt("state regs eax=2BADB002 ebx=00009500 ecx=00000000 edx=00000000 esi=00000000 edi=00000000 "
                   "esp=0007FF00 ebp=00000000 eflags=00000002"),
                kt("state cpu cr0=00000011 cr3=00000000 cr4=00000000"),
                kt("state desc gdt_base=000F6200 gdt_limit=0037 idt_base=00000000 idt_limit=03FF"),
                kt(f"state apic msr=FEE00900 svr={apic_svr:08X} lvt0=00000700 lvt1=00000400 fixed=0"),
                kt("state pic mask1=B8 mask2=8E"),
                kt("state bda basemem=027F ebda=9FC0 com1=03F8 hdcount=01 equip=0027 ticks=00001234"),
                kt(f"state ivt v08=F000:FEA5 v10=C000:0060 v13={ivt13} v15=F000:F859 v16=F000:E82E "
                   "v1A=F000:FE6E v19=F000:E6F2 v41=9FC0:003D v46=F000:0000")]
        out.append(kt(f"end 000 state {regs()}"))
        return out
    if name == "e820":
        ax = 0xE820
        for i, (b, ln, t) in enumerate(E820):
            out.append(kt(f"begin {idx:03d} e820 int=15 ax=E820 i={i}"))
            nxt = 0 if i == len(E820) - 1 else i + 1
            out.append(kt(f"end {idx:03d} e820 i={i} {regs(eax=0x534D4150, ebx=nxt, ecx=20, edx=0x534D4150)}"))
            out += data_lines(idx, "e820", struct.pack("<QQII", b, ln, t, 1), f"i={i}")
        return out
    if info.function.startswith("AX="):
        ax = int(info.function[3:7], 16)
    elif info.function.startswith("AH="):
        ax = int(info.function[3:5], 16) << 8
    R = {
        "apic-fix": dict(eax=apic_svr, ebx=0x1FF, ecx=0x700, edx=0 if apic_svr & 0x100 else 1),
        "pic-init": dict(eax=0x8EB8, ebx=0x2EB8), "idt-real": dict(eax=0, ebx=0x3FF),
        "stack": dict(eax=0x2000, ebx=0xFFF0), "base-mem": dict(eax=0x27F), "e801": dict(eax=0x3C00, ebx=0x7E, ecx=0x3C00, edx=0x7E),
        "mem88": dict(eax=0xFC00), "cpu-mode-hint": dict(), "a20-test": dict(eax=1), "a20-query": dict(eax=1),
        "a20-support": dict(ebx=3), "a20-test-off": dict(eax=0), "a20-test-on": dict(eax=1),
        "a20-kbc": dict(eax=1, ebx=1), "a20-fast": dict(eax=2, ebx=1), "a20-final": dict(eax=1),
        "kbd-shift": dict(eax=0x0220), "kbd-pending": dict(fl=0x0246), "sysconf": dict(ebx=0xE6F5, es=0xF000),
        "equipment": dict(eax=0x0027), "ist": dict(), "apm-check": dict(eax=0x0102, ebx=0x504D, ecx=0x0003),
        "apm-disconnect": dict(cf=1, eax=0x0300), "apm-connect-32": dict(eax=0xF000, ebx=0xBD58, ecx=0xF000, edx=0xF000, esi=0xFFF0FFF0, edi=0xFFF0),
        "apm-version": dict(eax=0x0102), "apm-disconnect2": dict(), "apm-disconnect3": dict(),
        "edd-check": dict(eax=0x3000, ebx=0xAA55, ecx=0x0007), "disk-geometry": dict(ecx=0x0F3F, edx=0x0F01),
        "dasd-type": dict(eax=0x0300, ecx=0x0001, edx=0x0000), "read-chs": dict(eax=0x0001), "read-lba": dict(),
        "fdpt-hd0": dict(eax=0xF000E401), "fdpt-hd1": dict(eax=0xF000E401),
        "video-cursor": dict(ecx=0x0607, edx=0x1800), "video-mode": dict(eax=0x5003), "video-ega": dict(ebx=0x0003, ecx=0x0009),
        "video-dcc": dict(eax=0x001A, ebx=0x0008), "vbe-info": dict(eax=0x004F), "vbe-mode-info": dict(eax=0x004F),
        "vbe-set-mode": dict(eax=0x004F), "ddc-caps": dict(eax=0x004F, ebx=0x0002), "edid": dict(eax=0x004F),
        "ticks": dict(ecx=0x0001, edx=0x2345), "rtc-time": dict(ecx=0x1234, edx=0x5600), "rtc-date": dict(ecx=0x2024, edx=0x0315),
        "pci-bios": dict(eax=0x0001, ebx=0x0210, ecx=0x0000, edx=0x20494350), "pci-find-vga": dict(ebx=0x0010),
        "tick-advance": dict(eax=0x1234, ebx=0x1238, ecx=4), "ticks-after": dict(ecx=0x0001, edx=0x2349),
    }.get(name, {})
    if name in ("kbd-read", "nmi-mask"):
        return [kt(f"skip {idx:03d} {name} reason={'nokey' if name == 'kbd-read' else 'config'}")]
    if name == "int19-boot":
        return [kt(f"skip {idx:03d} {name} reason=optin")]
    per_drive = bool(info.flags & F_DRIVE)
    if per_drive:
        for dl in (0x80,):
            call(f"dl={dl:02X}", **R)
            if name == "edd-params":
                b = bytearray(66)
                struct.pack_into("<HHIIIQH", b, 0, 0x42, 0x0B, 520, 16, 63, 524288, 512)
                struct.pack_into("<I", b, 26, 0xF000E430)
                struct.pack_into("<HB", b, 30, 0xBEDD, 0x2C)
                b[36:40], b[40:48] = b"PCI ", b"ATA     "
                out += data_lines(idx, name, bytes(b), f"dl={dl:02X}")
            if name in ("read-chs", "read-lba"):
                out += data_lines(idx, name, sector(0x4B544553 if name == "read-chs" else 0), f"dl={dl:02X}")
        return out
    call(**R)
    if name == "vbe-info":
        buf = bytearray(512)
        buf[0:4] = b"VESA"
        struct.pack_into("<HIIIHH", buf, 4, 0x0300, 0xC0007C00, 0, 0xC0007C40, 256, 0x0001)
        out += data_lines(idx, name, bytes(buf), tag="buffer")
        out += data_lines(idx, name, b"SeaBIOS VBE(C) 2011\0", tag="oem")
        out += data_lines(idx, name, b"SeaBIOS Developers\0", tag="vendor")
        out += data_lines(idx, name, b"SeaBIOS VBE Adapter\0", tag="product")
        out += data_lines(idx, name, b"Rev. 1\0", tag="rev")
        out += data_lines(idx, name, struct.pack("<5H", 0x100, 0x101, 0x110, 0x111, 0xFFFF), tag="modes")
    if name == "vbe-mode-info":
        b = bytearray(256)
        struct.pack_into("<H", b, 0, 0x9B)
        struct.pack_into("<HH", b, 18, 640, 480)
        b[25], b[27] = 8, 4
        struct.pack_into("<I", b, 40, 0xFD000000)
        out += data_lines(idx, name, bytes(b))
    if name == "edid":
        out += data_lines(idx, name, edid_block())
    if name == "sysconf":
        out += data_lines(idx, name, bytes([8, 0, 0xFC, 0x00, 0x01, 0x74, 0x00, 0x00, 0x00, 0x00]))
    if name.startswith("fdpt"):
        out += data_lines(idx, name, struct.pack("<HB11xB1x", 520, 16, 63))
    return out


def payload_run(upto: int | None = None, hang_drive=False, errors=(), done=True, **kw) -> list[str]:
    out = [kt(f"banner version=0.1.0 build={BUILD} entry=32 uart=03F8 div=0001 steps={len(STEP_IDS):03d}"),
           kt("mode real")]
    for idx, name in enumerate(STEP_IDS):
        if upto is not None and idx == upto:
            info = STEPS[name]
            q = " dl=80" if info.flags & F_DRIVE else (" i=0" if name == "e820" else "")
            out.append(kt(f"begin {idx:03d} {name} int={info.int:02X} ax=0000{q}"))
            return out
        out += step_lines(idx, name, errors=errors, **kw)
    if done:
        out.append(kt(f"done steps={len(STEP_IDS):03d} errors={len(errors):03d}"))
        out.append(kt("mode halt"))
    return out


def snapshot_lines() -> list[str]:
    """A "before" block in the snapshot module's format (KTSNAP lines)."""
    try:
        from kexectest.target import snapshot
    except ImportError:
        return []
    f = getattr(snapshot, "format_snapshot", None) or getattr(snapshot, "render", None)
    body = ["KTSNAP begin v=1",
            'KTSNAP dmi bios_vendor=SeaBIOS bios_version=1.16.2-debian-1.16.2-1 sys_vendor=QEMU product_name="Standard PC (i440FX + PIIX, 1996)"',
            "KTSNAP basemem kib=639 source=bda"]
    for b, ln, t in E820:
        name = {1: "usable", 2: "reserved"}[t]
        body.append(f"KTSNAP e820 start=0x{b:x} end=0x{b + ln - 1:x} type={name}")
    body.append("KTSNAP edd dev=80 sectors=524288 host_bus=PCI interface=ATA version=0x30")
    body.append(f"KTSNAP end lines={len(body) + 1}")
    return [f"{x} ~{checksum(x.encode()):04X}" for x in body]


def write(name: str, text: str | bytes, expected: dict) -> None:
    """The log; its golden file is made by `pytest tests/test_corpus.py --update-corpus` (and
    reviewed), so a new log gets only a note saying what it is meant to show."""
    data = text if isinstance(text, bytes) else text.encode()
    if CHECK is not None:
        log = HERE / f"{name}.log"
        if not log.is_file() or log.read_bytes() != data:
            CHECK.append(log.name)
        return
    (OUT / f"{name}.log").write_bytes(data)
    golden = OUT / f"{name}.expected.json"
    if not golden.exists():
        intent = ", ".join(f"{k}={v}" for k, v in sorted(expected.items()) if k != "note")
        note = expected.get("note", f"hand-made by tests/corpus/make.py, meant to show: {intent}")
        golden.write_text(json.dumps({"note": note}, indent=1) + "\n")


def crlf(lines: list[str]) -> str:
    return "".join(x + "\r\n" for x in lines)


PANIC = """\
[   19.900000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   19.900010] #PF: supervisor read access in kernel mode
[   19.900020] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   19.900030] CPU: 0 PID: 91 Comm: kexectest Not tainted 6.1.0-18-amd64 #1
[   19.900040] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   19.900050] RIP: 0010:machine_kexec+0x4a/0x1f0
[   19.900060] Call Trace:
[   19.900070]  <TASK>
[   19.900080]  kernel_kexec+0x6e/0xa0
[   19.900090]  __do_sys_reboot+0x1f3/0x230
[   19.900100]  do_syscall_64+0x58/0xc0
[   19.900110]  </TASK>
[   19.900120] Kernel panic - not syncing: Fatal exception
[   19.900130] Kernel Offset: 0x1000000 from 0xffffffff81000000
[   19.900140] ---[ end Kernel panic - not syncing: Fatal exception ]---"""
WARNING = """\
[   19.800000] ------------[ cut here ]------------
[   19.800010] WARNING: CPU: 1 PID: 91 at kernel/irq/manage.c:2034 free_irq+0x2a1/0x380
[   19.800020] Modules linked in: e1000 ata_piix
[   19.800030] CPU: 1 PID: 91 Comm: kexectest Not tainted 6.1.0-18-amd64 #1
[   19.800040] RIP: 0010:free_irq+0x2a1/0x380
[   19.800050] Call Trace:
[   19.800060]  <TASK>
[   19.800070]  device_shutdown+0x130/0x1e0
[   19.800080]  kernel_kexec+0x5a/0xa0
[   19.800090]  </TASK>
[   19.800100] ---[ end trace 0000000000000000 ]---"""


def main() -> None:
    pre = KERNEL_PRE.splitlines() + snapshot_lines()
    write("completed", crlf(pre + [HANDOFF] + payload_run()),
          {"verdict": "completed", "hang_step": None, "e820_count": 6, "before_after_same": True,
           "kernel_trouble": 0})
    write("failed-steps", crlf(pre + [HANDOFF] + payload_run(errors=("e801", "pci-bios"))),
          {"verdict": "failed-steps", "hang_step": None, "error_steps": ["e801", "pci-bios"]})
    for step in ("sti", "e820", "dasd-type", "edd-params", "vbe-info", "wait"):
        write(f"hung-{step}", crlf(pre + [HANDOFF] + payload_run(upto=STEPS[step].index)),
              {"verdict": "hung", "hang_step": step,
               "hang_drive": 0x80 if STEPS[step].flags & F_DRIVE else None})
    write("hung-ivt-rewritten", crlf(pre + [HANDOFF] + payload_run(upto=STEPS["dasd-type"].index, ivt13="0070:0100",
                                                                     apic_svr=0x0F)),
          {"verdict": "hung", "hang_step": "dasd-type", "findings": ["ivt-rewritten", "apic-disabled"]})
    reset = payload_run(upto=STEPS["edid"].index) + ["", "SeaBIOS (version 1.16.2-debian-1.16.2-1)", "iPXE (http://ipxe.org) 00:03.0"]
    write("reset-seabios", crlf(pre + [HANDOFF] + reset), {"verdict": "reset", "hang_step": "edid"})
    again = payload_run(upto=STEPS["read-lba"].index) + payload_run(upto=3)
    write("reset-banner-again", crlf(pre + [HANDOFF] + again), {"verdict": "reset", "hang_step": "read-lba"})
    write("no-output-handoff", crlf(pre + [HANDOFF]),
          {"verdict": "no-output", "hang_step": None, "handoff": True})
    write("no-output-nothing", b"", {"verdict": "bad-input"})
    write("no-output-noise", crlf(["", "login: ", "   "]),
          {"verdict": "no-output", "hang_step": None, "handoff": False})
    # garbled: the payload at 115200 read at 57600 -> each byte smeared; emulate with a bit transform
    good = crlf(payload_run()).encode()
    bad = bytes(((b * 7) ^ 0xA5) & 0xFF for b in good if b not in (10, 13))
    write("garbled-baud", crlf(pre + [HANDOFF]).encode() + bad[:6000], {"verdict": "garbled", "hang_step": None})
    write("died-panic", crlf(pre + PANIC.splitlines()),
          {"verdict": "died-before-handoff", "hang_step": None, "trouble_kinds": ["bug"], "block_lines": 15})
    write("died-no-handoff", crlf(pre), {"verdict": "died-before-handoff", "hang_step": None})
    write("warning-then-completed", crlf(pre + WARNING.splitlines() + [HANDOFF] + payload_run()),
          {"verdict": "completed", "hang_step": None, "trouble_kinds": ["warning"], "block_lines": 11})
    # pasted from an email: "> " quoting, CRLF, long lines wrapped at 72 columns
    body = pre + [HANDOFF] + payload_run(upto=STEPS["edd-check"].index)
    wrapped = []
    for x in body:
        while len(x) > 72:
            wrapped.append("> " + x[:72])
            x = x[72:]
        wrapped.append("> " + x)
    write("email-hung-edd-check", "Hi, here is the log:\r\n\r\n" + crlf(wrapped) + "\r\nThanks\r\n",
          {"verdict": "hung", "hang_step": "edd-check"})
    # timestamped console.log from the collector
    ts = "".join(f"+{0.001 * i:012.6f}\t{x}\n" for i, x in enumerate(pre + [HANDOFF] + payload_run(upto=STEPS["ticks"].index)))
    write("timestamped-hung-ticks", ts, {"verdict": "hung", "hang_step": "ticks"})
    classic(pre)


CLASSIC = [
    "kexec_test 1.8 starting...",
    "eax: 0E1FB007 ebx: 0000115C ecx: 00000000 edx: 00000000",
    "esi: 00000000 edi: 00000000 esp: 00000000 ebp: 00000000",
    "idt: 00000000 C0000000",
    "gdt: 0000006F 000010C0",
    "Switching descriptors.",
    "Descriptors changed.",
    "Legacy pic setup.",
    "In real mode.",
    "Interrupts enabled.",
    "Base memory size: 027F",
    "A20 disabled.",
    "E820 Memory Map.",
    "000000000009FC00 @ 0000000000000000 type: 00000001",
    "0000000000000400 @ 000000000009FC00 type: 00000002",
    "0000000000010000 @ 00000000000F0000 type: 00000002",
    "0000000007EE0000 @ 0000000000100000 type: 00000001",
    "E801  Memory size: 0001FC00",
    "Mem88 Memory size: FC00",
    "Testing for APM.",
    "APM Found disconnecting.",
    "APM connecting.",
    "APM disabling.",
    "APM disconnecting.",
    "APM test done.",
    "Equiptment list: 0027",
    "Sysdesc: F000:E6F5",
    "Video type: VGA",
    "Cursor Position(Row,Column): 0018 0000",
    "Video Mode: 0003",
    "Setting auto repeat rate  done",
    "DASD type: 0003 00000000",
    "EDD:  ok",
    "A20 enabled",
    "Interrupts disabled.",
    "In protected mode.",
    "Halting.",
]


def classic(pre: list[str]) -> None:
    def upto(label: str, keep_label=True):
        i = next(n for n, x in enumerate(CLASSIC) if x.startswith(label))
        return CLASSIC[: i + (1 if keep_label else 0)]
    write("classic-completed", crlf(pre + [HANDOFF] + CLASSIC), {"verdict": "completed", "hang_step": None, "source": "classic"})
    write("classic-hung-sti", crlf(pre + [HANDOFF] + upto("In real mode.")),
          {"verdict": "hung", "hang_step": "sti", "source": "classic"})
    # DASD label printed, then the call hung: the label names it
    write("classic-hung-dasd", crlf(pre + [HANDOFF] + [x for x in upto("DASD type") if x != "DASD type: 0003 00000000"] + ["DASD type: "]),
          {"verdict": "hung", "hang_step": "dasd-type", "source": "classic"})
    # E801 prints after its call: a hang in E801 leaves the last E820 entry line
    write("classic-hung-e801", crlf(pre + [HANDOFF] + upto("0000000007EE0000")),
          {"verdict": "hung", "hang_step": "e801", "source": "classic"})
    write("classic-hung-edd", crlf(pre + [HANDOFF] + upto("DASD type") + ["EDD: "]),
          {"verdict": "hung", "hang_step": "edd", "source": "classic"})
    write("classic-hung-apm", crlf(upto("APM connecting.")),
          {"verdict": "hung", "hang_step": "apm-connect", "source": "classic"})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; list the logs that differ")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write (default: tests/corpus)")
    args = ap.parse_args()
    OUT = args.out
    CHECK = [] if args.check else None
    main()
    if CHECK:
        print("would change: " + " ".join(CHECK))
        sys.exit(1)
