"""Power control through the lab file's shell commands (ipmitool, a PDU's CLI, ...).

A power command that fails or hangs is a fact about that machine, reported in
its result; it never raises, so one broken PDU cannot stop a sweep.  Each runs in
its own session under capture/process.py and is killed whole at its timeout,
whatever its children do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..capture import process
from .labfile import Power


@dataclass
class PowerResult:
    action: str  # on | off | cycle
    command: str
    ok: bool
    returncode: int | None  # None when it timed out
    seconds: float
    output: str  # last 2 KiB of stdout+stderr

    def one_line(self) -> str:
        if self.ok:
            return f"power {self.action}: ok in {self.seconds:.1f} s"
        if self.returncode is None:
            return f"power {self.action}: `{self.command}` hung, killed after {self.seconds:.1f} s"
        tail = self.output.strip().splitlines()[-1:] or [""]
        return f"power {self.action}: `{self.command}` exited {self.returncode}: {tail[0][:120]}"

    def to_dict(self) -> dict:
        return {"action": self.action, "command": self.command, "ok": self.ok,
                "returncode": self.returncode, "seconds": round(self.seconds, 3),
                "output": self.output}


def run_command(action: str, command: str, timeout: float, env: dict | None = None) -> PowerResult:
    """Run one shell command in its own session; kill it and all it started on timeout."""
    try:
        done = process.run(command, timeout, env)
    except OSError as exc:  # no Python to start the reaper with, no /bin/sh, no processes left
        return PowerResult(action, command, False, 127, 0.0, f"cannot run: {exc.strerror}")
    text = done.output.decode("utf-8", "replace")[-2048:]
    rc = done.returncode
    return PowerResult(action, command, rc == 0, rc, done.seconds, text)


def cycle(power: Power, env: dict | None = None) -> list[PowerResult]:
    """Power-cycle: the `cycle` command, or `off` then `on`.  Empty when nothing is configured."""
    if power.cycle:
        return [run_command("cycle", power.cycle, power.timeout, env)]
    results = []
    if power.off:
        results.append(run_command("off", power.off, power.timeout, env))
    if power.on:
        results.append(run_command("on", power.on, power.timeout, env))
    return results


def power_on(power: Power, env: dict | None = None) -> PowerResult | None:
    return run_command("on", power.on, power.timeout, env) if power.on else None
