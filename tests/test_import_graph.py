"""The package's import graph: no cycles (type-only imports included), errors.py a leaf, Lightning only at the edges."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dwgf"
# the modules that may import Lightning: the CLI, the LightningModules, the data module, the callbacks, training
LIGHTNING_ALLOWED = {"dwgf.cli", "dwgf.solver", "dwgf.baselines", "dwgf.data.datamodule", "dwgf.writers", "dwgf.progress"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(name: str, type_only: bool = True) -> tuple[set[str], set[str]]:
    """(dwgf modules ``name`` imports, top-level packages it imports); with ``type_only=False`` the
    imports under ``if TYPE_CHECKING:`` are left out (what runs)."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    found, top = set(), set()
    for node in ast.walk(tree):
        if not type_only and _type_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            top.add(target.split(".")[0])
            while target and target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name:
                found.add(target)
    return found, top


GRAPH = {name: imports(name)[0] for name in MODULES}  # type-only imports included: a circle through them is a circle


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles() == []


def test_type_only_imports_count(tmp_path, monkeypatch):
    """The checker sees a circle made of one run-time import and one under ``if TYPE_CHECKING:``."""
    assert "dwgf.flow" in GRAPH["dwgf.solver"]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dwgf.solver import DWGF\n"
    fake = tmp_path / "flow.py"
    fake.write_text(source)
    monkeypatch.setitem(MODULES, "dwgf.flow", fake)
    assert "dwgf.solver" in imports("dwgf.flow")[0]
    assert "dwgf.solver" not in imports("dwgf.flow", type_only=False)[0]
    monkeypatch.setitem(GRAPH, "dwgf.flow", imports("dwgf.flow")[0])
    assert any({"dwgf.flow", "dwgf.solver"} <= set(c) for c in cycles())


def test_errors_is_a_leaf():
    assert GRAPH["dwgf.errors"] == set()


def test_lightning_only_at_the_edges():
    users = {name for name in MODULES if {"lightning", "pytorch_lightning"} & imports(name, type_only=False)[1]}
    outside = {u for u in users if u not in LIGHTNING_ALLOWED and not u.startswith("dwgf.training")}
    assert outside == set(), f"modules that import Lightning outside the edges: {sorted(outside)}"
