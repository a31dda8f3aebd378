"""Debian kernels of other suites for the lab (`lab build --kernel-suite trixie`).

The machine's own Debian archive serves every suite, so the lab asks it through a private apt
configuration of its own in the lab cache (a sources list naming that one suite, its own lists,
cache and an empty dpkg status): the host's sources and lists are never changed.  Newer
packages are split: sid's `linux-image-REL` is a small package depending on `linux-binary-REL`
(the vmlinuz), `linux-modules-REL` (the .ko.xz files) and `linux-base-REL` (modules.builtin); the
parts are found from the image package's own `Depends:`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import Exit, KexectestError
from ..fsutil import write_atomic

SUITES = ("bookworm", "trixie", "sid")
UNSTABLE = ("sid",)  # no -updates or -security suites
DEFAULT_SUITE = "bookworm"  # the kernel the lab boots when none is named (the host's own apt)
META_PACKAGE = "linux-image-amd64"
DEFAULT_URI = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
HOST_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
LISTS_MAX_AGE_S = 7 * 86400  # a suite's package lists are fetched again after a week
_IMAGE_RE = re.compile(r"^linux-image-[0-9][\w.+~-]*-amd64$")
_PART_RE = r"Depends:\s*(linux-(?:binary|modules|base)-{rel})\s*$"


def is_package(spec: str) -> bool:
    """An exact kernel package name (linux-image-6.12.57+deb13-amd64) rather than a suite."""
    return bool(_IMAGE_RE.match(spec))


def host_archive(paths=HOST_SOURCES) -> tuple[str, str, str | None]:
    """(URI, keyring, security URI or None) of the Debian archive the host's apt uses."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.glob("*.sources")) + sorted(p.glob("*.list"))
        elif p.is_file():
            files.append(p)
    found: list[tuple[str, str]] = []
    for f in files:
        try:
            found += archives_in(f.read_text(errors="replace"))
        except OSError:
            continue
    main = next((a for a in found if not a[0].endswith("-security")), None)
    security = next((a[0] for a in found if a[0].endswith("-security")), None)
    if main is None:
        return DEFAULT_URI, DEFAULT_KEYRING, security
    return main[0], main[1], security


def archives_in(text: str) -> list[tuple[str, str]]:
    """(URI, keyring) of every `deb` archive a sources file (deb822 or one-line) names."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                fields[m[1].lower()] = m[2].strip()
        if "deb" in fields.get("types", "").split():
            out += [(u.rstrip("/"), fields.get("signed-by") or DEFAULT_KEYRING)
                    for u in fields.get("uris", "").split()]
    for line in text.splitlines():
        m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+\S+", line.strip())
        if m:
            opts = dict(o.split("=", 1) for o in (m[1] or "").split() if "=" in o)
            out.append((m[2].rstrip("/"), opts.get("signed-by") or DEFAULT_KEYRING))
    return out


class PrivateApt:
    """apt-get / apt-cache over one suite of the host's archive, with state of its own."""

    def __init__(self, root: Path, suite: str,
                 archive: tuple[str, str, str | None] | None = None):
        self.root = root / suite
        self.suite = suite
        self.uri, self.keyring, self.security = archive or host_archive()

    def sources_line(self) -> str:
        """The suite, and for a release with them its -updates and -security suites (a stable
        release's kernels are updated there), as the host's own sources have them."""
        sign = f"[signed-by={self.keyring}]"
        lines = [f"deb {sign} {self.uri} {self.suite} main"]
        if self.suite not in UNSTABLE:
            lines.append(f"deb {sign} {self.uri} {self.suite}-updates main")
            if self.security:
                lines.append(f"deb {sign} {self.security} {self.suite}-security main")
        return "\n".join(lines) + "\n"

    def options(self) -> list[str]:
        r = self.root
        return ["-o", f"Dir::Etc::sourcelist={r / 'sources.list'}",
                "-o", f"Dir::Etc::sourceparts={r / 'sources.list.d'}",
                "-o", f"Dir::Etc::preferences={r / 'preferences'}",
                "-o", f"Dir::Etc::preferencesparts={r / 'preferences.d'}",
                "-o", f"Dir::State::Lists={r / 'lists'}",
                "-o", f"Dir::State::status={r / 'status'}",
                "-o", f"Dir::Cache={r / 'cache'}",
                "-o", "Debug::NoLocking=1", "-o", "APT::Architecture=amd64"]

    def prepare(self) -> None:
        r = self.root
        for d in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "sources.list").write_text(self.sources_line())
        (r / "status").touch()

    def lists_state(self) -> list:
        return sorted([p.name, p.stat().st_mtime_ns, p.stat().st_size]
                      for p in (self.root / "lists").glob("*_Packages*"))

    def lists_fresh(self) -> bool:
        """Lists fetched within LISTS_MAX_AGE_S, from the sources this configuration names."""
        stamp = self.root / "updated"
        try:
            age = time.time() - stamp.stat().st_mtime
            same = stamp.read_text() == self.sources_line()
        except OSError:
            return False
        return same and age < LISTS_MAX_AGE_S and bool(self.lists_state())

    def update(self, log=None) -> None:
        """Fetch the suite's package lists, unless fetched within the last week."""
        self.prepare()
        if self.lists_fresh():
            return
        (log or (lambda m: None))(f"apt-get update ({self.suite}, private lists in {self.root})")
        self._run("apt-get", ["update"], f"apt-get update for {self.suite}")
        if not self.lists_state():
            raise KexectestError(f"lab build: no Debian suite {self.suite!r} at {self.uri}",
                                 Exit.LAB_BUILD)
        (self.root / "updated").write_text(self.sources_line())

    def _run(self, tool: str, args: list[str], stage: str, cwd: Path | None = None) -> str:
        exe = shutil.which(tool) or shutil.which(tool, path="/usr/bin:/bin")
        if not exe:
            raise KexectestError(f"lab build: `{tool}` not found (apt-get install apt)",
                                 Exit.MISSING_TOOL)
        try:
            p = subprocess.run([exe, *self.options(), *args], capture_output=True, text=True,
                               cwd=cwd, env={**os.environ, "LC_ALL": "C"})
        except OSError as exc:
            raise KexectestError(f"lab build: {stage}: {exc}", Exit.LAB_BUILD) from None
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith(("E:", "Err:"))]
        if p.returncode != 0 or (tool == "apt-get" and args[:1] == ["update"] and errors):
            last = (errors or p.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise KexectestError(f"lab build: {stage} failed: {last}", Exit.LAB_BUILD)
        return p.stdout

    def depends(self, package: str) -> str:
        return self._run("apt-cache", ["depends", package], f"apt-cache depends {package}")

    def candidate(self, package: str) -> str | None:
        out = self._run("apt-cache", ["policy", package], f"apt-cache policy {package}")
        return parse_candidate(out)

    def download(self, package: str, version: str, dest: Path) -> None:
        os.chmod(dest, 0o755)
        self._run("apt-get", ["download", f"{package}={version}"],
                  f"apt-get download {package}", cwd=dest)


def parse_candidate(policy: str) -> str | None:
    m = re.search(r"Candidate:\s*(\S+)", policy)
    return m[1] if m and m[1] != "(none)" else None


def parse_image(depends: str) -> str | None:
    """The kernel package a meta package's `apt-cache depends` names."""
    m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+~-]*-amd64)\b", depends)
    return m[1] if m else None


