"""The package's imports: no cycle inside ``convtool/``, and the layers of the code map hold.

Imports are read from the source with ``ast`` - module level, inside functions and under
``if TYPE_CHECKING:`` alike - so an import tucked into a function cannot climb a layer
unnoticed.  ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module
of the package, else of ``pkg``; relative imports are resolved.

The layers, top to bottom (a module may import its own layer and any layer below it):

    cli -> render -> api, report -> search -> convert -> graph -> core -> runtime -> analysis
    -> options, records, errors (and the package root, which holds only ``__version__``)

and, on top of the order:

* ``core/`` is pure numpy: no onnx, onnxruntime, onnx_graphsurgeon, torch, typer or rich;
* ``analysis/`` imports neither onnxruntime nor onnx_graphsurgeon;
* onnx_graphsurgeon is imported only under ``graph/``; onnxruntime only under ``runtime/``,
  and never at module level (``convtool --help`` must not load it);
* torch only in an optional-extra module (:data:`OPTIONAL_EXTRA`), and those modules are
  imported only inside functions (importing convtool never needs the extra);
* typer only under ``cli/``; rich only under ``cli/`` and ``render/`` (the core never prints);
* ``options.py`` imports nothing of convtool but ``convtool.errors``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import ROOT

PACKAGE = ROOT / "convtool"

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # top to bottom; a prefix matches a module and its submodules
    ("cli", ("convtool.cli", "convtool.__main__")),
    ("render", ("convtool.render",)),
    ("api", ("convtool.api", "convtool.report")),
    ("search", ("convtool.search",)),
    ("convert", ("convtool.convert",)),
    ("graph", ("convtool.graph",)),
    ("core", ("convtool.core",)),
    ("runtime", ("convtool.runtime",)),
    ("analysis", ("convtool.analysis",)),
    ("base", ("convtool.options", "convtool.records", "convtool.errors")),
]
#: Modules of an optional extra (``pip install onnx-dwsconv[finetune]``): the only ones that may import
#: torch, and imported by other modules only inside functions.
OPTIONAL_EXTRA = {"convtool.search.finetune", "convtool.runtime.torch_graph"}


@dataclass(frozen=True)
class Import:
    importer: str  # the module that imports
    target: str  # the dotted module imported (a convtool module, or a third-party module path)
    line: int
    lazy: bool  # inside a function or an ``if TYPE_CHECKING:`` block


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(package.rglob("*.py"))}


class _Collector(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, modules: set[str]):
        self.name, self.is_package, self.modules = name, is_package, modules
        self.lazy = 0
        self.found: list[Import] = []

    def _nested(self, node: ast.AST) -> None:
        self.lazy += 1
        self.generic_visit(node)
        self.lazy -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.lazy += 1
            for child in node.body:
                self.visit(child)
            self.lazy -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(Import(self.name, target, node.lineno, self.lazy > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            self._add(sub if sub in self.modules else module, node)


def imports_of(name: str, source: str, is_package: bool = False, modules: set[str] = frozenset()) -> list[Import]:
    collector = _Collector(name, is_package, set(modules))
    collector.visit(ast.parse(source))
    return collector.found


def all_imports() -> list[Import]:
    modules = package_modules()
    found = []
    for name, path in modules.items():
        found += imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", set(modules))
    return found


def internal_graph(imports: list[Import], modules: set[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = imp.target
        while target and target not in modules:  # convtool.x.y where y is a name in module convtool.x
            target = target.rpartition(".")[0]
        if target.startswith("convtool") and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (or a self-import), each
    as a closed path ``a -> b -> ... -> a`` through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
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
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_path_through(comp, graph) for comp in components]


def _path_through(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through ``comp``'s first module, inside ``comp`` (breadth first)."""
    start, members = comp[0], set(comp)
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])  # type: ignore[arg-type]
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {comp}")


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    if module == "convtool":
        return len(LAYERS) - 1  # the package root: __version__ only
    raise AssertionError(f"{module} is in no layer of LAYERS: add it to the code map and to this test")


def top(target: str) -> str:
    return target.split(".")[0]


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


IMPORTS = all_imports()
MODULES = set(package_modules())


def assert_none(rule) -> None:
    """No import matches ``rule``."""
    bad = sorted({f"{i.importer} imports {i.target} (line {i.line})" for i in IMPORTS
                  if rule(i)})
    assert not bad, "\n".join(bad)


# --- the walker itself ---------------------------------------------------------------------------

