"""QEMU for the lab: one guest whose COM1 is a loopback TCP server, under a hard time limit.

The serial chardev is `server=on,wait=on`, so the guest does not start until the collector
connects: no byte is lost before anyone listens.  QEMU is ended by its PID (SIGTERM, then
SIGKILL) when the context exits, when the time limit expires, or when Python exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path

from ..errors import Exit, KexectestError

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
DEBUG_EXIT_PORT = 0xF4
WAITING = "waiting for connection"
_live: "weakref.WeakSet[Qemu]" = weakref.WeakSet()


def kill_all() -> None:
    """End every QEMU this process started (Ctrl-C of a sweep, interpreter exit)."""
    for q in list(_live):
        q.kill()


atexit.register(kill_all)


def hardware_virt() -> bool:
    """True only where KVM is real: /dev/kvm exists and the CPU shows vmx or svm.

    (A /dev/kvm backed by a software hypervisor is far slower than TCG.)"""
    if not os.path.exists("/dev/kvm"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "vmx" in flags or "svm" in flags
    except OSError:
        pass
    return False


def choose_accel(accel: str) -> str:
    if accel == "auto":
        return "kvm" if hardware_virt() else "tcg"
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise KexectestError("qemu: --accel kvm but /dev/kvm is not usable here", Exit.LAB_STAGE)
    if accel not in ("tcg", "kvm"):
        raise KexectestError(f"qemu: unknown accelerator {accel!r} (auto, tcg, kvm)", Exit.USAGE)
    return accel


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_value(returncode: int | None) -> int | None:
    """The value the guest wrote to isa-debug-exit, from QEMU's exit status (v << 1) | 1."""
    if returncode is None or returncode <= 0 or not returncode & 1:
        return None
    return returncode >> 1


class Qemu:
    """A context manager around one qemu-system-x86_64 process.

    `kernel` is a bzImage (with `initrd`, `append`) or a multiboot ELF (direct payload boot).
    `disks` is a list of raw image paths (attached snapshot=on, so images are shared safely).
    `share_host` exports the host's / read-only over 9p (mount tag `host`).
    `no_reboot=False` lets a reset reboot the machine, as hardware would: the collector then
    sees the firmware or kernel banner come back (with -no-reboot QEMU just quits).
    """

    def __init__(self, *, machine: str = "pc", memory_mib: int = 256, smp: int = 1,
                 disks: list[Path] | tuple = (), accel: str = "auto", kernel: Path | None = None,
                 initrd: Path | None = None, append: str | None = None, time_limit: float = 120.0,
                 debug_exit: bool = True, no_reboot: bool = True, share_host: bool = False,
                 extra: list[str] = (),
                 out_dir: Path | None = None):
        if machine not in ("pc", "q35"):
            raise KexectestError(f"qemu: unknown machine {machine!r} (pc, q35)", Exit.USAGE)
        if memory_mib < 16 or smp < 1:
            raise KexectestError("qemu: need at least 16 MiB and 1 CPU", Exit.USAGE)
        self.machine, self.memory_mib, self.smp = machine, memory_mib, smp
        self.disks = [Path(d) for d in disks]
        self.accel = choose_accel(accel)
        self.kernel, self.initrd, self.append = kernel, initrd, append
        self.time_limit = time_limit
        self.debug_exit, self.share_host, self.extra = debug_exit, share_host, list(extra)
        self.no_reboot = no_reboot
        self.out_dir = Path(out_dir) if out_dir else None
        self.port: int | None = None
        self.argv_used: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.stderr_path: Path | None = None
        self.timed_out = False
        self.started_at: float | None = None
        self._timer: threading.Timer | None = None

    # -- command line
    def argv(self, port: int) -> list[str]:
        binary = shutil.which(QEMU)
        if not binary:
            raise KexectestError(f"qemu: {QEMU} not found (apt-get install {QEMU_PACKAGE})",
                                 Exit.MISSING_TOOL)
        a = [binary, "-machine", self.machine, "-accel", self.accel,
             "-m", str(self.memory_mib), "-smp", str(self.smp),
             "-display", "none", "-monitor", "none", "-nodefaults", "-vga", "std",
             "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on"]
        if self.no_reboot:
            a.append("-no-reboot")
        if self.debug_exit:
            a += ["-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
        for i, d in enumerate(self.disks):
            if not d.is_file():
                raise KexectestError(f"qemu: disk image {d} does not exist", Exit.LAB_STAGE)
            a += ["-drive", f"file={d},format=raw,if=ide,index={i},snapshot=on"]
        if self.kernel is not None:
            a += ["-kernel", str(self.kernel)]
        if self.initrd is not None:
            a += ["-initrd", str(self.initrd)]
        if self.append:
            a += ["-append", self.append]
        if self.share_host:
            a += ["-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                             "multidevs=remap"]
        return a + self.extra

    # -- life cycle
    def start(self) -> "Qemu":
        """Start QEMU and return once its serial server is listening (the guest is held)."""
        for attempt in range(3):
            self.port = free_port()
            argv = self.argv(self.port)
            self.argv_used = argv
            if self.out_dir:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                self.stderr_path = self.out_dir / "qemu.stderr"
            else:
                fd, name = tempfile.mkstemp(prefix="kt-qemu-", suffix=".stderr")
                os.close(fd)
                self.stderr_path = Path(name)
            if self.out_dir:
                (self.out_dir / "qemu.cmdline").write_text(" ".join(argv) + "\n")
            err = open(self.stderr_path, "wb")
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=err,
                                             start_new_session=True)
            except OSError as exc:
                raise KexectestError(f"qemu: cannot start {argv[0]}: {exc}", Exit.LAB_STAGE)
            finally:
                err.close()
            _live.add(self)
            self.started_at = time.monotonic()
            self._timer = threading.Timer(self.time_limit, self._expire)
            self._timer.daemon = True
            self._timer.start()
            if self._wait_listening():
                return self
            text = self.stderr_text()
            self.kill()
            if "Address already in use" in text or "Failed to bind" in text:
                continue
            last = text.strip().splitlines()[-1:] or [f"exit status {self.proc.returncode}"]
            if not self.out_dir:
                self.stderr_path.unlink(missing_ok=True)
            raise KexectestError(f"qemu failed to start: {last[0]}", Exit.LAB_STAGE)
        raise KexectestError("qemu failed to start: no free loopback port", Exit.LAB_STAGE)

    def _wait_listening(self, limit: float = 30.0) -> bool:
        """Wait for QEMU's 'waiting for connection' line: connecting to test it would
        release the guest with nobody reading."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if WAITING in self.stderr_text():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def _expire(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.timed_out = True
            self.kill()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""
        except OSError:
            return ""

    @property
    def serial_url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def debug_exit_value(self) -> int | None:
        return exit_value(self.returncode)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for QEMU to end by itself; None if it is still running after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, grace: float = 2.0) -> None:
        """End QEMU by its PID: SIGTERM, then SIGKILL after `grace` seconds."""
        if self._timer:
            self._timer.cancel()
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> "Qemu":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
        if self.stderr_path and not self.out_dir:
            self.stderr_path.unlink(missing_ok=True)
