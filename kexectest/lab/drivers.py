"""Guest kernel modules for a lab run (`--driver MODULE`, lab files' `drivers`).

On a real machine Linux's storage, USB and video drivers hold the devices the BIOS's own drivers
need after kexec; the lab loads no such driver unless a run asks for it.  A run's modules come
from the lab kernel's own packages (the index below, made once per kernel; sid's kernel keeps
its modules in linux-modules-*, its modules.builtin in linux-base-*): each module's
dependencies from its `depends=` (.modinfo), recursively; and what a working disk needs after
them, found as Linux finds it, by matching the devices between the lab disk's controller and
the disk (lab/diskbus.py) against the modules' `alias=` lines (sd_mod for a SCSI disk behind
ahci or usb-storage, usb-storage behind an xHCI controller).  The files are decompressed
(.ko.xz, .ko.zst, .ko.gz) on the host into the cache; the guest reads them over its 9p share
and a script loads them after the login -- after a warm start's restore, before `kexectest
load` -- and waits for the disks to appear.
"""

from __future__ import annotations

import fcntl
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import Exit, KexectestError
from ..fsutil import write_atomic
from . import image as lab_image

INDEX_VERSION = 1  # bump when the index's layout changes: every index is then made again
_MODULE_RE = re.compile(
    r"^(?:\./)?(?:usr/)?lib/modules/([^/]+)/(.+/)?([^/]+)\.ko(\.xz|\.zst|\.gz)?$")
_BUILTIN_RE = re.compile(r"^(?:\./)?(?:usr/)?lib/modules/([^/]+)/modules\.builtin$")
_GLOB = re.compile(r"[*?[]")
DISK_WAIT_S = 30  # how long the guest waits for the lab disks once their drivers are loaded
MARK = "kexectest-lab:"  # the guest script's lines start with it


def canonical(name: str) -> str:
    """Module names as the kernel keeps them: `nvme-core` and `nvme_core` are one module."""
    return name.replace("-", "_")


def decompress(data: bytes, suffix: str) -> bytes:
    """A module file's ELF bytes, whatever the package compressed it with."""
    if suffix == ".xz":
        return lzma.decompress(data)
    if suffix == ".gz":
        return gzip.decompress(data)
    if suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def modinfo(elf_bytes: bytes) -> dict[str, list[str]]:
    """The `key=value` strings of a module's .modinfo section, by key."""
    try:
        sec = ELFFile(io.BytesIO(elf_bytes)).get_section_by_name(".modinfo")
    except ELFError as exc:
        raise ValueError(f"not an ELF module: {exc}") from None
    out: dict[str, list[str]] = {}
    for item in (sec.data() if sec is not None else b"").split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq:
            out.setdefault(key.decode("ascii", "replace"), []).append(
                value.decode("utf-8", "replace"))
    return out


@dataclass
class Module:
    name: str  # canonical
    file: str  # path inside the package (or the modules directory)
    suffix: str  # "" or the compression suffix
    depends: list[str]  # canonical names
    aliases: list[str]


