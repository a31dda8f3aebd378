"""The target agent (`kexectest pack`'s kexectest-agent.py): built from the package's own
modules, it prints the same snapshot as `kexectest load --snapshot-only` on this machine, refuses
as `kexectest load` refuses, patches as the host patches, and runs under the oldest Python the
machine offers (3.6, from pyenv's prebuilt interpreters) with nothing but the standard library.

Never loads anything for real: this host is not a test guest (the refusals run as nobody).
"""

from __future__ import annotations

import ast
import errno
import glob
import hashlib
import inspect
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexectest import fsutil
from kexectest import payload as pl
from kexectest.errors import Exit, KexectestError
from kexectest.target import load as tload
from kexectest.target import pack
from kexectest.target.elf import PayloadFile
from kexectest.trace import format as trace_format

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def pyenv_python(version: str) -> str | None:
    """An interpreter of `version` (e.g. "3.6") from pyenv's prebuilt versions or PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin" / f"python{version}")))
    if found:
        return found[-1]
    return shutil.which(f"python{version}")


OLDEST = "3.6"


@pytest.fixture(scope="module")
def old_python() -> str:
    path = pyenv_python(OLDEST)
    if path is None:
        pytest.skip(f"no Python {OLDEST} here (pyenv's {OLDEST}.x under $PYENV_ROOT/versions or "
                    f"python{OLDEST} on PATH): the agent's oldest supported Python is untested")
    return path


@pytest.fixture(scope="module")
def packed(elf) -> Path:
    """A pack in a directory anyone may read (the refusal tests run as nobody; pytest's own
    temporary directories are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="kt-agent-"))
    d.chmod(0o755)
    pack.write_pack(d, elf, {})
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def elf(tmp_path_factory) -> Path:
    src = pl.payload_dir() / pl.SOURCE_NAME
    if not src.is_file():
        pytest.skip(f"payload source {src} is not there yet")
    out = pl.build(tmp_path_factory.mktemp("build") / "kexec_test.elf")
    return out


def run(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    kw.setdefault("cwd", "/")
    return subprocess.run(list(map(str, argv)), capture_output=True, text=True, **kw)


def as_nobody(argv) -> subprocess.CompletedProcess:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop to nobody")
    return run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
               env={"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONPATH": str(ROOT)})


def kexectest_cli(*args):
    return [PY, "-m", "kexectest", *args]


def _blocks_match(a: str, b: str) -> None:
    """Two snapshot blocks printed on this machine: line for line the same, and a real block."""
    la, lb = a.splitlines(), b.splitlines()
    assert la and la[0].startswith("KTSNAP begin v=1 ") and la[-1].startswith("KTSNAP end ")
    assert la == lb


# ---------------------------------------------------------------- the same lines


def test_agent_snapshot_equals_kexectest_load(packed):
    agent = packed / pack.AGENT_NAME
    ours = run(kexectest_cli("load", "--snapshot-only"), env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)})
    theirs = run([PY, "-S", "-E", agent, "snapshot"])
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    _blocks_match(ours.stdout, theirs.stdout)
    also = run([PY, agent, "load", "--snapshot-only"])
    assert also.stdout == theirs.stdout


