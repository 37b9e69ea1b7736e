"""Helpers the tests share: running the CLI in-process or as a real process, and reading graphs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> Ran:
    """The CLI's main() in this process (fast: NeMo stays imported), exit code included."""
    from nemo2sherpa.cli import main

    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return Ran(int(exited.value.code or 0), captured.out, captured.err)


def run_process(args: list[str], env: dict | None = None, timeout: float = 600) -> Ran:
    """The CLI as a user runs it: a new process, real exit code, real stderr."""
    done = subprocess.run([sys.executable, "-m", "nemo2sherpa", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(ran: Ran, *fragments: str) -> None:
    assert ran.code == 1, (ran.code, ran.err)
    assert "Traceback" not in ran.err, ran.err
    lines = [line for line in ran.err.splitlines() if line.startswith("nemo2sherpa: error:")]
    assert len(lines) == 1, ran.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def leftovers(parent: Path, name: str) -> list[Path]:
    """Anything a conversion into parent/name left behind besides the target itself."""
    return sorted(p for p in parent.iterdir() if p.name.startswith(f".{name}"))


def dead_bytes(weights: Path, tensors: list) -> int:
    """Bytes of an external-data file that no tensor refers to, beyond the page-alignment padding before each."""
    from nemo2sherpa.graphs.weights_file import ALIGNMENT

    spans = sorted((int(entry.get("offset", 0)), int(entry["length"])) for entry in
                   ({e.key: e.value for e in t.external_data} for t in tensors if t.external_data))
    dead, end = 0, 0
    for offset, length in spans:
        assert offset >= end, f"{weights.name}: tensors overlap at {offset}"
        dead += max(0, offset - end - (-end % ALIGNMENT))
        end = offset + length
    return dead + weights.stat().st_size - end


def copy_dir(source: Path, target: Path, without: tuple[str, ...] = ("validation",)) -> Path:
    """A copy of a model directory to damage, without its validation report (or whatever else is named)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*without))
    return target
