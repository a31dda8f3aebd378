"""One load on the machine under test, start to end: patch the configuration block, check the
payload, print the "before" snapshot, preflight, load, and (with exec) kexec into it.

`kexectest load` (commands/load.py) and the target agent's `load` (target/agent.py) both run
this function, so the machine says the same lines and ends with the same exit codes whichever
of the two a user runs.  Standard library only and Python 3.6 syntax: the agent carries it.
"""

import errno
import os
import shutil
import sys
import tempfile

from ..errors import Exit, KexectestError
from ..payload import bzimage
from ..payload.options import config_kwargs
from ..payload.patch import patched_bytes
from . import loader, snapshot
from .elf import PayloadFile

VIAS = ("syscall", "kexec-tools", "file", "kexec-tools-bzimage")
VIA_HELP = ("Raw kexec_load (no purgatory), kexec-tools' elf-x86, kexec_file_load with the "
            "payload as a bzImage (the kernel's purgatory, a boot_params page), or kexec-tools' "
            "bzImage loader (its purgatory and boot_params page; or, with the real-mode "
            "switch, the setup code's real-mode entry).")
BZIMAGE_VIAS = ("file", "kexec-tools-bzimage")  # the payload goes as a bzImage
# The valued options of a load (flag, parameter, help), for --via file: as SWITCHES, both
# `kexectest load`'s click options and the agent's argparse options are made from it.
VALUES = (
    ("--cmdline", "cmdline", "With a bzImage (--via file or kexec-tools-bzimage): the "
                             "command line handed over [default: empty]."),
    ("--initrd", "initrd", "With a bzImage: a file to hand over as the initrd [default: none; "
                           "KEXEC_FILE_NO_INITRAMFS]."),
)
# The switches of a load beside --via and the payload options (payload/options.py), as
# (flag, parameter, help): `kexectest load`'s click options and the agent's argparse options
# are both made from this table.
SWITCHES = (
    ("--exec", "do_exec", "Jump into the payload now (ends the running system).  Always needs "
                          "--yes: without it --exec refuses, at a terminal and without one (ssh "
                          "without a tty, cron, < /dev/null) alike."),
    ("--yes", "yes", "Confirm --exec."),
    ("--no-snapshot", "no_snapshot", "Do not print the KTSNAP before-snapshot."),
    ("--snapshot-only", "snapshot_only", "Print the KTSNAP before-snapshot and stop (no payload "
                                         "is read, nothing is loaded)."),
    ("--dry-run", "dry_run", "Patch, check, snapshot and preflight, then stop short of the "
                             "load: prints what would be loaded and the patched payload's "
                             "sha256."),
    ("--real-mode", "real_mode", "With --via kexec-tools-bzimage: enter the bzImage's setup "
                                 "code in real mode (kexec-tools' real-mode entry), the path "
                                 "of kernels that hang in setup."),
)
PATCHED_NAME = "kexec_test.elf"
BZIMAGE_NAME = "kexec_test.bzImage"
# errno values that mean a full disk or quota (as fsutil.NO_SPACE_ERRNOS; a test keeps them equal)
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def confirm_exec(do_exec: bool, yes: bool) -> None:
    """--exec ends the running system: never without --yes (no question is asked)."""
    if do_exec and not yes:
        how = "" if sys.stdin.isatty() else " (and there is no terminal here to ask at)"
        raise KexectestError(f"--exec ends the running system: add --yes to confirm{how}",
                             Exit.USAGE)


