"""Loading the payload into the running kernel for kexec, on the machine under test (as root).

Three paths: the raw `kexec_load` syscall through ctypes (no purgatory: the payload is entered
in the kernel's own mode, 64-bit on x86_64), the `kexec_file_load` syscall with the payload as
a bzImage (the kernel's purgatory enters its 64-bit entry with a boot_params page), and
kexec-tools' `kexec -l --type=elf-x86`.
Preflight explains every refusal in one line before the kernel's bare errno would.
Facts behind the numbers: /work/shared/notes/kexec-abi.md.

Standard library only and Python 3.6 syntax: the target agent carries this module
(docs/target-agent.md); `kexectest load` and the agent load through the same code.
"""

import ctypes
import errno as errno_mod
import gzip
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

from ..errors import Exit, KexectestError
from ..payload.layout import page_ceil, page_floor

KEXEC_ARCH_DEFAULT = 0
CAP_SYS_BOOT = 22
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543
KEXEC_SEGMENT_MAX = 16
# Syscall numbers by the process's own ABI (a 32-bit Python on a 64-bit kernel uses i386's).
SYSCALLS = {"x86_64": {"kexec_load": 246, "reboot": 169, "kexec_file_load": 320},
            "i386": {"kexec_load": 283, "reboot": 88}}
KEXEC_FILE_NO_INITRAMFS = 0x04
# The kernel configuration, where the kernel shows it (not every kernel does: then unknown).
KERNEL_CONFIGS = ("/proc/config.gz", "/boot/config-{release}", "/lib/modules/{release}/config")
# errnos a failed signature check gives (kexec_file_load with enforcement: kimage_validate_signature)
SIGNATURE_ERRNOS = tuple(getattr(errno_mod, n) for n in ("EKEYREJECTED", "ENOKEY", "EBADMSG",
                                                          "ENODATA", "ENOPKG")
                         if hasattr(errno_mod, n))
I386_MACHINES = ("i386", "i486", "i586", "i686")


class KexecSegment(namedtuple("KexecSegment", "mem memsz buf")):
    """One page-aligned segment as handed to kexec_load: `buf` is padded to whole pages
    where the ELF segment did not start on one."""

    __slots__ = ()

    @property
    def end(self) -> int:
        return self.mem + self.memsz


def align_segment(paddr: int, data: bytes, memsz: int) -> KexecSegment:
    """Round the start down and the end up to pages; the buffer gains leading zeros."""
    mem = page_floor(paddr)
    lead = paddr - mem
    end = page_ceil(paddr + max(memsz, len(data)))
    return KexecSegment(mem, end - mem, bytes(lead) + data)


def plan_segments(parts) -> list:
    """Aligned segments for (paddr, file bytes, memsz) parts; parts that share a page after
    rounding are merged, since kexec_load refuses overlapping segments."""
    segs = sorted((align_segment(*p) for p in parts if max(p[2], len(p[1])) > 0),
                  key=lambda s: s.mem)
    out = []
    for s in segs:
        if out and s.mem < out[-1].end:
            prev = out.pop()
            buf = bytearray(prev.buf.ljust(s.mem - prev.mem + len(s.buf), b"\0"))
            # the later part's bytes win only where it has file data (bss pads are zeros)
            off = s.mem - prev.mem
            for i, b in enumerate(s.buf):
                if b or off + i >= len(prev.buf):
                    buf[off + i] = b
            end = max(prev.end, s.end)
            s = KexecSegment(prev.mem, end - prev.mem, bytes(buf))
        out.append(s)
    return out


def image_segments(img) -> list:
    """Aligned segments for an image of either reader (payload/image.py, target/elf.py)."""
    return plan_segments([(s.paddr, img.data[s.offset:s.offset + s.filesz], s.memsz)
                          for s in img.segments])


def kernel_machine() -> str:
    return os.uname().machine


