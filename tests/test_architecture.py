"""The house's shape, checked: data flows one way through the packages (docs/architecture.md),
and click is spoken only at the edge (commands/, cli.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kexectest"

# Lower layers never import higher ones.  Same-layer imports are allowed.
LAYERS = (
    ("__init__", "errors", "fsutil"),  # the base every part may use
    ("payload",),  # the payload ELF: build, read, patch, options
    ("trace",),  # bytes -> Lines and Records
    ("target",),  # what runs on the machine under test: loader, snapshot
    ("analysis",),  # Lines -> Analysis
    ("output",),  # Analysis -> report.json, summary.md, bundle, live view
    ("capture",),  # consoles, captures, triggers, one session end to end
    ("lab",),  # the virtual lab: QEMU machines running sessions
    ("fleet",),  # lab files, power, labgrid, sweeps, sweep reports, compare
    ("commands", "cli", "__main__"),  # click, the edge
)
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}
CLICK_OK = {"commands", "cli"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts
        yield path, parts


def _part(parts: tuple[str, ...]) -> str:
    return parts[0] if parts else "__init__"


def _imports(path: Path, parts: tuple[str, ...]):
    """(imported kexectest top-level part, line) for every import in the file, lazy ones too."""
    package = parts[:-1]  # the package a relative import starts from (an __init__'s own)
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + tuple(node.module.split(".")) if node.module else base
                if not target:  # "from .. import x": x is a top-level part or a name of __init__
                    for alias in node.names:
                        yield (alias.name if alias.name in RANK else "__init__"), node.lineno
                    continue
                yield target[0], node.lineno
            elif node.module and node.module.split(".")[0] == "kexectest":
                rest = node.module.split(".")[1:]
                if rest:
                    yield rest[0], node.lineno
                else:
                    for alias in node.names:
                        yield (alias.name if alias.name in RANK else "__init__"), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "kexectest" and len(names) > 1:
                    yield names[1], node.lineno


def test_every_module_has_a_layer():
    unknown = sorted({_part(p) for _, p in _modules()} - set(RANK))
    assert not unknown, f"add these to LAYERS (and docs/architecture.md): {unknown}"


def test_imports_flow_one_way():
    wrong = []
    for path, parts in _modules():
        me = _part(parts)
        for other, line in _imports(path, parts):
            if other not in RANK:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports unknown {other!r}")
            elif RANK[other] > RANK[me]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {me} imports {other} "
                             "(a higher layer)")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("library", ["click"])
def test_click_only_at_the_edge(library):
    users = []
    for path, parts in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            if any(n.split(".")[0] == library for n in names) and _part(parts) not in CLICK_OK:
                users.append(str(path.relative_to(PACKAGE.parent)))
    assert not users, f"{library} outside commands/: {sorted(set(users))}"


def test_the_checker_sees_a_wrong_import(tmp_path, monkeypatch):
    """The rule can fail: a payload module importing the analysis is caught."""
    fake = tmp_path / "kexectest" / "payload"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..analysis import core\nfrom . import image\n")
    found = list(_imports(fake / "bad.py", ("payload", "bad")))
    assert ("analysis", 1) in found and ("payload", 2) in found
    assert RANK["analysis"] > RANK["payload"]
