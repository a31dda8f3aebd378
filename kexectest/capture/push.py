"""Pushing the target agent and the payload to the machine under test: through its serial
console (the protocol of target/receiver.py, docs/target-agent.md), or over ssh.

The console path types a probe (a directory the files fit in, the tools there), the receiver,
then the files as checksummed base64 chunks with a window small enough for a line without flow
control (the target's tty holds 4 KiB); a chunk the target finds damaged or missing is sent
again from there, a file the target finds damaged whole is sent again from its start.  Every
byte read goes through the capture (console.raw keeps the whole dialogue).  What went across
is counted (`PushStats`) for environment.json and bench_lab.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pexpect

from ..errors import Exit, KexectestError
from ..payload.options import config_argv, config_kwargs
from ..target import pack, receiver
from ..target.load import prepare
from ..target.shell import AGENT_NAME as SHELL_AGENT_NAME
from .transport import SerialLost

WINDOW_BYTES = 3072  # unacknowledged bytes on the wire at most (the target's tty holds 4 KiB)
REPLY_TIMEOUT_S = 8.0  # no reply for this long while chunks are out: send again from the first
STALLS = 4  # ... and this many times in a row without progress: the push failed
CHUNK_SENDS = 8  # a chunk sent this often and never received intact: the console is too bad
FILE_TRIES = 3  # a file the target finds damaged whole is sent again this often
PROBE_TIMEOUT_S = 30.0
RECEIVER_TRIES = 3
AGENTS = ("auto", "python", "shell")
FILE_HASHES = ("sha256sum", "md5sum")  # the whole file's check, in order of preference
CHUNK_HASHES = ("md5sum", "sha256sum")


@dataclass
class PushFile:
    name: str
    data: bytes


@dataclass
class PushStats:
    """What a push moved: file bytes, bytes sent on the wire (typed commands included), chunks
    sent again, seconds from the probe to the last file in place."""

    files: dict = field(default_factory=dict)  # name -> bytes
    file_bytes: int = 0
    wire_bytes: int = 0
    chunks: int = 0
    resent_chunks: int = 0
    resent_files: int = 0
    reused_files: int = 0  # already on the target with the right hash (a push resumed)
    resumed_chunks: int = 0
    compressed: bool = False
    seconds: float = 0.0
    directory: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TargetTools:
    """The probe's answer."""

    directory: str
    uid: str
    python: str | None
    python_version: str | None
    kexec: str | None
    have: list

    def has(self, tool: str) -> bool:
        return tool in self.have


@dataclass
class Plan:
    """What is pushed and the command line that runs it."""

    agent: str  # "python" or "shell"
    files: list
    via: str

    def command(self, tools: TargetTools, extra_argv: list) -> str:
        d = tools.directory
        hashtool = next(t for t in FILE_HASHES if tools.has(t))
        sums = " ".join(f'"{receiver.digest(hashtool, f.data)}  {f.name}"' for f in self.files)
        check = (f'cd "$1" || exit {int(Exit.BAD_INPUT)}; printf "%s\\n" {sums} | '
                 f"{hashtool} -c >/dev/null 2>&1 || {{ echo \"kexectest: error: the pushed files "
                 f"fail their {hashtool} check: not run\" >&2; exit {int(Exit.BAD_INPUT)}; }}; "
                 # the push's directory took the files, so it takes the agent's scratch files
                 'PATH="$PATH:/sbin:/usr/sbin"; TMPDIR="$1"; export PATH TMPDIR; ')
        argv = ["load", pack.PAYLOAD_NAME, "--via", self.via, "--exec", "--yes", *extra_argv]
        if self.agent == "python":
            run = f"exec {shlex.quote(tools.python)} -S -E {pack.AGENT_NAME} {shlex.join(argv)}"
        else:
            run = f"exec sh {SHELL_AGENT_NAME} {shlex.join(argv)}"
        script = (check + run).replace("'", "'\"'\"'")
        return f"sh -c '{script}' kt {shlex.quote(d)}"


