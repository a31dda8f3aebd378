"""Lab files: the machines a sweep runs, in TOML (docs/lab-files.md).

Every mistake in a lab file is reported as one line naming the file and line
(or the machine and key) with Exit.CONFIG, because a sweep over fifty machines
must not start half-configured.  Secrets are never in the file: only the name
of an environment variable, read when that machine runs.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Exit, KexectestError
from ..lab.kernelsuite import SUITES
from ..lab.kernelsuite import is_package as is_kernel_package
from ..lab.runner import AGENTS, LOADERS
from ..lab.shape import Shape
from ..payload.options import LAB_KEYS

# key -> accepted types, per table.  One table of facts, not code paths.
_SERIAL = {"url": str, "baud": int, "parity": str, "rtscts": bool, "xonxoff": bool}
_TRIGGER = {"kind": str, "login": str, "password_env": str, "prompt": str, "command": str, "ssh": str,
            "push": bool}
_LOAD = {"via": str, "payload": str, "args": list, **LAB_KEYS}  # + every payload option
_POWER = {"on": str, "off": str, "cycle": str, "timeout": (int, float)}
# disk_bus, video and keyboard are part of the machine's shape (lab/diskbus.py, lab/video.py,
# lab/keyboard.py); drivers are guest kernel modules loaded at every run, after the login
# (lab/drivers.py); kernel_suite picks the lab image's Debian kernel (lab/kernelsuite.py)
_QEMU = {"machine": str, "memory": int, "smp": int, "disks": int, "accel": str, "disk_bus": str,
         "video": str, "keyboard": str, "drivers": list, "firmware": str, "agent": str,
         "kernel_suite": str}
_NOT_SHAPE = ("drivers", "agent", "kernel_suite")  # qemu keys of a run, not of its shape
_MODULE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # matched whole
_LABGRID = {"coordinator": str, "place": str, "tags": dict}
_TABLES = {"serial": _SERIAL, "trigger": _TRIGGER, "load": _LOAD, "power": _POWER,
           "qemu": _QEMU, "labgrid": _LABGRID}
_SCALARS = {"name": str, "description": str, "tags": list, "timeout": (int, float), "retries": int,
            "baseline": bool}
_MACHINE_KEYS = set(_SCALARS) | set(_TABLES)
_TOP_KEYS = {"lab", "defaults", "machine"}
_LAB_KEYS = {"name": str, "description": str}
_SECRET_KEYS = {"password", "passwd", "secret", "token"}

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # matched whole (fullmatch)
TRIGGER_KINDS = ("console", "ssh", "manual")


@dataclass
class SerialSettings:
    url: str | None = None
    baud: int = 115200
    parity: str = "N"
    rtscts: bool = False
    xonxoff: bool = False


@dataclass
class Trigger:
    kind: str = "console"
    login: str | None = None
    password_env: str | None = None
    prompt: str = r"[#$] ?$"
    command: str | None = None
    ssh: str | None = None
    push: bool = False  # send the target agent and the payload (docs/target-agent.md)


@dataclass
class Power:
    on: str | None = None
    off: str | None = None
    cycle: str | None = None
    timeout: float = 30.0

    @property
    def configured(self) -> bool:
        return bool(self.cycle or (self.on and self.off))


@dataclass
class LabgridPlace:
    coordinator: str
    place: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Machine:
    """One machine of a lab file, defaults already merged in."""

    name: str
    tags: list[str] = field(default_factory=list)
    description: str = ""
    serial: SerialSettings = field(default_factory=SerialSettings)
    trigger: Trigger = field(default_factory=Trigger)
    load: dict[str, Any] = field(default_factory=dict)
    power: Power = field(default_factory=Power)
    timeout: float = 60.0
    retries: int = 0
    qemu: Shape | None = None
    drivers: list[str] = field(default_factory=list)  # qemu.drivers
    kernel_suite: str | None = None  # qemu.kernel_suite (None: the lab's default kernel)
    agent: str = "auto"  # qemu.agent: how the payload gets into the guest (lab run --agent)
    labgrid: LabgridPlace | None = None
    where: str = ""  # "file:line" of its [[machine]] header, for messages
    baseline: bool = False  # virtual: POST first, then the kexec run (lab run --baseline)

    @property
    def kind(self) -> str:
        """virtual (QEMU), labgrid, or hardware (serial URL + trigger)."""
        if self.qemu is not None:
            return "virtual"
        if self.labgrid is not None:
            return "labgrid"
        return "hardware"

    def password(self) -> str | None:
        """The login password from its environment variable; checked at run time only."""
        var = self.trigger.password_env
        if not var:
            return None
        value = os.environ.get(var)
        if value is None:
            raise KexectestError(
                f"{self.where}: machine {self.name!r}: environment variable {var} "
                f"(trigger.password_env) is not set", Exit.CONFIG)
        return value


@dataclass
class Lab:
    path: Path
    name: str
    machines: list[Machine]

    def machine(self, name: str) -> Machine:
        for m in self.machines:
            if m.name == name:
                return m
        raise KexectestError(
            f"{self.path}: no machine {name!r}{_suggest(name, [m.name for m in self.machines])}",
            Exit.CONFIG)

    def select(self, only: str | list[str] | None) -> list[Machine]:
        """Machines whose name or any tag is among `only` (comma separated); all when empty."""
        if not only:
            return list(self.machines)
        wanted = {w.strip() for w in (only.split(",") if isinstance(only, str) else only)}
        wanted.discard("")
        chosen = [m for m in self.machines if m.name in wanted or wanted & set(m.tags)]
        if not chosen:
            raise KexectestError(
                f"{self.path}: no machine has a name or tag in {sorted(wanted)}", Exit.CONFIG)
        return chosen


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Locator:
    """Finds the line of a [[machine]] header or of a key inside it (tomllib gives no positions)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()
        self.blocks: list[tuple[int, int]] = []  # (first, last) 0-based line index per [[machine]]
        starts = [i for i, ln in enumerate(self.lines) if re.match(r"\s*\[\[\s*machine\s*\]\]", ln)]
        headers = [i for i, ln in enumerate(self.lines) if re.match(r"\s*\[", ln)]
        for s in starts:
            nxt = [h for h in headers if h > s and not re.match(r"\s*\[\s*machine\.", self.lines[h])]
            self.blocks.append((s, (nxt[0] - 1) if nxt else len(self.lines) - 1))
        self.defaults = next(((i, i) for i, ln in enumerate(self.lines)
                              if re.match(r"\s*\[\s*defaults\s*\]", ln)), None)

    def at(self, index: int | None, key: str | None = None) -> str:
        if index is None:
            block = self.defaults
            if block is not None:
                end = next((i for i in range(block[0] + 1, len(self.lines))
                            if re.match(r"\s*\[(?!\s*defaults\.)", self.lines[i])), len(self.lines))
                block = (block[0], end - 1)
        else:
            block = self.blocks[index] if index < len(self.blocks) else None
        if block is None:
            return f"{self.path}"
        line = block[0]
        if key:
            pat = re.compile(r"(^|[\s{,.\[])" + re.escape(key) + r"\s*[=.\]]")
            for i in range(block[0], block[1] + 1):
                if pat.search(self.lines[i]):
                    line = i
                    break
        return f"{self.path}:{line + 1}"


