"""Driving the machine under test: log in and run a command over the serial console (pexpect),
run it over ssh, or just listen.

Why pexpect over our own Port: every byte pexpect reads goes through `Capture.feed` first, so the
kernel's last words before the payload starts land in console.raw like everything else.  The
password is only ever sent to the port; the capture scrubs it should the target echo it.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import time
from pathlib import Path

import pexpect
from pexpect.spawnbase import SpawnBase

from ..errors import Exit, KexectestError
from .capture import Capture
from .transport import Port, SerialLost

LOGIN_RE = re.compile(rb"(?<![Ll]ast )(?<![Ll]ast  )login: *\Z")
PASSWORD_RE = re.compile(rb"[Pp]assword: *\Z")
INCORRECT_RE = re.compile(rb"Login incorrect|Authentication failure|Permission denied")
PROMPT_QUIET_S = 0.3
SSH_FAILED_RE = re.compile(r"Connection refused|Permission denied|Could not resolve|No route to "
                           r"host|Connection timed out|Host key verification failed|port \d+: ")


class ConsoleSpawn(SpawnBase):
    """pexpect bound to a Port of any pyserial URL; reads also feed the capture."""

    def __init__(self, port: Port, capture: Capture, timeout: float = 30):
        super().__init__(timeout=timeout, maxread=4096, encoding=None)
        self.port = port
        self.capture = capture
        self.child_fd = port.fd if port.fd is not None else -1
        self.closed = False
        self.delaybeforesend = None
        self.delayafterread = None
        self.name = f"<console {port.settings.url}>"

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> bytes:
        if timeout == -1:
            timeout = self.timeout
        try:
            data = self.port.wait_read(timeout, max(size, 1))
        except SerialLost as exc:
            self.flag_eof = True
            raise pexpect.EOF(str(exc)) from None
        if not data:
            raise pexpect.TIMEOUT("no data from the console")
        self.capture.feed(data)
        self._log(data, "read")
        return data

    def send(self, s) -> int:
        data = self._coerce_send_string(s)
        self.port.write(data)
        return len(data)

    def sendline(self, s="") -> int:
        return self.send(self._coerce_send_string(s) + b"\n")

    def isalive(self) -> bool:
        return not self.flag_eof


def resolve_password(password_env: str | None, login: str | None, interactive: bool) -> str | None:
    """The login password: from the named environment variable, else a prompt (never argv)."""
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise KexectestError(f"environment variable {password_env} (--password-env) is not set",
                                 Exit.USAGE)
        return value
    if login and interactive:
        try:
            return getpass.getpass(f"password for {login} on the target (empty for none): ") or None
        except (EOFError, OSError):
            return None
    return None


def _tail_text(spawn: ConsoleSpawn) -> str:
    text = (spawn.before or b"")[-300:].decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else "(nothing)"


def login(spawn: ConsoleSpawn, *, user: str | None, password: str | None, prompt: str,
          timeout: float, stage=lambda text: None) -> None:
    """Reach a shell prompt: newline on silence, answer login:/Password:, detect failures."""
    prompt_re = re.compile(prompt.encode("utf-8"), re.M)
    patterns = [LOGIN_RE, PASSWORD_RE, INCORRECT_RE, prompt_re]
    deadline = time.monotonic() + timeout
    sent_user = sent_password = False
    stage("waiting for the login prompt" if user else "waiting for the shell prompt")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if sent_user or not user:
                raise KexectestError(f"no shell prompt matching {prompt!r} within {timeout:g} s "
                                     f"(last console line: {_tail_text(spawn)})", Exit.LAB_STAGE)
            raise KexectestError(f"no login prompt on the console within {timeout:g} s "
                                 f"(last console line: {_tail_text(spawn)})", Exit.LAB_STAGE)
        try:
            idx = spawn.expect(patterns, timeout=min(3.0, left))
        except pexpect.TIMEOUT:
            spawn.sendline("")  # wake a getty or a shell that printed before we listened
            continue
        except pexpect.EOF as exc:
            raise KexectestError(f"console lost while logging in: {exc}", Exit.SERIAL) from None
        if idx == 0:
            if not user:
                raise KexectestError("the target asks for a login: pass --login USER",
                                     Exit.LAB_STAGE)
            if sent_user and sent_password:
                raise KexectestError(f"login incorrect for user {user!r}", Exit.LAB_STAGE)
            stage(f"logging in as {user}")
            spawn.sendline(user)
            sent_user, sent_password = True, False
        elif idx == 1:
            if password is None:
                raise KexectestError("the target asks for a password: set one with "
                                     "--password-env VAR", Exit.LAB_STAGE)
            spawn.sendline(password)
            sent_password = True
        elif idx == 2:
            raise KexectestError(f"login incorrect for user {user!r}", Exit.LAB_STAGE)
        else:
            try:  # a real prompt waits for input; a kernel line cut at "#" goes on
                more = spawn.read_nonblocking(spawn.maxread, timeout=PROMPT_QUIET_S)
            except pexpect.TIMEOUT:
                stage("shell prompt reached")
                return
            spawn.buffer = spawn.buffer + more


def run_command(spawn: ConsoleSpawn, command: str, prompt: str) -> None:
    """Send the command that triggers kexec and hand over: it never returns on success.

    From here on the capture watches for the shell prompt coming back (the command failed)."""
    spawn.sendline(command)
    spawn.capture.arm()
    spawn.capture.watch_prompt(re.compile(prompt, re.M))


class SshTrigger:
    """Runs the command over `ssh -o BatchMode=yes` while the serial console is captured."""

    def __init__(self, host: str, command: str, log_path: Path):
        self.host = host
        self.command = command
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", self.host,
                 self.command], stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT)
        except FileNotFoundError:
            self._log.close()
            raise KexectestError("ssh not found: install openssh-client", Exit.MISSING_TOOL) \
                from None

    def check(self, payload_started: bool) -> str | None:
        """None while all is well; a one-line failure when ssh or the command failed."""
        if self.proc is None or self.proc.poll() is None or payload_started:
            return None
        code = self.proc.returncode
        text = self.output_tail()
        if code == 0:
            return None
        if code == 255 and not SSH_FAILED_RE.search(text):
            return None  # the connection dropped: expected once the machine kexecs
        what = "ssh failed" if code == 255 else f"the command failed on {self.host} (exit {code})"
        return f"{what}: {text or '(no output)'}"

    def output_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in data.splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
