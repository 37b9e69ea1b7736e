"""validate and publish must work for a user without NeMo or torch: neither may be imported on their paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from nemo2sherpa.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("torch", "nemo", "lightning", "omegaconf") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def run_probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_recipes_and_help_import_neither_nemo_nor_torch():
    assert run_probe("recipes") == {"code": 0, "heavy": []}
    for command in ("convert", "validate"):
        assert run_probe(command, "--help") == {"code": 0, "heavy": []}


@pytest.mark.nemo
def test_validating_a_directory_with_cached_references_imports_neither(validated, fixture_dir, tmp_path):
    """The fixture was validated once (NeMo references are cached): a re-run needs no NeMo at all."""
    result = run_probe("validate", fixture_dir, "--no-nemo", "--speed-lengths", "2", "--repeats", "1", "-q",
                       "--report-dir", tmp_path)
    assert result == {"code": 0, "heavy": []}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks"]["graph_fidelity"]["reference"] == "cache"