def entry_for(img, machine=None) -> int:
    """The payload's entry for this kernel: 64-bit on x86_64, 32-bit on i386."""
    machine = machine or kernel_machine()
    if machine == "x86_64":
        if img.entry64 is None:
            raise KexectestError(f"{img.path}: no kt_entry64 symbol, needed for kexec_load on an "
                                 "x86_64 kernel (try --via kexec-tools)", Exit.KEXEC_REFUSED)
        return img.entry64
    if machine in I386_MACHINES:
        return img.entry32
    raise KexectestError(f"kexec of this payload needs an x86 kernel, this one is {machine}",
                         Exit.KEXEC_REFUSED)


# ---------------------------------------------------------------------------------------------
# preflight

# The one wording of each refusal and warning preflight knows; the shell agent's lines are made
# from this table (target/shell.py), so both agents say the same thing about the same machine.
MESSAGES = {
    "not_root": "not root (euid {euid}): kexec needs CAP_SYS_BOOT; run as root",
    "no_cap_sys_boot": "root without CAP_SYS_BOOT (a container or a capability bounding set "
                       "drops it): kexec is not allowed here",
    "no_kexec_in_kernel": "this kernel has no kexec support (no /sys/kernel/kexec_loaded; needs "
                          "CONFIG_KEXEC)",
    "load_disabled": "kexec is disabled: /proc/sys/kernel/kexec_load_disabled is 1 (only a "
                     "reboot clears it)",
    "lockdown": "kernel lockdown is '{lockdown}' (often from UEFI Secure Boot): kexec_load of an "
                "unsigned image is refused",
    "load_limit_spent": "kexec_load_limit_reboot is 0: no more kexec loads allowed",
    "efi": "booted through UEFI: unless the firmware has a CSM, the payload will find no BIOS "
           "to call",
    "lockdown_file": "kernel lockdown is '{lockdown}' (often from UEFI Secure Boot): "
                     "kexec_file_load takes only a bzImage signed by a key the kernel trusts, "
                     "and the payload's is unsigned",
    "sig_enforce": "kexec_file_load signature enforcement is on (CONFIG_KEXEC_SIG_FORCE=y): "
                   "it takes only a signed bzImage, and the payload's is unsigned (--via "
                   "syscall loads it)",
    "no_kexec_file": "this kernel is built without CONFIG_KEXEC_FILE: it has no "
                     "kexec_file_load (--via syscall loads the payload)",
    "file_not_x86_64": "kexec_file_load of a bzImage needs an x86_64 kernel and a 64-bit "
                       "process, this is {machine} ({bits}-bit)",
    "no_kexec_tools": "kexec-tools not installed ('kexec' not found: apt-get install "
                      "kexec-tools)",
}


class HostFacts(namedtuple("HostFacts", "euid cap_sys_boot load_disabled lockdown "
                                         "kexec_in_kernel load_limit_spent efi memmap "
                                         "kexec_file sig_enforce")):
    """What decides whether the kernel will take a kexec image; read once, passed around, so the
    message logic is testable without the files.

    euid; cap_sys_boot; load_disabled (None: unknown); lockdown (none / integrity /
    confidentiality, None if unknown); kexec_in_kernel (/sys/kernel/kexec_loaded present, None:
    no /sys); load_limit_spent; efi; memmap (/sys/firmware/memmap entries: start, end
    inclusive, type); kexec_file (CONFIG_KEXEC_FILE) and sig_enforce (CONFIG_KEXEC_SIG_FORCE)
    from the kernel configuration, None where the kernel does not show it."""

    __slots__ = ()


HostFacts.__new__.__defaults__ = (None, None)  # kexec_file, sig_enforce: unknown


def kernel_config() -> dict:
    """CONFIG_* = value of the running kernel, from the first place that has it ({} if none)."""
    release = os.uname().release
    for where in KERNEL_CONFIGS:
        path = where.format(release=release)
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else Path(path).read_bytes()
        except (OSError, EOFError):
            continue
        out = {}
        for line in raw.decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("CONFIG_"):
                out[key] = value
        return out
    return {}