def _fail(msg: str) -> KexectestError:
    return KexectestError(msg, Exit.CONFIG)


def _check_type(where: str, who: str, key: str, value, types) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join(t.__name__.replace("str", "string").replace("int", "integer")
                            .replace("dict", "table").replace("list", "array") for t in types)
        raise _fail(f"{where}: {who}: {key} must be {names}, not {value!r}")


def _check_table(loc: _Locator, idx: int | None, who: str, table: dict) -> None:
    for key, value in table.items():
        where = loc.at(idx, key)
        if key in _SECRET_KEYS or key.endswith("_password"):
            raise _fail(f"{where}: {who}: {key!r} is not allowed: secrets go in an environment "
                        f"variable named by trigger.password_env")
        if key in _TABLES:
            if isinstance(value, str) and key == "serial":
                continue  # shorthand: serial = "socket://..."
            _check_type(where, who, key, value, dict)
            spec = _TABLES[key]
            for sub, subval in value.items():
                w = loc.at(idx, sub)
                if sub in _SECRET_KEYS:
                    raise _fail(f"{w}: {who}: {key}.{sub} is not allowed: secrets go in an "
                                f"environment variable named by trigger.password_env")
                if sub not in spec:
                    raise _fail(f"{w}: {who}: unknown key {key}.{sub}{_suggest(sub, spec)}")
                _check_type(w, who, f"{key}.{sub}", subval, spec[sub])
        elif key in _SCALARS:
            _check_type(where, who, key, value, _SCALARS[key])
        else:
            raise _fail(f"{where}: {who}: unknown key {key!r}{_suggest(key, _MACHINE_KEYS)}")


