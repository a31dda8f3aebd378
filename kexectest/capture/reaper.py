"""Runs one command as its reaper, so that the whole command can be killed: started by
capture/process.py as `python -I -S reaper.py ARGV...` (standard library only, nothing of
kexectest is imported).

Why a process of its own: a command's children may leave its process group and session
(setsid, a double fork) and keep its output open; killing the process group then misses them,
and their parent has already gone.  This process is a child subreaper (prctl
PR_SET_CHILD_SUBREAPER): every process the command starts, however it detaches, stays a
descendant of it, so SIGTERM here kills them all.  It exits with the command's status (128+N
for a signal), as soon as the command itself exits; it also kills everything when kexectest
dies (PR_SET_PDEATHSIG).
"""

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, ctypes.c_ulong(value), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _children() -> dict:
    """parent pid -> child pids, of every live process (zombies left out)."""
    kids: dict = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) < 2 or fields[0] in (b"Z", b"X"):
            continue
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def descendants(root: int) -> list:
    kids = _children()
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree() -> None:
    """SIGKILL every descendant until none is left (a child forked meanwhile is orphaned to
    this process when its parent dies, and found in the next round)."""
    me = os.getpid()
    for _ in range(200):
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.002)
        _reap()


def main(argv: list) -> None:
    parent = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))

    def stop(signum, frame):
        kill_tree()
        os._exit(128 + signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    if os.getppid() != parent:  # kexectest died before the death signal was set up
        stop(signal.SIGTERM, None)
    pid = os.fork()
    if pid == 0:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"{argv[0]}: {exc.strerror}\n".encode())
        os._exit(127)
    while True:
        try:
            got, status = os.wait()  # also reaps orphans handed to this process
        except ChildProcessError:
            os._exit(0)
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
