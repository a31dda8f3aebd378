"""One run end to end: open the console, drive the target, capture, analyse, write the bundle.

Used by `kexectest run` and `kexectest lab run`.  Whatever happens after the console is open
(stage failure, Ctrl-C, console lost, payload hang, a full disk) the bundle is written -- as far
as the disk allows -- before returning or raising, so there is always something to attach to a
bug report.
"""

from __future__ import annotations

import dataclasses
import platform
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from .. import __version__
from ..analysis.model import Analysis
from ..analysis.replay import analyze_capture
from ..errors import VERDICT_EXIT, Exit, KexectestError
from ..fsutil import internal_error
from ..output import bundle, live, report
from . import triggers
from .capture import LOG_NAME, Capture, read_log
from .follower import Follower
from .transport import SerialSettings, open_port

# capture stop reason -> analysis stop_reason (analysis/model.py StopReason): a time limit cuts
# a capture short (no measured hang); a stage or trigger failure is an infrastructure error
_ANALYSIS_REASON = {"final": "final", "reset": "reset", "timeout": "timeout",
                    "max-time": "max-time", "eof": "eof", "lost": "lost",
                    "interrupted": "interrupted", "command-failed": "command-failed",
                    "stage-failed": "stage-failed"}


@dataclass(kw_only=True)
class RunOptions:
    serial_url: str
    baud: int = 115200
    parity: str = "N"
    rtscts: bool = False
    xonxoff: bool = False
    login: str | None = None
    password_env: str | None = None
    password: str | None = field(default=None, repr=False)  # programmatic (lab); never argv
    prompt: str = r"[#$] ?$"
    command: str | None = None
    ssh: str | None = None
    ssh_options: list[str] = field(default_factory=list)  # more ssh options (-o Port=2222)
    # --push: send the target agent and the payload (capture/push.py) instead of a command
    push: bool = False
    push_agent: str = "auto"  # auto | python | shell
    via: str | None = None  # the pushed agent's loader; None: syscall where Python is
    load_options: dict = field(default_factory=dict)  # payload options for the pushed agent
    timeout: float = 60.0
    overall_timeout: float | None = None
    login_timeout: float = 120.0
    out_dir: Path = Path("kexectest-runs")
    payload_elf: Path | None = None
    redact: bool = False
    quiet: bool = False
    json_output: bool = False
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))
    qemu_stderr: Path | None = None
    extra_environment: dict = field(default_factory=dict)


@dataclass
class SessionResult:
    verdict: str
    exit_code: int
    bundle_dir: Path
    tarball: Path
    analysis: Analysis
    stop_reason: str = ""
    error: str | None = None
    timings: dict = field(default_factory=dict)


def make_trigger(opts: RunOptions, password: str | None) -> triggers.Trigger:
    """The trigger the options ask for: a push (over ssh or the console), ssh, the console
    (login and/or command), or passive."""
    if opts.push:
        if opts.command:
            raise KexectestError("--push runs the pushed agent itself: leave out --command (the "
                                 "load options go to `kexectest run` directly)", Exit.USAGE)
        common = dict(payload=opts.payload_elf, via=opts.via, options=opts.load_options,
                      agent=opts.push_agent)
        if opts.ssh:
            return triggers.SshPush(opts.ssh, ssh_options=opts.ssh_options, **common)
        return triggers.Push(user=opts.login, password=password, prompt=opts.prompt,
                             login_timeout=opts.login_timeout, **common)
    if opts.ssh:
        if not opts.command:
            raise KexectestError("--ssh needs --command (what to run on the target)", Exit.USAGE)
        return triggers.SshTrigger(opts.ssh, opts.command, opts.ssh_options)
    if opts.login or opts.command:
        return triggers.ConsoleLogin(user=opts.login, password=password, prompt=opts.prompt,
                                     command=opts.command, login_timeout=opts.login_timeout)
    return triggers.Passive()


def _quote_failure(cap: Capture, command: str | None) -> str:
    """The output the failed command printed (its echo and the prompt left out)."""
    handoff = (cap.handoff or cap.t0) - cap.t0
    texts = [ln.text.strip() for ln in cap.tail if (ln.t or 0.0) >= handoff and ln.text.strip()]
    if command:
        texts = [t for t in texts if command.strip() not in t]
    return " | ".join(texts[-3:]) or "(no output)"


def _load_payload(path: Path | None):
    if path is None:
        return None
    from ..payload.image import PayloadImage  # pyelftools only when a payload is given
    return PayloadImage.open(path)


def run_session(opts: RunOptions, console: Console | None = None) -> SessionResult:
    """Capture one run and write its bundle; raises KexectestError for stage failures (after the
    bundle is written, its path in the message)."""
    password = opts.password if opts.password is not None else triggers.resolve_password(
        opts.password_env, opts.login, interactive=sys.stdin.isatty())
    if opts.push and opts.payload_elf is None:
        from ..payload.build import ensure_built  # the pushed payload: the built one

        opts = dataclasses.replace(opts, payload_elf=ensure_built())
    payload = _load_payload(opts.payload_elf)
    settings = SerialSettings(opts.serial_url, opts.baud, opts.parity, opts.rtscts,
                              opts.xonxoff)
    trigger = make_trigger(opts, password)
    port = open_port(settings)
    try:
        run_dir = bundle.new_run_dir(opts.out_dir)
        cap = Capture(run_dir, secret=password.encode("utf-8") if password else None)
    except BaseException:
        port.close()
        raise
    view = live.make_view(console, quiet=opts.quiet, json_output=opts.json_output,
                          title=f"kexectest run {opts.serial_url}", timeout=opts.timeout)
    error: KexectestError | None = None
    trigger_failed = []
    try:
        with view:
            try:
                trigger.start(port, cap, view.stage)
            except KexectestError as exc:
                error = exc
                cap.stop("stage-failed", cap.clock(), str(exc))
            if error is None:
                def on_update(c, now):
                    view.update(c, now)
                    why = trigger.check(c)
                    if why:
                        trigger_failed.append(why)
                        return ("command-failed", why)
                    return None
                follower = Follower()
                follower.add(port, cap, timeout=opts.timeout, max_time=opts.overall_timeout,
                             on_update=on_update)
                try:
                    follower.run()
                finally:
                    follower.close()
                view.stage(f"stopped: {cap.stop_reason}"
                           + (f" ({cap.stop_detail})" if cap.stop_detail else ""))
    except KeyboardInterrupt:
        cap.stop("interrupted", cap.clock(), "Ctrl-C")
    finally:
        cap.close()
        port.close()
        trigger.close()
    return _finish(opts, cap, payload, error, trigger, bool(trigger_failed), password)