def say(line: str) -> None:
    """One line on standard output, out at once: the console is the collector's evidence."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"kexectest: warning: {message}\n")
    sys.stderr.flush()


def print_snapshot() -> None:
    """The KTSNAP block (docs/snapshot-format.md), flushed before anything else happens."""
    for line in snapshot.snapshot_lines():
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def prepare(src, options: dict) -> PayloadFile:
    """The payload with the options patched into its config block, checked against the memory
    rules of a hand-off (an error there is exit 12)."""
    img = PayloadFile.open(src)
    img = PayloadFile(src, patched_bytes(img, **config_kwargs(options)))
    errors = [m for lvl, m in img.checks() if lvl == "error"]
    if errors:
        raise KexectestError(f"{src}: {errors[0]}", Exit.PAYLOAD_LIMITS)
    return img


def _load_with_kexec_tools(img: PayloadFile) -> None:
    """kexec-tools reads a file: the patched copy goes to a private temporary directory."""
    _with_temp_file(img.data, PATCHED_NAME, loader.load_kexec_tools)


def make_bzimage(img: PayloadFile) -> bytes:
    """The patched payload as a bzImage, refused in one line where its header would be."""
    try:
        data = bzimage.make(img)
    except bzimage.BzImageError as exc:
        raise KexectestError(f"{img.path}: {exc}", Exit.PAYLOAD_LIMITS) from None
    errors = [m for lvl, m in bzimage.header_checks(data) if lvl == "error"]
    if errors:
        raise KexectestError(f"{img.path}: its bzImage's {errors[0]}", Exit.PAYLOAD_LIMITS)
    return data


def _load_with_file_syscall(data: bytes, cmdline: str, initrd, facts) -> None:
    """kexec_file_load takes descriptors: the bzImage goes to a private temporary file."""
    text = cmdline.encode("utf-8")
    if not bzimage.cmdline_fits(data, len(text) + 1):
        raise KexectestError(f"--cmdline is {len(text)} bytes: kexec_file_load takes at most "
                             f"{bzimage.CMDLINE_SIZE - bzimage.ELFCOREHDR_RESERVE - 1} with this "
                             "bzImage", Exit.USAGE)

    def load(path):
        kfd = os.open(path, os.O_RDONLY)
        ifd = None
        try:
            if initrd:
                try:
                    ifd = os.open(initrd, os.O_RDONLY)
                except OSError as exc:
                    raise KexectestError(f"--initrd {initrd}: {exc.strerror}",
                                         Exit.BAD_INPUT) from None
            loader.kexec_file_load(kfd, text, ifd, facts)
        finally:
            os.close(kfd)
            if ifd is not None:
                os.close(ifd)

    _with_temp_file(data, BZIMAGE_NAME, load)


def _with_temp_file(data: bytes, name: str, use) -> None:
    """`use(path)` with `data` written to a private temporary directory, removed after."""
    try:
        tmpdir = tempfile.mkdtemp(prefix="kexectest-load-")
    except OSError as exc:
        raise KexectestError(f"cannot make a temporary directory for the patched payload: "
                             f"{exc.strerror} (set TMPDIR to a writable directory)",
                             Exit.NO_SPACE if exc.errno in NO_SPACE_ERRNOS else Exit.BAD_INPUT
                             ) from None
    path = os.path.join(tmpdir, name)
    try:
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise KexectestError(f"cannot write the patched payload to {path}: {exc.strerror}",
                                 Exit.NO_SPACE if exc.errno in NO_SPACE_ERRNOS
                                 else Exit.BAD_INPUT) from None
        use(path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def run_load(src, *, via: str = "syscall", options=None, do_exec: bool = False,
             print_block: bool = True, dry_run: bool = False, cmdline=None,
             initrd=None, real_mode: bool = False) -> None:
    """Load `src` for kexec on this machine (as root); with `do_exec`, start it.

    Raises KexectestError with the exit code of the first thing that stops it; returns after a
    load without exec, or a dry run (everything but the load itself)."""
    if via not in VIAS:
        raise KexectestError(f"--via must be one of {', '.join(VIAS)}, not {via!r}", Exit.USAGE)
    if via not in BZIMAGE_VIAS and (cmdline is not None or initrd is not None):
        raise KexectestError("--cmdline and --initrd go with a bzImage: --via file or "
                             "kexec-tools-bzimage", Exit.USAGE)
    if real_mode and via != "kexec-tools-bzimage":
        raise KexectestError("--real-mode goes with --via kexec-tools-bzimage", Exit.USAGE)
    img = prepare(src, options or {})
    bz = make_bzimage(img) if via in BZIMAGE_VIAS else None
    if print_block:
        print_snapshot()
    facts = loader.read_facts()
    segs = loader.image_segments(img)
    problems = loader.preflight(facts, segs if via == "syscall" else None, via)
    for level, msg in problems:
        if level == "warning":
            warn(msg)
    errs = [m for lvl, m in problems if lvl == "error"]
    if errs:
        raise KexectestError(errs[0], Exit.KEXEC_REFUSED)
    if via == "syscall":
        entry, nseg = loader.entry_for(img), len(segs)
    elif via == "file":
        entry, nseg = img.entry64, 1
    else:
        entry, nseg = img.e_entry, len(img.segments)
    if via == "kexec-tools-bzimage":
        entry = img.symbols.get("kt_entry16", 0) if real_mode else img.entry32
        nseg = 1
    if via in BZIMAGE_VIAS:  # the loader places the parts: the entry is where its copy lands
        door = " (real mode)" if real_mode else ""
        what = (f"a {len(bz)}-byte bzImage, entry {entry:#x} after its copy, via {via}{door} "
                f"(payload {img.build_id or img.sha256[:16]})")
    else:
        what = (f"{nseg} segment(s), entry {entry:#x}, via {via} "
                f"(payload {img.build_id or img.sha256[:16]})")
    if dry_run:
        say(f"dry run: would load {what}; patched payload sha256 {img.sha256}")
        return
    if via == "syscall":
        loader.kexec_load(entry, segs, facts)
    elif via == "file":
        _load_with_file_syscall(bz, cmdline or "", initrd, facts)
    elif via == "kexec-tools-bzimage":
        args = ["--type=bzImage"] + (["--real-mode"] if real_mode else [])
        args += [f"--command-line={cmdline}"] if cmdline is not None else []
        args += [f"--initrd={initrd}"] if initrd else []
        _with_temp_file(bz, BZIMAGE_NAME, lambda path: loader.load_kexec_tools(path, args))
    else:
        _load_with_kexec_tools(img)
    say(f"loaded {what}")
    if do_exec:
        say(f"KTLOAD exec entry={entry:#x} via={via}")
        sys.stderr.flush()
        if via in ("syscall", "file"):
            loader.reboot_kexec()
        else:
            loader.exec_kexec_tools()