def _merge(defaults: dict, own: dict) -> dict:
    """Defaults under the machine's own keys.  A machine that says what it is (its own serial,
    qemu or labgrid table) does not inherit another kind from the defaults."""
    out = dict(defaults)
    if "qemu" not in own and ("serial" in own or "labgrid" in own):
        out.pop("qemu", None)
    if "labgrid" not in own and ("serial" in own or "qemu" in own):
        out.pop("labgrid", None)
    for key, value in own.items():
        if key == "serial" and isinstance(value, str):
            value = {"url": value}
        base = out.get(key)
        if key == "serial" and isinstance(base, str):
            base = {"url": base}
        if isinstance(base, dict) and isinstance(value, dict):
            out[key] = {**base, **value}
        elif key == "tags" and isinstance(base, list):
            out[key] = list(dict.fromkeys([*base, *value]))
        else:
            out[key] = value
    return out


def _build(raw: dict, where: str) -> Machine:
    name = raw["name"]
    serial = raw.get("serial", {})
    if isinstance(serial, str):
        serial = {"url": serial}
    m = Machine(
        name=name,
        tags=list(raw.get("tags", [])),
        description=raw.get("description", ""),
        serial=SerialSettings(**serial),
        trigger=Trigger(**raw.get("trigger", {})),
        load=dict(raw.get("load", {})),
        power=Power(**{k: (float(v) if k == "timeout" else v) for k, v in raw.get("power", {}).items()}),
        timeout=float(raw.get("timeout", 60.0)),
        retries=int(raw.get("retries", 0)),
        qemu=(Shape(**{k: v for k, v in raw["qemu"].items() if k not in _NOT_SHAPE})
              if "qemu" in raw else None),
        drivers=list(raw.get("qemu", {}).get("drivers", [])),
        kernel_suite=raw.get("qemu", {}).get("kernel_suite"),
        agent=raw.get("qemu", {}).get("agent", "auto"),
        labgrid=LabgridPlace(**raw["labgrid"]) if "labgrid" in raw else None,
        where=where,
        baseline=bool(raw.get("baseline", False)),
    )
    return m


