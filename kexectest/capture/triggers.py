"""Driving the machine under test to its kexec: one interface (`Trigger`), one class per way --
log in and run a command over the serial console (pexpect), run it over ssh, or just listen.

A trigger takes the target up to the hand-off and arms the capture (`start`), is asked at every
wake-up of the capture loop whether it failed (`check`), and is ended with the run (`close`).
A new way (a BMC's virtual media, ...) is one more subclass.  `Push` and `SshPush` bring the
target agent and the payload with them (capture/push.py): nothing need be installed there.

Why pexpect over our own Port: every byte pexpect reads goes through `Capture.feed` first, so the
kernel's last words before the payload starts land in console.raw like everything else.  The
password is only ever sent to the port; the capture scrubs it should the target echo it.
"""

from __future__ import annotations

import abc
import getpass
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import pexpect
from pexpect.spawnbase import SpawnBase

from ..errors import Exit, KexectestError
from ..fsutil import os_error
from . import process, push
from .capture import WRITE_FAILED, Capture
from .transport import Port, SerialLost

Stage = Callable[[str], None]  # tells the user which stage the run is in

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
        if self.capture.feed(data) == WRITE_FAILED:
            raise self.capture.write_error
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
            spawn.capture.secret_sent()
            spawn.sendline(password)
            sent_password = True
        elif idx == 2:
            raise KexectestError(f"login incorrect for user {user!r}", Exit.LAB_STAGE)
        else:
            # a real prompt waits for input; a kernel line cut at "#" goes on.  What follows
            # may be a second prompt (a newline that was already waiting, a restored guest's):
            # a prompt again, then quiet, is as good
            more = b""
            while True:
                try:
                    more += spawn.read_nonblocking(spawn.maxread, timeout=PROMPT_QUIET_S)
                except pexpect.TIMEOUT:
                    if more and not prompt_re.search(more.replace(b"\r", b"")):
                        break
                    stage("shell prompt reached")
                    return
                if not prompt_re.search(more.replace(b"\r", b"")):
                    break
            spawn.buffer = spawn.buffer + more


def run_command(spawn: ConsoleSpawn, command: str, prompt: str) -> None:
    """Send the command that triggers kexec and hand over: it never returns on success.

    From here on the capture watches for the shell prompt coming back (the command failed)."""
    spawn.sendline(command)
    spawn.capture.arm()
    spawn.capture.watch_prompt(re.compile(prompt, re.M))


class Trigger(abc.ABC):
    """How the machine under test is made to kexec into the payload."""

    mode = "passive"  # environment.json's "mode"
    command: str | None = None  # the command line that starts the kexec on the target, if any
    # environment.json's "target_agent": what ran on the target -- "installed" (the target's
    # own kexectest or command), "pushed" (the Python agent we sent), "shell" (the shell
    # agent we sent), None (nothing we started)
    target_agent: str | None = None

    @abc.abstractmethod
    def start(self, port: Port, capture: Capture, stage: Stage) -> None:
        """Drive the target up to the hand-off and arm the capture.  KexectestError (with the
        stage's exit code) when the target cannot be driven; the capture keeps what came."""

    def check(self, capture: Capture) -> str | None:
        """Asked at every wake-up while capturing: a one-line failure of the trigger, or None."""
        return None

    def close(self) -> None:
        """End whatever the trigger started (always called, also after a failure)."""

    def environment(self) -> dict:
        """What the trigger adds to environment.json."""
        return {"target_agent": self.target_agent}


class Passive(Trigger):
    """Just listen: someone else starts the kexec (by hand, a cron job, a test harness)."""

    def start(self, port: Port, capture: Capture, stage: Stage) -> None:
        capture.arm()
        stage("listening")


class ConsoleLogin(Trigger):
    """Log in over the serial console and, with a command, type it there."""

    def __init__(self, *, user: str | None, password: str | None, prompt: str,
                 command: str | None, login_timeout: float):
        self.user, self.password, self.prompt = user, password, prompt
        self.command, self.login_timeout = command, login_timeout
        self.mode = "serial-command" if command else "serial-login"
        self.target_agent = "installed" if command else None

    def start(self, port: Port, capture: Capture, stage: Stage) -> None:
        spawn = ConsoleSpawn(port, capture)
        login(spawn, user=self.user, password=self.password, prompt=self.prompt,
              timeout=self.login_timeout, stage=stage)
        if self.command:
            run_command(spawn, self.command, self.prompt)
            stage("command sent; capturing")
        else:
            capture.arm()
            stage("listening")


