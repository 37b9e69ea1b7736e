"""The packages' layering, read from the imports in the source: validate and publish never import convert, and the
shared layers (checkpoint, graphs, precision, families) import neither convert nor validate nor publish. A module
moved to the wrong side of a line fails here, not in a user's slim install."""

from __future__ import annotations

import ast
from pathlib import Path

import nemo2sherpa

PACKAGE = Path(nemo2sherpa.__file__).parent
FORBIDDEN = {
    "validate": ("nemo2sherpa.convert",),
    "publish": ("nemo2sherpa.convert", "nemo2sherpa.validate"),
    "checkpoint": ("nemo2sherpa.convert", "nemo2sherpa.validate", "nemo2sherpa.publish"),
    "graphs": ("nemo2sherpa.convert", "nemo2sherpa.validate", "nemo2sherpa.publish"),
    "precision": ("nemo2sherpa.convert", "nemo2sherpa.validate", "nemo2sherpa.publish"),
    "families": ("nemo2sherpa.convert", "nemo2sherpa.validate", "nemo2sherpa.publish"),
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_package_imports_across_its_line():
    crossings = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for name in _imports(path):
                if name.startswith(forbidden):
                    crossings.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert crossings == []
    assert sum(1 for _ in (PACKAGE / "validate").rglob("*.py")) > 10  # the walk found the modules