@dataclass
class ModuleIndex:
    """Every module of one kernel: where its file is, what it depends on, what it drives."""

    release: str
    source: dict  # {"deb": path} or {"dir": path}
    modules: dict[str, Module] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)

    def has(self, name: str) -> bool:
        n = canonical(name)
        return n in self.modules or n in self.builtin

    def matching(self, modalias: str) -> set[str]:
        """The modules whose `alias=` patterns match a device's modalias (shell patterns, as
        modprobe matches them); a pattern's literal start is compared first, so only the few
        that can match are compiled."""
        out = set()
        for m in self.modules.values():
            for a in m.aliases:
                lit = _GLOB.split(a, 1)[0]
                if modalias.startswith(lit) and (lit == a or fnmatch.fnmatchcase(modalias, a)):
                    out.add(m.name)
                    break
        return out

    def closure(self, names, skip: set[str] = frozenset()) -> list[str]:
        """`names` and everything they depend on, dependencies first; built-in and `skip`
        modules are not loaded (they are there already)."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen or name in self.builtin or name in skip:
                return
            if name in chain:
                raise KexectestError(f"lab: module dependency loop {' -> '.join(chain + (name,))}"
                                     f" in the kernel {self.release}", Exit.LAB_BUILD)
            mod = self.modules.get(name)
            if mod is None:
                raise KexectestError(f"lab: module {chain[-1]} needs {name}, which the kernel "
                                     f"{self.release} does not have", Exit.LAB_BUILD)
            for dep in mod.depends:
                visit(dep, chain + (name,))
            seen.add(name)
            order.append(name)

        for n in names:
            visit(canonical(n), ())
        return order

    def to_json(self) -> dict:
        return {"version": INDEX_VERSION, "release": self.release, "source": self.source,
                "builtin": sorted(self.builtin),
                "modules": {n: [m.file, m.suffix, m.depends, m.aliases]
                            for n, m in sorted(self.modules.items())}}

    @classmethod
    def from_json(cls, d: dict) -> "ModuleIndex":
        if d.get("version") != INDEX_VERSION:
            raise ValueError("another index version")
        idx = cls(release=d["release"], source=d["source"], builtin=set(d["builtin"]))
        for n, (f, suffix, deps, aliases) in d["modules"].items():
            idx.modules[n] = Module(n, f, suffix, deps, aliases)
        return idx


def _add(idx: ModuleIndex, path: str, data: bytes, file: str | None = None) -> None:
    """One module file: `path` as in a package (lib/modules/RELEASE/...), `file` where it is
    read from later (the path in the package, or in the modules directory)."""
    m = _MODULE_RE.match(path)
    if not m:
        return
    suffix = m[4] or ""
    try:
        info = modinfo(decompress(data, suffix))
    except (ValueError, lzma.LZMAError, zstandard.ZstdError, OSError) as exc:
        raise KexectestError(f"lab: cannot read module {path}: {exc}", Exit.LAB_BUILD) from None
    name = canonical((info.get("name") or [m[3]])[0])
    deps = [canonical(d) for v in info.get("depends", []) for d in v.split(",") if d]
    idx.release = idx.release or m[1]
    idx.modules.setdefault(name, Module(name, file or path, suffix, deps,
                                        info.get("alias", [])))


def _builtin(idx: ModuleIndex, text: str) -> None:
    for line in text.splitlines():
        base = line.strip().rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            idx.builtin.add(canonical(base[:-3]))


def _members(deb: Path):
    """(path, bytes) of the package's module files and modules.builtin, in one pass."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            for member in tf:
                if member.isfile() and (_MODULE_RE.match(member.name)
                                        or _BUILTIN_RE.match(member.name)):
                    yield member.name, tf.extractfile(member).read()
    except tarfile.TarError as exc:
        raise KexectestError(f"lab: cannot read {deb.name}: {exc}", Exit.LAB_BUILD) from None
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait() != 0 and err:
            raise KexectestError(f"lab: dpkg-deb {deb.name}: {err.splitlines()[-1]}",
                                 Exit.LAB_BUILD)


def _debs(source: dict) -> list[Path]:
    """The packages of a kernel: one (`deb`), or a split kernel's several (`debs`: sid's
    linux-modules-* holds the modules, linux-base-* modules.builtin)."""
    return [Path(d) for d in ([source["deb"]] if "deb" in source else source.get("debs", []))]


def package_source(debs: list[Path], release: str) -> dict:
    """The index source of a kernel's packages (one package: the form bookworm's index has
    always been kept under)."""
    if len(debs) == 1:
        return {"deb": str(debs[0]), "release": release}
    return {"debs": [str(d) for d in debs], "release": release}


def build_index(source: dict) -> ModuleIndex:
    """The index of a kernel's packages (`{"deb": path}`, `{"debs": [...]}`) or of a modules
    directory (`{"dir"}`)."""
    idx = ModuleIndex(release="", source=source)
    if _debs(source):
        for deb in _debs(source):
            for path, data in _members(deb):
                if _BUILTIN_RE.match(path):
                    _builtin(idx, data.decode("utf-8", "replace"))
                else:
                    _add(idx, path, data)
    else:
        root = Path(source["dir"])
        release = source.get("release") or "unknown"
        try:
            for p in sorted(root.rglob("*.ko*")):
                rel = p.relative_to(root).as_posix()
                _add(idx, f"lib/modules/{release}/{rel}", p.read_bytes(), rel)
            if (root / "modules.builtin").is_file():
                _builtin(idx, (root / "modules.builtin").read_text(errors="replace"))
        except OSError as exc:
            raise KexectestError(f"lab: cannot read the modules in {root}: {exc.strerror}",
                                 Exit.LAB_BUILD) from None
    if not idx.modules:
        where = source.get("dir") or ", ".join(d.name for d in _debs(source))
        raise KexectestError(f"lab: no kernel modules in {where}", Exit.LAB_BUILD)
    return idx


