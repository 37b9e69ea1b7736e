"""validate says PASSED only when something proved the export faithful to its checkpoint; a run that could compare
nothing is UNPROVEN (exit 3), and with no NeMo reference the reference texts are judged instead of only listed."""

from __future__ import annotations

import json

import pytest

from helpers import copy_dir, run_cli
from nemo2sherpa.validate.results import CheckResult
from nemo2sherpa.validate.verdict import judge

pytestmark = pytest.mark.nemo


def _passed(name: str, **details) -> CheckResult:
    check = CheckResult(name)
    check.details.update(details)
    return check


def test_the_verdict_needs_a_comparison_with_nemo():
    contract = _passed("contract")
    fidelity = _passed("graph_fidelity", utterances=4, encoder_max_abs_diff=1e-6)
    assert judge({"contract": contract, "graph_fidelity": fidelity}).verdict == "passed"
    skipped = CheckResult.skipped("graph_fidelity", "no manifest and no --nemo")
    nothing = judge({"contract": contract, "graph_fidelity": skipped})
    assert nothing.verdict == "unproven" and nothing.exit_code == 3
    assert "no manifest and no --nemo" in " ".join(nothing.not_proven)
    broken = _passed("transcripts")
    broken.fail("cpu: WER 98%")
    assert judge({"contract": contract, "graph_fidelity": fidelity, "transcripts": broken}).exit_code == 1
    random = judge({"contract": contract, "graph_fidelity": fidelity}, random_weights=True)
    assert random.verdict == "unproven" and "random weights" in random.not_proven[0]


def test_swapped_tokens_without_a_manifest_fail_against_the_reference_texts(fixture_dir, fixture_recipe, tmp_path,
                                                                           capsys):
    plain = copy_dir(fixture_dir, tmp_path / "swapped", without=("validation", "manifest.json"))
    lines = (plain / "tokens.txt").read_text().splitlines()
    pieces = [line.rsplit(" ", 1) for line in lines]
    body, blank = pieces[:-1], pieces[-1]
    rotated = [(body[(i + 7) % len(body)][0], body[i][1]) for i in range(len(body))]  # every id a wrong piece
    (plain / "tokens.txt").write_text("\n".join(f"{p} {i}" for p, i in [*rotated, blank]) + "\n")
    ran = run_cli(["validate", plain, "--dataset", fixture_recipe.dataset_path(), "--no-speed", "-q"], capsys)
    assert ran.code == 1, ran.out
    report = json.loads((plain / "validation" / "report.json").read_text())
    assert report["verdict"] == "failed" and report["checks"]["contract"]["status"] == "passed"
    problems = " ".join(report["checks"]["transcripts"]["problems"])
    assert "judged against the reference texts" in problems


def test_random_weights_are_unproven_and_their_speed_is_labelled(tmp_path, capsys):
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    out = tmp_path / "random"
    ran = run_cli(["convert", "tiny-tdt-en", "--random-weights", "-o", out, "-q"], capsys)
    assert ran.code == 0, ran.err
    ran = run_cli(["validate", out, "--speed-lengths", "2", "--repeats", "1", "--no-long-audio", "-q"], capsys)
    assert ran.code == 3, ran.out
    report = json.loads((out / "validation" / "report.json").read_text())
    assert report["verdict"] == "unproven" and "random weights" in report["not_proven"][0]
    assert "not judged" in report["checks"]["transcripts"]["reason"]
    assert "random weights" in report["checks"]["speed"]["note"]
    markdown = (out / "validation" / "report.md").read_text()
    assert markdown.index("**UNPROVEN**") < markdown.index("Not proven:") < markdown.index("| check |")
    assert "Note: random weights" in markdown
