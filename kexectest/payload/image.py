"""The payload ELF on the host: read it with pyelftools and check it against the memory rules
of a kexec hand-off.

Everything the rest of kexectest knows about the payload (entry points, load segments, the
step table with each step's title, function and optional flag, build id) comes from the ELF
through `PayloadImage`, so the assembly stays the one source of truth (layouts in
docs/payload.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import Exit, KexectestError
from . import bzimage, layout
from .config import CONFIG_MAGIC, CONFIG_SIZE, Config
from .layout import (  # noqa: F401  (the payload package's names for them)
    KT_BASE_DEFAULT,
    LOW_MEMORY_TOP,
    MAX_KEXEC_SEGMENTS,
    PAGE,
    PAYLOAD_MAX,
    RESERVED_LOW,
    STEP_META_SECTION,
    page_ceil,
    page_floor,
)

_STEP_FMT = layout.STEP_ROW

# What the STEP macro writes about each row into a section that is never loaded
# (docs/payload.md): a format string, then id, title, fn, need (and from version 2 the
# GROUP the row is in) per row.
STEP_META_SECTION = ".kt_step_meta"
STEP_META_FORMAT = "kt-step-meta 2"
STEP_META_STRINGS = {"kt-step-meta 1": 4, STEP_META_FORMAT: 5}  # strings per record, by format
STEP_NEEDS = ("required", "optional")
_GROUP_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}").fullmatch
# The input registers a row's `fn` may name: register -> (row field, shift, bits).
REGISTERS = {name: (f"e{r}x", shift, bits) for r in "abcd" for name, shift, bits in (
    (f"{r.upper()}L", 0, 8), (f"{r.upper()}H", 8, 8), (f"{r.upper()}X", 0, 16),
    (f"E{r.upper()}X", 0, 32))}


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
    title: str | None = None  # None: an ELF without step metadata (older than the section)
    fn: str = ""  # the registers whose input values name the BIOS function: "AX", "AH+BL"
    optional: bool = False  # a healthy BIOS may lack the service
    group: str = ""  # its BIOS concern (steps.S GROUP: memory, A20, disk...); "" before format 2

    @property
    def function(self) -> str:
        """The canonical function label reports show ("AX=E820h", "AH=12h BL=10h"): the row's
        input values of the registers `fn` names; "" for built-ins and int 11h-style calls."""
        labels = []
        for reg in filter(None, self.fn.split("+")):
            field, shift, bits = REGISTERS[reg]
            value = getattr(self, field) >> shift & ((1 << bits) - 1)
            labels.append(f"{reg}={value:0{bits // 4}X}h")
        return " ".join(labels)


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
        self.step_meta: bool = self._read_step_meta(elf)
        self._sections: dict[str, bytes] = {
            sec.name: sec.data() for sec in elf.iter_sections()
            if sec.name in (bzimage.SETUP_SECTION, bzimage.PM_SECTION)}


    @classmethod
    def open(cls, path: Path | str) -> "PayloadImage":
        path = Path(path)
        data = layout.read_payload_bytes(path)
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

    def section(self, name: str) -> bytes | None:
        """A section's bytes by name (None when absent): the bzImage's parts (bzimage.py)."""
        return self._sections.get(name)

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

    def _read_step_meta(self, elf: ELFFile) -> bool:
        """Titles, function registers and optional flags onto self.steps; False when the ELF has
        no step metadata.  Metadata that does not match the table is a corrupt payload."""
        sec = elf.get_section_by_name(STEP_META_SECTION)
        if sec is None:
            return False
        raw = sec.data()
        fields = raw.split(b"\0")
        width = STEP_META_STRINGS.get(fields[0].decode("ascii", "replace"))
        if not raw.endswith(b"\0") or width is None:
            raise _bad(self.path, f"{STEP_META_SECTION} is not '{STEP_META_FORMAT}' step metadata")
        body = [f.decode("utf-8", "replace") for f in fields[1:-1]]
        records = [body[i:i + width] for i in range(0, len(body), width)]
        if len(body) != width * len(self.steps):
            raise _bad(self.path, f"{STEP_META_SECTION} holds {len(body)} strings, not {width} "
                                  f"for each of the {len(self.steps)} steps")
        for n, (record, step) in enumerate(zip(records, self.steps)):
            sid, title, fn, need = record[:4]
            group = record[4] if width > 4 else ""
            where = f"{STEP_META_SECTION} record {n} ({sid})"
            if sid != step.name:
                raise _bad(self.path, f"{where} is not step {n} {step.name}")
            unknown = [r for r in filter(None, fn.split("+")) if r not in REGISTERS]
            if unknown or need not in STEP_NEEDS or not title:
                raise _bad(self.path, f"{where}: bad title, fn={fn!r} or need={need!r}")
            if width > 4 and not _GROUP_OK(group):
                raise _bad(self.path, f"{where}: bad group {group[:40]!r}")
            self.steps[n] = dataclasses.replace(step, title=title, fn=fn,
                                                optional=need == "optional", group=group)
        return True

    # -- steps ---------------------------------------------------------------------------------

    def step_index(self, name_or_number: str | int) -> int:
        """A step's row index from its id ("e820") or number ("12", "012")."""
        return layout.step_index((s.name for s in self.steps), name_or_number)

    def step_name(self, index: int) -> str | None:
        return self.steps[index].name if 0 <= index < len(self.steps) else None

    # -- checks ----------------------------------------------------------------------------------

    def checks(self) -> list[tuple[str, str]]:
        """(level, message) pairs; level is "error", "warning" or "ok" (payload/layout.py)."""
        return layout.checks(self)

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
            "steps": [{**dataclasses.asdict(s), "function": s.function} for s in self.steps],
            "checks": [{"level": lvl, "message": msg} for lvl, msg in self.checks()],
        }