# ---------------------------------------------------------------- one run's modules


@dataclass
class Plan:
    """The modules one run loads in the guest, in order, and why each is there."""

    requested: list[str]
    order: list[str]  # to load, dependencies first
    why: dict[str, str]  # module -> "asked for", "needed by X", "drives ..." (the disk chain)
    builtin: list[str]  # asked for, but built into the kernel
    disks_expected: int  # lab disks the guest waits for (0: their chain is not driven)
    release: str

    def environment(self) -> dict:
        return {"requested": self.requested, "loaded": self.order, "why": self.why,
                "builtin": self.builtin, "disks_expected": self.disks_expected,
                "kernel": self.release}


def plan(index: ModuleIndex, requested: list[str], chain: tuple[tuple[str, str], ...],
         disks: int, preloaded: set[str]) -> Plan:
    """Which modules to load for `requested`, and what the lab disk needs after them.

    `chain`: (modalias, what) of each device from the disk's controller to the disk.  A link
    driven by an asked-for module makes the links after it need theirs: every module whose
    alias matches an undriven one is added (as udev loads them).  The disks are waited for
    only when every link is driven and one of them by an asked-for module."""
    missing = [n for n in requested if not index.has(n)]
    if missing:
        raise KexectestError(
            f"lab: the lab's kernel {index.release} has no module "
            + ", ".join(repr(n) for n in missing) + " (--driver / drivers)", Exit.CONFIG)
    asked = [canonical(n) for n in dict.fromkeys(requested)]
    present = {canonical(m) for m in preloaded} | index.builtin
    user = set(index.closure(asked, present)) | set(asked)
    why: dict[str, str] = {n: "asked for" for n in asked}
    added: set[str] = set()
    seen_user = False
    complete = True
    for modalias, what in chain:
        drivers = index.matching(modalias)
        if drivers & user:
            seen_user = True
        elif drivers & (present | added):
            continue
        elif seen_user and drivers:
            for d in sorted(drivers):
                added.add(d)
                why.setdefault(d, f"its alias matches {what} ({modalias})")
        else:
            complete = False
    order = index.closure(asked + sorted(added), present)
    for n in order:
        if n not in why:
            needer = next(m for m in order if n in index.modules[m].depends)
            why[n] = f"needed by {needer}"
    return Plan(requested=list(requested), order=order, why=why,
                builtin=[n for n in asked if n in index.builtin],
                disks_expected=disks if complete and seen_user else 0, release=index.release)


# ---------------------------------------------------------------- on the host, for the guest


def modules_root() -> Path:
    return lab_image.cache_root() / "modules"


def module_source(image: lab_image.LabImage) -> dict:
    """Where the image's kernel modules come from: the directory given to `lab build
    --modules`, else the kernel package it was built from (kept in the cache)."""
    try:
        kernel = json.loads((image.directory / "inputs.json").read_text())["kernel"]
    except (OSError, ValueError, KeyError, TypeError):
        raise KexectestError(f"lab: the image in {image.directory} does not say where its kernel "
                             "came from (rebuild it: kexectest lab build --force)",
                             Exit.LAB_BUILD) from None
    if kernel.get("modules_dir"):
        path, size, mtime = kernel["modules_dir"]
        return {"dir": path, "release": image.kernel_version, "stamp": [size, mtime]}
    if not kernel.get("package"):
        raise KexectestError("lab: the image's kernel has no package and no modules directory "
                             "to take modules from", Exit.LAB_BUILD)
    packages = [(kernel["package"], kernel["version"]), *map(tuple, kernel.get("parts", []))]
    debs = [lab_image._fetch_package(p, v, lab_image.cache_root() / "debs", image.kernel_suite)
            for p, v in packages]
    return package_source(debs, image.kernel_version)