# the loaders only the Python agent has (the shell agent loads the ELF through kexec-tools);
# "real-mode" is kexec-tools-bzimage with --real-mode
REAL_MODE = "real-mode"
PYTHON_VIAS = ("syscall", "file", "kexec-tools-bzimage", REAL_MODE)


def plan_push(tools: TargetTools, payload: Path, options: dict, *, via: str | None,
              agent: str = "auto") -> tuple[Plan, list]:
    """The agent this target can run, its files, and the extra load arguments: the Python agent
    where there is a Python 3.6+ (it patches the payload itself), else the shell agent with a
    payload patched here (it needs kexec-tools)."""
    if agent not in AGENTS:
        raise KexectestError(f"push agent must be one of {', '.join(AGENTS)}, not {agent!r}",
                             Exit.USAGE)
    if agent == "auto":
        agent = "python" if tools.python else "shell"
    if agent == "python" and not tools.python:
        raise KexectestError("the target has no Python 3.6 or later (python3 -V) for the "
                             "pushed Python agent", Exit.MISSING_TOOL)
    if agent == "shell":
        if not tools.kexec:
            raise KexectestError(
                "the target has neither Python 3.6 or later (python3) nor kexec-tools (kexec): "
                "nothing there can load the payload" if not tools.python else
                "the target has no kexec-tools ('kexec' not found), which the shell agent "
                "needs", Exit.MISSING_TOOL)
        if via in PYTHON_VIAS:
            if tools.python:
                raise KexectestError("the shell agent loads through kexec-tools only: --via "
                                     "kexec-tools, or the Python agent", Exit.USAGE)
            raise KexectestError(f"the target has no Python 3.6 or later for --via {via}; "
                                 "its kexec-tools can load the payload (--via kexec-tools)",
                                 Exit.MISSING_TOOL)
        from ..target.shell import shell_agent_source

        files = [PushFile(SHELL_AGENT_NAME, shell_agent_source().encode()),
                 PushFile(pack.PAYLOAD_NAME, prepare(payload, options).data)]
        return Plan("shell", files, "kexec-tools"), []
    # the options go to the agent, which patches the payload there (a bad one is its refusal,
    # reported as the command's failure, as with an installed kexectest)
    files = [PushFile(pack.AGENT_NAME, pack.agent_source().encode()),
             PushFile(pack.PAYLOAD_NAME, payload.read_bytes())]
    extra = config_argv(config_kwargs(options))
    if via == REAL_MODE:  # the lab's name for kexec-tools' bzImage loader entering setup
        return Plan("python", files, "kexec-tools-bzimage"), ["--real-mode", *extra]
    return Plan("python", files, via or "syscall"), extra


def largest_files(payload: Path) -> list:
    """The bigger of the two pushes (the Python agent's), to ask the target for room once."""
    return [PushFile(pack.AGENT_NAME, pack.agent_source().encode()),
            PushFile(pack.PAYLOAD_NAME, payload.read_bytes())]


