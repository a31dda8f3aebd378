"""The lab guest with a Python: the image a pushed Python agent runs in.

The lab's own guest is a minimal target (busybox and kexec-tools, no Python): a push gives it
the shell agent, as it would a machine like it.  The `syscall` loader needs the Python agent,
so that guest gets a Python the way a distribution's machine has one: the host's own system
interpreter (Debian's python3, never this tree or its virtual environment) with the standard
library modules the agent imports, byte-compiled, and the libraries they link -- nothing of
kexectest, which still arrives by push.  It is the lab image's initramfs with a second cpio
archive after it (the kernel unpacks one after the other), cached beside the lab image.

Which modules: the interpreter itself runs the agent's `snapshot` and `load --help` at build
time and says what it imported; extension modules the agent can do without are left out
(OPTIONAL_EXTENSIONS), the rest follow from `ldd`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import Exit, KexectestError
from . import image as lab_image

RECIPE = 1  # bump when what goes into the guest's Python changes

INTERPRETER = "/usr/bin/python3"  # Debian's python3 (setup.sh installs it)
# Optional extension modules the agent's imports reach and do without, and why they are heavy
OPTIONAL_EXTENSIONS = {
    "_hashlib": "OpenSSL's libcrypto (4.5 MB): hashlib has its own sha256 and md5",
    "_bz2": "libbz2, for shutil's archives only",
    "_lzma": "liblzma, for shutil's archives only",
}

# Run by the guest's interpreter at build time: the agent's two paths that run no load, then
# every module it carries imported; prints what it imported, as JSON.
_RECORD = r"""
import contextlib, io, json, runpy, sys
ns = runpy.run_path(sys.argv[1], run_name="agent")
ns["install"]()
names = [m for m in ns["SOURCES"]]
for name in names:
    __import__(name)
from kexectest.target.agent import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["snapshot"])
    try:
        main(["load", "--help"])
    except SystemExit:
        pass
import sysconfig
files = sorted({getattr(m, "__file__", None) for m in list(sys.modules.values())} - {None})
print(json.dumps({"version": "%d.%d.%d" % sys.version_info[:3],
                  "stdlib": sysconfig.get_paths()["stdlib"], "files": files,
                  "executable": sys.executable}))
