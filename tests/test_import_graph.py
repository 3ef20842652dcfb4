"""The import graph of pulse, probes and workbench, read from the source.

Every ``import`` / ``from ... import`` of every module is read with :mod:`ast`, at module
level and inside functions alike (a lazy import is still a dependency). Two rules:

* no import cycle inside a package: the modules of ``pulse``, of ``probes`` and of
  ``workbench`` each form a directed acyclic graph;
* imports run one way, workbench -> probes -> pulse: ``pulse`` imports neither ``probes``
  nor ``workbench``, ``probes`` does not import ``workbench``.

``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
(its ``__init__``); the parents a dotted import also runs are not counted as edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pulse", "probes", "workbench")
LAYER = {"pulse": 0, "probes": 1, "workbench": 2}  # a package may import only lower layers


def modules(root: Path, packages=PACKAGES) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_init = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return out


def _targets(module: str, is_init: bool, node: ast.Import | ast.ImportFrom, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_init else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        while name and name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.append(name)
    return out


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, dict[str, int]]:
    """{module: {imported module: line of the first such import}} over the given packages."""
    known = modules(root, packages)
    graph: dict[str, dict[str, int]] = {m: {} for m in known}
    for module, (path, is_init) in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # the whole tree: function-level imports count too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, is_init, node, known):
                    graph[module].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_path_in(set(comp), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path_in(comp: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A closed path through some modules of the strongly connected ``comp``."""
    start = min(comp)
    path, seen = [start], {start}
    while True:
        nxt = min(w for w in graph[path[-1]] if w in comp)
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def _within(graph: dict[str, dict[str, int]], package: str) -> dict[str, dict[str, int]]:
    top = lambda m: m.split(".")[0]  # noqa: E731
    return {m: {t: ln for t, ln in ts.items() if top(t) == package} for m, ts in graph.items() if top(m) == package}


def test_no_import_cycle_inside_a_package():
    graph = import_graph()
    assert any(graph.values()), "the reader found no imports at all"
    for package in PACKAGES:
        found = cycles(_within(graph, package))
        assert not found, f"{package}: import cycles " + "; ".join(" -> ".join(c) for c in found)


def test_imports_run_workbench_probes_pulse():
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        src = module.split(".")[0]
        for target, line in targets.items():
            dst = target.split(".")[0]
            if LAYER[dst] > LAYER[src]:
                wrong.append(f"{module} (line {line}) imports {target}")
    assert not wrong, "imports must run workbench -> probes -> pulse:\n" + "\n".join(sorted(wrong))


def test_the_reader_sees_lazy_relative_and_package_imports(tmp_path):
    pkg = tmp_path / "pulse"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pulse.a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import pulse.sub\nfrom .. import a\n\ndef g():\n    import probes.x\n")
    graph = import_graph(tmp_path, ("pulse",))
    assert graph["pulse"] == {"pulse.a": 1}
    assert graph["pulse.a"] == {"pulse.sub.b": 2}  # a function-level relative import
    assert graph["pulse.sub.b"] == {"pulse.sub": 1, "pulse.a": 2}  # probes is outside the graph read
    assert cycles(graph) == [["pulse.a", "pulse.sub.b", "pulse.a"]]
