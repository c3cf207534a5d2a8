"""The folder list is the architecture: ``server`` and ``meters`` know only ``common``, and
``common`` knows neither; operator tooling (``operations``) may use them all but nothing
imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "server", "meters", "operations")
#: What each package may import of the project's own packages.
ALLOWED = {
    "common": {"common"},
    "server": {"common", "server"},
    "meters": {"common", "meters"},
    "operations": {"common", "meters", "operations"},
}


def project_imports(path: Path) -> set[str]:
    """The project packages a source file imports (top-level names only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = {str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package])
             for path in sorted((ROOT / package).rglob("*.py"))}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_layout_check_notices_a_forbidden_import(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("import json\nfrom server.writer.batcher import Batcher\nimport meters.client as c\n")
    assert project_imports(source) == {"server", "meters"}
