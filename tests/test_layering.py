"""The layers of the library, as docs/ARCHITECTURE.md draws them, read from the import
statements of every module (those inside functions too).

- the bottom modules (errors, argument checks, Dask, the execution layer) import nothing
  above them; the store imports only them; the core only them and the store;
- the analysis packages (decode, similarity, alignment, features) import the core and the
  store, and of each other only modules that do not fan jobs out (a solver, a metric): never
  another analysis's driver, nor its package (which imports its driver);
- the command line imports public names only, and only it shows progress bars;
- GPU libraries are imported by the backend module alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__import__("actstore").__file__).parent
BOTTOM = ("_errors", "_args", "_dask", "_execution")
ANALYSES = ("decode", "similarity", "alignment", "features")
LAYER = {
    **dict.fromkeys(BOTTOM, 0),
    "store": 1, "testing": 1, "": 1,  # "" is the root package (__version__, Execution)
    "core": 2, "training": 2,
    **dict.fromkeys(ANALYSES, 3),
    "report": 4,
    "analyses": 5, "studies": 5, "probes": 5,
    "cli": 6,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``actstore`` module a file imports (absolute imports; the code has no others)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "actstore":
                out.add(node.module)
                # ``from actstore.store import _layout``: a module imported by name
                out.update(f"{node.module}.{a.name}" for a in node.names
                           if (ROOT.parent / node.module.replace(".", "/") / f"{a.name}.py")
                           .exists())
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "actstore")
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import")
    return out


def _part(module: str) -> str:
    """The layer key of a module: its subpackage, bottom module, or "" for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {_module(p): p for p in ROOT.rglob("*.py")}
IMPORTS = {m: _imports(p) for m, p in MODULES.items()}


def _fans_out(module: str) -> bool:
    return "actstore._execution" in IMPORTS.get(module, set())


def test_every_module_has_a_layer():
    assert sorted({_part(m) for m in MODULES} - set(LAYER)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_nothing_above_its_layer(module):
    mine = LAYER[_part(module)]
    above = sorted(n for n in IMPORTS[module] if LAYER.get(_part(n), 99) > mine)
    assert above == [], f"{module} (layer {mine}) imports {above}"


def test_the_root_package_is_imported_for_its_version_and_execution_only():
    bad = []
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "actstore" and m != "actstore":
                names = {a.name for a in node.names}
                if not names <= {"__version__", "Execution", "ActstoreError", "open_store"} \
                        and _part(m) != "cli":
                    bad.append((m, sorted(names)))
    assert bad == []


@pytest.mark.parametrize("package", ANALYSES)
def test_analyses_import_no_other_analysis_driver(package):
    bad = []
    for m in (m for m in MODULES if _part(m) == package):
        for n in IMPORTS[m]:
            other = _part(n)
            if other in ANALYSES and other != package:
                if n == f"actstore.{other}" or _fans_out(n):
                    bad.append(f"{m} -> {n}")
    assert bad == []


def test_the_command_line_imports_public_names_only():
    private = re.compile(r"^actstore(\.[a-z]\w*)*\._\w+")
    bad = sorted(f"{m} -> {n}" for m in MODULES if _part(m) == "cli"
                 for n in IMPORTS[m] if private.match(n) and _part(n) != "cli")
    assert bad == []


def test_progress_bars_belong_to_the_command_line():
    pat = re.compile(r"^\s*(import|from)\s+(rich|typer)\b", re.M)
    found = sorted(m for m, p in MODULES.items() if _part(m) != "cli" and pat.search(p.read_text()))
    assert found == []


def test_gpu_libraries_are_imported_by_the_backend_module_only():
    pat = re.compile(r"^\s*(import|from)\s+(cupy|cuml)\b", re.M)
    found = [m for m, p in MODULES.items() if pat.search(p.read_text())]
    assert found == ["actstore.core._backend"]


def test_no_module_reaches_600_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) >= 600}
    assert long == {}