def _key(source: dict) -> str:
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]


def module_index(source: dict, log=None) -> ModuleIndex:
    """The index of a kernel's modules, made once and kept beside the lab images."""
    log = log or (lambda msg: None)
    where = modules_root() / _key(source)
    path = where / "index.json"
    try:
        idx = ModuleIndex.from_json(json.loads(path.read_text()))
        os.utime(path)  # last used: see _prune
        return idx
    except (OSError, ValueError, KeyError, TypeError):
        pass
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return ModuleIndex.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        log("indexing the lab kernel's modules (once per kernel)")
        idx = build_index(source)
        write_atomic(path, json.dumps(idx.to_json()) + "\n")
    _prune(keep=where)
    return idx


def _prune(keep: Path, max_age_days: float = 14.0) -> None:
    """Drop the modules of kernels no run used for a while (as the image cache does)."""
    cutoff = time.time() - max_age_days * 86400
    for entry in modules_root().iterdir():
        if entry == keep or not re.fullmatch(r"[0-9a-f]{16}", entry.name):
            continue
        try:
            if (entry / "index.json").stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _files(index: ModuleIndex) -> Path:
    return modules_root() / _key(index.source) / "files"


def prepare(index: ModuleIndex, p: Plan) -> Path:
    """Decompressed module files for the plan (only the ones not kept yet) and the guest's
    script that loads them; returns the script's path on the host."""
    files = _files(index)
    files.mkdir(parents=True, exist_ok=True)
    want = {index.modules[n].file: n for n in p.order if not (files / f"{n}.ko").is_file()}
    if want:
        with open(files.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for path, data in _sources(index, set(want)):
                write_atomic(files / f"{want[path]}.ko",
                             decompress(data, index.modules[want[path]].suffix))
    script = _script(files, p)
    digest = hashlib.sha256(script.encode()).hexdigest()[:12]
    out = files.parent / f"load-{digest}.sh"
    if not out.is_file():
        write_atomic(out, script)
    return out


def read_modules(index: ModuleIndex, names: list[str]) -> dict[str, bytes]:
    """The ELF bytes of these modules (decompressed), in the order of `names`."""
    want = {index.modules[n].file: n for n in names}
    got = {want[path]: decompress(data, index.modules[want[path]].suffix)
           for path, data in _sources(index, set(want))}
    return {n: got[n] for n in names}


def _sources(index: ModuleIndex, paths: set[str]):
    if _debs(index.source):
        for deb in _debs(index.source):
            for path, data in _members(deb):
                if path in paths:
                    yield path, data
    else:
        root = Path(index.source["dir"])
        for path in paths:
            yield path, (root / path).read_bytes()


def _script(files: Path, p: Plan) -> str:
    loads = "\n".join(f"load {n}" for n in p.order)
    wait = ""
    if p.disks_expected:
        n = p.disks_expected
        wait = f"""
# the lab disks, once the drivers are there (probing, the SCSI scan, USB's settle delay)
disks() {{ ls /sys/block | grep -cv -e '^loop' -e '^ram' -e '^zram'; }}
i=0
while [ "$(disks)" -lt {n} ]; do
    i=$((i + 1))
    if [ $i -gt {DISK_WAIT_S * 5} ]; then
        echo "{MARK} $(disks) of {n} lab disks appeared within {DISK_WAIT_S} s of the modules"
        break
    fi
    sleep 0.2
done
"""
    return f"""#!/bin/sh
# kexectest lab (lab/drivers.py): this run's guest kernel modules, dependencies first, loaded
# after the login and before `kexectest load`
d='/host{files}'
load() {{
    [ -d "/sys/module/$1" ] && return 0
    out=$(insmod "$d/$1.ko" 2>&1) && return 0
    echo "{MARK} module $1 failed to load in the guest: ${{out:-insmod failed}}" \
         "(kernel: $(dmesg | tail -n 1))"
    exit 1
}}
{loads}
echo "{MARK} modules loaded: {' '.join(p.order)}"
{wait}"""