def test_walker_sees_function_level_relative_and_type_checking_imports():
    source = (
        "from __future__ import annotations\n"
        "import onnx\n"
        "from typing import TYPE_CHECKING\n"
        "from . import factorize\n"
        "from .plan import Decision\n"
        "if TYPE_CHECKING:\n"
        "    import onnxruntime\n"
        "def f():\n"
        "    import convtool.graph.io\n"
        "    from convtool.graph import select\n"
        "    from convtool import __version__\n"
    )
    modules = {"convtool", "convtool.core", "convtool.core.factorize", "convtool.core.plan", "convtool.graph",
               "convtool.graph.io", "convtool.graph.select"}
    found = {(i.target, i.lazy) for i in imports_of("convtool.core.x", source, modules=modules)}
    assert found == {
        ("__future__", False), ("onnx", False), ("typing", False),
        ("convtool.core.factorize", False), ("convtool.core.plan", False),
        ("onnxruntime", True), ("convtool.graph.io", True), ("convtool.graph.select", True), ("convtool", True),
    }
    # in a package's __init__, "." is the package itself
    (init,) = imports_of("convtool.cli", "from .app import main\n", is_package=True, modules={"convtool.cli.app"})
    assert init.target == "convtool.cli.app"


def test_cycle_finder_finds_and_reports_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    two = find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})
    assert two == [["a", "b", "a"], ["c", "d", "c"]]


def test_walker_reads_the_real_package():
    edges = internal_graph(IMPORTS, MODULES)
    assert {"convtool.convert", "convtool.core.plan", "convtool.graph.emit", "convtool.cli.app"} <= MODULES
    assert "convtool.graph.emit" in edges["convtool.convert"]
    assert any(i.lazy and i.target.startswith("convtool.") for i in IMPORTS)  # the drivers are imported lazily


# --- the package ---------------------------------------------------------------------------------

def test_no_import_cycle_inside_the_package():
    cycles = find_cycles(internal_graph(IMPORTS, MODULES))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_nothing_imports_upward():
    bad = sorted(
        f"{i.importer} ({LAYERS[layer_of(i.importer)][0]}) imports {t} ({LAYERS[layer_of(t)][0]}), line {i.line}"
        for i in IMPORTS
        for t in [i.target]
        if t.startswith("convtool") and t in MODULES and layer_of(t) < layer_of(i.importer))
    assert not bad, "\n".join(bad)


def test_core_is_pure_numpy():
    heavy = {"onnx", "onnxruntime", "onnx_graphsurgeon", "torch", "typer", "rich", "PIL"}
    assert_none(lambda i: under(i.importer, "convtool.core") and top(i.target) in heavy)


def test_analysis_runs_no_sessions_and_does_no_surgery():
    assert_none(lambda i: under(i.importer, "convtool.analysis")
                          and top(i.target) in {"onnxruntime", "onnx_graphsurgeon", "torch"})


def test_graphsurgeon_only_under_graph():
    assert_none(lambda i: top(i.target) == "onnx_graphsurgeon" and not under(i.importer, "convtool.graph"))


def test_onnxruntime_only_under_runtime_and_never_at_module_level():
    assert_none(lambda i: top(i.target) == "onnxruntime" and not under(i.importer, "convtool.runtime"))
    eager = [f"{i.importer}:{i.line}" for i in IMPORTS if top(i.target) == "onnxruntime" and not i.lazy]
    assert not eager, eager


def test_torch_only_in_optional_extra_modules():
    assert_none(lambda i: top(i.target) == "torch" and i.importer not in OPTIONAL_EXTRA)


def test_optional_extra_modules_are_imported_lazily():
    eager = [f"{i.importer}:{i.line} imports {i.target}" for i in IMPORTS
             if i.target in OPTIONAL_EXTRA and i.importer not in OPTIONAL_EXTRA and not i.lazy]
    assert not eager, eager


def test_typer_and_rich_stay_in_the_presentation_layers():
    assert_none(lambda i: top(i.target) == "typer" and not under(i.importer, "convtool.cli"))
    assert_none(lambda i: top(i.target) == "rich" and not under(i.importer, "convtool.cli", "convtool.render"))


def test_options_depend_only_on_errors():
    internal = {i.target for i in IMPORTS if i.importer == "convtool.options" and i.target.startswith("convtool")}
    assert internal <= {"convtool.errors"}, internal


def test_tests_and_benchmarks_edit_no_sys_path():
    """Helpers import as modules (tests/ through pytest's rootdir, benchmarks/ as the script's
    folder, convtool as the installed package): no file inserts paths by hand."""
    edit = re.compile(r"sys\.path\s*(\.(insert|append|extend)\b|\[|\+?=)")
    assert edit.search("sys.path.insert(0, ROOT)") and edit.search("sys.path[:0] = [ROOT]")
    assert not edit.search("the script's folder is on sys.path")
    files = [p for folder in ("tests", "benchmarks") for p in sorted((ROOT / folder).glob("*.py"))
             if p != Path(__file__)]
    assert len(files) > 20
    assert not [str(p.relative_to(ROOT)) for p in files if edit.search(p.read_text(encoding="utf-8"))]


def test_cli_import_loads_no_heavy_module():
    """``convtool --help`` stays instant: importing the CLI loads no onnx, onnxruntime,
    onnx_graphsurgeon or torch."""
    code = ("import sys, convtool.cli\n"
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnx_graphsurgeon', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
