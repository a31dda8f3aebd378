"""The virtual lab's guest image: a Debian kernel, a busybox initramfs, and disks with known bytes.

Built from distribution packages on the host (never installed): the kernel comes from Debian's
`linux-image-*-amd64` (apt-get download + dpkg -x; another suite's through the lab's private apt
configuration, lab/kernelsuite.py), busybox-static and kexec-tools from the host.
The guest mounts the host's `/` read-only over 9p at login and runs the host's own kexectest
through a chroot, so the lab always tests the code in this tree without packing a Python.

Everything lands in a cache directory named by a hash of the inputs: a second build with the same
inputs is a no-op (see `build_image`).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from elftools.elf.elffile import ELFFile

from ..errors import Exit, KexectestError
from ..fsutil import write_atomic

RECIPE_VERSION = 10  # bump whenever the guest layout below changes: it invalidates every cache
# Not "kexectest": the collector scrubs the password from everything it writes, and the product's
# own name in every command line and prompt must survive that.
PASSWORD = "ktlab-root"
LOGIN = "root"
HOSTNAME = "kexectest-lab"
PROMPT_RE = r"root@kexectest-lab:[^\r\n]*# ?$"  # PS1 set in the guest's /etc/profile
ATTACH = "/sbin/kexectest-attach"  # mounts the host's / at /host; /etc/profile runs it
CMDLINE = "console=ttyS0,115200 panic=-1"
SECTOR = 512
DISK_SECTORS = 16 * 1024 * 1024 // SECTOR
DISK_SIGNATURES = (0x4B545330, 0x4B545331)  # 'KTS0', 'KTS1' as little-endian dwords at 0x1B8
MAX_DISKS = len(DISK_SIGNATURES)
META_PACKAGE = "linux-image-amd64"
# 9p over virtio, and EDD; the load order is worked out from each module's `depends=`
# the bookworm kernel's whole set; other kernels build some of them in or merge them (sid's netfs
# holds fscache): a build loads REQUIRED_MODULES and what their `depends=` name (lab/drivers.py)
MODULES = ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci",
           "9pnet", "9pnet_virtio", "netfs", "fscache", "9p",
           "edd")  # /sys/firmware/edd: the BIOS drives as the kernel saw them at boot (before)
REQUIRED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "edd")
MIN_FREE_BYTES = 200 * 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
BOOTSECTOR_SRC = REPO / "payloads" / "bootsector.S"


@dataclass
class LabImage:
    """What QEMU needs to boot the lab guest, and how to log in to it."""

    kernel: Path
    initrd: Path
    disks: list[Path]
    cmdline: str
    password: str
    venv: Path
    login: str = LOGIN
    kernel_version: str = ""
    directory: Path | None = None
    kernel_suite: str = ""  # the Debian suite its kernel came from ("": the host's own apt)

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: ([str(x) for x in v] if isinstance(v, list) else
                    str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> "LabImage":
        return cls(kernel=Path(d["kernel"]), initrd=Path(d["initrd"]),
                   disks=[Path(p) for p in d["disks"]], cmdline=d["cmdline"],
                   password=d["password"], venv=Path(d["venv"]), login=d.get("login", LOGIN),
                   kernel_version=d.get("kernel_version", ""),
                   directory=Path(d["directory"]) if d.get("directory") else None,
                   kernel_suite=d.get("kernel_suite", ""))


# ---------------------------------------------------------------- small helpers


def cache_root() -> Path:
    """$KEXECTEST_CACHE, else ~/.cache/kexectest/lab."""
    env = os.environ.get("KEXECTEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kexectest" / "lab"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not path:
        raise KexectestError(f"lab build: `{name}` not found (apt-get install {package})",
                             Exit.MISSING_TOOL)
    return path


def _run(argv: list[str], stage: str, **kw) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, **kw)
    except OSError as exc:
        raise KexectestError(f"lab build: {stage}: {exc}", Exit.LAB_BUILD) from None
    if p.returncode != 0:
        last = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise KexectestError(f"lab build: {stage} failed: {last[0]}", Exit.LAB_BUILD)
    return p.stdout


def _check_space(path: Path, need: int = MIN_FREE_BYTES) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < need:
        raise KexectestError(f"lab build: only {free // 2**20} MiB free in {path}, "
                             f"need {need // 2**20} MiB (set KEXECTEST_CACHE elsewhere)",
                             Exit.NO_SPACE)


def _pkg_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                             capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def bzimage_version(path: Path) -> str:
    """The release string a bzImage carries (setup header `kernel_version`), e.g. 6.1.0-56-amd64."""
    data = path.read_bytes()[:0x10000]
    if len(data) < 0x210 or data[0x202:0x206] != b"HdrS":
        raise KexectestError(f"lab build: {path} is not an x86 bzImage", Exit.LAB_BUILD)
    off = struct.unpack_from("<H", data, 0x20E)[0] + 0x200
    return data[off:off + 128].split(b"\0")[0].split(b" ")[0].decode("ascii", "replace")


# ---------------------------------------------------------------- the kernel


@dataclass
class KernelSource:
    """Where the guest kernel and its 9p modules come from, and what identifies them."""

    package: str | None  # linux-image-6.1.0-NN-amd64
    version: str  # package version, or the bzImage's release for --kernel
    kernel_path: Path | None  # --kernel
    modules_dir: Path | None  # --modules
    parts: list | None = None  # [package, version] of a split kernel's other packages (sid)

    def key(self) -> dict:
        d = {"package": self.package, "version": self.version}
        if self.parts:  # absent for a one-package kernel: bookworm's key stays what it was
            d["parts"] = [list(p) for p in self.parts]
        for name in ("kernel_path", "modules_dir"):
            p = getattr(self, name)
            if p is not None:
                st = p.stat()
                d[name] = [str(p.resolve()), st.st_size, int(st.st_mtime)]
        return d


# what apt-cache's answers depend on: a change to any of these asks apt again
APT_STATE = ("/var/lib/apt/lists", "/etc/apt/sources.list", "/etc/apt/sources.list.d",
             "/etc/apt/preferences", "/etc/apt/preferences.d")
APT_ANSWER = "apt-kernel.json"


def _apt_state() -> list:
    out = []
    for name in APT_STATE:
        try:
            st = os.stat(name)
            out.append([name, st.st_mtime_ns, st.st_size])
        except OSError:
            out.append([name, None, None])
    return out


def resolve_package() -> tuple[str, str]:
    """(package, version) of the kernel `linux-image-amd64` currently depends on.

    apt-cache takes seconds on a loaded machine and every `lab run` asks: the answer is kept in
    the cache root until apt's lists or sources change (apt-get update)."""
    state = _apt_state()
    answer = cache_root() / APT_ANSWER
    try:
        kept = json.loads(answer.read_text())
        if kept["apt_state"] == state:
            return kept["package"], kept["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package, version = _ask_apt()
    try:
        cache_root().mkdir(parents=True, exist_ok=True)
        write_atomic(answer, json.dumps({"apt_state": state, "package": package,
                                         "version": version}) + "\n")
    except (OSError, KexectestError):
        pass  # not kept: the next run asks apt again
    return package, version


def _ask_apt() -> tuple[str, str]:
    apt_cache = _tool("apt-cache", "apt (or pass --kernel PATH --modules DIR)")
    out = _run([apt_cache, "depends", META_PACKAGE], f"apt-cache depends {META_PACKAGE}")
    m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+-]*-amd64)\b", out)
    if not m:
        raise KexectestError(f"lab build: cannot tell which kernel {META_PACKAGE} depends on "
                             f"(apt-get update?)", Exit.LAB_BUILD)
    package = m.group(1)
    out = _run([apt_cache, "policy", package], f"apt-cache policy {package}")
    m = re.search(r"Candidate:\s*(\S+)", out)
    if not m or m.group(1) == "(none)":
        raise KexectestError(f"lab build: no installable version of {package} (apt-get update?)",
                             Exit.LAB_BUILD)
    return package, m.group(1)


