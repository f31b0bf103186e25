"""The import rules of DESIGN.md, enforced.

* typer and rich only in ``scmt_cli.cli``; pyvmomi only in ``scmt_cli.vsphere``;
* imports go one way: cli -> services -> adapters -> domain -> root modules;
* the embedded lab (``scmt_cli.lab``) sits beside the services, above the
  vSphere port it implements; the product never imports it, except the demo;
* no import cycles inside ``vsphere`` or ``lab`` (lazy imports count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "scmt_cli"

# rank of each top-level subpackage; a module may import only ranks <= its own
RANKS = {
    "cli": 4,
    "services": 3,
    "lab": 3,
    "blocks": 2,
    "transports": 2,
    "vsphere": 2,
    "agent": 2,
    "targets": 2,
    "state": 2,
    "inventory": 2,
    "domain": 1,
    # root modules
    "errors": 0,
    "events": 0,
    "results": 0,
    "extensions": 0,
    "procs": 0,
    "secretfile": 0,
    "__init__": 0,
    "__main__": 5,
}

#: the only modules outside the lab that may import it
LAB_USERS = {"services/demo.py"}

OWNERS = {"typer": "cli", "rich": "cli", "click": "cli", "pyVmomi": "vsphere", "pyvmomi": "vsphere", "vmware": "vsphere",
          "psycopg": "state"}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        yield rel, path


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "scmt_cli":  # from scmt_cli import errors -> scmt_cli.errors
                for alias in node.names:
                    yield node.lineno, f"scmt_cli.{alias.name}"
            else:
                yield node.lineno, node.module


def _area(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_there_are_modules_to_check():
    assert len(list(_modules())) > 10


@pytest.mark.parametrize(("rel", "path"), list(_modules()), ids=lambda v: str(v) if isinstance(v, Path) else None)
def test_module_respects_layers(rel, path):
    area = _area(rel)
    assert area in RANKS, f"{rel}: new top-level area {area!r}: give it a rank in tests/cli/test_layering.py"
    problems = []
    for lineno, name in _imports(path):
        top = name.split(".")[0]
        if top in OWNERS and OWNERS[top] != area:
            problems.append(f"{rel}:{lineno}: imports {name}, which only scmt_cli.{OWNERS[top]} may import")
        if top == "scmt_cli" and name != "scmt_cli":
            target = name.split(".")[1]
            target_rank = RANKS.get(target)
            if target_rank is not None and target_rank > RANKS[area]:
                problems.append(f"{rel}:{lineno}: {area} (rank {RANKS[area]}) imports {name} (rank {target_rank})")
            if target == "lab" and area != "lab" and rel.as_posix() not in LAB_USERS:
                problems.append(f"{rel}:{lineno}: imports {name}: the product reaches the lab through extensions")
    assert not problems, "\n".join(problems)


def test_layer_checker_catches_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import typer\nfrom scmt_cli.cli import app\n")
    found = list(_imports(bad))
    assert (1, "typer") in found and (2, "scmt_cli.cli") in found


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["scmt_cli", *parts])


def _cycles(package: str) -> list[list[str]]:
    """Import cycles among the modules of ``scmt_cli.<package>`` (each cycle once)."""
    graph: dict[str, set[str]] = {}
    for rel, path in _modules():
        if rel.parts[0] != package:
            continue
        mod = _module_name(rel)
        graph[mod] = {n for _, n in _imports(path) if n.startswith(f"scmt_cli.{package}.") and n != mod}
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif len(stack) < 12:
                walk(nxt, [*stack, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return cycles


@pytest.mark.parametrize("package", ["vsphere", "lab"])
def test_no_import_cycle_inside(package):
    assert not _cycles(package), _cycles(package)


def test_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "lab"
    pkg.mkdir()
    (pkg / "a.py").write_text("from scmt_cli.lab.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from scmt_cli.lab.a import y\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    assert _cycles("lab") == [["scmt_cli.lab.a", "scmt_cli.lab.b"]]
