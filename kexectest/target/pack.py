"""The target agent as one file, made from the package's own target-side modules.

`kexectest-agent.py` holds the sources of the modules `kexectest load` runs on a target
(AGENT_MODULES), each as it is in this tree, plus the one function it needs from the trace
package (the line checksum, cut out of trace/format.py by name).  At start it installs them as
the `kexectest` package ahead of anything on sys.path (a different kexectest installed on the
target cannot shadow them) and runs target/agent.py's `main`.  So the agent is this code, not a
copy of it; tests/test_agent.py runs the built file and compares it with the modules.

The file's first lines are Python 2 and 3.0 syntax, so an interpreter too old for the modules
says so in one line (exit 11) instead of a SyntaxError.
"""

import ast
import hashlib
from pathlib import Path

from .. import __version__
from .shell import AGENT_NAME as SHELL_AGENT_NAME

PACKAGE = Path(__file__).resolve().parents[1]
AGENT_NAME = "kexectest-agent.py"
MIN_PYTHON = (3, 6)
# (module, file under kexectest/) in the order a reader meets them; None: a package made empty
# here, because its real __init__ imports host-only modules (pyelftools, binutils, dataclasses)
AGENT_MODULES = (
    ("kexectest", "__init__.py"),
    ("kexectest.errors", "errors.py"),
    ("kexectest.payload", None),
    ("kexectest.payload.config", "payload/config.py"),
    ("kexectest.payload.options", "payload/options.py"),
    ("kexectest.payload.layout", "payload/layout.py"),
    ("kexectest.payload.patch", "payload/patch.py"),
    ("kexectest.payload.bzimage", "payload/bzimage.py"),
    ("kexectest.trace", None),
    ("kexectest.target", "target/__init__.py"),
    ("kexectest.target.snapshot", "target/snapshot.py"),
    ("kexectest.target.loader", "target/loader.py"),
    ("kexectest.target.elf", "target/elf.py"),
    ("kexectest.target.load", "target/load.py"),
    ("kexectest.target.agent", "target/agent.py"),
)
PACKAGES = ("kexectest", "kexectest.payload", "kexectest.trace", "kexectest.target")
# functions of carried modules that only the host calls: they may import host modules
HOST_ONLY = {"kexectest.payload.patch": ("patch",)}
# functions the agent takes from modules it cannot carry whole: module -> (file, functions)
EXCERPTS = {"kexectest.trace": ("trace/format.py", ("checksum",))}


def excerpt(path: Path, names) -> str:
    """Top-level functions of a module, by name, with the imports they use: the source text as
    it is in the file (a module the agent cannot carry whole still gives it its functions)."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    missing = set(names) - {f.name for f in funcs}
    if missing:
        raise LookupError(f"{path}: no top-level function {', '.join(sorted(missing))}")
    used = {n.id for f in funcs for n in ast.walk(f) if isinstance(n, ast.Name)}
    imports = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
            bound = {(a.asname or a.name).split(".")[0] for a in node.names}
            if bound & used and getattr(node, "module", None) != "__future__":
                imports.append(ast.get_source_segment(text, node))
    body = "\n\n\n".join(ast.get_source_segment(text, f) for f in funcs)
    return (f'"""{", ".join(names)} from kexectest/{path.relative_to(PACKAGE)}, as the target '
            f'agent carries {"it" if len(names) == 1 else "them"}."""\n\n'
            + "".join(i + "\n" for i in imports) + ("\n\n" if imports else "") + body + "\n")


def module_sources() -> list:
    """(module name, source text) for every module the agent carries, in AGENT_MODULES order."""
    out = []
    for name, rel in AGENT_MODULES:
        if name in EXCERPTS:
            rel_file, names = EXCERPTS[name]
            out.append((name, excerpt(PACKAGE / rel_file, names)))
        elif rel is None:
            out.append((name, f'"""{name} as the target agent carries it: only its modules '
                              'listed in target/pack.py."""\n'))
        else:
            out.append((name, (PACKAGE / rel).read_text(encoding="utf-8")))
    return out


def _literal(source: str) -> str:
    """A module's source as a Python literal: a raw triple-quoted string where that spells it
    exactly (readable in the agent), else repr."""
    if "'''" not in source and not source.endswith("\\") and "\r" not in source:
        return "r'''" + source + "'''"
    return repr(source)


_BOOT = '''#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""kexectest target agent, kexectest {version}: the "before" snapshot and the payload's load on
the machine under test, with nothing installed there but Python {min_major}.{min_minor} or later.

    python3 kexectest-agent.py snapshot             print the KTSNAP block and exit
    python3 kexectest-agent.py load [PAYLOAD] ...   what `kexectest load` does (as root);
                                                    --help for the options

Made by `kexectest pack` from kexectest's own modules (listed in SOURCES); do not edit, make it
again.  sha256 of the modules: {digest}.
"""
import sys

if sys.version_info < ({min_major}, {min_minor}):
    sys.stderr.write("kexectest: error: the target agent needs Python {min_major}.{min_minor} or "
                     "later; this is Python %d.%d (%s)\\n"
                     % (sys.version_info[0], sys.version_info[1], sys.executable))
    sys.exit({missing_tool})

SOURCES = {{}}
PACKAGES = {packages!r}
'''

