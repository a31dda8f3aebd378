"""The payload ELF as the machine under test reads it: by hand, with `struct`.

The target agent carries no pyelftools, yet it must find what a load needs: the load segments
(program headers), the `kt_config` block through the symbol table, the entry symbols, the step
ids (for --skip/--hang-at by name) and the build id.  The host's reader (payload/image.py) reads
much more; tests/test_agent.py holds the two to the same answers on the built payload and to
one-line refusals of damaged files.  Both judge the result by payload/layout.py.

Standard library only and Python 3.6 syntax: the target agent carries this module.
"""

import hashlib
import struct
from collections import namedtuple
from pathlib import Path

from ..errors import Exit, KexectestError
from ..payload import layout
from ..payload.config import CONFIG_MAGIC, CONFIG_SIZE, Config

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFDATA2LSB = 1
EM_386 = 3
PT_LOAD = 1
SHT_SYMTAB = 2
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3
STB_LOCAL, STB_GLOBAL = 0, 1

_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")
_PHDR = struct.Struct("<8I")
_SHDR = struct.Struct("<10I")
_SYM = struct.Struct("<IIIBBH")

Segment = namedtuple("Segment", "paddr vaddr offset filesz memsz flags")


def _bad(path, why: str) -> KexectestError:
    return KexectestError(f"{path}: {why}", Exit.BAD_INPUT)


def _cstr(blob: bytes, offset: int) -> str:
    end = blob.find(b"\0", offset)
    return blob[offset:end if end >= 0 else len(blob)].decode("ascii", "replace")


