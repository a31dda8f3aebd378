"""The payload as a Linux bzImage: the file `kexec_file_load` and every Linux boot loader take.

The layout (docs/payload.md, "The bzImage"): a boot sector whose setup header this module
writes from the boot protocol's rules (Documentation/arch/x86/boot.rst), the payload's
real-mode code (ELF section `.kt_bzsetup`, bzimage.S) right after the header and the load
segment again at BZ_SETUP_BLOB, then the protected-mode part: the 32-bit entry at 0
(`code32_start`), the 64-bit entry at +0x200 (section `.kt_bzpm`) and the load segment at
BZ_PM_BLOB.  Every entry copies the load segment to KT_BASE and joins the ELF's entry for
its mode.  The file is made from the ELF, configuration block included, so a patched ELF
makes a patched bzImage.

`header_checks` judges any file by the rules the kernel's own bzImage loader and the boot
protocol set, each refusal naming its field.  Standard library only and Python 3.6 syntax:
the target agent carries this module.
"""

import struct
from collections import OrderedDict

SECTOR = 512
HEADER_AT = 0x1F1
HDRS = b"HdrS"
BOOT_FLAG = 0xAA55
PROTOCOL = 0x020C  # 2.12: the oldest kexec_file_load takes; its header ends at 0x268
HEADER_END = 0x268
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
XLF_5LEVEL = 0x20
XLF_NAMES = ((0x01, "KERNEL_64"), (0x02, "CAN_BE_LOADED_ABOVE_4G"), (0x04, "EFI_HANDOVER_32"),
             (0x08, "EFI_HANDOVER_64"), (0x10, "EFI_KEXEC"), (0x20, "5LEVEL"),
             (0x40, "5LEVEL_ENABLED"))
CODE32_START = 0x100000
KERNEL_ALIGNMENT = 0x1000
CMDLINE_SIZE = 2047
ELFCOREHDR_RESERVE = 30  # kexec_file_load keeps this much of cmdline_size for a crash kernel
ENTRY64_OFFSET = 0x200  # of the protected-mode part: where a 64-bit loader jumps
SETUP_HEADER_MAX = 0x7B  # struct setup_header at protocol 2.15 (0x1F1..0x26C)
SETUP_SECTION = ".kt_bzsetup"
PM_SECTION = ".kt_bzpm"

# The setup header: (field, offset in the file, struct format), in order; the one table the
# writer, the reader and `kexectest inspect` use.
FIELDS = (
    ("setup_sects", 0x1F1, "B"), ("root_flags", 0x1F2, "H"), ("syssize", 0x1F4, "I"),
    ("ram_size", 0x1F8, "H"), ("vid_mode", 0x1FA, "H"), ("root_dev", 0x1FC, "H"),
    ("boot_flag", 0x1FE, "H"), ("jump", 0x200, "H"), ("header", 0x202, "4s"),
    ("version", 0x206, "H"), ("realmode_swtch", 0x208, "I"), ("start_sys_seg", 0x20C, "H"),
    ("kernel_version", 0x20E, "H"), ("type_of_loader", 0x210, "B"), ("loadflags", 0x211, "B"),
    ("setup_move_size", 0x212, "H"), ("code32_start", 0x214, "I"),
    ("ramdisk_image", 0x218, "I"), ("ramdisk_size", 0x21C, "I"),
    ("bootsect_kludge", 0x220, "I"), ("heap_end_ptr", 0x224, "H"),
    ("ext_loader_ver", 0x226, "B"), ("ext_loader_type", 0x227, "B"),
    ("cmd_line_ptr", 0x228, "I"), ("initrd_addr_max", 0x22C, "I"),
    ("kernel_alignment", 0x230, "I"), ("relocatable_kernel", 0x234, "B"),
    ("min_alignment", 0x235, "B"), ("xloadflags", 0x236, "H"), ("cmdline_size", 0x238, "I"),
    ("hardware_subarch", 0x23C, "I"), ("hardware_subarch_data", 0x240, "Q"),
    ("payload_offset", 0x248, "I"), ("payload_length", 0x24C, "I"), ("setup_data", 0x250, "Q"),
    ("pref_address", 0x258, "Q"), ("init_size", 0x260, "I"), ("handover_offset", 0x264, "I"),
)


class BzImageError(ValueError):
    """The ELF lacks what a bzImage is made from (a payload from before bzimage.S)."""


