"""Tier a: the package's module rules, read from the source (no import is run).

- No import cycle among the package's modules, counting imports inside functions.
- Few internal imports inside functions (``IN_FUNCTION_BUDGET`` statements), each for a
  heavy dependency loaded on first use (numba, CuPy, the benchmark suite).
- ``import varstore`` loads neither numba nor CuPy.
- No library module over 500 lines.
- No module reads another module's private attributes: ``obj._name`` (obj not ``self``,
  ``cls`` or ``super()``) only for a ``_name`` its own module defines.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

from helpers import strongly_connected_components

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Source folder -> the package it installs as (kernels/ and bench/ install inside varstore).
PACKAGES = {"varstore": ROOT / "varstore", "varstore.kernels": ROOT / "kernels", "varstore.bench": ROOT / "bench"}
IN_FUNCTION_BUDGET = 12


def _modules() -> dict:
    """module name -> (path, whether it is a package's __init__)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "scripts" in parts or package == "varstore" and parts[0] in ("kernels", "bench"):
                continue  # (bench/scripts is not installed)
            is_package = parts[-1] == "__init__"
            name = ".".join([package] + (parts[:-1] if is_package else parts))
            found[name] = (path, is_package)
    return found


MODULES = _modules()


def _targets(module: str, is_package: bool, node) -> list[str]:
    """The package modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = module if is_package else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return [t for t in out if t in MODULES and t != module]


def _imports() -> list[tuple]:
    """``(module, target, inside a function, statement, path, line)`` for every import."""
    found = []
    for module, (path, is_package) in MODULES.items():
        _visit(ast.parse(path.read_text()), False, module, is_package, path, found)
    return found


def _visit(node, inside: bool, module: str, is_package: bool, path, found: list) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            statement = (path, child.lineno, child.col_offset)
            found += [(module, target, inside, statement, path, child.lineno)
                      for target in _targets(module, is_package, child)]
        inner = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        _visit(child, inner, module, is_package, path, found)


def _cycles(edges) -> list[set]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict = {m: set() for m in MODULES}
    for source, target, *_ in edges:
        graph[source].add(target)
    return [set(c) for c in strongly_connected_components(graph) if len(c) > 1]


def test_the_module_list_is_complete():
    expected = {"varstore.variable", "varstore.kernels.cast", "varstore.bench.suite", "varstore.backends.cuda"}
    assert expected <= set(MODULES)


def test_no_import_cycles():
    cycles = _cycles(_imports())
    assert not cycles, f"import cycles among the package's modules: {[sorted(c) for c in cycles]}"


def test_the_cycle_finder_finds_a_cycle():
    edges = [("varstore.dtypes", "varstore.casting"), ("varstore.casting", "varstore.dtypes")]
    assert {"varstore.dtypes", "varstore.casting"} in _cycles(edges)


def test_few_internal_imports_inside_functions():
    inside = {}
    for _module, target, in_function, statement, path, line in _imports():
        if in_function:
            inside.setdefault(statement, f"{path.relative_to(ROOT)}:{line} -> {target}")
    assert len(inside) <= IN_FUNCTION_BUDGET, "\n".join(sorted(inside.values()))


def test_import_varstore_loads_neither_numba_nor_cupy():
    code = "import sys, varstore; print(sorted(m for m in ('numba', 'cupy', 'mpi4py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


MAX_MODULE_LINES = 500


def test_no_library_module_over_500_lines():
    long = {f"{path.relative_to(ROOT)}: {n}" for path, _ in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {sorted(long)}"


# Private names of other libraries' objects the package calls on purpose.
FOREIGN_PRIVATE = {"_replace", "_fields", "_asdict", "_make",  # NamedTuple's API
                   "_exit",  # os._exit
                   }


def _defined_private_names(tree) -> set:
    """The ``_names`` a module defines: functions, classes, assignments to attributes of
    ``self``/``cls``, ``__slots__`` entries and module-level names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return {n for n in names if isinstance(n, str) and n.startswith("_") and not n.startswith("__")}


def _foreign_private_reads(path) -> list[str]:
    tree = ast.parse(path.read_text())
    own = _defined_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls"):
            continue
        if isinstance(base, ast.Call) and getattr(base.func, "id", None) == "super":
            continue
        if node.attr in own or node.attr in FOREIGN_PRIVATE or ast.unparse(base) == "torch":
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reads_another_modules_private_attributes():
    found = [hit for path, _ in MODULES.values() for hit in _foreign_private_reads(path)]
    assert not found, "private attributes read outside their module (add a named interface):\n" + "\n".join(found)


def test_the_private_read_finder_finds_one(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("class A:\n    def f(self, store):\n        self._mine = 1\n"
                      "        return store._claim(self._mine)\n")
    module = module.relative_to(tmp_path)
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _foreign_private_reads(tmp_path / module) == ["m.py:4: store._claim"]
    finally:
        ROOT = saved
