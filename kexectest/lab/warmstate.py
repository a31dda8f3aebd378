"""Warm starts: each machine shape boots once; later runs restore QEMU's saved state.

A lab run spends most of its time booting the same Linux to the same login prompt.  The first
run of a shape boots a builder QEMU to that prompt, stops it and saves its whole state (RAM,
CPUs, devices: SeaBIOS's POST work and Linux's boot are inside) with QEMU's own migration to a
file; every later run starts QEMU from that file and the collector logs in as on a cold boot.

What the saved machine must not hold, and why it is still the same experiment:
- no mounted 9p share (QEMU refuses to migrate one): the guest mounts the host's / at login
  (lab/image.py's `ATTACH`), so a cold boot and a restore take the same path from the login on;
- no connection on COM1: the state is saved with COM1 idle at getty's prompt and one newline
  waiting in the UART, which getty answers with a fresh prompt once the restored guest runs;
  until the collector connects the restored guest stays paused (qemu.Qemu.start_restored);
- the disks are attached snapshot=on, never written: their bytes are the same for every run;
- the guest's clock stood still while saved; the login's attach script sets it from the RTC.

A state is valid only for exactly the inputs that made it (`key_inputs`: QEMU's command line
less COM1's backend, the kernel, initrd and disk files, QEMU's binary and version, the firmware
blobs it loads).  Each is kept in `states/<key>/` beside the lab image with its size and
SHA-256 (checked on every restore, while QEMU loads it), built by one process at a time per key
(flock), pruned like the image cache.  Anything wrong with a state (another QEMU's, truncated,
corrupt, a disk full while saving it) is one line and a cold boot, never a wrong run.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from ..errors import KexectestError
from ..fsutil import NO_SPACE_ERRNOS, write_atomic
from . import image as lab_image
from .qemu import Qemu, RestoreError
from .qmp import QmpError

WARM_VERSION = 2  # bump when how a state is made changes: every saved state is then rebuilt
STATE_FILE, META_FILE, BOOT_LOG = "state.bin", "meta.json", "boot.log"
LOGIN_PROMPT = b"login: "
LINUX_BANNER = b"Linux version "
BOOT_TROUBLE = (b"Kernel panic - not syncing", LINUX_BANNER)  # a banner twice: it rebooted
QUIET_S = 1.0  # the login prompt, then this much silence: the boot has finished
BUILD_LIMIT_S = 240.0  # booting the builder to its prompt, under TCG on a loaded machine
MIN_FREE_BYTES = 64 * 1024 * 1024
MAX_AGE_DAYS = 14.0
FIRMWARE = ("bios-256k.bin", "bios.bin", "vgabios-stdvga.bin", "linuxboot_dma.bin",
            "linuxboot.bin", "kvmvapic.bin")  # what QEMU loads for the lab's pc/q35 guests


class Unusable(Exception):
    """No warm start this time (one line saying why); `damaged`: the saved state is at fault
    and is removed, so the next run saves a new one."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message)
        self.damaged = damaged


@dataclass
class Start:
    """How a lab machine was started, for the run's log line and environment.json."""

    kind: str  # "warm" | "cold"
    reason: str
    state: Path | None = None
    built: bool = False  # the state was saved by this run

    def line(self) -> str:
        if self.kind == "warm":
            return f"warm start: {self.reason}"
        return f"cold boot: {self.reason}"

    def environment(self) -> dict:
        return {"start": self.kind, "start_reason": self.reason,
                "warm_state": str(self.state) if self.state else None,
                "warm_state_saved_now": self.built}


# ---------------------------------------------------------------- what a state depends on


def states_root() -> Path:
    return lab_image.cache_root() / "states"


@lru_cache(maxsize=4)
def _qemu_identity(binary: str, size: int, mtime_ns: int) -> dict:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.splitlines()[0].strip() if out.stdout else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        version = "unknown"
    return {"binary": binary, "size": size, "mtime_ns": mtime_ns, "version": version}


