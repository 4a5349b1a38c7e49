"""The import rules of docs/architecture.md ("What may import what"), checked on the real import graph.

The graph is built statically from the source with ``ast`` (every import, including those inside functions and
under ``TYPE_CHECKING``), so a rule broken anywhere in a module fails here, whether or not a test runs that
line. The modules are found through pyproject.toml's ``package-dir`` (api/ is pingan.api, ...); grimp, the
library for this, reads only a top-level package's own folder, so it cannot see the mapped ones.
"""

from __future__ import annotations

import ast
import tomllib
from collections import deque
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = ("pingan",)  # api/, schemas/, streams/ and producers/ are installed as pingan.api, ...
# Clients of the services and the frameworks of the shells: pure modules reach none of them, even indirectly.
IO_PACKAGES = ("aiokafka", "faust", "clickhouse_driver", "fastapi", "starlette", "uvicorn")
# The domain and the other modules that compute without I/O (their docstrings say so).
PURE = (
    "pingan.index",
    "pingan.dead_letter",
    "pingan.errors",
    "pingan.clock",
    "pingan.config_files",
    "pingan.grids",
    "pingan.feeds",
    "pingan.schemas",
    "pingan.streams.windows",
    "pingan.streams.pipeline",
    "pingan.streams.feeding",
)
# Layers, innermost first in each pair: the source may not import the forbidden packages, even indirectly.
FORBIDDEN = [
    ("pingan.index", ("pingan.store", "pingan.streams", "pingan.api", "pingan.producers")),
    ("pingan.store", ("pingan.streams", "pingan.api", "pingan.producers")),
    ("pingan.schemas", ("pingan.store", "pingan.streams", "pingan.api", "pingan.producers")),
]


@cache
def module_files() -> dict[str, Path]:
    """Every module of the distribution, by its installed name, from pyproject.toml's package-dir."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found: dict[str, Path] = {}
    for package, folder in package_dir.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [*package.split("."), *path.relative_to(REPO / folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported_names(module: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports directly, and the top-level names of the external packages."""
    modules = module_files()
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for name in _imported_names(module, path):
            if name.split(".")[0] not in PROJECT:
                targets.add(name.split(".")[0])
                continue
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:  # "pingan.store.client.connect" -> the module
                parts.pop()
            if parts and ".".join(parts) != module:
                targets.add(".".join(parts))
        edges[module] = targets
    # The one allowed use of a client library by pure code: the partitioner reuses aiokafka's murmur2 (a pure
    # function) so the worker's key -> partition answer cannot drift from the producer's.
    edges["pingan.partitioning"].discard("aiokafka")
    return edges


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def chain(importer: str, imported: str) -> list[str] | None:
    """The shortest import chain from any module of package ``importer`` to ``imported`` (a module, a package
    or an external package's top-level name), or None."""
    edges = graph()
    starts = sorted(m for m in edges if _within(m, importer))
    previous: dict[str, str | None] = dict.fromkeys(starts)
    queue = deque(starts)
    while queue:
        module = queue.popleft()
        if _within(module, imported):
            found = [module]
            while (step := previous[found[-1]]) is not None:
                found.append(step)
            return found[::-1]
        for target in sorted(edges.get(module, ())):
            if target not in previous:
                previous[target] = module
                queue.append(target)
    return None


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_reach_no_client_and_no_store(module: str) -> None:
    for forbidden in (*IO_PACKAGES, "pingan.store"):
        found = chain(module, forbidden)
        assert found is None, f"{module} imports {forbidden}: {' -> '.join(found or [])}"


@pytest.mark.parametrize(("source", "forbidden"), FORBIDDEN)
def test_layers(source: str, forbidden: tuple[str, ...]) -> None:
    for target in forbidden:
        found = chain(source, target)
        assert found is None, f"{source} imports {target}: {' -> '.join(found or [])}"


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(edges) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_has_the_mapped_folders_and_their_imports() -> None:
    edges = graph()
    assert module_files()["pingan.api.app"] == REPO / "api" / "app.py"
    assert {"pingan.streams.pipeline", "faust"} <= edges["pingan.streams.app"]
    assert chain("pingan.api", "pingan.store") is not None  # the API reads through the store, as it should


def test_no_import_cycles() -> None:
    edges = graph()
    project = {m: {t for t in targets if t in edges} for m, targets in edges.items()}
    assert import_cycles(project) == []
