"""Run every machine of a lab file concurrently, each with its own bundle, journalled.

Each machine runs in a worker thread (the work is QEMU processes and serial
I/O, not Python); nothing a machine does -- an exception, a dead console, a
hanging power command -- leaves its worker, so one machine never stalls or
kills the others.  Every finished machine is one fsynced journal line, which
is what `--resume` trusts.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import VERDICT_EXIT, Exit, KexectestError
from ..fsutil import internal_error, make_dirs
from . import journal as journal_mod
from . import power as power_mod
from .labfile import Lab, Machine
from .sweep_report import build_sweep, write_reports

STAGES = ("queued", "power", "boot/login", "load", "payload", "analysed", "verdict")
RETRYABLE = {"hung", "no-output", "error"}
NOT_RETRYABLE_CODES = {Exit.CONFIG, Exit.MISSING_TOOL, Exit.LAB_BUILD, Exit.NO_SPACE, Exit.USAGE,
                       Exit.INTERNAL}


@dataclass
class SweepOptions:
    lab: Lab
    machines: list[Machine]
    out_dir: Path
    jobs: int | None = None
    retries: int | None = None  # overrides each machine's retries
    resume: bool = False
    command_line: list[str] = field(default_factory=list)


@dataclass
class MachineState:
    """What the live matrix shows for one machine."""

    name: str
    kind: str
    stage: str = "queued"
    detail: str = ""
    attempt: int = 0
    started: float | None = None
    verdict: str | None = None
    one_line: str = ""
    resumed: bool = False


class Progress:
    """Thread-safe machine states plus an optional listener (the live view or plain lines)."""

    def __init__(self, machines: list[Machine],
                 listener: Callable[[MachineState, bool], None] | None = None):
        self.lock = threading.Lock()
        self.states = {m.name: MachineState(m.name, m.kind) for m in machines}
        self.listener = listener

    def set(self, name: str, stage: str | None = None, detail: str | None = None, **kw) -> None:
        with self.lock:
            st = self.states[name]
            changed = stage is not None and stage != st.stage
            if stage is not None:
                st.stage = stage
            if detail is not None:
                st.detail = detail
            for k, v in kw.items():
                setattr(st, k, v)
        if self.listener:
            self.listener(st, changed)


class ConsoleWatcher(threading.Thread):
    """Follows a machine's console.raw while its session writes it, to tell the stage.

    Reads the file the session writes (never the serial line itself), so the
    sweep needs no hook inside the session and cannot disturb the capture."""

    def __init__(self, directory: Path, name: str, progress: Progress, stop: threading.Event):
        super().__init__(daemon=True, name=f"watch-{name}")
        self.directory, self.name, self.progress, self.stop = directory, name, progress, stop

    def run(self) -> None:
        from ..trace import LineSplitter

        splitter, pos, path, stage = LineSplitter(), 0, None, "boot/login"
        while not self.stop.wait(0.25):
            if path is None:
                found = sorted(self.directory.rglob("console.raw"), key=lambda p: p.stat().st_mtime)
                if not found:
                    continue
                path = found[-1]
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    data = f.read(1 << 20)
            except OSError:
                continue
            pos += len(data)
            for line in splitter.feed(data, None):
                rec = line.record
                if rec is not None and rec.kind == "begin" and rec.step is not None:
                    stage = "payload"
                    self.progress.set(self.name, "payload", f"step {rec.step:03d} {rec.name}")
                elif rec is not None and rec.kind == "done":
                    self.progress.set(self.name, "payload", "done")
                elif stage == "boot/login" and "kexectest load" in line.text:
                    stage = "load"
                    self.progress.set(self.name, "load", "kexectest load")


def _internal(exc: Exception, directory: Path) -> dict:
    """A bug met on one machine's path: its result, exit 70, the traceback kept beside its
    bundles (never a lab-stage code: the machine did nothing wrong)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        directory = None
    err = internal_error(exc, directory)
    return {"verdict": "error", "exit_code": int(err.code), "one_line": str(err),
            "error": str(err)}


def _attempt_number(records: list[dict], name: str) -> int:
    return sum(1 for r in records if r["event"] == "attempt" and r.get("machine") == name)


