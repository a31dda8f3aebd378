"""The payload ELF on the host: build it with binutils, read it with pyelftools, patch its
configuration block, and check it against the memory rules of a kexec hand-off.

Everything the rest of kexectest knows about the payload (entry points, load segments, step
names, build id) comes from the ELF through `PayloadImage`, so the assembly stays the one
source of truth (layouts in docs/payload.md).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .errors import Exit, KexectestError

PAGE = 0x1000
KT_BASE_DEFAULT = 0x20000
CONFIG_MAGIC = b"KTCF"
CONFIG_SIZE = 64
NO_STEP = 0xFFFF
MAX_SKIP_STEPS = 256
MAX_KEXEC_SEGMENTS = 16
LOW_MEMORY_TOP = 0xA0000  # 640 KiB: above is the EBDA/VGA/ROM hole
# Memory a kexec hand-off or the BIOS needs left alone (start, end exclusive, why).
RESERVED_LOW = (
    (0x0, 0x500, "the real-mode IVT and BIOS data area"),
    (0x1000, 0x2000, "kexec-tools' boot notes"),
    (0x9000, 0x12000, "kexec-tools' purgatory"),
)
PAYLOAD_MAX = 60 * 1024  # docs/payload.md: the rest of the 64 KiB segment is the stack

FLAG_VGA = 0x01
FLAG_E9 = 0x02
FLAG_INT19 = 0x04
FLAG_DEBUG_EXIT = 0x08
FLAG_MASK_NMI = 0x10
FLAG_KEEP_UART = 0x20

_CONFIG_FMT = struct.Struct("<4sHHHHIHHHBB32sH6s")
_STEP_FMT = struct.Struct("<HBBHH4IHHIHH")
assert _CONFIG_FMT.size == CONFIG_SIZE and _STEP_FMT.size == 36

SOURCE_NAME = "kexec_test.S"
LDSCRIPT_NAME = "kexec_test.ld"


def payload_dir() -> Path:
    """Where the payload sources live (KEXECTEST_PAYLOAD_DIR overrides, for tests and forks)."""
    env = os.environ.get("KEXECTEST_PAYLOAD_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "payloads"


def default_elf() -> Path:
    return Path(__file__).resolve().parents[1] / "build" / "kexec_test.elf"


# ---------------------------------------------------------------------------------------------
# build


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise KexectestError(
            f"'{name}' not found: install binutils (apt-get install binutils)", Exit.MISSING_TOOL
        )
    return path


# ld's words for a size/placement limit (region overflow, overlap, the script's own ASSERTs)
_LIMIT_RE = re.compile(r"too large|will not fit|overflowed by|overlaps|kexectest payload")


def _first_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"(?i)\b(fatal )?error:", ln):
            return ln
    return lines[0] if lines else "no message"


def build(out: Path | str | None = None) -> Path:
    """Assemble and link the payload; returns the ELF path. Fails on error-level checks."""
    src_dir = payload_dir()
    src, lds = src_dir / SOURCE_NAME, src_dir / LDSCRIPT_NAME
    for f in (src, lds):
        if not f.is_file():
            raise KexectestError(f"payload source missing: {f}", Exit.BAD_INPUT)
    out = Path(out) if out else default_elf()
    as_, ld = _tool("as"), _tool("ld")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(out, exc) from None
    with tempfile.TemporaryDirectory(prefix="kt-build-") as tmp:
        obj = Path(tmp) / "kexec_test.o"
        elf_tmp = Path(tmp) / "kexec_test.elf"
        steps = (
            ("assembler", [as_, "--32", "-I", str(src_dir), "-o", str(obj), str(src)]),
            ("linker", [ld, "-m", "elf_i386", "-T", str(lds), "--build-id=sha1",
                        "-o", str(elf_tmp), str(obj)]),
        )
        for what, cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                msg = _first_error(proc.stderr + proc.stdout)
                if what == "linker" and _LIMIT_RE.search(msg):
                    raise KexectestError(f"payload breaks its limits: {msg}", Exit.PAYLOAD_LIMITS)
                raise KexectestError(f"{what} failed: {msg}", Exit.BAD_INPUT)
        img = PayloadImage.open(elf_tmp)
        errors = [m for lvl, m in img.checks() if lvl == "error"]
        if errors:
            raise KexectestError(f"payload breaks its limits: {errors[0]}", Exit.PAYLOAD_LIMITS)
        tmp_out = out.with_name(out.name + ".tmp")
        try:
            shutil.copyfile(elf_tmp, tmp_out)
            os.replace(tmp_out, out)
        except OSError as exc:
            raise _write_error(out, exc) from None
    return out


def _write_error(path: Path, exc: OSError) -> KexectestError:
    code = Exit.NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Exit.BAD_INPUT
    return KexectestError(f"cannot write {path}: {exc.strerror}", code)


def ensure_built(out: Path | str | None = None) -> Path:
    """The default payload ELF, rebuilt only when a payloads/* source is newer or it is missing."""
    out = Path(out) if out else default_elf()
    src_dir = payload_dir()
    sources = [p for p in src_dir.iterdir() if p.is_file()] if src_dir.is_dir() else []
    if out.is_file() and sources:
        elf_mtime = out.stat().st_mtime
        if all(p.stat().st_mtime <= elf_mtime for p in sources):
            return out
    elif out.is_file() and not sources:
        return out  # an installed copy without sources: use what is there
    return build(out)


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Segment:
    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


@dataclass(frozen=True)
class Step:
    index: int
    name: str
    int: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int
    handler: int
    buffer: int
    dump_len: int
    prefill: int
    post: int
    dump_src: int


@dataclass(frozen=True)
class Config:
    """The 64-byte `kt_config` block, field for field (docs/payload.md)."""

    magic: bytes
    layout_version: int
    block_size: int
    uart_base: int
    uart_divisor: int
    flags: int
    hang_step: int
    reset_step: int
    debug_exit_port: int
    pic_mask_master: int
    pic_mask_slave: int
    skip: frozenset[int]
    max_drives: int
    reserved: bytes

    @classmethod
    def unpack(cls, raw: bytes) -> "Config":
        (magic, ver, size, uart, div, flags, hang, reset, dbg, m1, m2, skip, drives,
         reserved) = _CONFIG_FMT.unpack(raw)
        bits = int.from_bytes(skip, "little")
        return cls(magic, ver, size, uart, div, flags, hang, reset, dbg, m1, m2,
                   frozenset(i for i in range(MAX_SKIP_STEPS) if bits >> i & 1), drives, reserved)

    def pack(self) -> bytes:
        bits = sum(1 << i for i in self.skip)
        return _CONFIG_FMT.pack(
            self.magic, self.layout_version, self.block_size, self.uart_base, self.uart_divisor,
            self.flags, self.hang_step, self.reset_step, self.debug_exit_port,
            self.pic_mask_master, self.pic_mask_slave, bits.to_bytes(32, "little"),
            self.max_drives, self.reserved)

    @property
    def baud(self) -> int | None:
        return 115200 // self.uart_divisor if self.uart_divisor else None

    def flag(self, bit: int) -> bool:
        return bool(self.flags & bit)

    def to_dict(self) -> dict:
        return {
            "magic": self.magic.decode("latin-1"),
            "layout_version": self.layout_version,
            "block_size": self.block_size,
            "uart_base": self.uart_base,
            "uart_divisor": self.uart_divisor,
            "baud": self.baud,
            "flags": self.flags,
            "vga_mirror": self.flag(FLAG_VGA),
            "e9_mirror": self.flag(FLAG_E9),
            "int19": self.flag(FLAG_INT19),
            "debug_exit": self.flag(FLAG_DEBUG_EXIT),
            "mask_nmi": self.flag(FLAG_MASK_NMI),
            "keep_uart": self.flag(FLAG_KEEP_UART),
            "hang_step": None if self.hang_step == NO_STEP else self.hang_step,
            "reset_step": None if self.reset_step == NO_STEP else self.reset_step,
            "debug_exit_port": self.debug_exit_port,
            "pic_mask_master": self.pic_mask_master,
            "pic_mask_slave": self.pic_mask_slave,
            "skip": sorted(self.skip),
            "max_drives": self.max_drives,
        }


def _bad(path: Path, why: str) -> KexectestError:
    return KexectestError(f"{path}: {why}", Exit.BAD_INPUT)


class PayloadImage:
    """A parsed payload ELF. Everything is read eagerly in `open`, so a corrupt file fails
    there with one line rather than later with a traceback."""

    def __init__(self, path: Path, data: bytes):
        self.path = path
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise _bad(path, f"not an i386 payload (ELF{elf.elfclass} {elf['e_machine']}); "
                             "expected ELF32 EM_386")
        self.e_entry: int = elf["e_entry"]
        self.segments: list[Segment] = [
            Segment(s["p_paddr"], s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"],
                    s["p_flags"])
            for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
        ]
        for s in self.segments:
            if s.offset + s.filesz > len(data) or s.filesz > s.memsz:
                raise _bad(path, "truncated or corrupt ELF (a load segment lies past the end)")
        self.symbols: dict[str, int] = {}
        symtab = elf.get_section_by_name(".symtab")
        if symtab is not None:
            for sym in symtab.iter_symbols():
                if sym.name and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_LOCAL"):
                    self.symbols.setdefault(sym.name, sym["st_value"])
        self.build_id: str | None = None
        for sec in elf.iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        self.build_id = note["n_desc"]
        if "kt_config" not in self.symbols:
            raise _bad(path, "not a kexectest payload (no kt_config symbol)")
        self.config_offset = self._file_offset(self.symbols["kt_config"], CONFIG_SIZE)
        raw = data[self.config_offset:self.config_offset + CONFIG_SIZE]
        if raw[:4] != CONFIG_MAGIC:
            raise _bad(path, f"not a kexectest payload (config magic {raw[:4]!r}, expected 'KTCF')")
        self.config = Config.unpack(raw)
        self.kt_base: int = self.symbols.get("KT_BASE", KT_BASE_DEFAULT)
        self.entry32: int = self.symbols.get("kt_entry32", self.e_entry)
        self.entry64: int | None = self.symbols.get("kt_entry64")
        self.version: str | None = (self._cstring(self.symbols["kt_version"])
                                    if "kt_version" in self.symbols else None)
        self.steps: list[Step] = self._read_steps()

    @classmethod
    def open(cls, path: Path | str) -> "PayloadImage":
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _bad(path, "no such file") from None
        except IsADirectoryError:
            raise _bad(path, "is a directory, not an ELF file") from None
        except OSError as exc:
            raise _bad(path, f"cannot read: {exc.strerror}") from None
        if not data:
            raise _bad(path, "empty file")
        if data[:4] != b"\x7fELF":
            raise _bad(path, "not an ELF file")
        try:
            return cls(path, data)
        except KexectestError:
            raise
        except (ELFError, struct.error, ValueError, IndexError, KeyError, AssertionError,
                UnicodeDecodeError, EOFError) as exc:
            raise _bad(path, f"truncated or corrupt ELF ({type(exc).__name__})") from None
        except Exception as exc:  # pyelftools' construct layer raises its own types
            if type(exc).__module__.startswith("elftools"):
                raise _bad(path, f"truncated or corrupt ELF ({type(exc).__name__})") from None
            raise

    # -- memory image ---------------------------------------------------------------------------

    def _file_offset(self, vaddr: int, size: int) -> int:
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                return s.offset + (vaddr - s.vaddr)
        raise _bad(self.path, f"address {vaddr:#x} is not in the file image of any load segment")

    def read(self, vaddr: int, size: int) -> bytes:
        """Bytes at a link address as loaded (.bss reads as zeros)."""
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.memsz:
                rel = vaddr - s.vaddr
                chunk = self.data[s.offset + rel:s.offset + min(rel + size, s.filesz)]
                return chunk + bytes(size - len(chunk))
        raise _bad(self.path, f"address {vaddr:#x} is outside every load segment")

    def _cstring(self, vaddr: int, limit: int = 256) -> str:
        for s in self.segments:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                start = s.offset + vaddr - s.vaddr
                end = s.offset + s.filesz
                raw = self.data[start:min(end, start + limit)]
                return raw.split(b"\0", 1)[0].decode("ascii", "replace")
        raise _bad(self.path, f"string address {vaddr:#x} is outside the file image")

    def _read_steps(self) -> list[Step]:
        if "kt_steps" not in self.symbols:
            return []
        start = self.symbols["kt_steps"]
        end = self.symbols.get("kt_steps_end", start)
        size = self.symbols.get("KT_STEP_SIZE", _STEP_FMT.size)
        if size < _STEP_FMT.size:
            raise _bad(self.path, f"KT_STEP_SIZE {size} is smaller than a step row (36)")
        count = (end - start) // size
        table = self.read(start, count * size) if count > 0 else b""
        steps = []
        for i in range(count):
            row = _STEP_FMT.unpack_from(table, i * size)
            name_off, intno, _res, flags, handler, eax, ebx, ecx, edx, buf, dump, pre, post, src = row
            steps.append(Step(i, self._cstring(self.kt_base + name_off, 64), intno, flags,
                              eax, ebx, ecx, edx, handler, buf, dump, pre, post, src))
        return steps

    # -- steps ---------------------------------------------------------------------------------

    def step_index(self, name_or_number: str | int) -> int:
        """A step's row index from its id ("e820") or number ("12", "012")."""
        names = [s.name for s in self.steps]
        key = str(name_or_number).strip()
        if key.isdigit() and int(key) < len(self.steps):
            return int(key)
        if key in names:
            return names.index(key)
        known = ", ".join(names) if names else "none"
        raise KexectestError(f"unknown step '{name_or_number}' (known: {known})", Exit.UNKNOWN_STEP)

    def step_name(self, index: int) -> str | None:
        return self.steps[index].name if 0 <= index < len(self.steps) else None

    # -- checks ----------------------------------------------------------------------------------

    def checks(self) -> list[tuple[str, str]]:
        """(level, message) pairs; level is "error", "warning" or "ok"."""
        out: list[tuple[str, str]] = []
        if not self.segments:
            return [("error", "no load segments")]
        if len(self.segments) > MAX_KEXEC_SEGMENTS:
            out.append(("error", f"{len(self.segments)} load segments; kexec_load takes at most 16"))
        for n, s in enumerate(self.segments):
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
            if not (self.kt_base <= lo and hi <= self.kt_base + 0x10000):
                out.append(("error", f"{where} is not inside the 64 KiB real-mode segment at "
                                     f"KT_BASE {self.kt_base:#x}"))
                bad = True
            elif hi - self.kt_base > PAYLOAD_MAX:
                out.append(("error", f"{where} uses {hi - self.kt_base} bytes from KT_BASE; at most "
                                     f"{PAYLOAD_MAX} leave room for the stack"))
                bad = True
            if lo % PAGE:
                out.append(("warning", f"{where} is not page-aligned; the loader loads it from "
                                       f"{rlo:#x}"))
            if not bad:
                out.append(("ok", f"{where} memsz {s.memsz} below 640 KiB, clear of reserved "
                                  f"low memory, pages {rlo:#x}-{rhi:#x}"))
        for name, addr in (("kt_entry32", self.entry32), ("kt_entry64", self.entry64)):
            if addr is None:
                out.append(("warning", f"no {name} symbol: cannot be loaded that way"))
            elif not any(s.vaddr <= addr < s.vaddr + s.filesz for s in self.segments):
                out.append(("error", f"{name} {addr:#x} is outside the loaded image"))
        if self.entry32 != self.e_entry:
            out.append(("warning", f"e_entry {self.e_entry:#x} differs from kt_entry32 "
                                   f"{self.entry32:#x}"))
        if self.config.layout_version != 1 or self.config.block_size != CONFIG_SIZE:
            out.append(("warning", f"config layout {self.config.layout_version} size "
                                   f"{self.config.block_size}; this kexectest knows layout 1/64"))
        if self.build_id is None:
            out.append(("warning", "no GNU build-id note: traces cannot be matched to this ELF"))
        if b"\x02\xb0\xad\x1b" not in self.data[:8192]:
            out.append(("warning", "no multiboot header in the first 8 KiB: QEMU -kernel "
                                   "cannot boot it directly"))
        if len(self.steps) > MAX_SKIP_STEPS:
            out.append(("error", f"{len(self.steps)} steps; the skip bitmap holds {MAX_SKIP_STEPS}"))
        return out

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "build_id": self.build_id,
            "version": self.version,
            "kt_base": self.kt_base,
            "entry32": self.entry32,
            "entry64": self.entry64,
            "e_entry": self.e_entry,
            "segments": [dataclasses.asdict(s) for s in self.segments],
            "config": self.config.to_dict(),
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "checks": [{"level": lvl, "message": msg} for lvl, msg in self.checks()],
        }


def page_floor(addr: int) -> int:
    return addr & ~(PAGE - 1)


def page_ceil(addr: int) -> int:
    return (addr + PAGE - 1) & ~(PAGE - 1)


# ---------------------------------------------------------------------------------------------
# patching


def _parse_baud(baud: int) -> int:
    if baud <= 0 or 115200 % baud:
        raise KexectestError(f"baud {baud} does not divide 115200 (try 115200, 57600, 38400, "
                             "19200, 9600)", Exit.BAD_INPUT)
    return 115200 // baud


def patched_config(img: PayloadImage, *, uart_base=None, baud=None, skip=(), hang_at=None,
                   reset_at=None, int19=None, vga_mirror=None, e9_mirror=None, debug_exit=None,
                   mask_nmi=None, max_drives=None, keep_uart=None) -> Config:
    """The image's config block with the given changes (None = leave as built)."""
    cfg = img.config
    changes: dict = {}
    if uart_base is not None:
        if not 0 < uart_base <= 0xFFFF:
            raise KexectestError(f"UART base {uart_base:#x} is not an I/O port", Exit.BAD_INPUT)
        changes["uart_base"] = uart_base
    if baud is not None:
        changes["uart_divisor"] = _parse_baud(baud)
    if skip:
        changes["skip"] = cfg.skip | {img.step_index(s) for s in skip}
    if hang_at is not None:
        changes["hang_step"] = img.step_index(hang_at)
    if reset_at is not None:
        changes["reset_step"] = img.step_index(reset_at)
    if max_drives is not None:
        if not 0 <= max_drives <= 0xFFFF:
            raise KexectestError(f"max drives {max_drives} out of range", Exit.BAD_INPUT)
        changes["max_drives"] = max_drives
    flags = cfg.flags
    # debug_exit: True/False switches the flag; an int (not bool) also sets the port.
    if debug_exit is not None and not isinstance(debug_exit, bool):
        if not 0 < debug_exit <= 0xFFFF:
            raise KexectestError(f"debug-exit port {debug_exit:#x} out of range", Exit.BAD_INPUT)
        changes["debug_exit_port"] = debug_exit
        debug_exit = True
    for value, bit in ((vga_mirror, FLAG_VGA), (e9_mirror, FLAG_E9), (int19, FLAG_INT19),
                       (debug_exit, FLAG_DEBUG_EXIT), (mask_nmi, FLAG_MASK_NMI),
                       (keep_uart, FLAG_KEEP_UART)):
        if value is not None:
            flags = flags | bit if value else flags & ~bit
    changes["flags"] = flags
    return dataclasses.replace(cfg, **changes)


def patch(src: Path | str, dst: Path | str, **options) -> Path:
    """Write a copy of `src` with its config block changed (options as `patched_config`)."""
    img = PayloadImage.open(src)
    cfg = patched_config(img, **options)
    data = bytearray(img.data)
    data[img.config_offset:img.config_offset + CONFIG_SIZE] = cfg.pack()
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        tmp.write_bytes(bytes(data))
        os.replace(tmp, dst)
    except OSError as exc:
        raise _write_error(dst, exc) from None
    return dst