def need_kib(files) -> int:
    """Room the push takes on the target: each file, its base64 while it arrives, a margin."""
    return sum(len(f.data) * 7 // 3 for f in files) // 1024 + 64


# ---------------------------------------------------------------------------------------------
# through the console


class ConsolePush:
    """The collector's side of the console protocol, over a logged-in ConsoleSpawn."""

    def __init__(self, spawn, *, stage=lambda text: None, reply_timeout: float = REPLY_TIMEOUT_S):
        self.spawn = spawn
        self.stage = stage
        self.reply_timeout = reply_timeout
        self.stats = PushStats()
        self._buf = bytes(spawn.buffer or b"")
        spawn.buffer = b""
        self._t0 = time.monotonic()

    # -- talking --------------------------------------------------------------------------------

    def _send(self, text: str) -> None:
        data = text.encode("ascii")
        self.stats.wire_bytes += len(data)
        try:
            self.spawn.send(data)
        except SerialLost as exc:
            raise KexectestError(f"console lost during the push: {exc}", Exit.SERIAL) from None

    def _line(self, text: str) -> None:
        self._send(text + "\n")

    def _replies(self, timeout: float):
        """Reply lines (kind, words) that arrive within `timeout`; stops at the first quiet
        `timeout`.  Other lines (echo, kernel messages) are read and left to the capture."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                m = re.search(rb"[\r\n]", self._buf)
                if m is None:
                    break
                raw, self._buf = self._buf[:m.start()], self._buf[m.end():]
                got = receiver.parse_reply(raw.decode("ascii", "replace"))
                if got is not None:
                    yield got
                    deadline = time.monotonic() + timeout
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self._buf += self.spawn.read_nonblocking(4096, timeout=min(left, 0.5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF as exc:
                raise KexectestError(f"console lost during the push: {exc}", Exit.SERIAL) from None

    def _expect(self, kinds, timeout: float, what: str):
        for kind, words in self._replies(timeout):
            if kind in kinds:
                return kind, words
        raise KexectestError(f"no answer from the target's shell to the push's {what} within "
                             f"{timeout:g} s (last console line: {self._tail()})",
                             Exit.LAB_STAGE)

    def _tail(self) -> str:
        text = self._buf.decode("utf-8", "replace")
        lines = [ln.strip() for ln in re.split(r"[\r\n]", text) if ln.strip()]
        return lines[-1][:120] if lines else "(nothing)"

    # -- the steps ------------------------------------------------------------------------------

    def probe(self, need: int) -> TargetTools:
        self.stage("push: looking at the target")
        self._line(receiver.probe_dir_command(need))
        self._line(receiver.probe_tools_command())
        directory = tools = None
        for kind, words in self._replies(PROBE_TIMEOUT_S):
            if kind == "dir":
                directory = words[0]
            elif kind == "nodir":
                reasons = "; ".join(w for w in words[0].split(";") if w) or "no candidate"
                raise KexectestError(f"no directory on the target can take the push "
                                     f"({need} KiB): {reasons}", Exit.NO_SPACE)
            elif kind == "tools":
                tools = receiver.parse_tools(words)
            if directory is not None and tools is not None:
                break
        if directory is None or tools is None:
            raise KexectestError(f"no answer from the target's shell to the push's probe within "
                                 f"{PROBE_TIMEOUT_S:g} s (last console line: {self._tail()})",
                                 Exit.LAB_STAGE)
        found = TargetTools(directory, tools.get("uid", ""), tools.get("python") or None,
                            tools.get("pyver") or None, tools.get("kexec") or None,
                            tools["have"])
        self.stats.directory = directory
        for need_tool, why in (("base64", "decode the push"),):
            if not found.has(need_tool):
                raise KexectestError(f"the target has no {need_tool} to {why} (coreutils or "
                                     "busybox provides it)", Exit.MISSING_TOOL)
        if not any(found.has(t) for t in CHUNK_HASHES):
            raise KexectestError("the target has neither md5sum nor sha256sum: a push cannot "
                                 "be checked there", Exit.MISSING_TOOL)
        return found

    def start_receiver(self, tools: TargetTools) -> None:
        chunk_tool = next(t for t in CHUNK_HASHES if tools.has(t))
        file_tool = next(t for t in FILE_HASHES if tools.has(t))
        self.chunk_tool, self.file_tool = chunk_tool, file_tool
        self.compress = tools.has("gzip")
        self.stats.compressed = self.compress
        d = tools.directory
        body = receiver.receiver_text()
        for attempt in range(RECEIVER_TRIES):
            self.stage("push: starting the receiver")
            self._line(receiver.writer_command(f"{d}/{receiver.RECEIVER_NAME}"))
            for ln in body.splitlines():
                self._line(ln)
            self._line(receiver.END_LINE)
            self._line(receiver.start_command(d, chunk_tool, file_tool))
            kind, words = self._expect(("ready", "recv"), 20.0, "receiver")
            if kind == "ready":
                return
            self._send("\x03")  # whatever holds the console now
            time.sleep(0.5)
        raise KexectestError("the console damaged the push's receiver every time it was typed "
                             f"({RECEIVER_TRIES} tries): not run", Exit.SERIAL)

    def send_file(self, f: PushFile) -> None:
        chunks = receiver.encode_file(f.data, self.compress)
        whole = receiver.digest(self.file_tool, f.data)
        self.stats.files[f.name] = len(f.data)
        self.stats.file_bytes += len(f.data)
        lines = [receiver.chunk_frame(i, c, self.chunk_tool) + "\n" for i, c in enumerate(chunks)]
        for attempt in range(FILE_TRIES):
            self.stage(f"push: {f.name} ({len(f.data)} bytes, {len(chunks)} chunks)")
            self._line(receiver.file_frame(f.name, len(chunks), whole, self.compress))
            kind, words = self._expect(("have", "from", "fail", "broken"), 20.0,
                                       f"{f.name} header")
            if kind == "have":
                self.stats.reused_files += 1
                return
            if kind == "fail":
                raise KexectestError(f"push of {f.name} failed on the target: "
                                     f"{words[0].split(' ', 1)[-1]}", Exit.NO_SPACE)
            start = int(words[1]) if kind == "from" else 0
            self.stats.resumed_chunks += start
            outcome = self._stream(f.name, lines, start)
            if outcome == "done":
                return
            self.stats.resent_files += 1
        raise KexectestError(f"the target found {f.name} damaged after {FILE_TRIES} whole "
                             "pushes: the console corrupts it in a way the chunk checks miss",
                             Exit.SERIAL)

    def _stream(self, name: str, lines: list, start: int) -> str:
        """Go-back-N over the chunks from `start`; "done" or "broken"."""
        base = nxt = start
        stalls = 0
        sends = [0] * len(lines)
        while True:
            while nxt < len(lines) and (nxt == base or sum(
                    len(lines[i]) for i in range(base, nxt + 1)) <= WINDOW_BYTES):
                if sends[nxt] >= CHUNK_SENDS:
                    raise KexectestError(
                        f"the console damages the push: chunk {nxt} of {len(lines)} of {name} "
                        f"was sent {CHUNK_SENDS} times and never arrived intact (a noisy line, a "
                        "console that rewrites bytes, or input lost without flow control)",
                        Exit.SERIAL)
                self._send(lines[nxt])
                self.stats.chunks += 1
                if sends[nxt]:
                    self.stats.resent_chunks += 1
                sends[nxt] += 1
                nxt += 1
            progressed = False
            for kind, words in self._replies(self.reply_timeout):
                if kind == "ok":
                    if words[0] + 1 > base:
                        base = words[0] + 1
                        progressed = True
                elif kind == "want":
                    want = words[0]
                    if want >= base:
                        base = want
                    nxt = base
                    progressed = True
                elif kind == "done":
                    self.stats.seconds = round(time.monotonic() - self._t0, 3)
                    return "done"
                elif kind == "broken":
                    return "broken"
                elif kind == "fail":
                    raise KexectestError(f"push of {name} failed on the target: "
                                         f"{words[0].split(' ', 1)[-1]}", Exit.NO_SPACE)
                if progressed and (nxt < len(lines) or base >= len(lines)):
                    break
            if progressed:
                stalls = 0
                continue
            stalls += 1
            if stalls >= STALLS:
                raise KexectestError(
                    f"the target stopped answering during the push of {name} (chunk {base} of "
                    f"{len(lines)}): no reply in {self.reply_timeout * STALLS:g} s (last console "
                    f"line: {self._tail()})", Exit.LAB_STAGE)
            nxt = base  # nothing came back: send again from the first unacknowledged

    def finish(self) -> None:
        self._line(receiver.QUIT_FRAME)
        self._expect(("bye",), 20.0, "end")
        self.stats.seconds = round(time.monotonic() - self._t0, 3)
        self.spawn.buffer = self._buf + (self.spawn.buffer or b"")  # what follows: the prompt
        self._buf = b""

    def push(self, files: list) -> None:
        for f in files:
            self.send_file(f)
        self.finish()


# ---------------------------------------------------------------------------------------------
# over ssh


def _ssh(host: str, options: list, remote: str, *, data: bytes | None = None,
         timeout: float = 60.0) -> subprocess.CompletedProcess:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise KexectestError("ssh not found: install openssh-client", Exit.MISSING_TOOL)
    argv = [ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *options, host, remote]
    try:
        return subprocess.run(argv, input=data if data is not None else b"", capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KexectestError(f"ssh {host}: no answer within {timeout:g} s", Exit.LAB_STAGE) \
            from None


def _ssh_failed(host: str, proc) -> KexectestError:
    text = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return KexectestError(f"ssh failed: {text[-1] if text else f'exit {proc.returncode}'}",
                          Exit.TARGET_COMMAND)


def ssh_probe(host: str, options: list, need: int) -> TargetTools:
    proc = _ssh(host, options, receiver.probe_dir_command(need) + "; "
                + receiver.probe_tools_command())
    if proc.returncode == 255:
        raise _ssh_failed(host, proc)
    out = proc.stdout.decode("utf-8", "replace").splitlines()
    directory = tools = None
    for line in out:
        got = receiver.parse_reply(line)
        if got is None:
            continue
        kind, words = got
        if kind == "dir":
            directory = words[0]
        elif kind == "nodir":
            reasons = "; ".join(w for w in words[0].split(";") if w)
            raise KexectestError(f"no directory on the target can take the push ({need} KiB): "
                                 f"{reasons}", Exit.NO_SPACE)
        elif kind == "tools":
            tools = receiver.parse_tools(words)
    if directory is None or tools is None:
        raise KexectestError(f"the push's probe over ssh {host} gave no answer (exit "
                             f"{proc.returncode})", Exit.TARGET_COMMAND)
    return TargetTools(directory, tools.get("uid", ""), tools.get("python") or None,
                       tools.get("pyver") or None, tools.get("kexec") or None, tools["have"])


def ssh_push(host: str, options: list, tools: TargetTools, files: list,
             stats: PushStats) -> None:
    """Each file over ssh's own channel (`cat` on the target: no sftp or scp needed there),
    checked there with its sha256 before it is renamed into place."""
    t0 = time.monotonic()
    file_tool = next((t for t in FILE_HASHES if tools.has(t)), None)
    if file_tool is None:
        raise KexectestError("the target has neither sha256sum nor md5sum: a push cannot be "
                             "checked there", Exit.MISSING_TOOL)
    stats.directory = tools.directory
    for f in files:
        part = f"{tools.directory}/.{f.name}.part"
        final = f"{tools.directory}/{f.name}"
        want = receiver.digest(file_tool, f.data)
        remote = (f"cat >{shlex.quote(part)} && s=$({file_tool} <{shlex.quote(part)}) && "
                  f"[ \"${{s%% *}}\" = {want} ] && mv -f {shlex.quote(part)} {shlex.quote(final)}"
                  f" && echo pushed")
        proc = _ssh(host, options, remote, data=f.data)
        if proc.returncode == 255:
            raise _ssh_failed(host, proc)
        if b"pushed" not in proc.stdout:
            err = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise KexectestError(f"push of {f.name} over ssh failed on the target: "
                                 f"{err[-1] if err else 'its hash did not match'}",
                                 Exit.NO_SPACE if err and "space" in err[-1] else
                                 Exit.TARGET_COMMAND)
        stats.files[f.name] = len(f.data)
        stats.file_bytes += len(f.data)
        stats.wire_bytes += len(f.data)
    stats.seconds = round(time.monotonic() - t0, 3)