def _call_virtual(m: Machine, out: Path, console, command_line: list[str], log=None):
    """Run one QEMU machine through the lab runner, passing only what it accepts."""
    from ..lab import (
        runner,  # the lab engineer's module: imported late, optional for hardware
    )

    fn = runner.run_virtual
    wanted = {"loader": m.load.get("via", "syscall"), "out_dir": out, "timeout": m.timeout,
              "console": console, "memory": m.qemu.memory, "memory_mib": m.qemu.memory,
              "smp": m.qemu.smp, "disks": m.qemu.disks, "accel": m.qemu.accel,
              "machine": m.qemu.machine, "disk_bus": m.qemu.disk_bus, "drivers": m.drivers,
              "video": m.qemu.video, "keyboard": m.qemu.keyboard,
              "kernel_suite": m.kernel_suite,
              "agent": m.agent,
              "firmware": m.qemu.firmware, "baseline": m.baseline,
              "quiet": True, "command_line": command_line, "log": log}
    wanted.update({k: v for k, v in m.load.items() if k != "via"})
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in wanted.items() if takes_any or k in params}
    for key in m.load:
        if key != "via" and key not in kwargs:
            raise KexectestError(f"machine {m.name!r}: the virtual lab does not support "
                                 f"load.{key}", Exit.CONFIG)
    first = next(iter(params))
    if first == "machine" and "machine" in kwargs:
        return fn(kwargs.pop("machine"), **kwargs)
    return fn(**kwargs)


def _call_hardware(m: Machine, out: Path, console, command_line: list[str], serial_url=None):
    from ..capture.session import RunOptions, run_session

    m.password()  # a missing secret fails this machine only, before anything is touched
    opts = RunOptions(
        serial_url=serial_url or m.serial.url, baud=m.serial.baud, parity=m.serial.parity,
        rtscts=m.serial.rtscts, xonxoff=m.serial.xonxoff,
        login=m.trigger.login if m.trigger.kind == "console" else None,
        password_env=m.trigger.password_env, prompt=m.trigger.prompt,
        command=m.trigger.command if m.trigger.kind != "manual" else None,
        ssh=m.trigger.ssh if m.trigger.kind == "ssh" else None,
        timeout=m.timeout, out_dir=out, quiet=True, command_line=command_line,
        **_push_options(m))
    return run_session(opts, console=None)


def _push_options(m: Machine) -> dict:
    """A machine whose trigger pushes the agent: its load table goes to the pushed agent."""
    if not m.trigger.push:
        return {}
    from ..payload.options import CONFIG_OPTION_NAMES, lab_values

    load = lab_values({k: v for k, v in m.load.items() if k in CONFIG_OPTION_NAMES})
    payload = m.load.get("payload")
    return {"push": True, "via": m.load.get("via"), "load_options": load,
            "payload_elf": Path(payload) if payload else None}


