"""The package's import structure: no cycle anywhere, and layers that import only downward.

The layer contracts live in pyproject.toml (``[tool.importlinter]``) and are checked with
import-linter; the cycle check covers what layers do not (modules of one layer).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]


def test_no_module_of_sandq_is_in_an_import_cycle() -> None:
    graph = grimp.build_graph("sandq", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append((module, *back))
    assert cycles == []


def test_the_layer_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_importing_the_contract_does_not_load_the_client() -> None:
    code = "import sys, sandq.contract; print('sandq.client' in sys.modules, 'celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert importlib.import_module("sandq").Client.__module__ == "sandq.client.client"
