"""The core's import graph has no cycle (every import that runs counts, those inside functions too; imports under
``if TYPE_CHECKING:`` are annotations only and do not): the run layer — planning, cell, execution (driver),
executors, jobs (workers), failures, conditions — depends one way."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "harness"


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = {}
    for p in root.rglob("*.py"):
        parts = ("harness",) + p.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        tree = ast.parse(p.read_text())
        typing_only = {id(n) for b in ast.walk(tree) if isinstance(b, ast.If) and _is_type_checking(b.test)
                       for stmt in b.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[m] |= {t for t in names if t in mods and t not in (m, "harness")}
    return graph


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_the_core():
    graph = _graph()
    assert graph["harness.jobs"] and "harness.execution" not in graph["harness.jobs"]
    assert _cycles(graph) == []


def test_registries_have_one_typed_field_per_component_kind():
    from harness.components import KINDS
    from harness.plugins import Registries, get_registries

    regs = get_registries()
    assert set(Registries.__annotations__) == {k.plural for k in KINDS}
    for k in KINDS:
        assert getattr(regs, k.plural) is regs.by_kind(k.name)


def test_type_checking_imports_are_not_edges(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from .b import X\n")
    (tmp_path / "b.py").write_text("from .a import Y\ndef f():\n    from . import c\n")
    (tmp_path / "c.py").write_text("")
    graph = _graph(tmp_path)
    assert graph["harness.a"] == set() and graph["harness.b"] == {"harness.a", "harness.c"}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_modules_stay_near_four_hundred_lines():
    """docs/design.md §2: one job per module, sizes near 400 lines (a module past 420 is split where it is natural)."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    assert sizes and not {p: n for p, n in sizes.items() if n > 420}