class Sweep:
    def __init__(self, opts: SweepOptions, progress: Progress):
        self.opts = opts
        self.progress = progress
        self.out = Path(opts.out_dir)
        self.stopping = threading.Event()
        self.records: list[dict] = []
        self.journal: journal_mod.Journal | None = None
        self.old: list[dict] = []

    # -- one machine ------------------------------------------------------------------------
    def _one_attempt(self, m: Machine, out: Path, place=None) -> dict:
        watcher_stop = threading.Event()
        watcher = ConsoleWatcher(out, m.name, self.progress, watcher_stop)
        watcher.start()
        try:
            if m.kind == "virtual":
                res = _call_virtual(m, out, None, self.opts.command_line,
                                    log=lambda msg: self.progress.set(m.name, detail=str(msg)))
            elif m.kind == "labgrid":
                res = _call_hardware(m, out, None, self.opts.command_line,
                                     serial_url=place.serial_url)
            else:
                res = _call_hardware(m, out, None, self.opts.command_line)
        except KexectestError as exc:
            return {"verdict": "error", "exit_code": int(exc.code), "one_line": str(exc),
                    "error": str(exc)}
        finally:
            watcher_stop.set()
            watcher.join(2)
        analysis = getattr(res, "analysis", None)
        one = analysis.one_line() if analysis is not None and hasattr(analysis, "one_line") else ""
        rel = lambda p: os.path.relpath(p, self.out) if p else None
        return {"verdict": res.verdict, "exit_code": int(res.exit_code),
                "one_line": one or res.verdict, "bundle": rel(getattr(res, "bundle_dir", None)),
                "tarball": rel(getattr(res, "tarball", None))}

    def run_machine(self, m: Machine) -> dict:
        t0 = time.monotonic()
        retries = self.opts.retries if self.opts.retries is not None else m.retries
        done_before = _attempt_number(self.old, m.name)
        self.progress.set(m.name, "boot/login", "", started=time.time())
        try:
            with self._place(m) as place:
                attempts, result, powers = self._attempts(m, place, retries, done_before)
                if place is not None:
                    result["place"] = place.name
        except KexectestError as exc:  # a labgrid place taken or missing: this machine only
            attempts, result, powers = 0, {"verdict": "error", "exit_code": int(exc.code),
                                           "one_line": str(exc), "error": str(exc)}, []
        except Exception as exc:  # a bug (or a labgrid RPC failing mid-way): this machine only
            attempts, result, powers = 0, _internal(exc, self.out / m.name), []
        rec = {"machine": m.name, "kind": m.kind, "tags": m.tags, "attempts": attempts,
               "seconds": round(time.monotonic() - t0, 3), "power": powers,
               **{k: result.get(k) for k in ("verdict", "exit_code", "one_line", "error",
                                               "bundle", "tarball", "place")}}
        if self.stopping.is_set():
            self.journal.write("abandoned", machine=m.name)
            self.progress.set(m.name, "queued", "interrupted")
            return rec
        self.journal.write("finish", **rec)
        self.progress.set(m.name, "verdict", rec["one_line"] or "", verdict=rec["verdict"],
                          one_line=rec["one_line"] or "")
        return rec

    def _place(self, m: Machine):
        if m.kind != "labgrid":
            return contextlib.nullcontext(None)
        from .labgrid_place import acquired

        self.progress.set(m.name, "boot/login", f"acquiring {m.labgrid.place or m.labgrid.tags}")
        return acquired(m)

    def _attempts(self, m: Machine, place, retries: int, done_before: int):
        powers: list[dict] = []
        result: dict = {}
        attempts = 0
        for attempt in range(1 + retries):
            if self.stopping.is_set():
                break
            attempts += 1
            n = done_before + attempt + 1
            self.journal.write("attempt", machine=m.name, attempt=n)
            self.progress.set(m.name, "boot/login", "", attempt=attempts)
            try:
                result = self._one_attempt(m, self.out / m.name / f"attempt-{n}", place)
            except Exception as exc:  # a bug in one machine's path must not end the sweep
                result = _internal(exc, self.out / m.name / f"attempt-{n}")
            if self.stopping.is_set():
                break
            retry = (result["verdict"] in RETRYABLE and attempt < retries
                     and result["exit_code"] not in NOT_RETRYABLE_CODES)
            if not retry:
                break
            self.progress.set(m.name, "power", f"{result['verdict']}: power cycle, retry")
            outcome = []
            if place is not None and place.has_power:
                outcome = place.cycle()
            elif m.kind != "virtual" and m.power.configured:
                outcome = power_mod.cycle(m.power)
            if outcome:
                powers += [p.to_dict() for p in outcome]
                self.journal.write("power", machine=m.name, results=[p.to_dict() for p in outcome])
                if not all(p.ok for p in outcome):
                    bad = next(p for p in outcome if not p.ok)
                    result["one_line"] += f"; {bad.one_line()}, not retried"
                    break
        return attempts, result, powers

    # -- the sweep --------------------------------------------------------------------------
    def run(self) -> dict:
        make_dirs(self.out)
        self.old = journal_mod.read(self.out)
        if self.old and not self.opts.resume:
            raise KexectestError(f"{self.out}: holds a journal from an earlier sweep: use --resume "
                                 f"or another --out", Exit.USAGE)
        done = journal_mod.finished(self.old) if self.opts.resume else {}
        self.journal = journal_mod.Journal(self.out)
        started = time.time()
        self.journal.write("sweep-start", lab=str(self.opts.lab.path),
                           machines=[m.name for m in self.opts.machines],
                           resume=self.opts.resume, argv=self.opts.command_line)
        todo = []
        for m in self.opts.machines:
            if m.name in done:
                rec = done[m.name]
                self.progress.set(m.name, "verdict", "resumed: " + (rec.get("one_line") or ""),
                                  verdict=rec.get("verdict"), resumed=True)
            else:
                todo.append(m)
        n_cores = os.cpu_count() or 1
        jobs = self.opts.jobs or max(1, min(64, len(todo)))
        qemu_slots = threading.BoundedSemaphore(self.opts.jobs or n_cores)

        def work(m: Machine) -> dict:
            if m.kind == "virtual":
                with qemu_slots:
                    return self.run_machine(m)
            return self.run_machine(m)

        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep") as pool:
            futures = [pool.submit(work, m) for m in todo]
            for f in futures:
                f.result()
        records = journal_mod.finished(journal_mod.read(self.out))
        ordered = [records[m.name] for m in self.opts.machines if m.name in records]
        sweep = build_sweep(self.out, {"name": self.opts.lab.name, "path": str(self.opts.lab.path)},
                            ordered, started, time.time())
        write_reports(self.out, sweep)
        self.journal.write("sweep-end", exit_code=sweep["exit_code"])
        self.journal.close()
        return sweep


def exit_code_for(verdict: str, fallback: int) -> int:
    return int(VERDICT_EXIT.get(verdict, fallback))