def _read(path: str):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def read_facts() -> HostFacts:
    cap = False
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            cap = bool(int(line.split()[1], 16) >> CAP_SYS_BOOT & 1)
    disabled = _read("/proc/sys/kernel/kexec_load_disabled")
    lock = _read("/sys/kernel/security/lockdown")
    current = None
    if lock:
        current = next((w[1:-1] for w in lock.split() if w.startswith("[")), None)
    spent = any(_read(f"/proc/sys/kernel/kexec_load_limit_{k}") == "0" for k in ("reboot",))
    kexec_in_kernel = Path("/sys/kernel/kexec_loaded").exists() if Path("/sys/kernel").exists() \
        else None
    from .snapshot import read_memmap
    config = kernel_config()
    return HostFacts(
        euid=os.geteuid(), cap_sys_boot=cap,
        load_disabled=None if disabled is None else disabled == "1",
        lockdown=current, kexec_in_kernel=kexec_in_kernel, load_limit_spent=spent,
        efi=Path("/sys/firmware/efi").exists(), memmap=read_memmap(),
        kexec_file=config.get("CONFIG_KEXEC_FILE") == "y" if config else None,
        sig_enforce=config.get("CONFIG_KEXEC_SIG_FORCE") == "y" if config else None)


def check_ranges(segs, memmap) -> list:
    """Each segment must lie inside one "System RAM" range and touch no other range."""
    out = []
    if not memmap:
        return [("warning", "no /sys/firmware/memmap: cannot check the segments against RAM")]
    for s in segs:
        lo, hi = s.mem, s.end - 1
        where = f"segment {lo:#x}-{hi:#x}"
        clash = [e for e in memmap if e["type"] != "System RAM" and e["start"] <= hi
                 and lo <= e["end"]]
        if clash:
            e = clash[0]
            out.append(("error", f"{where} overlaps {e['type']} memory "
                                 f"{e['start']:#x}-{e['end']:#x}"))
        elif not any(e["type"] == "System RAM" and e["start"] <= lo and hi <= e["end"]
                     for e in memmap):
            out.append(("error", f"{where} is not inside System RAM (/sys/firmware/memmap)"))
    return out


def preflight(facts: HostFacts, segs, via: str) -> list:
    """(level, message) list; any "error" means the kernel would refuse (`segs` None: not
    checked against memory, as for kexec-tools, which places the segments itself)."""
    out = []
    if not facts.cap_sys_boot:
        if facts.euid != 0:
            out.append(("error", MESSAGES["not_root"].format(euid=facts.euid)))
        else:
            out.append(("error", MESSAGES["no_cap_sys_boot"]))
    if facts.kexec_in_kernel is False:
        out.append(("error", MESSAGES["no_kexec_in_kernel"]))
    if facts.load_disabled:
        out.append(("error", MESSAGES["load_disabled"]))
    if facts.lockdown in ("integrity", "confidentiality"):
        key = "lockdown_file" if via == "file" else "lockdown"
        out.append(("error", MESSAGES[key].format(lockdown=facts.lockdown)))
    if via == "file":
        bits = 8 * ctypes.sizeof(ctypes.c_void_p)
        if kernel_machine() != "x86_64" or bits != 64:
            out.append(("error", MESSAGES["file_not_x86_64"].format(machine=kernel_machine(),
                                                                    bits=bits)))
        if facts.kexec_file is False:
            out.append(("error", MESSAGES["no_kexec_file"]))
        if facts.sig_enforce:
            out.append(("error", MESSAGES["sig_enforce"]))
    if facts.load_limit_spent:
        out.append(("error", MESSAGES["load_limit_spent"]))
    if facts.efi:
        out.append(("warning", MESSAGES["efi"]))
    if segs is not None:
        if len(segs) > KEXEC_SEGMENT_MAX:
            out.append(("error", f"{len(segs)} segments; kexec_load takes at most 16"))
        out += check_ranges(segs, facts.memmap)
    if via in ("kexec-tools", "kexec-tools-bzimage") and shutil.which("kexec") is None:
        out.append(("error", MESSAGES["no_kexec_tools"] + ", or use --via syscall"))
    return out


