"""Bootable images of the payload: a raw disk (USB stick, `dd`, a lab disk) and an El Torito ISO
(a BMC's virtual media, a CD), so the machine's own firmware boots it fresh from POST.

The payload is the same ELF `kexec` loads; its load segment is copied into the image behind one
of its own loaders (payloads/bootdisk.S, payloads/bootcd.S), which read it to KT_BASE with
int 13h and enter it in real mode at `kt_entry16` (payloads/entry16.S).  The host fills each
loader's parameter block (payloads/bootload.S) from the ELF, so one loader serves any build
and any configuration (docs/payload.md, "Booting from the firmware").
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from ..errors import Exit, KexectestError
from ..fsutil import copy_atomic, os_error, write_atomic
from .build import payload_dir
from .config import FLAG_KEEP_UART
from .image import PayloadImage

KINDS = ("disk", "iso")
SECTOR = 512
CD_SECTOR = 2048
DISK_BYTES = 1024 * 1024  # the whole disk image: a 64-head, 32-sector geometry's one cylinder
DISK_HEADS, DISK_SPT = 64, 32
PARTITION_TYPE = 0xDA  # "non-FS data": nothing tries to mount it
PARAMS_MAGIC = b"KTL1"
_PARAMS = struct.Struct("<4sHHHIHB12s")  # magic, entry off, seg, count, first, uart, n, table
LOADERS = {"disk": ("bootdisk.S", SECTOR), "iso": ("bootcd.S", CD_SECTOR)}
ISO_TOOL, ISO_PACKAGE = "xorriso", "xorriso"
ISO_BOOT_FILE = "boot/kexectest.bin"
ISO_VOLUME = "KEXECTEST"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise KexectestError(f"'{name}' not found: install {package} (apt-get install {package})",
                             Exit.MISSING_TOOL)
    return path


def loader(kind: str) -> bytes:
    """The loader for `kind` assembled to its raw bytes (512 for a disk, 2048 for a CD)."""
    src_name, size = LOADERS[kind]
    src_dir = payload_dir()
    src = src_dir / src_name
    if not src.is_file():
        raise KexectestError(f"payload source missing: {src}", Exit.BAD_INPUT)
    as_, ld = _tool("as", "binutils"), _tool("ld", "binutils")
    with tempfile.TemporaryDirectory(prefix="kt-loader-") as tmp:
        obj, out = Path(tmp) / "loader.o", Path(tmp) / "loader.bin"
        for what, cmd in (("assembler", [as_, "--32", "-I", str(src_dir), "-o", str(obj), str(src)]),
                          ("linker", [ld, "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat",
                                      "binary", "-o", str(out), str(obj)])):
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                msg = (p.stderr.strip() or p.stdout.strip()).splitlines()[:1] or ["no message"]
                raise KexectestError(f"{src_name}: {what} failed: {msg[0]}", Exit.BAD_INPUT)
        data = out.read_bytes()
    if len(data) != size:
        raise KexectestError(f"{src_name} gave {len(data)} bytes, not {size}", Exit.PAYLOAD_LIMITS)
    return data


def load_segment(img: PayloadImage) -> bytes:
    """The bytes the loaders put at KT_BASE: the one load segment as loaded (zeros past filesz)."""
    if len(img.segments) != 1:
        raise KexectestError(f"{img.path}: {len(img.segments)} load segments; a boot image "
                             "carries exactly one", Exit.PAYLOAD_LIMITS)
    seg = img.segments[0]
    if seg.paddr != img.kt_base or img.kt_base % 16 or img.kt_base + seg.memsz > 0xA0000:
        raise KexectestError(f"{img.path}: load segment at {seg.paddr:#x} is not at a real-mode "
                             f"segment below 640 KiB (KT_BASE {img.kt_base:#x})",
                             Exit.PAYLOAD_LIMITS)
    return img.read(seg.vaddr, seg.memsz)


def _entry16(img: PayloadImage) -> int:
    entry = img.symbols.get("kt_entry16")
    if entry is None:
        raise KexectestError(f"{img.path}: no kt_entry16 symbol (a payload from before the "
                             "real-mode entry): rebuild it with `kexectest build`",
                             Exit.PAYLOAD_LIMITS)
    off = entry - img.kt_base
    if not 0 <= off < 0x10000:
        raise KexectestError(f"{img.path}: kt_entry16 lies outside the payload's segment",
                             Exit.PAYLOAD_LIMITS)
    return off


def _uart_table(img: PayloadImage) -> tuple[int, bytes]:
    """The loader's UART set-up, as the payload's own (io.S): (entries, (register, value) x 6)."""
    cfg = img.config
    if cfg.flags & FLAG_KEEP_UART or not cfg.uart_divisor:
        return 0, bytes(12)
    div = cfg.uart_divisor
    pairs = ((3, 0x80), (0, div & 0xFF), (1, div >> 8), (3, 0x03), (2, 0x07), (4, 0x03))
    return len(pairs), bytes(b for pair in pairs for b in pair)


def fill_params(code: bytes, img: PayloadImage, *, count: int, first: int) -> bytes:
    """`code` (a loader) with its parameter block filled for `img`."""
    at = code.find(PARAMS_MAGIC)
    if at < 0 or code.find(PARAMS_MAGIC, at + 1) >= 0:
        raise KexectestError("loader: no single parameter block (KTL1) in it", Exit.BAD_INPUT)
    n, table = _uart_table(img)
    block = _PARAMS.pack(PARAMS_MAGIC, _entry16(img), img.kt_base >> 4, count, first,
                         img.config.uart_base, n, table)
    return code[:at] + block + code[at + len(block):]


def _chs(lba: int) -> bytes:
    c, rest = divmod(lba, DISK_HEADS * DISK_SPT)
    h, s = divmod(rest, DISK_SPT)
    return bytes((h, (s + 1) | (c >> 2 & 0xC0), c & 0xFF))


def disk_bytes(img: PayloadImage) -> bytes:
    """The disk image: boot sector, the payload from LBA 1, zeros to 1 MiB."""
    seg = load_segment(img)
    count = -(-len(seg) // SECTOR)
    code = fill_params(loader("disk"), img, count=count, first=1)
    mbr = bytearray(code)
    signature = int((img.build_id or "4b544244")[:8], 16)  # the build's, else 'KTBD'
    struct.pack_into("<IH", mbr, 0x1B8, signature, 0)
    last = DISK_BYTES // SECTOR - 1
    mbr[0x1BE:0x1CE] = (bytes((0x80,)) + _chs(1) + bytes((PARTITION_TYPE,)) + _chs(last)
                        + struct.pack("<II", 1, last))
    mbr[0x1CE:0x1FE] = bytes(48)
    if mbr[510:512] != b"\x55\xaa":
        raise KexectestError("bootdisk.S: the sector does not end in 55AAh", Exit.BAD_INPUT)
    body = seg + bytes(count * SECTOR - len(seg))
    return bytes(mbr) + body + bytes(DISK_BYTES - SECTOR - len(body))


def cd_boot_file(img: PayloadImage) -> bytes:
    """The ISO's El Torito boot file: the CD loader (one 2048-byte sector), then the payload."""
    seg = load_segment(img)
    count = -(-len(seg) // CD_SECTOR)
    code = fill_params(loader("iso"), img, count=count, first=1)
    return code + seg + bytes(count * CD_SECTOR - len(seg))


def _write_iso(img: PayloadImage, out: Path) -> None:
    xorriso = _tool(ISO_TOOL, ISO_PACKAGE)
    with tempfile.TemporaryDirectory(prefix="kt-iso-") as tmp:
        root = Path(tmp) / "root"
        (root / "boot").mkdir(parents=True)
        (root / ISO_BOOT_FILE).write_bytes(cd_boot_file(img))
        (root / "kexec_test.elf").write_bytes(img.data)  # the exact ELF, for --payload later
        iso = Path(tmp) / "out.iso"
        cmd = [xorriso, "-as", "mkisofs", "-quiet", "-R", "-J", "-V", ISO_VOLUME, "-o", str(iso),
               "-b", ISO_BOOT_FILE, "-no-emul-boot", "-boot-load-size", str(CD_SECTOR // SECTOR),
               "-boot-info-table", str(root)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0 or not iso.is_file():
            msg = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no message"]
            raise KexectestError(f"xorriso failed: {msg[0]}", Exit.BAD_INPUT)
        try:
            copy_atomic(iso, out)
        except OSError as exc:
            raise os_error(out, exc) from None


def default_image(kind: str) -> Path:
    from .build import REPO
    return REPO / "build" / ("kexec_test.img" if kind == "disk" else "kexec_test.iso")


def write_image(elf: Path | str, kind: str, out: Path | str | None = None) -> Path:
    """Write the `kind` ("disk" or "iso") image of the payload ELF `elf`; returns its path."""
    if kind not in KINDS:
        raise KexectestError(f"image kind must be disk or iso, not {kind!r}", Exit.USAGE)
    img = PayloadImage.open(elf)
    out = Path(out) if out else default_image(kind)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(out, exc) from None
    if kind == "disk":
        data = disk_bytes(img)
        try:
            write_atomic(out, data)
        except OSError as exc:
            raise os_error(out, exc) from None
    else:
        _write_iso(img, out)
    return out
