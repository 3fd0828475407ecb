"""The import graph of ``src/dl1`` (every import, those inside functions too, read with ``ast``): no cycles, and no
import from a lower layer into a higher one.  The layers, top to bottom, are the README's ("Where each idea lives";
in detail in docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import dl1

SRC = Path(dl1.__file__).parent

# top to bottom; a module belongs to the first layer with a prefix that matches it (the longest prefix wins)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("commands", ("dl1.cli", "dl1.__main__", "dl1.tour", "dl1.sweep", "dl1.bench", "dl1.generate", "dl1.export",
                  "dl1.report.cli")),
    ("experiments", ("dl1.experiments",)),
    ("report/export", ("dl1.report", "dl1.export_format")),
    ("data/hub", ("dl1.data", "dl1.hub")),
    ("train", ("dl1.train",)),
    ("models", ("dl1.models", "dl1.gnn", "dl1.losses")),
    ("run/config", ("dl1.run", "dl1.config", "dl1.bench_env")),  # bench_env: the machine a timing ran on
    ("core", ("dl1.errors", "dl1.metrics", "dl1.numpy_nn", "dl1.lazy")),
]
ROOT = "dl1"  # the package itself (its version): core


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    if module == ROOT:
        return len(LAYERS) - 1
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to the README)"
    return best


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dl1 modules that ``path`` imports (``from dl1.x import y`` is ``dl1.x.y`` when that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # dl1.x.y where y is a name in module dl1.x
                name = name.rpartition(".")[0]
            if name and name != me:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) - {"dl1"} for p in paths}


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)


def test_no_import_from_a_lower_layer_into_a_higher_one():
    upward = []
    for module, imported in graph().items():
        for other in imported:
            if layer_of(other) < layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {other} "
                              f"({LAYERS[layer_of(other)][0]})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_graph_sees_imports_inside_functions():
    """The checks above would be empty promises if nested imports were missed: the precision check imports torch's
    side of dl1 only inside its call."""
    assert "dl1.train.precision" in graph()["dl1.experiments.checks"]
