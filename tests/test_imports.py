"""
No import cycle among agwtx's modules, counting every import: those under
C{if TYPE_CHECKING:} and inside functions too.  (The import-linter layers
in C{.importlinter}, run by C{make lint}, leave annotation-only imports
out; a cycle through one still ties the two modules together, so it is
forbidden here.)
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter, installed on CPython only")


def importCycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = grimp.build_graph(package, include_external_packages=False, exclude_type_checking_imports=False)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        onStack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in onStack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                onStack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_counting_every_import() -> None:
    assert importCycles("agwtx") == []


def test_the_check_sees_a_cycle_through_a_type_only_import(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclepkg.b import B\nclass A: pass\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclepkg.a import A\nclass B: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importCycles("cyclepkg") == [["cyclepkg.a", "cyclepkg.b"]]