def kernel_apt(suite: str):
    """The private apt configuration of one suite in the lab cache (lab/kernelsuite.py)."""
    from .kernelsuite import PrivateApt

    return PrivateApt(cache_root() / "apt", suite)


def resolve_suite(spec: str, log=None):
    """The KernelChoice a `--kernel-suite` (suite or exact package name) stands for."""
    from .kernelsuite import resolve_kept

    _tool("apt-cache", "apt")
    cache_root().mkdir(parents=True, exist_ok=True)
    return resolve_kept(spec, cache_root() / "apt", log)[0]


def _fetch_package(package: str, version: str, debs: Path, suite: str = "") -> Path:
    """apt-get download the kernel package into the cache (kept for later rebuilds), through
    the host's apt or, for a suite, the lab's private configuration of it."""
    debs.mkdir(parents=True, exist_ok=True)
    epochless = version.split(":", 1)[-1]
    deb = debs / f"{package}_{epochless}_amd64.deb"
    if deb.exists():
        return deb
    _tool("apt-get", "apt")
    _check_space(debs, 3 * MIN_FREE_BYTES)
    tmp = Path(tempfile.mkdtemp(prefix="download-", dir=debs))
    try:
        os.chmod(tmp, 0o755)
        if suite:
            apt = kernel_apt(suite)
            apt.update()
            apt.download(package, version, tmp)
        else:
            _run(["apt-get", "download", f"{package}={version}"],
                 f"apt-get download {package}", cwd=tmp)
        got = list(tmp.glob("*.deb"))
        if len(got) != 1:
            raise KexectestError(f"lab build: apt-get download {package} gave no .deb",
                                 Exit.LAB_BUILD)
        os.replace(got[0], deb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return deb


def _unpack_kernel(debs: list[Path], dest: Path) -> tuple[Path, str]:
    """dpkg -x the kernel's packages into `dest`; returns (vmlinuz, release).  The vmlinuz is
    boot/vmlinuz-REL (bookworm, trixie) or usr/lib/modules/REL/vmlinuz (sid's linux-binary)."""
    _tool("dpkg", "dpkg")
    for deb in debs:
        _run(["dpkg", "-x", str(deb), str(dest)], f"dpkg -x {deb.name}")
    vmlinuz = sorted(dest.glob("boot/vmlinuz-*")) + sorted(dest.glob("usr/lib/modules/*/vmlinuz"))
    if not vmlinuz:
        raise KexectestError(f"lab build: {', '.join(d.name for d in debs)} hold no "
                             "boot/vmlinuz-* or usr/lib/modules/*/vmlinuz", Exit.LAB_BUILD)
    v = vmlinuz[0]
    return v, (v.name[len("vmlinuz-"):] if v.name != "vmlinuz" else v.parent.name)


# ---------------------------------------------------------------- initramfs


class Cpio:
    """A cpio `newc` archive written in memory: files, directories, symlinks and device nodes
    with fixed owners and times, so no mknod or root is needed and builds are reproducible."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        name = name.lstrip("/")
        if name in self._names:
            return
        parent = os.path.dirname(name)
        if parent and parent not in self._names:
            self.dir(parent)
        self._names.add(name)
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        self._ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._write(hdr + name.encode() + b"\0")
        self._write(data)

    def _write(self, b: bytes) -> None:
        self._buf.write(b)
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def _ldd_libs(binary: str) -> list[str]:
    """Every library path `ldd` lists for a binary, the dynamic loader included."""
    out = _run(["ldd", binary], f"ldd {binary}")
    libs = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _is_static(path: str) -> bool:
    with open(path, "rb") as f:
        return not any(s["p_type"] == "PT_INTERP" for s in ELFFile(f).iter_segments())


def _init_script(modules: list[str]) -> str:
    mods = " ".join(f"{i:02d}-{m}.ko" for i, m in enumerate(modules))
    return f"""#!/bin/sh
# kexectest lab guest (recipe {RECIPE_VERSION}): drivers, then a login on ttyS0.  The host's / is
# mounted at the first login (/etc/profile runs {ATTACH}), not here: a mounted 9p share blocks
# QEMU's migration, and the lab saves this machine at its login prompt (lab/warmstate.py)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for m in {mods}; do
    insmod /lib/kt-modules/$m || echo "kexectest-lab: insmod $m failed"
done
# wait here for the kernel's random pool (its jitter entropy takes seconds under TCG): done at
# boot, a saved machine holds it ready and the first program that asks does not wait
head -c 1 /dev/random >/dev/null
hostname {HOSTNAME}
echo "kexectest-lab: ready"
exec /sbin/init
"""


def _attach_script() -> str:
    return f"""#!/bin/sh
# kexectest lab guest (recipe {RECIPE_VERSION}): the host's / over 9p at /host, once per boot or
# restore of a saved machine; run by /etc/profile at every login, so cold and warm starts take
# the same path
grep -q ' /host ' /proc/mounts && exit 0
# a restored machine's clock stopped when it was saved: the RTC follows the host's
hwclock -s -u 2>/dev/null
# and its random pool is a copy of every other restore's: stir in this moment
{{ date +%s; cat /proc/uptime /proc/interrupts; }} > /dev/urandom 2>/dev/null
if mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose host /host; then
    # the guest's own kernel interfaces, seen from a chroot into the host's tree
    mount -t proc proc /host/proc
    mount -t sysfs sysfs /host/sys
    mount -t securityfs securityfs /host/sys/kernel/security 2>/dev/null
    mount -t devtmpfs devtmpfs /host/dev
    mount -t devpts devpts /host/dev/pts 2>/dev/null
    # the host's /tmp stays visible (payloads and test files live there): the guest's
    # scratch space is a tmpfs on /run, and the wrapper points TMPDIR at it
    mount -t tmpfs tmpfs /host/run
    mkdir -p /host/run/kexectest-tmp && chmod 1777 /host/run/kexectest-tmp
    echo "kexectest-lab: host / mounted read-only at /host"
else
    echo "kexectest-lab: no 9p host share: kexectest is not available in this guest"
fi
"""


def guest_python() -> tuple[str, list[str]]:
    """(interpreter, import path) for running this tree's kexectest inside the guest.

    The host's own interpreter, started with -S and the directories the host imports kexectest
    and its dependencies from: site.py and the .pth hooks of an editable install cost the
    guest's first start over 9p more than a second under TCG, and they only ever add these
    directories."""
    import site

    path = [str(REPO)]  # the directory holding the kexectest package
    for d in site.getsitepackages():
        if d not in path and Path(d).is_dir():
            path.append(d)
    return os.path.realpath(sys.executable), path


def compile_tree() -> None:
    """Byte-compile this tree's kexectest where the guest will import it from.

    The guest reads the host's tree over a read-only share and cannot write the bytecode it
    compiles, so without the host's __pycache__ (PYTHONDONTWRITEBYTECODE, a fresh checkout)
    every lab run compiles every module from source under TCG.  Up-to-date files are only
    stat()ed; a tree the host cannot write is left as it is."""
    import compileall

    try:
        compileall.compile_dir(str(REPO / "kexectest"), quiet=2, workers=1)
    except OSError:
        pass


def _wrapper(python: str, path: list[str]) -> str:
    return f"""#!/bin/sh
# run the host's kexectest (through the host's interpreter) inside the guest, over the 9p share
cd / || exit 1
export PYTHONDONTWRITEBYTECODE=1 HOME=/run/kexectest-tmp TMPDIR=/run/kexectest-tmp
export PYTHONPATH={":".join(path)}
exec chroot /host {python} -S -P -m kexectest "$@"
"""


def _hash_password(password: str) -> str:
    openssl = _tool("openssl", "openssl")
    salt = hashlib.sha256(password.encode()).hexdigest()[:16]
    return _run([openssl, "passwd", "-6", "-salt", salt, password], "openssl passwd").strip()


def build_initramfs(modules: dict[str, bytes], venv: Path, password: str) -> bytes:
    """The gzipped cpio: busybox + applets, kexec + its libraries, 9p modules (loaded in the
    order of `modules`: dependencies first), login, /init."""
    busybox = _tool("busybox", "busybox-static")
    if not _is_static(busybox):
        raise KexectestError(f"lab build: {busybox} is not statically linked "
                             "(apt-get install busybox-static)", Exit.MISSING_TOOL)
    kexec = _tool("kexec", "kexec-tools")
    order = list(modules)

    c = Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "host", "tmp",
              "run", "root", "lib/kt-modules", "var/log"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.chardev("dev/ttyS0", 4, 64)
    c.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    applets = _run([busybox, "--list-full"], "busybox --list-full").split()
    for applet in applets:
        if applet not in ("bin/busybox", "init"):
            c.symlink(applet, "/bin/busybox")
    c.symlink("sbin/init", "/bin/busybox")
    c.file("sbin/kexec", Path(kexec).read_bytes(), 0o755)
    for lib in _ldd_libs(kexec):
        c.file(lib, Path(lib).read_bytes(), 0o755)
    for i, name in enumerate(order):
        c.file(f"lib/kt-modules/{i:02d}-{name}.ko", modules[name])

    c.file("etc/passwd", f"{LOGIN}:x:0:0:root:/root:/bin/sh\n".encode())
    c.file("etc/shadow", f"{LOGIN}:{_hash_password(password)}:19000:0:99999:7:::\n".encode(),
           0o600)
    c.file("etc/group", b"root:x:0:\n")
    c.file("etc/securetty", b"ttyS0\nconsole\n")
    c.file("etc/hostname", f"{HOSTNAME}\n".encode())
    c.file("etc/issue", b"kexectest virtual lab (log in as root)\n\n")
    # `stty -echo`: with echo off, busybox's shell reads plain lines instead of using its line
    # editor, whose cursor-position query (ESC [6n) would follow every prompt and defeat any
    # "prompt at end of output" match on the collector.
    c.file("etc/profile", b"export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n"
                          b"stty -echo 2>/dev/null\n"
                          + ATTACH.encode() + b"\n"
                          b"export PS1='root@" + HOSTNAME.encode() + b":\\w# '\n")
    c.file("etc/inittab", b"::sysinit:/bin/true\n"
                          b"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n"
                          b"::ctrlaltdel:/sbin/reboot\n")
    c.file("init", _init_script(order).encode(), 0o755)
    c.file(ATTACH.lstrip("/"), _attach_script().encode(), 0o755)
    c.file("bin/kexectest", _wrapper(*guest_python()).encode(), 0o755)
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


# ---------------------------------------------------------------- disks


@lru_cache(maxsize=1)
def bootsector() -> bytes:
    """payloads/bootsector.S assembled to 512 bytes (signature field still zero)."""
    as_ = _tool("as", "binutils")
    ld = _tool("ld", "binutils")
    with tempfile.TemporaryDirectory(prefix="kt-bootsector-") as tmp:
        obj, out = Path(tmp, "bs.o"), Path(tmp, "bs.bin")
        _run([as_, "--32", "-o", str(obj), str(BOOTSECTOR_SRC)], "assembling bootsector.S")
        _run([ld, "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary", "-o", str(out),
              str(obj)], "linking bootsector.S")
        data = out.read_bytes()
    if len(data) != SECTOR or data[510:] != b"\x55\xaa":
        raise KexectestError("lab build: bootsector.S did not give a 512-byte boot sector",
                             Exit.LAB_BUILD)
    return data


def known_sector(disk: int, lba: int) -> bytes:
    """The 512 bytes sector `lba` of lab disk `disk` holds.

    LBA 0: the boot sector with MBR disk signature DISK_SIGNATURES[disk] at 0x1B8 and 55AAh.
    Any other LBA n: b"KEXECTEST DISK d LBA nnnnnnnn" (n in 8 upper-case hex digits), padded to
    512 bytes with the byte n & 0xFF.
    """
    if not 0 <= disk < MAX_DISKS:
        raise ValueError(f"lab disk {disk} does not exist (0..{MAX_DISKS - 1})")
    if not 0 <= lba < DISK_SECTORS:
        raise ValueError(f"LBA {lba} outside the {DISK_SECTORS}-sector lab disk")
    if lba == 0:
        bs = bytearray(bootsector())
        struct.pack_into("<I", bs, 0x1B8, DISK_SIGNATURES[disk])
        return bytes(bs)
    text = f"KEXECTEST DISK {disk} LBA {lba:08X}".encode("ascii")
    return text + bytes([lba & 0xFF]) * (SECTOR - len(text))


def write_disk(disk: int, path: Path) -> None:
    with open(path, "wb") as f:
        for lba in range(DISK_SECTORS):
            f.write(known_sector(disk, lba))


# ---------------------------------------------------------------- the build


def _inputs(source: KernelSource, venv: Path) -> dict:
    return {
        "recipe": RECIPE_VERSION,
        "guest_python": guest_python(),
        "kernel": source.key(),
        "venv": str(venv),
        "python": sys.executable,
        "busybox": _pkg_version("busybox-static"),
        "kexec-tools": _pkg_version("kexec-tools"),
        "bootsector": hashlib.sha256(BOOTSECTOR_SRC.read_bytes()).hexdigest(),
        "cmdline": CMDLINE,
        "password": PASSWORD,
    }


def image_dir(inputs: dict) -> Path:
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / digest


def publish(image: LabImage, stage: Path, out: Path, tmp: Path) -> None:
    """Write `image`'s image.json into the staged entry and swap it in as cache entry `out`: the
    entry appears complete or not at all, and an old one moves to `tmp` (QEMUs already running
    keep their open files)."""
    (stage / "image.json").write_text(json.dumps(image.to_json(), indent=2) + "\n")
    if out.exists():
        os.replace(out, tmp / "old")
    os.replace(stage, out)


def build_failure(exc: OSError) -> KexectestError:
    """An OSError while building a cache entry, as one line: no space (exit 18) or the error."""
    if exc.errno == 28:
        return KexectestError(f"lab build: no space left in {cache_root()}", Exit.NO_SPACE)
    return KexectestError(f"lab build: {exc}", Exit.LAB_BUILD)


def build_image(kernel: Path | None = None, modules: Path | None = None, *, force: bool = False,
                log=None, suite: str | None = None) -> LabImage:
    """Build (or find in the cache) the lab image for these inputs.

    `kernel`: a bzImage to boot instead of Debian's; its 9p/virtio modules come from `modules`
    (any directory holding the .ko files, e.g. lib/modules/<release>), else from the Debian
    package when that package's release equals the bzImage's.  `suite`: the Debian kernel of
    that suite (bookworm, trixie, sid) or that exact package, fetched through the lab's private
    apt configuration (lab/kernelsuite.py); None: the one the host's apt offers.  Images of
    different kernels sit side by side in the cache.  `log(str)` reports progress.
    """
    log = log or (lambda msg: None)
    venv = Path(sys.prefix)
    if kernel is not None and not kernel.is_file():
        raise KexectestError(f"lab build: kernel {kernel} does not exist", Exit.LAB_BUILD)
    if modules is not None and not modules.is_dir():
        raise KexectestError(f"lab build: modules directory {modules} does not exist",
                             Exit.LAB_BUILD)
    if suite is not None and kernel is not None:
        raise KexectestError("lab build: --kernel-suite and --kernel name two kernels: give one",
                             Exit.USAGE)
    package = version = None
    parts: list = []
    if suite is not None:
        choice = resolve_suite(suite, log)
        package, version, parts, suite = choice.image, choice.version, choice.parts, choice.suite
    elif kernel is None or modules is None:
        package, version = resolve_package()
    source = KernelSource(package=package,
                          version=version or bzimage_version(kernel),
                          kernel_path=kernel, modules_dir=modules, parts=parts)
    inputs = _inputs(source, venv)
    out = image_dir(inputs)
    cached = _cached(out)
    if cached is not None and not force:
        return cached
    _check_space(cache_root())
    # one builder at a time (a sweep starts several lab runs at once); the others then find
    # the finished entry
    with open(cache_root() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(out)
        if cached is not None and not force:
            return cached
        return _build(source, suite or "", venv, inputs, out, log)


def _cached(out: Path) -> LabImage | None:
    meta = out / "image.json"
    try:
        os.utime(meta)  # last used: see _prune
    except OSError:
        pass
    try:
        return LabImage.from_json(json.loads(meta.read_text()))
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged: (re)build it


def _lab_modules(index, where: str) -> dict[str, bytes]:
    """The lab's own modules (REQUIRED_MODULES and their dependencies, built-in ones left out)
    as ELF bytes in load order; a kernel without one of them is refused in one line."""
    from . import drivers

    missing = [m for m in REQUIRED_MODULES if not index.has(m)]
    if missing:
        raise KexectestError(f"lab build: the kernel {index.release} ({where}) has no "
                             f"{', '.join(missing)} module, built in or not: the lab's host "
                             "share needs 9p over virtio", Exit.LAB_BUILD)
    return drivers.read_modules(index, index.closure(REQUIRED_MODULES))


def _build(source: KernelSource, suite: str, venv: Path, inputs: dict, out: Path,
           log) -> LabImage:
    from . import drivers

    kernel, modules = source.kernel_path, source.modules_dir
    log(f"building lab image in {out}")
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_root()))
    try:
        vmlinuz = release = None
        if source.package is not None:
            packages = [(source.package, source.version), *map(tuple, source.parts or [])]
            log("kernel package " + ", ".join(f"{p} {v}" for p, v in packages)
                + (f" ({suite})" if suite else ""))
            debs = [_fetch_package(p, v, cache_root() / "debs", suite) for p, v in packages]
            vmlinuz, release = _unpack_kernel(debs, tmp / "pkg")
            if modules is None:
                if kernel is not None and bzimage_version(kernel) != release:
                    raise KexectestError(
                        f"lab build: {kernel} is release {bzimage_version(kernel)}, the Debian "
                        f"package's modules are {release}: pass --modules DIR", Exit.LAB_BUILD)
                index = drivers.module_index(drivers.package_source(debs, release), log)
                where = source.package
        if kernel is not None:
            vmlinuz, release = kernel, bzimage_version(kernel)
        if modules is not None:
            st = modules.stat()
            index = drivers.module_index({"dir": str(modules.resolve()), "release": release,
                                          "stamp": [st.st_size, int(st.st_mtime)]}, log)
            where = str(modules)
        mods = _lab_modules(index, where)
        log("packing initramfs")
        stage = tmp / "image"
        stage.mkdir()
        shutil.copyfile(vmlinuz, stage / "vmlinuz")
        (stage / "initrd.gz").write_bytes(build_initramfs(mods, venv, PASSWORD))
        log("writing disks")
        for d in range(MAX_DISKS):
            write_disk(d, stage / f"disk{d}.img")
        (stage / "inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        image = LabImage(kernel=out / "vmlinuz", initrd=out / "initrd.gz",
                         disks=[out / f"disk{d}.img" for d in range(MAX_DISKS)],
                         cmdline=CMDLINE, password=PASSWORD, venv=venv,
                         kernel_version=release or "", directory=out, kernel_suite=suite)
        publish(image, stage, out, tmp)
    except OSError as exc:
        raise build_failure(exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(keep=out)
    log(f"lab image ready: {out}")
    return image


def _prune(keep: Path, max_age_days: float = 14.0) -> None:
    """Drop cache entries of older inputs not used for a while (each is ~45 MB)."""
    cutoff = time.time() - max_age_days * 86400
    for entry in cache_root().iterdir():
        if entry == keep or not re.fullmatch(r"[0-9a-f]{16}", entry.name):
            continue
        try:
            if (entry / "image.json").stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue
