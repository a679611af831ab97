"""The shape of the packages: no import cycle, no private name imported across modules.

Both rules are read from the source with ``ast``; nothing is imported. Imports inside
functions count (a lazy import only hides a cycle until the function runs); imports
under ``if TYPE_CHECKING:`` never run, so they make no cycle. Importing ``a.b.c``
also runs ``a/__init__`` and ``a/b/__init__``: those packages count as imported too,
except the importer's own packages, which are already initialising. A shared helper
belongs in a ``_``-module under a public name (STYLE.md): importing a private module
is fine, importing another module's private name is not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "confidence_router",
    "langchain_confidence_router",
    "llamaindex_confidence_router",
    "confidence_router_rag",  # the RAG app, once it has its own package
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "confidence_router.routing.router"
    path: Path
    is_package: bool  # an __init__.py

    @property
    def package(self) -> str:
        """The package a relative import starts from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Edge:
    """One import that runs: ``source`` imports ``target`` at ``line``."""

    source: str
    target: str
    line: int


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every module of the packages that exist under ``root``, by dotted name."""
    modules: dict[str, Module] = {}
    for package in packages:
        if not (root / package).is_dir():
            continue
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(node: ast.AST, *, runtime_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth (in functions too); with ``runtime_only``,
    none under ``if TYPE_CHECKING:`` (its ``else:`` does run)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    skip_body = runtime_only and isinstance(node, ast.If) and _is_type_checking(node.test)
    children = node.orelse if isinstance(node, ast.If) and skip_body else ast.iter_child_nodes(node)
    for child in children:
        yield from import_nodes(child, runtime_only=runtime_only)


def imported_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module ``from X import ...`` names, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def targets(
    module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]
) -> set[str]:
    """Our modules one import statement names: ``from pkg import name`` is ``pkg.name``
    when that is a module, else ``pkg``."""
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        source = imported_from(module, node)
        named = {
            f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
            for alias in node.names
        }
    return {name for name in named if name in modules}


def ancestors(name: str) -> set[str]:
    """The packages whose ``__init__`` runs before ``name``: ``a.b.c`` -> ``{a, a.b}``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_edges(modules: dict[str, Module]) -> list[Edge]:
    """Every runtime import between our modules, with the packages each one initialises."""
    edges = set()
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        own = ancestors(module.name) | {module.name}
        for node in import_nodes(tree, runtime_only=True):
            for target in targets(module, node, modules):
                for reached in {target} | (ancestors(target) - own):
                    if reached != module.name and reached in modules:
                        edges.add(Edge(module.name, reached, node.lineno))
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one node: the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """The shortest path of imports from ``start`` back to itself inside one component."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & within):
                if successor == start:
                    return [*paths[node], start]
                if successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def describe_cycle(component: set[str], graph: dict[str, set[str]], edges: list[Edge]) -> str:
    """A shortest loop through the component, then every import inside it (module:line)."""
    loop = shortest_cycle(min(component), graph, component)
    lines = [f"cycle of {len(component)} modules, e.g. " + " -> ".join(loop)]
    lines += [
        f"    {e.source}:{e.line} imports {e.target}"
        for e in edges
        if e.source in component and e.target in component
    ]
    return "\n".join(lines)


def import_cycles(modules: dict[str, Module]) -> list[str]:
    """One description per import cycle (none when the imports form a tree or a DAG)."""
    edges = import_edges(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for edge in edges:
        graph[edge.source].add(edge.target)
    return sorted(describe_cycle(c, graph, edges) for c in strongly_connected(graph))


def private_imports(modules: dict[str, Module], root: Path) -> list[str]:
    """``file:line`` of every ``from <our module> import _name`` (a private module is fine)."""
    found = []
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        for node in import_nodes(tree, runtime_only=False):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = imported_from(module, node)
            if source not in modules:
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{source}.{alias.name}" not in modules:
                    where = module.path.relative_to(root)
                    found.append(f"{where}:{node.lineno} imports {alias.name} from {source}")
    return sorted(found)


# -- the packages ----------------------------------------------------------------------------


def test_the_packages_have_no_import_cycle() -> None:
    modules = find_modules(ROOT, PACKAGES)
    assert len(modules) > 50, "the packages were found"
    cycles = import_cycles(modules)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_across_modules() -> None:
    modules = find_modules(ROOT, PACKAGES)
    found = private_imports(modules, ROOT)
    assert not found, "private names imported from another module:\n" + "\n".join(found)


# -- the checker catches what it must ----------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_finds_a_lazy_cycle_and_a_private_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import run\n",
            "pkg/a.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.c import Thing\n"  # never runs: no a -> c
            "else:\n    from . import _utils\n"  # runs
            "def run():\n    from .sub import b\n    return b\n",  # lazy, line 7
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "from ..a import run\n",  # closes pkg.a -> pkg.sub.b -> pkg.a
            "pkg/c.py": "from pkg.a import _secret\nfrom . import _utils\n"
            "from ._utils import helper\nimport pkg.sub.b\n",
            "pkg/_utils.py": "def helper(): ...\n",
        },
    )
    modules = find_modules(tmp_path, ["pkg", "absent"])
    assert set(modules) == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.b", "pkg.c", "pkg._utils"}
    assert Edge("pkg.a", "pkg._utils", 5) in import_edges(modules)
    assert import_cycles(modules) == [
        "cycle of 2 modules, e.g. pkg.a -> pkg.sub.b -> pkg.a\n"
        "    pkg.a:7 imports pkg.sub.b\n"
        "    pkg.sub.b:1 imports pkg.a"
    ]
    assert private_imports(modules, tmp_path) == ["pkg/c.py:1 imports _secret from pkg.a"]


def test_a_sibling_import_does_not_cycle_through_its_own_package(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub.x import X\n",
            "pkg/sub/__init__.py": "from .x import X\n",
            "pkg/sub/x.py": "from pkg.sub.y import Y\nX = Y\n",
            "pkg/sub/y.py": "Y = 1\n",
        },
    )
    assert import_cycles(find_modules(tmp_path, ["pkg"])) == []
    _write(tmp_path, {"pkg/sub/y.py": "from pkg import X\nY = 1\n"})  # now it is one
    assert len(import_cycles(find_modules(tmp_path, ["pkg"]))) == 1
