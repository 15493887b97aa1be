"""The import graph of src/xvla, read from the source (top-level and in-function imports alike): no module
cycle, no cycle between subpackages, and the library's core (the root modules other than the commands, and
model/) never reaches up into the train/, serve/, sim/ or execution/ features."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
FEATURES = ("xvla.train", "xvla.serve", "xvla.sim", "xvla.execution")
COMMANDS = ("xvla.cli", "xvla.__main__")  # the `xvla` command and the *_cli modules dispatch to the features


def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "xvla").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imported(name: str, path: Path, node: ast.AST, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = package[: len(package) - node.level + 1] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        targets = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known] or [module]
    return [t for t in targets if t in known and t != name]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        for parent in ast.walk(tree):
            if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test):
                continue  # annotations only
            for node in ast.iter_child_nodes(parent):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    edges[name].update(imported(name, path, node, known))
    return edges


def cycle_from(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for nxt in edges[node]:
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_the_graph_sees_the_known_edges():
    edges = graph()
    assert "xvla.domains" in edges["xvla.model.xvla"]
    assert "xvla.adapters" in edges["xvla.train.trainer"]  # an in-function import counts


def test_no_module_import_cycle():
    edges = graph()
    cycles = [c for c in (cycle_from(name, edges) for name in edges) if c]
    assert not cycles, " -> ".join(cycles[0])


def subpackage(name: str, known: dict[str, Path]) -> str | None:
    """'xvla.serve' for xvla.serve and its modules; None for the root modules (xvla.policy, ...)."""
    parts = name.split(".")
    if len(parts) > 2 or (len(parts) == 2 and known[name].name == "__init__.py"):
        return ".".join(parts[:2])
    return None


def test_no_import_cycle_between_subpackages():
    known = modules()
    packages: dict[str, set[str]] = {}
    for a, targets in graph().items():
        pa = subpackage(a, known)
        for pb in (subpackage(b, known) for b in targets):
            if pa and pb and pa != pb:
                packages.setdefault(pa, set()).add(pb)
                packages.setdefault(pb, set())
    assert "xvla.serve" in packages["xvla.sim"]  # sim/libero_eval uses serve's RemotePolicy
    cycles = [c for c in (cycle_from(p, packages) for p in packages) if c]
    assert not cycles, " -> ".join(cycles[0])


def test_the_core_never_imports_a_feature():
    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if b.startswith(FEATURES)
        and not a.startswith(FEATURES)
        and a not in COMMANDS
        and not a.endswith("_cli")
    ]
    assert not upward, upward
