"""Which firmware boots the payload on which QEMU machine, from which medium: the measurements
behind docs/firmware.md.

Every row is one real QEMU/TCG boot of the payload (patched to leave through isa-debug-exit)
from its disk image, its ISO, or QEMU's -kernel (multiboot), under SeaBIOS (QEMU's default) or
Debian's Bochs BIOS (package bochsbios), with or without a local APIC and a VGA BIOS.  Prints
one line a row: the verdict and its error steps, or why nothing booted (the firmware's last
message on its debug port 0x402), and the seconds from QEMU's start to the payload's last line.

    .venv/bin/python benchmarks/firmware_matrix.py [--only bochs] [--limit 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kexectest import payload as pl
from kexectest.analysis.replay import analyze_bytes
from kexectest.lab import firmware as fw
from kexectest.payload import bootimage

QEMU = "qemu-system-x86_64"

# (firmware, machine, cpu without APIC, VGA BIOS, medium); q35 rows under the Bochs BIOS use
# an ISA IDE disk (lab/firmware.py) except the one that shows its AHCI disk does not boot
ROWS = [
    ("seabios", "isapc", False, True, "disk"), ("seabios", "pc", False, True, "disk"),
    ("seabios", "q35", False, True, "disk"), ("seabios", "pc", False, True, "iso"),
    ("seabios", "q35", False, True, "iso"), ("seabios", "pc", False, True, "kernel"),
    ("seabios", "pc", True, True, "disk"),
    ("bochs", "isapc", False, False, "disk"), ("bochs", "isapc", False, True, "disk"),
    ("bochs", "isapc", False, True, "iso"), ("bochs", "isapc", False, True, "kernel"),
    ("bochs", "pc", False, True, "disk"), ("bochs", "pc", True, False, "disk"),
    ("bochs", "pc", True, True, "disk"), ("bochs", "pc", True, True, "iso"),
    ("bochs", "pc", True, True, "kernel"),
    ("bochs", "q35", False, True, "disk"), ("bochs", "q35", True, True, "disk"),
    ("bochs", "q35", True, True, "iso"),
]


def run(row, images, elf, tmp: Path, limit: float, isa_ide: bool = True) -> str:
    firmware, machine, no_apic, vga, medium = row
    serial, debug = tmp / "serial", tmp / "debug"
    for f in (serial, debug):
        f.unlink(missing_ok=True)
    argv = [QEMU, "-machine", machine, "-accel", "tcg", "-m", "256", "-display", "none",
            "-monitor", "none", "-no-reboot", "-nodefaults", "-serial", f"file:{serial}",
            "-chardev", f"file,id=dbg,path={debug}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    firm = fw.get(firmware)
    if firm.bios is not None:
        argv += ["-bios", str(firm.bios)]
    if no_apic:
        argv += ["-cpu", "qemu64,-apic"]
    if not vga:
        argv += ["-vga", "none"]
    elif firm.vga_rom is not None and machine != "isapc":  # the lab's recipe (lab/firmware.py)
        argv += [a for a in fw.qemu_argv(firm, machine) if a not in ("-bios", str(firm.bios),
                                                                      "-cpu", "qemu64,-apic")]
    elif firm.vga_rom is not None:  # isapc: the ISA VGA, the same LGPL VGA BIOS at C0000
        argv += ["-vga", "none", "-device", "isa-vga",
                 "-device", f"loader,file={firm.vga_rom},addr=0xc0000,force-raw=on"]
    else:
        argv += ["-vga", "std"]
    if medium == "kernel":
        argv += ["-kernel", str(elf)]
    else:
        disks, cd = ([], images["iso"]) if medium == "iso" else ([images["disk"]], None)
        bus = fw.drive_argv(firm, machine if machine != "isapc" else "pc", disks, cd)
        if firm is fw.BOCHS and machine == "q35" and not isa_ide:
            bus = fw.drive_argv(fw.SEABIOS, machine, disks, cd)  # q35's own AHCI
        argv += bus + ["-boot", "d" if medium == "iso" else "c"]
    start = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p.wait(limit)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
    took = time.monotonic() - start
    raw = serial.read_bytes() if serial.exists() else b""
    if b"KT banner" not in raw:
        last = [ln for ln in (debug.read_text(errors="replace") if debug.exists() else "").splitlines()
                if ln.strip()]
        err = p.stderr.read().decode(errors="replace").strip().splitlines()
        why = err[-1] if err and "terminating" not in err[-1] else (last[-1] if last else "silent")
        ended = "killed at the limit" if took >= limit - 0.5 else "QEMU ended"
        return f"no banner in {took:4.1f} s ({ended}): {why}"
    d = analyze_bytes(raw, pl.PayloadImage.open(elf)).to_dict()
    errors = [s["id"] for s in d["steps"] if s["status"] == "error"]
    via = f"via={d['payload'].get('via')} drive={d['payload'].get('drive', '-')}"
    return (f"{d['verdict']:<13} {took:4.1f} s  {via:<22} errors: {', '.join(errors) or '-'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=fw.FIRMWARES)
    ap.add_argument("--limit", type=float, default=20.0, help="seconds a boot may take")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kt-fwmatrix-") as t:
        tmp = Path(t)
        elf = pl.patch(pl.ensure_built(), tmp / "p.elf", debug_exit=True)
        images = {"disk": bootimage.write_image(elf, "disk", tmp / "p.img"),
                  "iso": bootimage.write_image(elf, "iso", tmp / "p.iso")}
        print(f"payload build {pl.PayloadImage.open(elf).build_id}; QEMU "
              + subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.split("\n")[0])
        for row in ROWS:
            if args.only and row[0] != args.only:
                continue
            firmware, machine, no_apic, vga, medium = row
            label = (f"{firmware:<8} {machine:<6} {'-apic' if no_apic else 'default':<8} "
                     f"{'VGA BIOS' if vga else 'no VGA':<9} {medium:<7}")
            print(f"{label} {run(row, images, elf, tmp, args.limit)}", flush=True)
            if row == ("bochs", "q35", True, True, "disk"):
                print(f"{label[:-8]}{'ahci':<7} "
                      f"{run(row, images, elf, tmp, args.limit, isa_ide=False)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