def parse_parts(image: str, depends: str) -> list[str]:
    """The split packages (binary, modules, base) an image package depends on, of its release."""
    rel = re.escape(image[len("linux-image-"):])
    return sorted(set(re.findall(_PART_RE.format(rel=rel), depends, re.M)))


@dataclass
class KernelChoice:
    """The packages of one Debian kernel, as one suite's archive offers them."""

    suite: str
    image: str  # linux-image-REL
    version: str
    parts: list[tuple[str, str]]  # (package, version) of the split packages, [] when not split

    def packages(self) -> list[tuple[str, str]]:
        return [(self.image, self.version), *self.parts]


def resolve(spec: str, root: Path, log=None) -> tuple[KernelChoice, PrivateApt]:
    """The kernel a suite name (its linux-image-amd64) or an exact package name stands for."""
    if spec in SUITES:
        suites = [spec]
    elif is_package(spec):
        suites = list(SUITES)
    else:
        raise KexectestError(f"lab build: kernel suite {spec!r} is none of "
                             f"{', '.join(SUITES)} and no linux-image-*-amd64 package name",
                             Exit.LAB_BUILD)
    for suite in suites:
        apt = PrivateApt(root, suite)
        apt.update(log)
        image = spec if is_package(spec) else parse_image(apt.depends(META_PACKAGE))
        if image is None:
            raise KexectestError(f"lab build: {META_PACKAGE} of {suite} names no kernel "
                                 "package", Exit.LAB_BUILD)
        version = _candidate(apt, image)
        if version is None:
            continue
        parts = []
        for part in parse_parts(image, apt.depends(image)):
            v = apt.candidate(part)
            if v is None:
                raise KexectestError(f"lab build: {image} needs {part}, which {suite} does not "
                                     "offer", Exit.LAB_BUILD)
            parts.append((part, v))
        return KernelChoice(suite, image, version, parts), apt
    raise KexectestError(f"lab build: no Debian kernel package {spec!r} in "
                         f"{', '.join(suites)}", Exit.LAB_BUILD)


def _candidate(apt: PrivateApt, package: str) -> str | None:
    try:
        return apt.candidate(package)
    except KexectestError:
        return None  # apt-cache policy of an unknown name fails in some apt versions


def resolve_kept(spec: str, root: Path, log=None) -> tuple[KernelChoice, PrivateApt]:
    """`resolve`, answered from the last answer while the private lists are the same ones:
    every `lab run --kernel-suite` asks, and apt-cache takes seconds on a loaded machine."""
    answer = root / f"answer-{spec}.json"
    try:
        kept = json.loads(answer.read_text())
        apt = PrivateApt(root, kept["choice"]["suite"])
        if kept["lists"] == apt.lists_state() and apt.lists_fresh():
            c = kept["choice"]
            return KernelChoice(c["suite"], c["image"], c["version"],
                                [tuple(p) for p in c["parts"]]), apt
    except (OSError, ValueError, KeyError, TypeError):
        pass
    choice, apt = resolve(spec, root, log)
    try:
        write_atomic(answer, json.dumps({"lists": apt.lists_state(),
                                         "choice": asdict(choice)}) + "\n")
    except (OSError, KexectestError):
        pass  # not kept: the next run asks apt again
    return choice, apt