def _validate(m: Machine, loc: _Locator, idx: int) -> None:
    who = f"machine {m.name!r}"

    def bad(key: str, msg: str) -> KexectestError:
        return _fail(f"{loc.at(idx, key)}: {who}: {msg}")

    if m.trigger.kind not in TRIGGER_KINDS:
        raise bad("kind", f"trigger.kind must be one of {', '.join(TRIGGER_KINDS)}, "
                          f"not {m.trigger.kind!r}")
    via = m.load.get("via")
    if via is not None and via not in LOADERS:
        raise bad("via", f"load.via must be one of {', '.join(LOADERS)}, not {via!r}")
    if m.qemu is not None and m.labgrid is not None:
        raise bad("labgrid", "a machine is either virtual (qemu) or a labgrid place, not both")
    if m.qemu is not None:
        for key, message in m.qemu.problems():
            raise bad(key, f"qemu.{message}")
        for d in m.drivers:
            if not isinstance(d, str) or not _MODULE_NAME_RE.fullmatch(d):
                raise bad("drivers", f"qemu.drivers must be kernel module names, not {d!r}")
        if m.kernel_suite is not None and not (m.kernel_suite in SUITES
                                               or is_kernel_package(m.kernel_suite)):
            raise bad("kernel_suite", f"qemu.kernel_suite must be one of {', '.join(SUITES)} "
                                      f"or a linux-image-*-amd64 package, not "
                                      f"{m.kernel_suite!r}")
        if m.agent not in AGENTS:
            raise bad("agent", f"qemu.agent must be one of {', '.join(AGENTS)}, not {m.agent!r}")
        if m.drivers and m.load.get("via") == "direct":
            raise bad("drivers", "qemu.drivers are loaded by the lab's Linux, and load.via = "
                                 "\"direct\" boots the payload without it")
    elif m.labgrid is not None:
        if not m.labgrid.place and not m.labgrid.tags:
            raise bad("labgrid", "labgrid needs a place or tags")
    elif not m.serial.url:
        raise bad("serial", "no serial.url (and no qemu or labgrid table)")
    if m.trigger.push and m.trigger.command:
        raise bad("push", "trigger.push runs the pushed agent itself: leave out trigger.command "
                          "(load options go in the load table)")
    if m.trigger.push and via == "direct" and m.qemu is None:
        raise bad("via", "load.via = \"direct\" boots the payload without Linux (virtual "
                         "machines only): nothing to push")
    if m.trigger.push and m.trigger.kind == "manual":
        raise bad("push", "trigger.push needs a console login or ssh (kind \"console\" or "
                          "\"ssh\"), not kind \"manual\"")
    if m.trigger.kind == "ssh" and not m.trigger.ssh:
        raise bad("kind", "trigger.kind = \"ssh\" needs trigger.ssh = \"user@host\"")
    if m.baseline and (m.qemu is None or m.load.get("via") == "direct"):
        raise bad("baseline", "baseline = true needs a virtual machine (qemu) with a kexec "
                              "loader: it boots the payload at POST, then after kexec")
    if m.timeout <= 0:
        raise bad("timeout", f"timeout must be positive, not {m.timeout}")
    if m.retries < 0:
        raise bad("retries", f"retries must be 0 or more, not {m.retries}")
    if m.serial.parity not in ("N", "E", "O", "M", "S"):
        raise bad("parity", f"serial.parity must be N, E, O, M or S, not {m.serial.parity!r}")


def load_lab(path: str | Path) -> Lab:
    """Parse and check a lab file; every error is one line with Exit.CONFIG."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(f"{path}: no such lab file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{path}: cannot read lab file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        where = f"{path}:{m.group(1)}:{m.group(2)}" if m else f"{path}"
        raise _fail(f"{where}: TOML syntax error: {msg}") from None
    loc = _Locator(path, text)
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(f"{path}: unknown top-level key {key!r}{_suggest(key, _TOP_KEYS)}")
    lab_info = data.get("lab", {})
    if not isinstance(lab_info, dict):
        raise _fail(f"{path}: [lab] must be a table")
    for key, value in lab_info.items():
        if key not in _LAB_KEYS:
            raise _fail(f"{path}: unknown key lab.{key}{_suggest(key, _LAB_KEYS)}")
        _check_type(str(path), "[lab]", key, value, _LAB_KEYS[key])
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _fail(f"{path}: [defaults] must be a table")
    if "name" in defaults:
        raise _fail(f"{loc.at(None, 'name')}: [defaults]: a name cannot be a default")
    _check_table(loc, None, "[defaults]", defaults)
    raws = data.get("machine", [])
    if not isinstance(raws, list) or not raws:
        raise _fail(f"{path}: no [[machine]] tables")
    machines: list[Machine] = []
    seen: dict[str, str] = {}
    for idx, raw in enumerate(raws):
        header = loc.at(idx)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(f"{header}: machine #{idx + 1} has no name")
        who = f"machine {name!r}"
        if not _NAME_RE.fullmatch(name) or name in (".", ".."):
            raise _fail(f"{loc.at(idx, 'name')}: {who}: name must be 1-64 letters, digits, '.', "
                        f"'_' or '-' (it names the output directory)")
        if name in seen:
            raise _fail(f"{loc.at(idx, 'name')}: {who}: duplicate name (first at {seen[name]})")
        seen[name] = header
        _check_table(loc, idx, who, raw)
        machine = _build(_merge(defaults, raw), header)
        _validate(machine, loc, idx)
        machines.append(machine)
    return Lab(path=path, name=lab_info.get("name", path.stem), machines=machines)
