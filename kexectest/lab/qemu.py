"""QEMU for the lab: one guest whose COM1 is a loopback TCP server, under a hard time limit.

The serial chardev is `server=on,wait=on`, so the guest does not start until the collector
connects: no byte is lost before anyone listens.  QEMU is ended by its PID (SIGTERM, then
SIGKILL) when the context exits, when the time limit expires, or when Python exits.

A machine can also start from a saved state (`start_restored`, used by lab/warmstate.py): QEMU
loads it paused with COM1 on a null backend, and only once the state is loaded and checked is
COM1 turned into the same waiting TCP server and the guest resumed when the collector connects.
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
from . import diskbus
from . import firmware as fw
from . import keyboard as kbd
from . import video as vid
from .qmp import Qmp, QmpError, qmp_socket_dir

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
DEBUG_EXIT_PORT = 0xF4
WAITING = "waiting for connection"
SERIAL_ID = "serial0"  # the chardev QEMU names for the first -serial
LOAD_LIMIT_S = 60.0  # longest a saved state may take to load


class RestoreError(Exception):
    """QEMU could not start from a saved state (the message is one line, for the user).

    `damaged`: the state itself is at fault (it cannot be loaded or does not check out), not
    the moment (no free port)."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message)
        self.damaged = damaged
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
    `disks` is a list of raw image paths (attached snapshot=on, so images are shared safely),
    on `disk_bus` (lab/diskbus.py; None: the machine's own controller, if=ide).
    `share_host` exports the host's / read-only over 9p (mount tag `host`).
    `no_reboot=False` lets a reset reboot the machine, as hardware would: the collector then
    sees the firmware or kernel banner come back (with -no-reboot QEMU just quits).
    `qmp=True` adds a QMP monitor (`self.monitor`).
    `firmware` is seabios (QEMU's own) or bochs (lab/firmware.py: what the Bochs BIOS needs);
    `cdrom` a CD image after the disks, `boot` the firmware's boot order (c: disk, d: CD).
    `video`, `keyboard`: the models of lab/video.py and lab/keyboard.py (None: the machine's
    own -- the firmware's VGA, the PS/2 keyboard).
    """

    def __init__(self, *, machine: str = "pc", memory_mib: int = 256, smp: int = 1,
                 disks: list[Path] | tuple = (), accel: str = "auto", kernel: Path | None = None,
                 initrd: Path | None = None, append: str | None = None, time_limit: float = 120.0,
                 debug_exit: bool = True, no_reboot: bool = True, share_host: bool = False,
                 extra: list[str] = (), qmp: bool = False, disk_bus: str | None = None,
                 firmware: str = "seabios", cdrom: Path | None = None, boot: str | None = None,
                 out_dir: Path | None = None, video: str | None = None,
                 keyboard: str | None = None):
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
        self.disk_bus = disk_bus
        self.video, self.keyboard = video, keyboard
        self.qmp = qmp
        self.out_dir = Path(out_dir) if out_dir else None
        self.firmware = fw.get(firmware)
        self.cdrom = Path(cdrom) if cdrom else None
        if boot not in (None, "c", "d"):
            raise KexectestError(f"qemu: boot order must be c or d, not {boot!r}", Exit.USAGE)
        self.boot = boot
        if kernel is not None and not self.firmware.kernel_boot:
            raise KexectestError(f"qemu: firmware {firmware} runs no -kernel (it reads no "
                                 "fw_cfg: docs/firmware.md)", Exit.USAGE)
        if len(self.disks) + (cdrom is not None) > fw.max_drives(self.firmware, machine):
            raise KexectestError(f"qemu: {machine} with firmware {firmware} takes at most "
                                 f"{fw.max_drives(self.firmware, machine)} drives", Exit.USAGE)
        # what made this machine, to make another of the same shape (lab/warmstate.py)
        self.config = dict(machine=machine, memory_mib=memory_mib, smp=smp, disks=self.disks,
                           accel=self.accel, kernel=kernel, initrd=initrd, append=append,
                           debug_exit=debug_exit, no_reboot=no_reboot, share_host=share_host,
                           extra=self.extra, disk_bus=disk_bus, firmware=firmware,
                           cdrom=self.cdrom, boot=boot, video=video, keyboard=keyboard)
        self._monitor: Qmp | None = None
        self._qmp_dir: Path | None = None
        self.port: int | None = None
        self.argv_used: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.stderr_path: Path | None = None
        self.timed_out = False
        self.started_at: float | None = None
        self._timer: threading.Timer | None = None

    # -- command line
    def guest_argv(self) -> list[str]:
        """Everything that makes the guest what it is: the command line without COM1's backend
        or a monitor (a saved state is only valid for exactly this)."""
        binary = shutil.which(QEMU)
        if not binary:
            raise KexectestError(f"qemu: {QEMU} not found (apt-get install {QEMU_PACKAGE})",
                                 Exit.MISSING_TOOL)
        fw.check_installed(self.firmware)
        a = [binary, "-machine", self.machine, "-accel", self.accel,
             "-m", str(self.memory_mib), "-smp", str(self.smp),
             "-display", "none", "-monitor", "none", "-nodefaults",
             *fw.qemu_argv(self.firmware, self.machine,
                           None if vid.own_video(self.video) else vid.video_args(self.video))]
        if self.no_reboot:
            a.append("-no-reboot")
        if self.debug_exit:
            a += ["-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
        for d in [*self.disks, *([self.cdrom] if self.cdrom else [])]:
            if not d.is_file():
                raise KexectestError(f"qemu: disk image {d} does not exist", Exit.LAB_STAGE)
        if diskbus.own_controller(self.machine, self.disk_bus):
            a += fw.drive_argv(self.firmware, self.machine, self.disks, self.cdrom)
        else:  # the disks on their bus, a CD (if any) on the machine's own IDE
            a += diskbus.disk_args(self.machine, self.disk_bus, self.disks)
            a += fw.drive_argv(self.firmware, self.machine, [], self.cdrom)
        a += kbd.keyboard_args(self.keyboard)
        if self.boot:
            a += ["-boot", self.boot]
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

    def argv(self, port: int) -> list[str]:
        """The command line of a cold start: COM1 waits for the collector on `port`."""
        return (self.guest_argv() + ["-serial", f"tcp:127.0.0.1:{port},server=on,wait=on"]
                + self._qmp_argv())

    def _qmp_argv(self) -> list[str]:
        if not self.qmp:
            return []
        if self._qmp_dir is None:
            self._qmp_dir = qmp_socket_dir()
        return ["-qmp", f"unix:{self._qmp_dir / 'qmp.sock'},server=on,wait=off"]

    # -- life cycle
    def _spawn(self, argv: list[str], pass_fds: tuple = ()) -> None:
        self.argv_used = argv
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.stderr_path = self.out_dir / "qemu.stderr"
        elif self.stderr_path is None:
            fd, name = tempfile.mkstemp(prefix="kt-qemu-", suffix=".stderr")
            os.close(fd)
            self.stderr_path = Path(name)
        if self.out_dir:
            (self.out_dir / "qemu.cmdline").write_text(" ".join(argv) + "\n")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True, pass_fds=pass_fds)
        except OSError as exc:
            raise KexectestError(f"qemu: cannot start {argv[0]}: {exc}", Exit.LAB_STAGE)
        finally:
            err.close()
        _live.add(self)
        self.started_at = time.monotonic()
        self.timed_out = False
        self._timer = threading.Timer(self.time_limit, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def monitor(self) -> Qmp:
        """The QMP monitor (qmp=True), connected on first use: on a cold start QEMU serves it
        only once the collector has connected to COM1."""
        if self._monitor is None:
            if not self.qmp or self.proc is None:
                raise QmpError("this QEMU has no QMP monitor")
            self._monitor = Qmp(self._qmp_dir / "qmp.sock",
                                alive=lambda: self.proc.poll() is None)
        return self._monitor

    def start(self) -> "Qemu":
        """Start QEMU and return once its serial server is listening (the guest is held)."""
        for attempt in range(3):
            self.port = free_port()
            self._spawn(self.argv(self.port))
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

    def start_restored(self, state_fd: int, check=lambda: None) -> "Qemu":
        """Start QEMU from the saved state readable at `state_fd` and return once COM1 waits
        for the collector, as `start` does; the guest resumes when the collector connects.

        `check()` runs once the state is loaded (the guest still paused) and may raise
        RestoreError (a checksum that does not match).  Raises RestoreError, with QEMU's own
        words where it gave some, when the state cannot be used."""
        wanted_qmp, self.qmp = self.qmp, True
        try:
            return self._start_restored(state_fd, check)
        except RestoreError:
            self.qmp = wanted_qmp  # a cold start after this is the plain one
            raise

    def _start_restored(self, state_fd: int, check) -> "Qemu":
        for attempt in range(3):
            os.lseek(state_fd, 0, os.SEEK_SET)
            argv = (self.guest_argv()
                    + ["-chardev", f"null,id={SERIAL_ID}", "-serial", f"chardev:{SERIAL_ID}"]
                    + self._qmp_argv() + ["-S", "-incoming", f"fd:{state_fd}"])
            try:
                self._spawn(argv, pass_fds=(state_fd,))
                self._wait_loaded()
            except (QmpError, RestoreError) as exc:
                text = self.stderr_text()
                self.kill()
                damaged = getattr(exc, "damaged", True)
                raise RestoreError(_qemu_complaint(text) or str(exc), damaged=damaged) from None
            try:
                check()
            except RestoreError:
                self.kill()
                raise
            self.port = free_port()
            # both queued: `cont` runs once chardev-change returns, i.e. once the collector
            # has connected to the new server
            self.monitor.send("chardev-change", id=SERIAL_ID, backend={
                "type": "socket", "data": {
                    "addr": {"type": "inet", "data": {"host": "127.0.0.1",
                                                      "port": str(self.port)}},
                    "server": True, "wait": True}})
            self.monitor.send("cont")
            if self._wait_listening():
                return self
            self.kill()  # the port was taken meanwhile: the guest never ran, start over
        raise RestoreError("no free loopback port for COM1")

    def _wait_loaded(self) -> None:
        deadline = time.monotonic() + LOAD_LIMIT_S
        while True:
            status = self.monitor.execute("query-migrate") or {}
            state = status.get("status")
            if state == "completed":
                return
            if state in ("failed", "cancelled"):
                raise RestoreError(f"loading it {state}: {status.get('error-desc', '')}".strip(),
                                   damaged=True)
            if self.proc.poll() is not None:
                raise RestoreError(f"QEMU ended while loading it (exit status "
                                   f"{self.proc.returncode})", damaged=True)
            if time.monotonic() > deadline:
                raise RestoreError(f"loading it took longer than {LOAD_LIMIT_S:.0f} s",
                                   damaged=False)
            time.sleep(0.005)

    def _wait_listening(self, limit: float = 30.0) -> bool:
        """Wait for QEMU's 'waiting for connection' line: connecting to test it would
        release the guest with nobody reading."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if WAITING in self.stderr_text():
                return True
            if self.proc.poll() is not None:
                return False
            if self._monitor is not None:
                reply = self._monitor.pending_reply(0.0)
                if reply is not None and "error" in reply:
                    return False  # chardev-change could not listen
            time.sleep(0.005)
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
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
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

    @property
    def started(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Qemu":
        return self if self.started else self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
        if self.stderr_path and not self.out_dir:
            self.stderr_path.unlink(missing_ok=True)
        if self._qmp_dir is not None:
            shutil.rmtree(self._qmp_dir, ignore_errors=True)
            self._qmp_dir = None


def _qemu_complaint(stderr: str) -> str | None:
    """QEMU's own error line(s) about a state it could not load, as one line."""
    lines = [ln.split(": ", 1)[1] if ln.startswith(QEMU + ": ") else ln
             for ln in (x.strip() for x in stderr.splitlines()) if ln]
    text = "; ".join(ln for ln in lines if WAITING not in ln)
    return (text[:397] + "...") if len(text) > 400 else (text or None)