def qemu_identity(binary: str) -> dict:
    st = os.stat(binary)
    return _qemu_identity(binary, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _search_dirs(binary: str) -> tuple[Path, ...]:
    """Where QEMU looks for firmware (`-L help`)."""
    try:
        out = subprocess.run([binary, "-L", "help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(Path(x.strip()) for x in out.stdout.splitlines() if x.strip())


def _firmware_file(binary: str, name: str) -> Path | None:
    for d in _search_dirs(binary):
        if (d / name).is_file():
            return d / name
    return None


@lru_cache(maxsize=4)
def _firmware(binary: str) -> dict:
    """SHA-256 of each firmware blob QEMU would load for the lab's guests."""
    found = {}
    for name in FIRMWARE:
        path = _firmware_file(binary, name)
        if path is not None:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def seabios_version(binary: str) -> str:
    """The SeaBIOS release inside the BIOS QEMU loads (e.g. 1.16.2-debian-1.16.2-1): the string
    its banner ("SeaBIOS (version %s)") and SMBIOS tables print."""
    for name in ("bios-256k.bin", "bios.bin"):
        path = _firmware_file(binary, name)
        if path is None:
            continue
        data = path.read_bytes()
        if b"SeaBIOS (version %s)" not in data:
            continue
        m = re.search(rb"\0(\d+\.\d+(?:\.\d+)?(?:-[\w.+~-]+)?)\0", data)
        if m:
            return m.group(1).decode("ascii", "replace")
    return "unknown"


def _file_id(path: Path) -> list:
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns]


def _file_id_or_none(path: Path) -> list | None:
    try:
        return _file_id(path)
    except OSError:
        return None


def key_inputs(q: Qemu) -> dict:
    """Everything that shapes a saved state of machine `q`."""
    argv = q.guest_argv()
    files = [p for p in (q.kernel, q.initrd, *q.disks, q.cdrom, q.firmware.bios,
                         q.firmware.vga_rom) if p is not None]
    inputs = {"warm": WARM_VERSION, "argv": argv, "files": [_file_id(Path(p)) for p in files],
              "qemu": qemu_identity(argv[0]), "firmware": _firmware(argv[0])}
    if q.accel == "kvm":  # KVM states carry the host CPU's features
        inputs["host_cpu"] = _host_cpu()
    return inputs


def _host_cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(keep).encode()).hexdigest()[:16]


def state_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _describe(q: Qemu) -> str:
    bus = f" on {q.disk_bus}" if q.disk_bus else ""
    return (f"{q.machine}, {q.memory_mib} MiB, {q.smp} CPU, {len(q.disks)} disk(s){bus}"
            + (f", {q.firmware.name}" if q.firmware.name != "seabios" else "")
            + (f", video {q.video}" if q.video else "")
            + (f", {q.keyboard} keyboard" if q.keyboard else ""))


# ---------------------------------------------------------------- a saved state on disk


class Saved:
    """One saved state, opened: its metadata and its file, both from the same directory
    (a state replaced meanwhile never mixes with this one), checked while QEMU loads it."""

    def __init__(self, path: Path):
        """Open the state's directory; FileNotFoundError when there is none."""
        self.path = path
        self.fd = -1
        self.meta: dict = {}
        self.size, self.sha256 = 0, ""
        self._hash: str | None = None
        self._thread: threading.Thread | None = None
        self.dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.ino = os.fstat(self.dirfd).st_ino

    def validate(self, inputs: dict) -> None:
        """Raise Unusable (damaged) unless this state was made for `inputs` and its file has
        the size it was saved with; the content is checked while QEMU loads it."""
        try:
            with open(os.open(META_FILE, os.O_RDONLY, dir_fd=self.dirfd), "rb") as f:
                self.meta = json.loads(f.read())
            size, digest = int(self.meta["size"]), str(self.meta["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            raise Unusable(f"saved state {self.path}: no readable {META_FILE}",
                           damaged=True) from None
        made = self.meta.get("inputs", {})
        if made != inputs:
            raise Unusable(f"saved state {self.path} was made for other inputs "
                           f"({_what_differs(made, inputs)})", damaged=True)
        try:
            self.fd = os.open(STATE_FILE, os.O_RDONLY, dir_fd=self.dirfd)
        except OSError as exc:
            raise Unusable(f"saved state {self.path}: {STATE_FILE} cannot be opened "
                           f"({exc.strerror})", damaged=True) from None
        have = os.fstat(self.fd).st_size
        if have != size:
            raise Unusable(f"saved state {self.path}: {STATE_FILE} is truncated ({have} bytes, "
                           f"{size} when saved)" if have < size else
                           f"saved state {self.path}: {STATE_FILE} has grown ({have} bytes, "
                           f"{size} when saved)", damaged=True)
        self.size, self.sha256 = size, digest
        try:
            os.utime(META_FILE, dir_fd=self.dirfd)  # last used: see prune()
        except OSError:
            pass

    def start_checking(self) -> None:
        """Hash the file in a thread (pread: QEMU reads the same descriptor meanwhile)."""
        def run():
            h = hashlib.sha256()
            off = 0
            while off < self.size:
                chunk = os.pread(self.fd, 1 << 20, off)
                if not chunk:
                    break
                h.update(chunk)
                off += len(chunk)
            self._hash = h.hexdigest()
        self._thread = threading.Thread(target=run, name="kt-state-sha256", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise RestoreError (damaged) unless the file's SHA-256 is the one saved."""
        if self._thread is not None:
            self._thread.join()
        if self._hash != self.sha256:
            raise RestoreError(f"{STATE_FILE} is corrupt (SHA-256 {(self._hash or '?')[:12]}..., "
                               f"{self.sha256[:12]}... when saved)", damaged=True)

    def same_directory(self) -> bool:
        """Is `path` still the directory opened here (not a state saved since)?"""
        try:
            return os.stat(self.path).st_ino == self.ino
        except OSError:
            return False

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        for fd in (self.fd, self.dirfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dirfd = -1


def _what_differs(made: dict, now: dict) -> str:
    if not isinstance(made, dict):
        return "no inputs recorded"
    keys = sorted(k for k in set(made) | set(now) if made.get(k) != now.get(k))
    parts = []
    for k in keys:
        if k == "qemu":
            parts.append(f"QEMU {(made.get('qemu') or {}).get('version', '?')!s}, "
                         f"this is {now['qemu'].get('version', '?')}")
        else:
            parts.append(k)
    return "; ".join(parts) or "?"


def _open_saved(path: Path) -> Saved | None:
    try:
        return Saved(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unusable(f"saved state {path} cannot be opened: {exc.strerror}") from None


@contextmanager
def _lock(path: Path, log):
    """One builder per key: the others wait here, then find its state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another run is saving this machine shape: waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _discard(saved: Saved, log) -> None:
    """Remove a damaged state (only if it is still the one judged: never a fresh rebuild)."""
    key = saved.path.name
    with _lock(saved.path.parent / f"{key}.lock", log):
        if saved.same_directory():
            trash = saved.path.parent / f".trash-{key}-{os.getpid()}-{time.time_ns()}"
            try:
                os.replace(saved.path, trash)
            except OSError:
                return
            shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------- saving one


def _read_until_prompt(sock: socket.socket, deadline: float, transcript: bytearray) -> None:
    """Read the builder's console until getty has printed its prompt and the console has
    been quiet for QUIET_S (a late kernel line is fine: the newline left in the UART makes
    getty print its prompt again).  A panic or a second boot ends the wait at once."""
    last = time.monotonic()
    while True:
        now = time.monotonic()
        prompted = LOGIN_PROMPT in transcript
        if prompted and now - last >= QUIET_S:
            return
        if now > deadline:
            raise Unusable(f"the machine did not reach its login prompt within "
                           f"{BUILD_LIMIT_S:.0f} s (last console line: {_tail(transcript)})")
        for trouble in BOOT_TROUBLE:
            if transcript.count(trouble) > (1 if trouble == LINUX_BANNER else 0):
                raise Unusable(f"the machine did not boot to its login prompt "
                               f"({trouble.decode()!r} on its console: {_tail(transcript)})")
        wait = QUIET_S - (now - last) if prompted else 1.0
        sock.settimeout(max(0.01, min(wait, deadline - now)))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            raise Unusable("the machine's console closed while it booted "
                           "(QEMU ended before the login prompt)")
        transcript += data
        last = time.monotonic()


def _tail(transcript: bytearray) -> str:
    lines = bytes(transcript[-400:]).decode("utf-8", "replace").replace("\r", "").split("\n")
    lines = [ln.strip() for ln in lines if ln.strip()]
    return lines[-1][:160] if lines else "(nothing)"


def _save(builder: Qemu, dest: Path) -> tuple[int, str]:
    """Migrate the stopped builder into `dest`; returns (size, sha256)."""
    mon = builder.monitor
    mon.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        mon.pass_fd(fd, "kt-state")
        mon.execute("migrate", uri="fd:kt-state")
        deadline = time.monotonic() + BUILD_LIMIT_S
        while True:
            status = mon.execute("query-migrate") or {}
            if status.get("status") == "completed":
                break
            if status.get("status") in ("failed", "cancelled"):
                why = status.get("error-desc") or status.get("status")
                # QEMU's words for a failed write; the file system's own answer is in fstatvfs
                if _full(fd, dest):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                raise Unusable(f"QEMU could not save the machine: {why}")
            if time.monotonic() > deadline:
                raise Unusable(f"saving the machine took longer than {BUILD_LIMIT_S:.0f} s")
            time.sleep(0.01)
        os.fsync(fd)
    finally:
        os.close(fd)
    h = hashlib.sha256()
    with open(dest, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return dest.stat().st_size, h.hexdigest()


def _full(fd: int, dest: Path) -> bool:
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


def build(q: Qemu, inputs: dict, path: Path) -> None:
    """Boot a machine shaped like `q` to its login prompt and save it as `path`."""
    root = path.parent
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise Unusable(f"only {free // 2**20} MiB free in {root}: no room to save the machine")
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    t0 = time.monotonic()
    try:
        transcript = bytearray()
        boot_s, size, digest = _boot_and_save(q, tmp, transcript, t0)
        meta = {"warm": WARM_VERSION, "key": path.name, "inputs": inputs, "size": size,
                "sha256": digest, "saved": datetime.now(timezone.utc).isoformat(),
                "boot_s": round(boot_s, 3), "save_s": round(time.monotonic() - t0 - boot_s, 3),
                "qemu_version": inputs["qemu"]["version"],
                "seabios_version": seabios_version(inputs["argv"][0])}
        write_atomic(tmp / BOOT_LOG, bytes(transcript))
        write_atomic(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)  # the state appears complete or not at all
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise Unusable(f"no space left in {root} while saving the machine") from None
        raise Unusable(f"cannot save the machine in {root}: {exc.strerror or exc}") from None
    except KexectestError as exc:  # fsutil's one line (a full disk is Exit.NO_SPACE)
        raise Unusable(f"cannot save the machine: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune(keep=path)


def _boot_and_save(q: Qemu, tmp: Path, transcript: bytearray, t0: float):
    """(boot seconds, size, sha256): a builder QEMU shaped like `q`, booted, saved to tmp."""
    builder = Qemu(**q.config, qmp=True, time_limit=BUILD_LIMIT_S + 60, out_dir=tmp)
    try:
        with builder:
            with socket.create_connection(("127.0.0.1", builder.port)) as sock:
                _read_until_prompt(sock, time.monotonic() + BUILD_LIMIT_S, transcript)
                boot_s = time.monotonic() - t0
                builder.monitor.execute("stop")
                # one newline waits in the UART: the restored getty answers it with a prompt
                sock.sendall(b"\n")
                time.sleep(0.1)
                # a monitor round trip after it: QEMU's main loop has read COM1's socket
                builder.monitor.execute("query-status")
                size, digest = _save(builder, tmp / STATE_FILE)
                builder.monitor.send("quit")
                builder.wait(30)
    except QmpError as exc:
        raise Unusable(f"QEMU's monitor failed while saving the machine: {exc}") from None
    except KexectestError as exc:  # QEMU did not start
        raise Unusable(f"the machine could not be booted to save it: {exc}") from None
    return boot_s, size, digest


def prune(keep: Path | None = None, max_age_days: float = MAX_AGE_DAYS) -> None:
    """Drop states not used for a while, states of images that are gone, and leftovers of
    builders that were killed."""
    root = states_root()
    cutoff = time.time() - max_age_days * 86400
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry == keep:
            continue
        try:
            if re.fullmatch(r"[0-9a-f]{16}", entry.name):
                meta = entry / META_FILE
                gone = False
                try:
                    files = json.loads(meta.read_text())["inputs"]["files"]
                    gone = any(_file_id_or_none(Path(f[0])) != f for f in files)
                except (OSError, ValueError, KeyError, TypeError, IndexError):
                    gone = meta.stat().st_mtime < time.time() - 86400
                if gone or meta.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith((".build-", ".trash-")):
                if entry.stat().st_mtime < time.time() - 86400:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.suffix == ".lock" and not (root / entry.stem).exists():
                if entry.stat().st_mtime < cutoff:
                    entry.unlink(missing_ok=True)
        except OSError:
            continue


# ---------------------------------------------------------------- starting a machine


def launch(q: Qemu, *, cold: bool = False, log=None) -> Start:
    """Start `q` (not yet started): restored from its shape's saved state, saving that state
    first when there is none, or booted cold (`cold`, or when no state can be used).  Returns
    how it started; QEMU is then listening on `q.serial_url` either way."""
    log = log or (lambda msg: None)
    if cold:
        q.start()
        return Start("cold", "--cold: a full boot was asked for")
    inputs = key_inputs(q)
    path = states_root() / state_key(inputs)
    built = False
    saved = None
    try:
        saved = _open_saved(path)
        if saved is None:
            with _lock(path.parent / f"{path.name}.lock", log):
                saved = _open_saved(path)  # another run may have saved it meanwhile
                if saved is None:
                    log(f"no saved state for this machine shape ({_describe(q)}) yet: "
                        "booting it once to save it")
                    t0 = time.monotonic()
                    build(q, inputs, path)
                    built = True
                    saved = _open_saved(path)
                    if saved is None:
                        raise Unusable(f"saved state {path} vanished right after saving")
                    log(f"saved the booted machine in {path} "
                        f"({_size(path) / 1e6:.0f} MB, "
                        f"{time.monotonic() - t0:.1f} s)")
        saved.validate(inputs)
        saved.start_checking()
        q.start_restored(saved.fd, check=saved.check)
    except (Unusable, RestoreError) as exc:
        reason = str(exc) if isinstance(exc, Unusable) else f"saved state {path}: {exc}"
        if exc.damaged and saved is not None:
            saved.close()
            _discard(saved, log)
            reason += "; removed, the next run saves it again"
        elif saved is not None:
            saved.close()
        q.start()
        return Start("cold", reason)
    saved.close()
    when = str(saved.meta.get("saved", ""))[:19].replace("T", " ")
    return Start("warm", f"restored {_describe(q)} from {path} (saved {when} UTC)", path, built)


def _size(path: Path) -> int:
    try:
        return (path / STATE_FILE).stat().st_size
    except OSError:
        return 0