_RUN = '''

class _Embedded(object):
    """Imports the modules above as the `kexectest` package, ahead of anything installed."""

    def find_spec(self, name, path=None, target=None):
        if name not in SOURCES:
            return None
        from importlib.machinery import ModuleSpec  # (importlib.util costs a slow machine more)
        return ModuleSpec(name, self, is_package=name in PACKAGES)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        where = "%s/%s.py" % (__file__, name.replace(".", "/"))  # tracebacks name the module
        exec(compile(SOURCES[name], where, "exec"), module.__dict__)


def install():
    for name in list(sys.modules):  # a kexectest imported before us is not ours
        if name == "kexectest" or name.startswith("kexectest."):
            del sys.modules[name]
    sys.meta_path.insert(0, _Embedded())


if __name__ == "__main__":
    import os
    install()
    from kexectest.target.agent import main
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(default_payload=os.path.join(here, "kexec_test.elf")))
'''


def agent_source() -> str:
    """The text of kexectest-agent.py."""
    sources = module_sources()
    digest = hashlib.sha256("".join(n + "\0" + s + "\0" for n, s in sources).encode()).hexdigest()
    from ..errors import Exit

    parts = [_BOOT.format(version=__version__, min_major=MIN_PYTHON[0], min_minor=MIN_PYTHON[1],
                          digest=digest, missing_tool=int(Exit.MISSING_TOOL),
                          packages=PACKAGES)]
    for name, source in sources:
        parts.append(f"\nSOURCES[{name!r}] = {_literal(source)}\n")
    parts.append(_RUN)
    return "".join(parts)


# -- the pack directory: what a user copies by hand ---------------------------------------------

PAYLOAD_NAME = "kexec_test.elf"
RUNNER_NAME = "run.sh"
SUMS_NAME = "SHA256SUMS"
# Python interpreters the runner and the push look for, in order (RHEL 8 without python3
# installed still has its platform-python)
PYTHONS = ("python3", "/usr/libexec/platform-python")


def runner_source() -> str:
    """run.sh: check the copy, then the Python agent where Python 3.6+ is, else the shell one."""
    pythons = " ".join(PYTHONS)
    return (
        "#!/bin/sh\n"
        "# kexectest pack: copy this directory to the machine under test and run `sh run.sh` as\n"
        "# root.  It ends the running system: the payload starts (extra arguments go to the\n"
        "# agent's `load`, e.g. --via kexec-tools).\n"
        'cd "$(dirname "$0")" && { ! command -v sha256sum >/dev/null || sha256sum -c '
        f"{SUMS_NAME} >/dev/null 2>&1 || {{ echo 'kexectest: error: the copied files fail "
        f"{SUMS_NAME}: copy them again' >&2; exit 10; }}; }} && for py in {pythons}; do "
        "\"$py\" -c 'import sys; sys.exit(sys.version_info < (3, 6))' 2>/dev/null && exec "
        f"\"$py\" -S -E {AGENT_NAME} load {PAYLOAD_NAME} --exec --yes \"$@\"; done; exec sh "
        f"{SHELL_AGENT_NAME} load {PAYLOAD_NAME} --exec --yes \"$@\"\n")


def pack_files(src, options: dict) -> dict:
    """name -> bytes of every file of a pack: the agents, the payload with `options` patched
    in (checked as a load checks it), the runner and their sums."""
    from .load import prepare
    from .shell import shell_agent_source

    files = {AGENT_NAME: agent_source().encode("utf-8"),
             SHELL_AGENT_NAME: shell_agent_source().encode("utf-8"),
             PAYLOAD_NAME: prepare(src, options).data,
             RUNNER_NAME: runner_source().encode("utf-8")}
    files[SUMS_NAME] = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                               for name, data in files.items()
                               if name != RUNNER_NAME).encode("ascii")
    return files


def write_pack(out_dir, src, options: dict) -> list:
    """Write the pack into `out_dir` (made if missing); returns the paths written."""
    from ..fsutil import make_dirs, os_error, write_atomic

    out_dir = make_dirs(out_dir)
    written = []
    for name, data in pack_files(src, options).items():
        path = out_dir / name
        try:
            write_atomic(path, data)
            path.chmod(0o755 if name.endswith((".py", ".sh")) else 0o644)
        except OSError as exc:
            raise os_error(path, exc) from None
        written.append(path)
    return written