def explain_errno(err: int, facts=None) -> str:
    """What a kexec_load errno means here, naming the cause where the facts tell it."""
    if err == errno_mod.EPERM:
        reasons = []
        if facts is not None:
            if not facts.cap_sys_boot:
                reasons.append("no CAP_SYS_BOOT (not root?)")
            if facts.load_disabled:
                reasons.append("kexec_load_disabled is 1")
            if facts.lockdown in ("integrity", "confidentiality"):
                reasons.append(f"lockdown={facts.lockdown}")
            if facts.load_limit_spent:
                reasons.append("kexec_load_limit_reboot spent")
        why = "; ".join(reasons) if reasons else ("no CAP_SYS_BOOT, kexec_load_disabled, "
                                                  "lockdown or a spent kexec_load_limit")
        return f"kexec_load: operation not permitted ({why})"
    return {
        errno_mod.ENOSYS: "kexec_load: this kernel has no kexec_load (built without "
                          "CONFIG_KEXEC, or blocked by seccomp)",
        errno_mod.EBUSY: "kexec_load: another kexec load or unload is in progress (EBUSY); "
                         "try again",
        errno_mod.EINVAL: "kexec_load: the kernel rejected the image (EINVAL: bad flags or "
                          "architecture, more than 16 segments, or a segment larger than its "
                          "memory size)",
        errno_mod.EADDRNOTAVAIL: "kexec_load: a segment is not page-aligned or lies outside "
                                 "the memory the kernel can use (EADDRNOTAVAIL)",
        errno_mod.ENOMEM: "kexec_load: out of memory while staging the image, or a segment "
                          "overlaps memory the kernel keeps (ENOMEM)",
        errno_mod.EFAULT: "kexec_load: bad segment buffer address (EFAULT)",
        errno_mod.EACCES: "kexec_load: refused by a security module (EACCES)",
    }.get(err, f"kexec_load failed: {os.strerror(err)} (errno {err})")


def explain_file_errno(err: int, facts=None) -> str:
    """What a kexec_file_load errno means here."""
    if err == errno_mod.EPERM:
        why = []
        if facts is not None:
            if not facts.cap_sys_boot:
                why.append("no CAP_SYS_BOOT (not root?)")
            if facts.load_disabled:
                why.append("kexec_load_disabled is 1")
            if facts.lockdown in ("integrity", "confidentiality"):
                why.append(f"lockdown={facts.lockdown} wants a signed image")
        return ("kexec_file_load: operation not permitted (" + ("; ".join(why) or
                "no CAP_SYS_BOOT, kexec_load_disabled, or lockdown refusing an unsigned image")
                + ")")
    if err in SIGNATURE_ERRNOS:
        return (f"kexec_file_load: the bzImage's signature check failed and is enforced "
                f"({errno_mod.errorcode.get(err, err)}: the payload's bzImage is unsigned; "
                "--via syscall loads it)")
    return {
        errno_mod.ENOSYS: "kexec_file_load: this kernel has none (built without "
                          "CONFIG_KEXEC_FILE, or blocked by seccomp; --via syscall loads the "
                          "payload)",
        errno_mod.ENOEXEC: "kexec_file_load: no loader of this kernel took the file (ENOEXEC: "
                           "the bzImage header was refused; the kernel log names the field)",
        errno_mod.EINVAL: "kexec_file_load: the kernel rejected the call (EINVAL: a command "
                          "line longer than the header's cmdline_size allows, or bad flags)",
        errno_mod.EBUSY: "kexec_file_load: another kexec load or unload is in progress (EBUSY); "
                         "try again",
        errno_mod.ENOMEM: "kexec_file_load: out of memory, or no room for the image where the "
                          "kernel looks (ENOMEM)",
        errno_mod.EBADF: "kexec_file_load: bad file descriptor (EBADF)",
        errno_mod.EACCES: "kexec_file_load: refused by a security module (EACCES)",
    }.get(err, f"kexec_file_load failed: {os.strerror(err)} (errno {err})")


# ---------------------------------------------------------------------------------------------
# the syscalls


class _Segment(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("bufsz", ctypes.c_size_t),
                ("mem", ctypes.c_void_p), ("memsz", ctypes.c_size_t)]