def test_agent_under_the_oldest_python(packed, old_python):
    """Python 3.6 (pyenv's prebuilt build: nothing installed in it), -S -E: the standard
    library alone.  Its snapshot equals the host's, line for line."""
    agent = packed / pack.AGENT_NAME
    version = run([old_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    assert version.stdout.strip() == OLDEST
    old = run([old_python, "-S", "-E", agent, "snapshot"])
    assert old.returncode == 0, old.stderr
    new = run(kexectest_cli("load", "--snapshot-only"), env={**os.environ,
                                                              "PYTHONPATH": str(ROOT)})
    _blocks_match(new.stdout, old.stdout)
    helped = run([old_python, "-S", "-E", agent, "load", "--help"])
    assert helped.returncode == 0 and "--hang-at" in helped.stdout


def test_agent_patches_as_the_host_patches(packed, old_python, elf, tmp_path):
    """The agent's own modules, under Python 3.6, patch the payload to the very bytes
    `payload.patch` gives on the host for the same options."""
    options = {"hang_at": "e820", "skip": ("equipment", "12"), "uart_base": 0x2F8, "baud": 38400,
               "debug_exit_port": 0xF4, "mask_nmi": True, "max_drives": 2}
    host = pl.patch(elf, tmp_path / "host.elf", **pl.options.config_kwargs(options))
    script = ("import runpy, sys\n"
              f"ns = runpy.run_path({str(packed / pack.AGENT_NAME)!r}, run_name='agent')\n"
              "ns['install']()\n"
              "from kexectest.target.load import prepare\n"
              f"print(prepare({str(elf)!r}, {options!r}).sha256)\n")
    got = run([old_python, "-S", "-E", "-c", script])
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == hashlib.sha256(host.read_bytes()).hexdigest()
    assert hashlib.sha256(host.read_bytes()).hexdigest() != hashlib.sha256(
        elf.read_bytes()).hexdigest()


def without_cap_sys_boot(argv) -> subprocess.CompletedProcess:
    """As root, with CAP_SYS_BOOT out of the bounding set: the kernel would refuse kexec_load."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop CAP_SYS_BOOT")
    return run([setpriv, "--bounding-set=-sys_boot", "--inh-caps=-sys_boot", *argv],
               env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("who, interpreter, line", [
    (as_nobody, "host", "not root (euid 65534): kexec needs CAP_SYS_BOOT; run as root"),
    (without_cap_sys_boot, "host", "root without CAP_SYS_BOOT (a container or a capability "
                                   "bounding set drops it): kexec is not allowed here"),
    (without_cap_sys_boot, "oldest", "root without CAP_SYS_BOOT (a container or a capability "
                                     "bounding set drops it): kexec is not allowed here"),
], ids=["nobody", "root-without-cap", "root-without-cap-python3.6"])
def test_agent_refuses_as_kexectest_load_refuses(packed, who, interpreter, line, request):
    """The same snapshot first, then the same one line and exit code 15.  (Python 3.6 lives
    under /root, which nobody cannot enter: it is run as root without the capability.)"""
    py = PY if interpreter == "host" else request.getfixturevalue("old_python")
    elf = packed / pack.PAYLOAD_NAME
    ours = who([PY, "-m", "kexectest", "load", elf, "--hang-at", "1"])
    theirs = who([py, "-S", "-E", packed / pack.AGENT_NAME, "load", elf, "--hang-at", "1"])
    assert ours.returncode == theirs.returncode == Exit.KEXEC_REFUSED, (ours.stderr, theirs.stderr)
    assert theirs.stderr.splitlines() == ours.stderr.splitlines() == [f"kexectest: error: {line}"]
    _blocks_match(ours.stdout, theirs.stdout)


@pytest.mark.parametrize("args, code, text", [
    (["load", "--exec"], Exit.USAGE, "--exec ends the running system: add --yes to confirm"),
    (["load", "--hang-at", "no-such-step"], Exit.UNKNOWN_STEP, "unknown step 'no-such-step'"),
    (["load", "--uart-base", "zz"], Exit.USAGE, "'zz' is not a number"),
    (["load", "/nonexistent.elf"], Exit.BAD_INPUT, "/nonexistent.elf: no such file"),
    (["frobnicate"], Exit.USAGE, "invalid choice"),
])
def test_agent_bad_input_is_one_line(packed, args, code, text):
    proc = run([PY, packed / pack.AGENT_NAME, *args], stdin=subprocess.DEVNULL)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexectest: error: ") and text in lines[0]
    assert "Traceback" not in proc.stderr


def test_too_old_a_python_is_one_line(packed):
    old = pyenv_python("2.7")
    if old is None:
        pytest.skip("no Python 2.7 here to stand for a too-old interpreter")
    proc = run([old, packed / pack.AGENT_NAME, "snapshot"])
    assert proc.returncode == Exit.MISSING_TOOL
    assert proc.stderr.splitlines() == [
        f"kexectest: error: the target agent needs Python 3.6 or later; this is Python 2.7 "
        f"({old})"]


# ---------------------------------------------------------------- one source, no drift


def _agent_sources(text: str) -> dict:
    tree = ast.parse(text)
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.targets[0].value, ast.Name)
                and node.targets[0].value.id == "SOURCES"):
            out[ast.literal_eval(node.targets[0].slice)] = ast.literal_eval(node.value)
    return out


def test_the_agent_is_the_package_code(packed):
    """Every module the agent carries is the tree's file, byte for byte; the one excerpt is the
    tree's own function; nothing else is in it."""
    sources = _agent_sources((packed / pack.AGENT_NAME).read_text())
    assert list(sources) == [name for name, _ in pack.AGENT_MODULES]
    for name, rel in pack.AGENT_MODULES:
        if rel is not None and name not in pack.EXCERPTS:
            assert sources[name] == (pack.PACKAGE / rel).read_text(), name
    assert inspect.getsource(trace_format.checksum) in sources["kexectest.trace"]
    # the excerpt computes what the trace package computes
    ns: dict = {}
    exec(sources["kexectest.trace"], ns)
    rnd = random.Random(7)
    for n in (0, 1, 5, 300, 4096):
        data = bytes(rnd.randrange(256) for _ in range(n))
        assert ns["checksum"](data) == trace_format.checksum(data)


def _imports(tree, package):
    """(function name or None, imported module) for every import in a module."""
    def walk(node, fn):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.ClassDef)) and fn is None \
                else fn
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                    yield fn, target, [f"{target}.{a.name}" for a in child.names]
                else:
                    yield fn, child.module, []
            elif isinstance(child, ast.Import):
                for a in child.names:
                    yield fn, a.name, []
            yield from walk(child, inner)
    yield from walk(tree, None)


