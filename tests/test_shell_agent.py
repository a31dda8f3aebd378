"""The shell agent (kexectest-agent.sh, for targets without Python): on this machine its snapshot
is the Python agent's, line for line and checksum for checksum, under dash, bash and busybox's
ash (with coreutils, and with busybox's own tools only); its values are quoted as snapshot.quote
quotes them; it refuses as the Python agent refuses.  Never loads anything for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexectest.errors import Exit
from kexectest.target import pack, snapshot
from kexectest.target.shell import shell_agent_source

PY = sys.executable
SHELLS = ["dash", "bash", "busybox sh"]


@pytest.fixture(scope="module")
def packed(built_payload) -> Path:
    d = Path(tempfile.mkdtemp(prefix="kt-shell-agent-"))
    d.chmod(0o755)
    pack.write_pack(d, built_payload, {})
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory) -> str:
    """A PATH holding busybox's applets only: a target with busybox and nothing else."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    d = tmp_path_factory.mktemp("busybox-bin")
    for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split():
        (d / applet).symlink_to(busybox)
    return str(d)


def run(argv, env=None, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/",
                          env=env or os.environ, **kw)


def shell(name: str) -> list[str]:
    words = name.split()
    if shutil.which(words[0]) is None:
        pytest.skip(f"{words[0]} is not installed")
    return words