def _ceil(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def load_image(img) -> bytes:
    """The payload's one load segment as loaded (zeros past its file size)."""
    if len(img.segments) != 1:
        raise BzImageError(f"a bzImage carries one load segment, this payload has "
                           f"{len(img.segments)}")
    s = img.segments[0]
    return img.data[s.offset:s.offset + s.filesz] + bytes(s.memsz - s.filesz)


def make(img) -> bytes:
    """The bzImage of a payload ELF, read by either reader (payload/image.py, target/elf.py)."""
    setup_code, pm_code = img.section(SETUP_SECTION), img.section(PM_SECTION)
    sym = img.symbols
    missing = [n for n, v in ((SETUP_SECTION, setup_code), (PM_SECTION, pm_code),
                              ("BZ_SETUP_CODE", sym.get("BZ_SETUP_CODE")),
                              ("BZ_SETUP_BLOB", sym.get("BZ_SETUP_BLOB")),
                              ("BZ_PM_BLOB", sym.get("BZ_PM_BLOB"))) if v is None]
    if missing:
        raise BzImageError(f"no {missing[0]} in the ELF: a payload built before the bzImage "
                           "(rebuild it with kexectest build)")
    code_at, setup_blob, pm_blob = sym["BZ_SETUP_CODE"], sym["BZ_SETUP_BLOB"], sym["BZ_PM_BLOB"]
    if code_at != HEADER_END or code_at + len(setup_code) > setup_blob or \
            len(pm_code) > pm_blob:
        raise BzImageError("the bzImage sections do not fit their places (bzimage.S)")
    load = load_image(img)
    setup = bytearray(_ceil(setup_blob + len(load), SECTOR))
    setup[code_at:code_at + len(setup_code)] = setup_code
    setup[setup_blob:setup_blob + len(load)] = load
    pm = pm_code.ljust(pm_blob, b"\0") + load
    pm = pm.ljust(_ceil(len(pm), 16), b"\0")
    values = {
        "setup_sects": len(setup) // SECTOR - 1, "syssize": len(pm) // 16, "vid_mode": 0xFFFF,
        "boot_flag": BOOT_FLAG, "jump": 0xEB | (code_at - 0x202) << 8, "header": HDRS,
        "version": PROTOCOL, "loadflags": LOADED_HIGH, "code32_start": CODE32_START,
        "initrd_addr_max": 0x7FFFFFFF, "kernel_alignment": KERNEL_ALIGNMENT,
        "relocatable_kernel": 1, "min_alignment": KERNEL_ALIGNMENT.bit_length() - 1,
        "xloadflags": XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G | XLF_5LEVEL,
        "cmdline_size": CMDLINE_SIZE, "pref_address": CODE32_START,
        "init_size": _ceil(len(pm), 0x1000),
    }
    for name, offset, fmt in FIELDS:
        if offset < HEADER_END:
            struct.pack_into("<" + fmt, setup, offset, values.get(name, 0))
    return bytes(setup) + pm


def is_bzimage(data: bytes) -> bool:
    return len(data) >= HEADER_END and data[0x202:0x206] == HDRS


def read_header(data: bytes) -> "OrderedDict":
    """The setup header's fields (those inside the file's first sector pair and the header the
    version declares; later ones read 0 when the file is too short)."""
    out = OrderedDict()
    for name, offset, fmt in FIELDS:
        size = struct.calcsize("<" + fmt)
        out[name] = struct.unpack_from("<" + fmt, data, offset)[0] \
            if offset + size <= len(data) else (b"" if fmt.endswith("s") else 0)
    return out


def xloadflag_names(value: int) -> list:
    return [name for bit, name in XLF_NAMES if value & bit]


def parts(data: bytes):
    """(setup part, protected-mode part) as a loader splits the file."""
    sects = read_header(data)["setup_sects"] or 4
    cut = (sects + 1) * SECTOR
    return data[:cut], data[cut:]


def header_checks(data: bytes) -> list:
    """(level, message) pairs: "error" where kexec_file_load or the boot protocol refuses the
    file (naming the field), "warning" where a loader may, "ok" for what holds."""
    out = []
    if len(data) < 2 * SECTOR:
        return [("error", f"file is {len(data)} bytes: a bzImage has at least two sectors "
                          "(kexec_file_load: 'File is too short')")]
    h = read_header(data)

    def need(cond, ok, bad, level="error"):
        out.append(("ok", ok) if cond else (level, bad))

    need(h["header"] == HDRS, "header: 'HdrS'",
         f"header: {h['header']!r}, not 'HdrS' (not a bzImage)")
    need(h["boot_flag"] == BOOT_FLAG, "boot_flag: 0xAA55",
         f"boot_flag: {h['boot_flag']:#06x}, not 0xAA55 (no x86 boot sector)")
    need(h["version"] >= PROTOCOL, f"version: boot protocol {h['version'] >> 8}."
         f"{h['version'] & 0xFF:02d}", f"version: boot protocol {h['version'] >> 8}."
         f"{h['version'] & 0xFF:02d}, kexec_file_load needs 2.12 or later")
    need(h["loadflags"] & LOADED_HIGH, "loadflags: LOADED_HIGH",
         f"loadflags: {h['loadflags']:#04x} lacks LOADED_HIGH (a zImage, not a bzImage)")
    for bit, name in ((XLF_KERNEL_64, "KERNEL_64"),
                      (XLF_CAN_BE_LOADED_ABOVE_4G, "CAN_BE_LOADED_ABOVE_4G")):
        need(h["xloadflags"] & bit, f"xloadflags: XLF_{name}",
             f"xloadflags: {h['xloadflags']:#06x} lacks XLF_{name} (kexec_file_load refuses)")
    need(h["xloadflags"] & XLF_5LEVEL, "xloadflags: XLF_5LEVEL",
         "xloadflags: no XLF_5LEVEL: a kernel running 5-level paging refuses it", "warning")
    sects = h["setup_sects"] or 4
    setup_len = (sects + 1) * SECTOR
    need(setup_len <= len(data), f"setup_sects: {h['setup_sects']} ({setup_len} bytes of setup)",
         f"setup_sects: {h['setup_sects']} means {setup_len} bytes of setup, the file has "
         f"{len(data)} (kexec_file_load: 'bzImage truncated')")
    pm_len = max(len(data) - setup_len, 0)
    jump_ok = h["jump"] & 0xFF == 0xEB
    header_size = 0x202 + (h["jump"] >> 8) - HEADER_AT
    need(jump_ok and 0x202 + (h["jump"] >> 8) >= 0x206 and header_size <= SETUP_HEADER_MAX
         and 0x202 + (h["jump"] >> 8) < setup_len,
         f"jump: short jump to setup offset {0x202 + (h['jump'] >> 8):#x} (the header is "
         f"{header_size} bytes)",
         f"jump: {h['jump']:#06x} is not a short jump past the header into the setup code "
         f"(loaders take the header's size from it; at most {SETUP_HEADER_MAX} bytes)")
    need(h["syssize"] * 16 >= pm_len, f"syssize: {h['syssize']} paragraphs "
         f"({pm_len} bytes of protected-mode part)",
         f"syssize: {h['syssize']} paragraphs, less than the {pm_len}-byte protected-mode part")
    need(h["init_size"] >= pm_len, f"init_size: {h['init_size']:#x}",
         f"init_size: {h['init_size']:#x}, less than the protected-mode part ({pm_len:#x})")
    need(pm_len > ENTRY64_OFFSET, f"protected-mode part: {pm_len} bytes, 64-bit entry at "
         f"+{ENTRY64_OFFSET:#x}", f"protected-mode part: {pm_len} bytes, no room for the "
         f"64-bit entry at +{ENTRY64_OFFSET:#x}")
    need(h["relocatable_kernel"] == 1, "relocatable_kernel: 1",
         f"relocatable_kernel: {h['relocatable_kernel']} (kexec_file_load places the part "
         "where it finds room)")
    align = h["kernel_alignment"]
    need(align >= 0x1000 and align & (align - 1) == 0
         and 1 << h["min_alignment"] <= align,
         f"kernel_alignment: {align:#x}, min_alignment 2^{h['min_alignment']}",
         f"kernel_alignment: {align:#x} with min_alignment {h['min_alignment']}: needs a power "
         "of two of at least a page, not below 2^min_alignment")
    need(h["cmdline_size"] >= ELFCOREHDR_RESERVE + 1, f"cmdline_size: {h['cmdline_size']}",
         f"cmdline_size: {h['cmdline_size']}, kexec_file_load needs the command line plus "
         f"{ELFCOREHDR_RESERVE} bytes")
    return out


def cmdline_fits(data: bytes, cmdline_len: int) -> bool:
    """Whether kexec_file_load takes a command line of this length (its NUL included)."""
    return cmdline_len + ELFCOREHDR_RESERVE <= read_header(data)["cmdline_size"]