def test_agent_modules_import_only_the_standard_library_and_each_other():
    """What the agent carries imports nothing outside it but the standard library (the 3.6
    runs prove it works; this names the module that would break it).  A host-only function
    (pack.HOST_ONLY) may import host modules: the agent never calls it."""
    carried = {name for name, _ in pack.AGENT_MODULES}
    stdlib = set(sys.stdlib_module_names)
    for name, source in pack.module_sources():
        package = name if name in pack.PACKAGES else name.rsplit(".", 1)[0]
        for fn, target, subs in _imports(ast.parse(source), package):
            assert target != "__future__", f"{name}: no __future__ imports in Python 3.6"
            if fn in pack.HOST_ONLY.get(name, ()):
                continue
            ok = (target in carried or (subs and set(subs) <= carried)
                  or target.split(".")[0] in stdlib)
            assert ok, f"{name}{'.' + fn if fn else ''} imports {target}"


def test_agent_options_are_kexectest_loads(packed):
    """The agent's load options are made from the same tables as `kexectest load`'s."""
    from click.testing import CliRunner

    from kexectest.cli import main

    click_help = CliRunner().invoke(main, ["load", "--help"]).output
    agent_help = run([PY, packed / pack.AGENT_NAME, "load", "--help"]).stdout

    def flags(text):
        return {w.rstrip(",") for w in text.replace("/", " ").split() if w.startswith("--")
                and w[2:3].isalpha()}
    assert flags(click_help) - {"--help"} <= flags(agent_help) | {
        "--" + "no-" + o.cli[2:] for o in pl.options.OPTIONS if o.kind == "switch"}
    for o in pl.options.OPTIONS:
        assert o.cli in agent_help
    for flag, _, _ in tload.SWITCHES:
        assert flag in agent_help and flag in click_help


def test_no_space_errnos_are_fsutils():
    assert set(tload.NO_SPACE_ERRNOS) == set(fsutil.NO_SPACE_ERRNOS)
    assert errno.ENOSPC in tload.NO_SPACE_ERRNOS


# ---------------------------------------------------------------- the hand-read ELF


