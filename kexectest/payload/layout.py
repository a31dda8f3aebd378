"""The memory rules of a kexec hand-off and the checks a payload ELF must pass against them,
and how a step is named on the command line.

Both ELF readers use it: payload/image.py (pyelftools, on the host) and target/elf.py (by hand,
in the target agent), so a payload is judged by one set of rules wherever it is loaded.
Standard library only and Python 3.6 syntax: the target agent carries this module.
"""

import struct

from ..errors import Exit, KexectestError
from .config import CONFIG_SIZE, MAX_SKIP_STEPS

PAGE = 0x1000
KT_BASE_DEFAULT = 0x20000
MAX_KEXEC_SEGMENTS = 16
LOW_MEMORY_TOP = 0xA0000  # 640 KiB: above is the EBDA/VGA/ROM hole
# Memory a kexec hand-off or the BIOS needs left alone (start, end exclusive, why).
RESERVED_LOW = (
    (0x0, 0x500, "the real-mode IVT and BIOS data area"),
    (0x1000, 0x2000, "kexec-tools' boot notes"),
    (0x9000, 0x12000, "kexec-tools' purgatory"),
)
PAYLOAD_MAX = 60 * 1024  # docs/payload.md: the rest of the 64 KiB segment is the stack
MULTIBOOT_MAGIC = b"\x02\xb0\xad\x1b"
STEP_META_SECTION = ".kt_step_meta"
# One row of the step table `kt_steps` (docs/payload.md); the first field is the offset of the
# step's id string from KT_BASE.
STEP_ROW = struct.Struct("<HBBHH4IHHIHH")
assert STEP_ROW.size == 36


def read_payload_bytes(path):
    """The bytes of the payload file at `path` (a pathlib.Path), or one line saying why there
    are none: both ELF readers open a payload this way."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KexectestError("{}: no such file".format(path), Exit.BAD_INPUT) from None
    except IsADirectoryError:
        raise KexectestError("{}: is a directory, not an ELF file".format(path),
                             Exit.BAD_INPUT) from None
    except OSError as exc:
        raise KexectestError("{}: cannot read: {}".format(path, exc.strerror),
                             Exit.BAD_INPUT) from None
    if not data:
        raise KexectestError("{}: empty file".format(path), Exit.BAD_INPUT)
    return data


def page_floor(addr: int) -> int:
    return addr & ~(PAGE - 1)


def page_ceil(addr: int) -> int:
    return (addr + PAGE - 1) & ~(PAGE - 1)


def step_index(names, key) -> int:
    """A step's row index from its id ("e820") or number ("12", "012"), given the step ids in
    table order."""
    names = list(names)
    text = str(key).strip()
    if text.isdigit() and int(text) < len(names):
        return int(text)
    if text in names:
        return names.index(text)
    known = ", ".join(names) if names else "none"
    raise KexectestError(f"unknown step '{key}' (known: {known})", Exit.UNKNOWN_STEP)


def checks(img) -> list:
    """(level, message) pairs for a payload image; level is "error", "warning" or "ok".

    `img` is either reader's image: segments (paddr, vaddr, filesz, memsz), kt_base, entry32,
    entry64, e_entry, config, build_id, data, steps and step_meta."""
    out = []
    if not img.segments:
        return [("error", "no load segments")]
    if len(img.segments) > MAX_KEXEC_SEGMENTS:
        out.append(("error", f"{len(img.segments)} load segments; kexec_load takes at most 16"))
    for n, s in enumerate(img.segments):
        lo, hi = s.paddr, s.paddr + s.memsz
        rlo, rhi = page_floor(lo), page_ceil(hi)
        where = f"segment {n} [{lo:#x}-{hi:#x})"
        bad = False
        if hi > LOW_MEMORY_TOP:
            out.append(("error", f"{where} reaches above 640 KiB ({LOW_MEMORY_TOP:#x})"))
            bad = True
        for r_lo, r_hi, why in RESERVED_LOW:
            if rlo < r_hi and r_lo < rhi:
                out.append(("error", f"{where} overlaps {r_lo:#x}-{r_hi - 1:#x}, {why}"))
                bad = True
        if not (img.kt_base <= lo and hi <= img.kt_base + 0x10000):
            out.append(("error", f"{where} is not inside the 64 KiB real-mode segment at "
                                 f"KT_BASE {img.kt_base:#x}"))
            bad = True
        elif hi - img.kt_base > PAYLOAD_MAX:
            out.append(("error", f"{where} uses {hi - img.kt_base} bytes from KT_BASE; at most "
                                 f"{PAYLOAD_MAX} leave room for the stack"))
            bad = True
        if lo % PAGE:
            out.append(("warning", f"{where} is not page-aligned; the loader loads it from "
                                   f"{rlo:#x}"))
        if not bad:
            out.append(("ok", f"{where} memsz {s.memsz} below 640 KiB, clear of reserved "
                              f"low memory, pages {rlo:#x}-{rhi:#x}"))
    for name, addr in (("kt_entry32", img.entry32), ("kt_entry64", img.entry64)):
        if addr is None:
            out.append(("warning", f"no {name} symbol: cannot be loaded that way"))
        elif not any(s.vaddr <= addr < s.vaddr + s.filesz for s in img.segments):
            out.append(("error", f"{name} {addr:#x} is outside the loaded image"))
    if img.entry32 != img.e_entry:
        out.append(("warning", f"e_entry {img.e_entry:#x} differs from kt_entry32 "
                               f"{img.entry32:#x}"))
    if img.config.layout_version != 1 or img.config.block_size != CONFIG_SIZE:
        out.append(("warning", f"config layout {img.config.layout_version} size "
                               f"{img.config.block_size}; this kexectest knows layout 1/64"))
    if img.build_id is None:
        out.append(("warning", "no GNU build-id note: traces cannot be matched to this ELF"))
    if MULTIBOOT_MAGIC not in img.data[:8192]:
        out.append(("warning", "no multiboot header in the first 8 KiB: QEMU -kernel "
                               "cannot boot it directly"))
    if img.steps and not img.step_meta:
        out.append(("warning", f"no step metadata ({STEP_META_SECTION}): reports cannot title "
                               "its steps or tell which services are optional"))
    if len(img.steps) > MAX_SKIP_STEPS:
        out.append(("error", f"{len(img.steps)} steps; the skip bitmap holds {MAX_SKIP_STEPS}"))
    return out
