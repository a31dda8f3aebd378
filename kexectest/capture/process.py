"""Commands kexectest runs on the user's behalf (power commands, ssh triggers): each in its own
session and process group, under a reaper (reaper.py), and killed whole at its timeout.

Why: a power command that hangs, or whose child leaves the process group and keeps its output
open, must not hold up a sweep past its timeout.  The reaper keeps every process the command
starts within reach, so `kill()` ends them all; and output is read only until the command
itself exits (plus a moment), never until the last child closes it.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

REAPER = Path(__file__).with_name("reaper.py")
DRAIN_S = 0.2  # after the command exits: read what it (or a child) still writes, this long
KILL_WAIT_S = 2.0  # the reaper's time to kill the tree before its process group is killed
OUTPUT_KEEP = 2048  # bytes of output kept (the end)


@dataclass
class Finished:
    returncode: int | None  # None: killed at the timeout
    seconds: float
    output: bytes  # the last OUTPUT_KEEP bytes of stdout+stderr (empty when sent to a file)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


class Command:
    """One running command.  `command`: a shell line (run by /bin/sh -c) or an argv list.
    `output`: a file to send stdout and stderr to; by default they are kept in memory (the end).
    """

    def __init__(self, command: str | Sequence[str], *, output: IO | None = None,
                 env: dict | None = None):
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        self.started = time.monotonic()
        self.tail = b""
        self.proc = subprocess.Popen(
            [sys.executable or "python3", "-I", "-S", str(REAPER), *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if output is None else output,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            env={**os.environ, **(env or {})})
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        """End the command and every process it started, whatever they did to detach."""
        if self.proc.poll() is not None:
            return
        self.killed = True
        try:
            os.kill(self.proc.pid, signal.SIGTERM)  # the reaper kills the tree, then exits
            self.proc.wait(KILL_WAIT_S)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass
        try:  # not reaped yet, so its process group id cannot have been reused
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def wait(self, timeout: float | None) -> Finished:
        """Until the command exits or `timeout` seconds have passed since it started (then it is
        killed whole); the output it wrote meanwhile is read as it comes."""
        deadline = None if timeout is None else self.started + timeout
        pipe = self.proc.stdout
        sel = selectors.DefaultSelector()
        exit_fd = _pidfd(self.proc.pid)
        if pipe is not None:
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ)
        drain_until = None
        try:
            while True:
                now = time.monotonic()
                if drain_until is None and self.proc.poll() is not None:
                    drain_until = now + DRAIN_S
                if drain_until is None and deadline is not None and now >= deadline:
                    self.kill()
                    drain_until = time.monotonic() + DRAIN_S
                if drain_until is not None and (pipe is None or pipe.closed
                                                or time.monotonic() >= drain_until):
                    break
                ends = [t for t in (deadline, drain_until) if t is not None]
                left = min(ends) - time.monotonic() if ends else 1.0
                left = max(0.0, min(left, 1.0 if exit_fd is not None else 0.05))
                for key, _ in sel.select(left):
                    if key.fileobj is pipe and not self._read(pipe):
                        sel.unregister(pipe)
                        pipe.close()
                    elif key.fileobj == exit_fd:
                        sel.unregister(exit_fd)
                        os.close(exit_fd)
                        exit_fd = None
        finally:
            sel.close()
            if exit_fd is not None:
                os.close(exit_fd)
            if pipe is not None and not pipe.closed:
                pipe.close()  # a child still holding the other end gets EPIPE, not us a wait
        rc = None if self.killed else self.proc.wait()
        return Finished(rc, time.monotonic() - self.started, self.tail)

    def _read(self, pipe) -> bool:
        """Read what the pipe has; False at its end."""
        try:
            data = os.read(pipe.fileno(), 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.tail = (self.tail + data)[-OUTPUT_KEEP:]
        return True


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the process exits (Linux 5.3+), else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def run(command: str | Sequence[str], timeout: float | None, env: dict | None = None) -> Finished:
    """Run a command to its end or its timeout (then it is killed whole)."""
    return Command(command, env=env).wait(timeout)