def test_hand_reader_agrees_with_pyelftools(elf):
    ref = pl.PayloadImage.open(elf)
    got = PayloadFile.open(elf)
    assert [(s.paddr, s.vaddr, s.offset, s.filesz, s.memsz, s.flags) for s in ref.segments] == \
        [tuple(s) for s in got.segments]
    for key in ("e_entry", "entry32", "entry64", "kt_base", "config_offset", "build_id",
                "sha256", "step_meta"):
        assert getattr(got, key) == getattr(ref, key), key
    assert got.config == ref.config and got.config.pack() == ref.config.pack()
    assert got.steps == [s.name for s in ref.steps] and len(got.steps) > 10
    assert got.checks() == ref.checks()
    assert {k: got.symbols.get(k) for k in ref.symbols} == ref.symbols
    for key in (ref.steps[3].name, "5", "005"):
        assert got.step_index(key) == ref.step_index(key)
    with pytest.raises(KexectestError) as err:
        got.step_index("nope")
    assert err.value.code == Exit.UNKNOWN_STEP


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=1, max_value=23000), flips=st.lists(
    st.tuples(st.integers(min_value=0, max_value=6000), st.integers(min_value=1, max_value=255)),
    max_size=4))
def test_damaged_elf_is_one_line(built_payload, cut, flips):
    """A truncated or corrupted payload never escapes as anything but a one-line BAD_INPUT (or a
    payload that still reads: then its checks judge it)."""
    data = bytearray(built_payload.read_bytes()[:cut])
    for at, xor in flips:
        if at < len(data):
            data[at] ^= xor
    try:
        img = PayloadFile("damaged.elf", bytes(data))
    except KexectestError as exc:
        assert exc.code == Exit.BAD_INPUT and "\n" not in str(exc)
        assert str(exc).startswith("damaged.elf: ")
        return
    img.checks()  # a reading that survived is judged by the same rules, without error


# ---------------------------------------------------------------- kexectest pack


def test_pack_writes_a_directory_that_runs(tmp_path):
    """`kexectest pack -o DIR --hang-at e820`: the files, their sums, the payload patched; the
    runner checks the copy, then runs an agent (as nobody here: the refusal line)."""
    out = Path(tempfile.mkdtemp(prefix="kt-pack-"))
    out.chmod(0o755)
    try:
        proc = run(kexectest_cli("pack", "-o", out / "p", "--hang-at", "e820"),
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr
        d = out / "p"
        names = sorted(p.name for p in d.iterdir())
        assert names == sorted([pack.AGENT_NAME, pack.SHELL_AGENT_NAME, pack.PAYLOAD_NAME,
                                pack.RUNNER_NAME, pack.SUMS_NAME])
        img = pl.PayloadImage.open(d / pack.PAYLOAD_NAME)
        assert img.config.hang_step == img.step_index("e820")
        check = run(["sha256sum", "-c", pack.SUMS_NAME], cwd=d)
        assert check.returncode == 0, check.stdout
        d.chmod(0o755)
        ran = as_nobody(["sh", d / pack.RUNNER_NAME])
        assert ran.returncode == Exit.KEXEC_REFUSED, ran.stderr
        assert ran.stderr.splitlines() == [
            "kexectest: error: not root (euid 65534): kexec needs CAP_SYS_BOOT; run as root"]
        assert ran.stdout.startswith("KTSNAP begin v=1 ")
        with open(d / pack.PAYLOAD_NAME, "r+b") as f:  # a copy damaged on the way
            f.seek(5000)
            f.write(b"\xff")
        ran = as_nobody(["sh", d / pack.RUNNER_NAME])
        assert ran.returncode == Exit.BAD_INPUT and "KTSNAP" not in ran.stdout
        assert ran.stderr.strip() == ("kexectest: error: the copied files fail SHA256SUMS: copy "
                                      "them again")
    finally:
        shutil.rmtree(out)


def test_pack_refuses_a_bad_option_in_one_line(tmp_path):
    proc = run(kexectest_cli("pack", "-o", tmp_path / "p", "--hang-at", "nope"),
               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == Exit.UNKNOWN_STEP
    assert proc.stderr.startswith("kexectest: error: unknown step 'nope'")
    assert not (tmp_path / "p" / pack.AGENT_NAME).exists()