@pytest.fixture(scope="module")
def python_block(packed) -> list[str]:
    proc = run([PY, packed / pack.AGENT_NAME, "snapshot"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("KTSNAP begin v=1 ") and lines[-1].startswith("KTSNAP end ")
    return lines


@pytest.mark.parametrize("sh", SHELLS)
def test_shell_snapshot_equals_the_python_one(packed, python_block, sh):
    proc = run([*shell(sh), packed / pack.SHELL_AGENT_NAME, "snapshot"])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    got = proc.stdout.splitlines()
    if sh.startswith("busybox"):  # busybox's ash runs its own dd, which cannot read /dev/kmsg
        got, want = _without_e820_source(got), _without_e820_source(python_block)
    else:
        want = python_block
    assert got == want
    snap = snapshot.parse_snapshot(proc.stdout.splitlines())
    assert snap["complete"] and snap["bad_lines"] == 0


def _without_e820_source(lines):
    """The block but its e820-source line (whose kind names the tool that read the log)."""
    kept = [ln for ln in lines if not ln.startswith("KTSNAP e820-source ")]
    assert len(kept) == len(lines) - 1
    return kept


def test_busybox_only_target(packed, python_block, busybox_path):
    """busybox's applets and nothing else: every line the same but where the kernel log came
    from (busybox's dd cannot read /dev/kmsg without blocking; its dmesg reads the same log)."""
    env = {"PATH": busybox_path}
    proc = run([f"{busybox_path}/sh", packed / pack.SHELL_AGENT_NAME, "snapshot"], env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    got = proc.stdout.splitlines()
    assert _without_e820_source(got) == _without_e820_source(python_block)
    source = [ln for ln in got if ln.startswith("KTSNAP e820-source ")][0]
    assert re.match(r"KTSNAP e820-source kind=(dmesg|dmesg-empty|none) ~[0-9A-F]{4}$", source)
    assert snapshot.parse_snapshot(got)["complete"]


def _quote_function() -> str:
    text = shell_agent_source()
    start = text.index("quote() {")
    end = text.index("\n}\n", start) + 3
    return "LC_ALL=C\nexport LC_ALL\n" + text[start:end]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=24).filter(lambda b: b"\0" not in b and b"\n" not in b))
def test_shell_quotes_as_snapshot_quote(value):
    """Bare, quoted, escaped, UTF-8 and invalid UTF-8 alike (NUL and newline cannot reach a
    shell variable read from one sysfs line)."""
    script = _quote_function() + '\nquote "$1"\nprintf "%s" "$Q"\n'
    proc = subprocess.run([shutil.which("dash") or "sh", "-c", script, "sh", value],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("ascii") == snapshot.quote(value.decode("utf-8", "replace"))


@pytest.mark.parametrize("value", ["System RAM", 'a "b" \\c', "caf\u00e9", "", "tab\there",
                                   "x\x7fy"])
def test_shell_quotes_known_values(value):
    script = _quote_function() + '\nquote "$1"\nprintf "%s" "$Q"\n'
    proc = subprocess.run(["sh", "-c", script, "sh", value], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout == snapshot.quote(value)


def as_nobody(argv, path="/usr/bin:/bin"):
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop to nobody")
    return run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *map(str, argv)],
               env={"PATH": path, "HOME": "/"})


@pytest.mark.parametrize("sh", ["sh", "busybox"])
def test_shell_agent_refuses_as_the_python_agent(packed, sh, busybox_path):
    elf = packed / pack.PAYLOAD_NAME
    py = as_nobody(["/usr/bin/python3", packed / pack.AGENT_NAME, "load", elf])
    if sh == "busybox":
        got = as_nobody([f"{busybox_path}/sh", packed / pack.SHELL_AGENT_NAME, "load", elf],
                        path=busybox_path)
    else:
        got = as_nobody(["sh", packed / pack.SHELL_AGENT_NAME, "load", elf])
    assert py.returncode == got.returncode == Exit.KEXEC_REFUSED, (py.stderr, got.stderr)
    assert got.stderr.splitlines() == py.stderr.splitlines() == [
        "kexectest: error: not root (euid 65534): kexec needs CAP_SYS_BOOT; run as root"]
    if sh == "sh":
        assert got.stdout == py.stdout  # the block before it, the same (as nobody)


@pytest.mark.parametrize("args, code, text", [
    (["load", "@ELF", "--exec"], Exit.USAGE,
     "--exec ends the running system: add --yes to confirm (and there is no terminal here to "
     "ask at)"),
    (["load", "@ELF", "--hang-at", "e820"], Exit.USAGE,
     "the shell agent does not take --hang-at: it loads the payload as it is (patch it on the "
     "host: kexectest pack --hang-at ...)"),
    (["load", "@ELF", "--via", "syscall"], Exit.USAGE,
     "the shell agent loads through kexec-tools only (--via kexec-tools)"),
    (["load", "/nonexistent.elf"], Exit.BAD_INPUT, "/nonexistent.elf: no such file"),
    (["load", "/bin/true"], Exit.BAD_INPUT,
     "/bin/true: not an i386 payload (ELF64 machine 62); expected ELF32 EM_386"),
    (["load", "@SUMS"], Exit.BAD_INPUT, "SHA256SUMS: not an ELF file"),
    (["frobnicate"], Exit.USAGE, "usage: sh kexectest-agent.sh snapshot | load"),
])
def test_shell_agent_bad_input_is_one_line(packed, args, code, text):
    args = [str(packed / pack.PAYLOAD_NAME) if a == "@ELF" else
            str(packed / pack.SUMS_NAME) if a == "@SUMS" else a for a in args]
    proc = run(["sh", packed / pack.SHELL_AGENT_NAME, *args], stdin=subprocess.DEVNULL)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexectest: error: ") and text in lines[0]
    assert "KTSNAP" not in proc.stdout


@pytest.mark.parametrize("target", ["/nonexistent.elf", "/bin/true", "@SUMS"])
def test_both_agents_name_a_bad_payload_alike(packed, target):
    target = str(packed / pack.SUMS_NAME) if target == "@SUMS" else target
    sh = run(["sh", packed / pack.SHELL_AGENT_NAME, "load", target])
    py = run([PY, packed / pack.AGENT_NAME, "load", "--via", "kexec-tools", target])
    assert sh.returncode == py.returncode == Exit.BAD_INPUT
    assert sh.stderr == py.stderr