class SshTrigger(Trigger):
    """Runs the command over `ssh -o BatchMode=yes` while the serial console is captured; ssh
    runs in its own session and is ended whole with the run."""

    mode = "ssh"
    target_agent = "installed"

    LOG_NAME = "ssh.log"  # in the run directory: ssh's and the command's output

    def __init__(self, host: str, command: str, options: list[str] = ()):
        self.host = host
        self.command = command
        self.options = list(options)  # more ssh options (-o Port=2222, -i KEY, ...)
        self.log_path: Path | None = None
        self.proc: process.Command | None = None
        self._log = None

    def start(self, port: Port, capture: Capture, stage: Stage) -> None:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise KexectestError("ssh not found: install openssh-client", Exit.MISSING_TOOL)
        self.log_path = capture.directory / self.LOG_NAME
        try:
            self._log = open(self.log_path, "wb")
        except OSError as exc:
            raise os_error(self.log_path, exc, "create") from None
        try:
            self.proc = process.Command(
                [ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *self.options, self.host,
                 self.command],
                output=self._log)
        except OSError as exc:
            raise KexectestError(f"cannot start ssh: {exc.strerror}", Exit.MISSING_TOOL) \
                from None
        capture.arm()
        stage(f"command started over ssh on {self.host}; capturing")

    def check(self, capture: Capture) -> str | None:
        """None while all is well; a one-line failure when ssh or the command failed."""
        if self.proc is None or capture.live.payload_started:
            return None
        code = self.proc.poll()
        if code is None:
            return None
        text = self.output_tail()
        if code == 0:
            return None
        if code == 255 and not SSH_FAILED_RE.search(text):
            return None  # the connection dropped: expected once the machine kexecs
        what = "ssh failed" if code == 255 else f"the command failed on {self.host} (exit {code})"
        return f"{what}: {text or '(no output)'}"

    def output_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            data = self.log_path.read_bytes()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in data.splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass


class Push(Trigger):
    """Log in over the serial console, push the target agent and the payload through it, and
    run them there: the target needs a shell and Python 3.6+ or kexec-tools, nothing else."""

    mode = "serial-push"

    def __init__(self, *, user: str | None, password: str | None, prompt: str,
                 login_timeout: float, payload: Path, via: str | None, options: dict,
                 agent: str = "auto"):
        self.user, self.password, self.prompt = user, password, prompt
        self.login_timeout = login_timeout
        self.payload, self.via, self.options, self.agent = payload, via, dict(options), agent
        self.stats: push.PushStats | None = None

    def start(self, port: Port, capture: Capture, stage: Stage) -> None:
        spawn = ConsoleSpawn(port, capture)
        login(spawn, user=self.user, password=self.password, prompt=self.prompt,
              timeout=self.login_timeout, stage=stage)
        pusher = push.ConsolePush(spawn, stage=stage)
        self.stats = pusher.stats
        tools = pusher.probe(push.need_kib(push.largest_files(self.payload)))
        plan, extra = push.plan_push(tools, self.payload, self.options, via=self.via,
                                     agent=self.agent)
        self.target_agent = "pushed" if plan.agent == "python" else "shell"
        pusher.start_receiver(tools)
        pusher.push(plan.files)
        stage(f"pushed {len(plan.files)} files to {tools.directory} in {self.stats.seconds:.1f} s")
        self.command = plan.command(tools, extra)
        # the receiver's shell prompt comes back first: from here on a prompt means the agent
        # failed, so it must be the one after the agent's command
        login(spawn, user=None, password=None, prompt=self.prompt, timeout=self.login_timeout)
        run_command(spawn, self.command, self.prompt)
        stage(f"{'Python' if plan.agent == 'python' else 'shell'} agent started; capturing")

    def environment(self) -> dict:
        return {"target_agent": self.target_agent,
                "push": self.stats.to_dict() if self.stats is not None else None}


class SshPush(Trigger):
    """The push over ssh: the files go over ssh's own channel and are checked on the target,
    then the agent runs there over ssh (as SshTrigger runs a command) while the serial console
    is captured."""

    mode = "ssh-push"

    def __init__(self, host: str, *, payload: Path, via: str | None, options: dict,
                 agent: str = "auto", ssh_options: list[str] = ()):
        self.host, self.payload, self.via, self.options = host, payload, via, dict(options)
        self.agent, self.ssh_options = agent, list(ssh_options)
        self.stats = push.PushStats()
        self.inner: SshTrigger | None = None

    def start(self, port: Port, capture: Capture, stage: Stage) -> None:
        stage(f"push: looking at {self.host} over ssh")
        tools = push.ssh_probe(self.host, self.ssh_options,
                               push.need_kib(push.largest_files(self.payload)))
        plan, extra = push.plan_push(tools, self.payload, self.options, via=self.via,
                                     agent=self.agent)
        self.target_agent = "pushed" if plan.agent == "python" else "shell"
        stage(f"push: {len(plan.files)} files over ssh to {tools.directory}")
        push.ssh_push(self.host, self.ssh_options, tools, plan.files, self.stats)
        self.command = plan.command(tools, extra)
        self.inner = SshTrigger(self.host, self.command, self.ssh_options)
        self.inner.start(port, capture, stage)

    def check(self, capture: Capture) -> str | None:
        return self.inner.check(capture) if self.inner is not None else None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def environment(self) -> dict:
        return {"target_agent": self.target_agent, "push": self.stats.to_dict()}
