"""The package's structure holds: layer contracts (import-linter) and no import cycle.

Both checks read the real source with grimp, the import-graph builder import-linter uses; every
``import`` statement counts, also those inside functions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, lib: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_layer_contracts_are_kept():
    proc = _lint(ROOT, ROOT / "lib")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "bad_import"), [
    ("sentinel2/grid.py", "import bigearthnet.spark.build"),      # domain -> executor
    ("train/loop.py", "import bigearthnet.spark.session"),        # training -> Spark
    ("stages/plan.py", "import bigearthnet.synth.world"),         # independent siblings
])
def test_a_wrong_import_breaks_the_contracts(tmp_path, module, bad_import):
    lib = tmp_path / "lib"
    shutil.copytree(ROOT / "lib" / "bigearthnet", lib / "bigearthnet",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = lib / "bigearthnet" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # deliberately wrong\n")
    proc = _lint(tmp_path, lib)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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


def _graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(ROOT / "lib"))
    try:
        return grimp.build_graph("bigearthnet", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT / "lib"))


def test_no_import_cycle_between_modules():
    graph = _graph()
    # Package __init__ files re-export their children; an edge parent -> child is not a cycle
    # of logic, so only module-to-module imports outside the package's own __init__ count.
    for module in list(graph.modules):
        for child in graph.find_children(module):
            if graph.direct_import_exists(importer=module, imported=child):
                graph.remove_import(importer=module, imported=child)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = _graph()
    graph.add_import(importer="bigearthnet.dataset.schema", imported="bigearthnet.stages.pixels")
    assert any("bigearthnet.dataset.schema" in c and "bigearthnet.stages.pixels" in c
               for c in import_cycles(graph))