class PayloadFile:
    """A payload ELF read for loading; everything is read in the constructor, so a damaged file
    fails there with one line."""

    def __init__(self, path, data: bytes):
        self.path = path
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            self._parse()
        except (struct.error, IndexError, ValueError) as exc:
            raise _bad(path, f"truncated or corrupt ELF ({type(exc).__name__})") from None

    @classmethod
    def open(cls, path) -> "PayloadFile":
        path = Path(path)
        data = layout.read_payload_bytes(path)
        return cls(path, data)

    # -- reading --------------------------------------------------------------------------------

    def _parse(self) -> None:
        data, path = self.data, self.path
        if data[:4] != ELF_MAGIC:
            raise _bad(path, "not an ELF file")
        (ident, _type, machine, _version, entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
         shentsize, shnum, shstrndx) = _EHDR.unpack_from(data, 0)
        if ident[4] != ELFCLASS32 or ident[5] != ELFDATA2LSB or machine != EM_386:
            width = {1: "32", 2: "64"}.get(ident[4], "?")
            raise _bad(path, f"not an i386 payload (ELF{width} machine {machine}); expected "
                             "ELF32 EM_386")
        self.e_entry = entry
        self.segments = []
        for i in range(phnum):
            p_type, off, vaddr, paddr, filesz, memsz, flags, _align = _PHDR.unpack_from(
                data, phoff + i * phentsize)
            if p_type == PT_LOAD:
                self.segments.append(Segment(paddr, vaddr, off, filesz, memsz, flags))
        for s in self.segments:
            if s.offset + s.filesz > len(data) or s.filesz > s.memsz:
                raise _bad(path, "truncated or corrupt ELF (a load segment lies past the end)")
        sections = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)] \
            if shoff else []
        names = self._section_bytes(sections[shstrndx]) if shstrndx < len(sections) else b""
        self.section_names = [_cstr(names, sh[0]) if sh[0] < len(names) else ""
                              for sh in sections]
        self._sections = dict(zip(self.section_names, sections))
        self.symbols = {}
        self.build_id = None
        for sh in sections:
            if sh[1] == SHT_SYMTAB and sh[6] < len(sections):
                self._read_symbols(sh, sections[sh[6]])
            elif sh[1] == SHT_NOTE:
                self._read_notes(self._section_bytes(sh))
        if "kt_config" not in self.symbols:
            raise _bad(path, "not a kexectest payload (no kt_config symbol)")
        self.config_offset = self._file_offset(self.symbols["kt_config"], CONFIG_SIZE)
        raw = data[self.config_offset:self.config_offset + CONFIG_SIZE]
        if raw[:4] != CONFIG_MAGIC:
            raise _bad(path, f"not a kexectest payload (config magic {raw[:4]!r}, expected "
                             "'KTCF')")
        self.config = Config.unpack(raw)
        self.kt_base = self.symbols.get("KT_BASE", layout.KT_BASE_DEFAULT)
        self.entry32 = self.symbols.get("kt_entry32", self.e_entry)
        self.entry64 = self.symbols.get("kt_entry64")
        self.steps = self._read_step_ids()
        self.step_meta = layout.STEP_META_SECTION in self.section_names

    def section(self, name: str):
        """A section's bytes by name (None when absent): the bzImage's parts (payload/bzimage.py)."""
        sh = self._sections.get(name)
        return None if sh is None else self._section_bytes(sh)

    def _section_bytes(self, sh) -> bytes:
        offset, size = sh[4], sh[5]
        if offset + size > len(self.data):
            raise ValueError("a section lies past the end of the file")
        return self.data[offset:offset + size]

    def _read_symbols(self, symtab, strtab) -> None:
        table, names = self._section_bytes(symtab), self._section_bytes(strtab)
        for off in range(0, len(table) - _SYM.size + 1, _SYM.size):
            name_off, value, _size, info, _other, _shndx = _SYM.unpack_from(table, off)
            name = _cstr(names, name_off) if name_off else ""
            if name and info >> 4 in (STB_LOCAL, STB_GLOBAL):
                self.symbols.setdefault(name, value)

    def _read_notes(self, blob: bytes) -> None:
        pos = 0
        while pos + 12 <= len(blob):
            namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
            name_at = pos + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            if desc_at + descsz > len(blob):
                return
            if ntype == NT_GNU_BUILD_ID and blob[name_at:name_at + namesz] == b"GNU\0":
                self.build_id = blob[desc_at:desc_at + descsz].hex()
            pos = desc_at + (descsz + 3) // 4 * 4

    def _file_offset(self, vaddr: int, size: int) -> int:
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                return s.offset + (vaddr - s.vaddr)
        raise _bad(self.path, f"address {vaddr:#x} is not in the file image of any load segment")

    def _read_step_ids(self) -> list:
        """The step ids of the `kt_steps` table, in row order."""
        start = self.symbols.get("kt_steps")
        if start is None:
            return []
        end = self.symbols.get("kt_steps_end", start)
        size = self.symbols.get("KT_STEP_SIZE", layout.STEP_ROW.size)
        if size < layout.STEP_ROW.size:
            raise _bad(self.path, f"KT_STEP_SIZE {size} is smaller than a step row (36)")
        count = max((end - start) // size, 0)
        ids = []
        for i in range(count):
            name_off = struct.unpack_from("<H", self.data, self._file_offset(start + i * size, 2))[0]
            ids.append(self._cstring(self.kt_base + name_off, 64))
        return ids

    def _cstring(self, vaddr: int, limit: int) -> str:
        for s in self.segments:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                start = s.offset + vaddr - s.vaddr
                raw = self.data[start:min(s.offset + s.filesz, start + limit)]
                return raw.split(b"\0", 1)[0].decode("ascii", "replace")
        raise _bad(self.path, f"string address {vaddr:#x} is outside the file image")

    # -- what a load asks ---------------------------------------------------------------------

    def checks(self) -> list:
        """(level, message) pairs, the same rules as the host's reader (payload/layout.py)."""
        return layout.checks(self)

    def step_index(self, name_or_number) -> int:
        return layout.step_index(self.steps, name_or_number)

    def step_name(self, index: int):
        return self.steps[index] if 0 <= index < len(self.steps) else None