"""


def _ldd(binary: str) -> list[str]:
    return lab_image._ldd_libs(binary)


def record(python: str = INTERPRETER) -> dict:
    """What the agent imports under `python`: version, stdlib directory, module files."""
    from ..target import pack

    exe = shutil.which(python) or python
    if not Path(exe).is_file():
        raise KexectestError(f"lab build: no {python} for the guest's Python (apt-get install "
                             "python3)", Exit.MISSING_TOOL)
    with tempfile.TemporaryDirectory(prefix="kt-guest-python-") as tmp:
        agent = Path(tmp) / pack.AGENT_NAME
        agent.write_text(pack.agent_source())
        proc = subprocess.run([exe, "-S", "-E", "-c", _RECORD, str(agent)], capture_output=True,
                              text=True, timeout=120, cwd=tmp)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise KexectestError(f"lab build: the agent does not run under {exe}: {last}",
                             Exit.LAB_BUILD)
    info = json.loads(proc.stdout)
    info["executable"] = str(Path(exe).resolve())
    return info


def add_python(cpio, info: dict) -> list[str]:
    """Put the interpreter, its modules (as .pyc beside where the .py would be) and the
    libraries they link into `cpio`; returns the library paths (the image adds those once)."""
    exe = info["executable"]
    stdlib = Path(info["stdlib"])
    cpio.file(exe, Path(exe).read_bytes(), 0o755)
    cpio.symlink("usr/bin/python3", exe)
    libs = set(_ldd(exe))
    sources = []
    for name in info["files"]:
        path = Path(name)
        if stdlib not in path.parents:
            continue  # only the standard library: never a module of this tree
        if path.suffix == ".so":
            if path.name.split(".")[0] not in OPTIONAL_EXTENSIONS:
                cpio.file(name, path.read_bytes(), 0o755)
                libs |= set(_ldd(name))
        elif path.suffix == ".py":
            sources.append(name)
    for name, code in compiled(exe, sources).items():
        # sourceless: the .pyc where the .py would be, used without a check (no mtimes in cpio)
        cpio.file(str(Path(name).with_suffix(".pyc")), code)
    cpio.dir(str(stdlib / "lib-dynload"))
    return sorted(libs)


_COMPILE = r"""
import json, py_compile, sys
out = {}
for i, name in enumerate(json.loads(sys.argv[1])):
    dst = "%s/%d.pyc" % (sys.argv[2], i)
    py_compile.compile(name, cfile=dst, dfile=name, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    out[name] = dst
print(json.dumps(out))
"""


def compiled(exe: str, sources: list) -> dict:
    """name -> bytecode, compiled by the guest's interpreter (its own magic number)."""
    with tempfile.TemporaryDirectory(prefix="kt-guest-pyc-") as tmp:
        proc = subprocess.run([exe, "-S", "-E", "-c", _COMPILE, json.dumps(sources), tmp],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise KexectestError(f"lab build: {exe} cannot compile its modules: {last}",
                                 Exit.LAB_BUILD)
        return {name: Path(dst).read_bytes() for name, dst in json.loads(proc.stdout).items()}


# ---------------------------------------------------------------- the image with a Python


def _identity(exe: str) -> dict:
    st = os.stat(exe)
    return {"executable": exe, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def python_image(img: lab_image.LabImage, python: str = INTERPRETER, log=None) -> lab_image.LabImage:
    """`img` with a Python in its guest (built once per image and interpreter, cached)."""
    log = log or (lambda msg: None)
    exe = str(Path(shutil.which(python) or python).resolve())
    if not Path(exe).is_file():
        raise KexectestError(f"lab build: no {python} for the guest's Python (apt-get install "
                             "python3)", Exit.MISSING_TOOL)
    from ..target import pack

    st = img.initrd.stat()
    key = {"recipe": RECIPE, "base_initrd": [str(img.initrd), st.st_size, st.st_mtime_ns],
           "python": _identity(exe), "agent": hashlib.sha256(pack.agent_source().encode())
           .hexdigest(), "optional": sorted(OPTIONAL_EXTENSIONS)}
    out = lab_image.cache_root() / hashlib.sha256(json.dumps(key, sort_keys=True).encode()
                                                  ).hexdigest()[:16]
    cached = lab_image._cached(out)
    if cached is None:
        lab_image._check_space(lab_image.cache_root())
        with open(lab_image.cache_root() / ".lock", "w") as lock:  # one builder, as build_image
            fcntl.flock(lock, fcntl.LOCK_EX)
            cached = lab_image._cached(out) or _build(img, exe, key, out, log)
    # the files are the cached guest's; how to log in and what to boot with stay the caller's
    return dataclasses.replace(img, kernel=cached.kernel, initrd=cached.initrd,
                               disks=cached.disks, directory=cached.directory)


def _build(img: lab_image.LabImage, exe: str, key: dict, out: Path, log) -> lab_image.LabImage:
    log(f"adding {exe} to the lab guest in {out}")
    info = record(exe)
    cpio = lab_image.Cpio()
    have = set(lab_image._ldd_libs(lab_image._tool("kexec", "kexec-tools")))  # in the base
    for lib in add_python(cpio, info):
        if lib not in have:
            cpio.file(lib, Path(lib).read_bytes(), 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=lab_image.cache_root()))
    try:
        stage = tmp / "image"
        stage.mkdir()
        initrd = img.initrd.read_bytes() + gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
        (stage / "initrd.gz").write_bytes(initrd)
        for src in [img.kernel, *img.disks]:  # linked: pruning the base leaves these whole
            try:
                os.link(src, stage / src.name)
            except OSError:
                shutil.copyfile(src, stage / src.name)
        (stage / "inputs.json").write_text(json.dumps({**key, "python_version":
                                                       info["version"]}, indent=2) + "\n")
        made = dataclasses.replace(img, kernel=out / img.kernel.name, initrd=out / "initrd.gz",
                                   disks=[out / d.name for d in img.disks], directory=out)
        lab_image.publish(made, stage, out, tmp)
    except OSError as exc:
        raise lab_image.build_failure(exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"lab guest with Python {info['version']} ready: {out}")
    return made