def _syscall_numbers() -> dict:
    abi = "x86_64" if ctypes.sizeof(ctypes.c_void_p) == 8 else "i386"
    if kernel_machine() not in ("x86_64",) + I386_MACHINES:
        raise KexectestError(f"kexec of this payload needs an x86 kernel, this one is "
                             f"{kernel_machine()}", Exit.KEXEC_REFUSED)
    return SYSCALLS[abi]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def kexec_load(entry: int, segs, facts=None) -> None:
    """The raw syscall; nr_segments 0 (an empty list) unloads."""
    nr = _syscall_numbers()["kexec_load"]
    keep = [ctypes.create_string_buffer(s.buf, len(s.buf)) for s in segs]
    arr = (_Segment * max(len(segs), 1))()
    for i, (s, b) in enumerate(zip(segs, keep)):
        arr[i] = _Segment(ctypes.cast(b, ctypes.c_void_p), len(s.buf), s.mem, s.memsz)
    libc = _libc()
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_ulong(entry), ctypes.c_ulong(len(segs)),
                      arr if segs else None, ctypes.c_ulong(KEXEC_ARCH_DEFAULT))
    if rc != 0:
        raise KexectestError(explain_errno(ctypes.get_errno(), facts), Exit.KEXEC_REFUSED)


def kexec_file_load(kernel_fd: int, cmdline: bytes = b"", initrd_fd=None, facts=None) -> None:
    """The file syscall: the bzImage by its descriptor, no initrd unless given
    (KEXEC_FILE_NO_INITRAMFS), the command line with its NUL (an empty one is just the NUL:
    the kernel writes the last byte of whatever length it is given)."""
    nr = _syscall_numbers().get("kexec_file_load")
    if nr is None:
        raise KexectestError(MESSAGES["file_not_x86_64"].format(
            machine=kernel_machine(), bits=8 * ctypes.sizeof(ctypes.c_void_p)),
            Exit.KEXEC_REFUSED)
    text = ctypes.create_string_buffer(cmdline + b"\0", len(cmdline) + 1)
    flags = 0 if initrd_fd is not None else KEXEC_FILE_NO_INITRAMFS
    libc = _libc()
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(kernel_fd),
                      ctypes.c_int(-1 if initrd_fd is None else initrd_fd),
                      ctypes.c_ulong(len(cmdline) + 1), text, ctypes.c_ulong(flags))
    if rc != 0:
        raise KexectestError(explain_file_errno(ctypes.get_errno(), facts), Exit.KEXEC_REFUSED)


def unload(facts=None) -> None:
    kexec_load(0, [], facts)


def reboot_kexec() -> None:
    """Jump into the loaded image. Only returns (with an error) if the kernel refuses."""
    os.sync()
    nr = _syscall_numbers()["reboot"]
    libc = _libc()
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_uint(LINUX_REBOOT_MAGIC1),
                      ctypes.c_uint(LINUX_REBOOT_MAGIC2), ctypes.c_uint(LINUX_REBOOT_CMD_KEXEC),
                      None)
    err = ctypes.get_errno()
    raise KexectestError(f"reboot(KEXEC) returned {rc}: {os.strerror(err)}", Exit.KEXEC_REFUSED)


def _run(argv) -> subprocess.CompletedProcess:
    """A command's exit status and output as text (Python 3.6 has no capture_output)."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, errors="replace")


def load_kexec_tools(image, args=("--type=elf-x86",)) -> None:
    """`kexec -l IMAGE` with its loader's arguments (the elf-x86 type, or the bzImage type
    and its options)."""
    exe = shutil.which("kexec")
    if exe is None:
        raise KexectestError(MESSAGES["no_kexec_tools"], Exit.MISSING_TOOL)
    proc = _run([exe, "-l", str(image), *args])
    if proc.returncode != 0:
        msg = next((ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()),
                   f"exit status {proc.returncode}")
        raise KexectestError(f"kexec -l failed: {msg}", Exit.KEXEC_REFUSED)


def exec_kexec_tools() -> None:
    exe = shutil.which("kexec")
    if exe is None:
        raise KexectestError("kexec-tools not installed ('kexec' not found)", Exit.MISSING_TOOL)
    os.sync()
    proc = _run([exe, "-e"])
    msg = next((ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()),
               f"exit status {proc.returncode}")
    raise KexectestError(f"kexec -e returned: {msg}", Exit.KEXEC_REFUSED)
