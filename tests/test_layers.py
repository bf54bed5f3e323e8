"""The package's layering: imports point down the layers only, and no module imports itself back.

The import graph is read with ``ast`` (no third-party tool): every ``import`` and ``from ...
import`` in every module, function-level (lazy) imports included, except those under
``if TYPE_CHECKING:`` (annotations only). A module's layer is its first component under
``simcluster``; the order below is the architecture (README, "How it is built").
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simcluster"

# bottom to top; names in one entry share a layer (they may import each other, acyclically)
LAYERS = [
    {"errors", "paths", "lazy"},   # lazy: import-on-first-use helper (pandas), no imports of ours
    {"hardware", "models", "workload"},
    {"calibration"},
    {"cost"},
    {"engines"},
    {"policies"},
    {"serving"},
    {"cluster"},
    {"simulation"},
    {"analysis"},
    {"search"},
    {"harness"},            # GPU measurement suites: only the command line imports them
    {"experiment"},
    {"cli", "__main__"},
]
ONLY_IMPORTED_BY = {"harness": {"cli"}}


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, sub.end_lineno + 1))
    return lines


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a ``from P import name`` of a submodule
    ``P.name`` points at that submodule, else at ``P``)."""
    mods = _modules(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            for t in targets:
                if t == top or t.startswith(top + "."):
                    r = resolve(t)
                    if r and r != mod:
                        edges[mod].add(r)
    return edges


def _layer(module: str, layers) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None            # the package's own face (lazy, string-based imports)
    return next((i for i, names in enumerate(layers) if parts[1] in names), None)


def violations(edges: dict[str, set[str]], layers=LAYERS, only=ONLY_IMPORTED_BY) -> list[str]:
    """Every upward import, unknown layer, forbidden importer and import cycle, named."""
    out = []
    for mod, targets in sorted(edges.items()):
        lm = _layer(mod, layers)
        if lm is None and mod.count("."):
            out.append(f"{mod}: not in any layer (add its folder to LAYERS)")
            continue
        for t in sorted(targets):
            lt = _layer(t, layers)
            if lm is not None and lt is not None and lt > lm:
                out.append(f"upward import: {mod} -> {t}")
            owner = t.split(".")[1] if t.count(".") else ""
            if owner in only and mod.split(".")[1] not in only[owner] | {owner}:
                out.append(f"{mod} imports {t}, which only {sorted(only[owner])} may import")
    # cycles: strongly connected components (Tarjan), each named as a path
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in comps:
        out.append("import cycle: " + " -> ".join(_cycle_path(edges, comp)))
    return out


def _cycle_path(edges, comp):
    """One cycle through the component, as a readable path."""
    members, start = set(comp), comp[0]
    path, seen = [start], {start}
    while True:
        nxt = next(w for w in sorted(edges[path[-1]]) if w in members)
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def test_imports_point_down_and_never_cycle():
    found = violations(import_graph(PACKAGE))
    assert not found, "\n".join(found)


def test_every_module_has_a_layer():
    for mod in _modules(PACKAGE):
        if mod.count("."):
            assert _layer(mod, LAYERS) is not None, mod


def _write(root: Path, files: dict[str, str]):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def test_checker_names_a_planted_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "simcluster"
    _write(pkg, {"__init__.py": "",
                 "cost/__init__.py": "from simcluster.cost.model import f\n",
                 "cost/model.py": "from simcluster.calibration import g\ndef f(): pass\n",
                 "calibration/__init__.py": ("def g():\n"
                                             "    from simcluster.calibration.fit import h\n"),
                 "calibration/fit.py": "from simcluster.cost.model import f\nh = 1\n",
                 "serving/__init__.py": "",
                 "policies/__init__.py": "import simcluster.serving\n",
                 "models/__init__.py": ("from typing import TYPE_CHECKING\n"
                                        "if TYPE_CHECKING:\n"
                                        "    from simcluster.cost import f\n")})
    found = violations(import_graph(pkg))
    text = "\n".join(found)
    assert "upward import: simcluster.calibration.fit -> simcluster.cost.model" in text
    assert "upward import: simcluster.policies -> simcluster.serving" in text
    cycles = [f for f in found if f.startswith("import cycle")]
    assert len(cycles) == 1
    for name in ("simcluster.calibration", "simcluster.calibration.fit", "simcluster.cost.model"):
        assert name in cycles[0]
    assert "simcluster.models" not in text       # a TYPE_CHECKING import is no edge


def test_harness_only_from_the_command_line(tmp_path):
    pkg = tmp_path / "simcluster"
    _write(pkg, {"__init__.py": "", "harness/__init__.py": "", "cli/__init__.py": "",
                 "cli/run.py": "def f():\n    import simcluster.harness\n",
                 "experiment/__init__.py": "import simcluster.harness\n"})
    found = violations(import_graph(pkg))
    assert any("simcluster.experiment imports simcluster.harness" in f for f in found)
    assert not any(f.startswith("simcluster.cli") for f in found)


def test_import_needs_neither_torch_nor_transformers():
    code = ("import sys\n"
            "for m in ('torch', 'transformers', 'botorch', 'gpytorch', 'ray'):\n"
            "    sys.modules[m] = None\n"
            "import importlib, pkgutil, simcluster\n"
            "for info in pkgutil.walk_packages(simcluster.__path__, 'simcluster.'):\n"
            "    if '.harness' in info.name or info.name.endswith('__main__'):\n"
            "        continue\n"
            "    importlib.import_module(info.name)\n"
            "for name in simcluster.__all__:\n"
            "    getattr(simcluster, name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", ["load_trace", "load_experiment", "Simulation", "model_preset",
                                  "load_device", "CostModel", "Layout", "InstanceSpec",
                                  "InstanceConfig", "load_calibration", "Results"])
def test_public_face(name):
    import simcluster as sc
    assert getattr(sc, name) is not None
    assert name in dir(sc)


def test_dir_shows_no_helpers():
    import simcluster as sc
    public = [n for n in dir(sc) if not n.startswith("_")]
    assert "annotations" not in public and "importlib" not in public
    assert set(sc.__all__) <= set(public)
