"""The import rules of docs/architecture.md ("What may import what"), checked on the real import graph.

grimp builds the graph statically from the source (every import, including those inside functions and under
``TYPE_CHECKING``), so a rule broken anywhere in a module fails here, whether or not a test runs that line.
"""

from __future__ import annotations

from functools import cache

import grimp
import pytest

PROJECT = ("pingan", "streams", "api", "schemas", "producers")
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
    "schemas",
    "streams.windows",
    "streams.pipeline",
)
# Layers, innermost first in each pair: the source may not import the forbidden packages, even indirectly.
FORBIDDEN = [
    ("pingan.index", ("pingan.store", "streams", "api", "producers")),
    ("pingan.store", ("streams", "api", "producers")),
    ("schemas", ("pingan.store", "streams", "api", "producers")),
]


@cache
def graph() -> grimp.ImportGraph:
    built = grimp.build_graph(*PROJECT, include_external_packages=True)
    # The one allowed use of a client library by pure code: the partitioner reuses aiokafka's murmur2 (a pure
    # function) so the worker's key -> partition answer cannot drift from the producer's.
    built.remove_import(importer="pingan.partitioning", imported="aiokafka")
    return built


def chain(importer: str, imported: str) -> list[str] | None:
    """The shortest import chain from any module of package ``importer`` to any of ``imported``, or None."""
    chains = graph().find_shortest_chains(importer=importer, imported=imported, as_packages=True)
    return list(min(chains, key=lambda c: (len(c), c))) if chains else None


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


def test_no_import_cycles() -> None:
    g = graph()
    project = {m for m in g.modules if m.split(".")[0] in PROJECT}
    edges = {m: {i for i in g.find_modules_directly_imported_by(m) if i in project} for m in project}
    assert import_cycles(edges) == []