def _finish(opts, cap, payload, error, trigger, trigger_failed, password) -> SessionResult:
    reason = cap.stop_reason or "interrupted"
    if reason == "command-failed" and error is None:
        detail = cap.stop_detail if trigger_failed else (
            "the command failed on the target (the shell prompt came back): "
            + _quote_failure(cap, trigger.command or opts.command))
        error = KexectestError(detail, Exit.TARGET_COMMAND)
    problems = [p for p in (error, cap.write_error) if p is not None]
    if error is cap.write_error and error is not None:
        problems = [error]
    end = cap.stop_time if cap.stop_time is not None else cap.clock()
    silence = end - max(x for x in (cap.last_byte, cap.handoff, cap.t0) if x is not None)
    result = None
    try:
        lines = list(read_log(cap.directory / LOG_NAME))
        result = analyze_capture(lines, stop_reason=_ANALYSIS_REASON.get(reason, "interrupted"),
                                 silence_s=round(silence, 3), payload=payload)
    except KexectestError as exc:
        problems.append(exc)
    except Exception as exc:  # a bug in the analysis: the capture is bundled all the same
        problems.append(internal_error(exc, cap.directory))
    verdict_at = cap.clock()
    rel = lambda t: None if t is None else round(t - cap.t0, 6)  # noqa: E731
    timings = {
        "started": datetime.fromtimestamp(cap.started_wall, timezone.utc).isoformat(),
        "handoff_s": rel(cap.handoff), "first_byte_s": rel(cap.first_byte),
        "last_byte_s": rel(cap.last_byte), "ended_s": rel(end),
        "silence_timeout_s": opts.timeout, "max_time_s": opts.overall_timeout,
        "verdict_delay_s": (round(verdict_at - cap.deadline_hit, 6)
                            if cap.deadline_hit is not None else None),
    }
    environment = {
        "kexectest_version": __version__, "python": platform.python_version(),
        "platform": platform.platform(), "collector_host": socket.gethostname(),
        "command_line": list(opts.command_line),
        "serial": SerialSettings(opts.serial_url, opts.baud, opts.parity, opts.rtscts,
                                 opts.xonxoff).to_dict(),
        "mode": trigger.mode, "target": {"login": opts.login, "ssh": opts.ssh,
                                         "command": trigger.command or opts.command,
                                         "prompt": opts.prompt},
        **trigger.environment(),
        "timings": timings, "stop": {"reason": reason, "detail": cap.stop_detail},
        "bytes": cap.bytes, "lines": cap.lines, "scrubbed_lines": cap.scrubbed_lines,
        "payload": None, "verdict": result.verdict if result is not None else None,
        "error": str(problems[0]) if problems else None,
        **opts.extra_environment,
    }
    summary = None
    if result is not None:
        try:
            summary = report.render_summary_md(result, environment)
        except Exception as exc:  # a bug in the rendering: the rest is bundled all the same
            problems.append(internal_error(exc, cap.directory))
    tarball = None
    try:
        tarball = bundle.finalize(
            cap.directory, report=result.to_dict() if result is not None else None,
            summary=summary, environment=environment, payload_elf=opts.payload_elf,
            extra_files={"qemu.stderr": opts.qemu_stderr}, redact=opts.redact, secret=password)
    except bundle.BundleIncomplete as exc:
        problems.append(exc)
        tarball = exc.tarball
    if problems:
        raise _one_error(problems, cap, tarball)
    return SessionResult(verdict=result.verdict, exit_code=int(VERDICT_EXIT.get(
        result.verdict, Exit.INTERRUPTED)), bundle_dir=cap.directory, tarball=tarball,
        analysis=result, stop_reason=reason, timings=timings)


def _one_error(problems: list[KexectestError], cap: Capture, tarball: Path | None
               ) -> KexectestError:
    """Everything that went wrong as one line: the first full disk, else the first problem,
    then what was kept and where the bundle is."""
    incomplete = next((p for p in problems if isinstance(p, bundle.BundleIncomplete)), None)
    others = [p for p in problems if p is not incomplete]
    causes = others + ([incomplete.first] if incomplete is not None else [])
    first = next((p for p in causes if p.code == Exit.NO_SPACE), causes[0])
    notes = [str(p) for p in others if p is not first]
    if cap.write_error is not None:
        notes.append(f"console.raw keeps the first {cap.bytes} bytes")
    if not cap.directory.is_dir():
        notes.append(f"the run directory {cap.directory} is gone")
    elif incomplete is not None:
        notes.append(f"not written: {', '.join(incomplete.missing)}; the rest is in "
                     f"{cap.directory}")
    else:
        notes.append(f"bundle: {tarball}")
    return KexectestError(f"{first} ({'; '.join(notes)})", first.code)
