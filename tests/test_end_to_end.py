"""The whole product path on the trained fixture, through the CLI: convert -> validate -> publish --dry-run."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import assert_one_line_error, run_cli, run_process

pytestmark = pytest.mark.nemo


def test_a_validated_fixture_publishes_a_card_carrying_its_real_report(validated, fixture_dir, tmp_path, capsys):
    staging = tmp_path / "staging"
    ran = run_cli(["publish", fixture_dir, "--repo-id", "someone/tiny-tdt-en-sherpa-onnx", "--dry-run", staging,
                   "-q"], capsys)
    assert ran.code == 0, ran.err
    report = json.loads((fixture_dir / "validation" / "report.json").read_text())
    assert json.loads((staging / "validation" / "report.json").read_text()) == report
    card = (staging / "README.md").read_text()
    assert "library_name: sherpa-onnx" in card and 'model_type="nemo_transducer"' in card
    fidelity = report["checks"]["graph_fidelity"]
    assert f"{fidelity['utterances']}" in card and "100.0%" in card
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt", "manifest.json"):
        assert (staging / name).read_bytes() == (fixture_dir / name).read_bytes()
        assert name in card


def test_an_unvalidated_directory_is_refused_by_the_cli(fixture_dir, tmp_path, capsys):
    plain = tmp_path / "tiny"
    shutil.copytree(fixture_dir, plain, ignore=shutil.ignore_patterns("validation"))
    ran = run_cli(["publish", plain, "--repo-id", "someone/x", "--dry-run", tmp_path / "staging"], capsys)
    assert_one_line_error(ran, "validation")
    assert not (tmp_path / "staging").exists()


def test_an_int8_variant_validates_against_fp32_through_the_cli(tmp_path, capsys):
    directory = tmp_path / "tiny"
    ran = run_cli(["convert", "tiny-tdt-en", "-o", directory, "--precision", "fp32,int8", "-q"], capsys)
    assert ran.code == 0, ran.err
    ran = run_cli(["validate", directory, "--precision", "int8", "--speed-lengths", "2", "--repeats", "1", "-q"],
                  capsys)
    assert ran.code == 0, ran.out
    report = json.loads((directory / "validation" / "report.json").read_text())
    assert report["variant"] == "int8" and report["files"]["encoder"] == "encoder.int8.onnx"
    precision = report["checks"]["precision"]
    assert precision["status"] == "passed" and precision["reference"] == "fp32"
    assert precision["transcripts"]["cpu"]["blank_only"] == 0
    assert "## Precision: int8 against fp32" in (directory / "validation" / "report.md").read_text()


def test_quiet_means_quiet(tmp_path):
    """-q: convert prints the output directory only, validate its verdict lines only; nothing on stderr, not even
    the lines NeMo's telemetry library logs when NeMo is imported."""
    out = tmp_path / "quiet"
    ran = run_process(["convert", "tiny-tdt-en", "-o", out, "-q"])
    assert ran.code == 0 and ran.err == "", ran.err
    assert ran.out.strip() == str(out)
    ran = run_process(["validate", out, "--no-speed", "--no-long-audio", "-q"])
    assert ran.code == 0 and ran.err == "", ran.err
    assert ran.out.splitlines()[-1].startswith("PASSED: ")


def test_validate_takes_a_list_of_precisions_like_convert(tmp_path, capsys):
    directory = tmp_path / "tiny"
    ran = run_cli(["convert", "tiny-tdt-en", "-o", directory, "--precision", "fp32,int8,fp16", "-q"], capsys)
    assert ran.code == 0, ran.err
    ran = run_cli(["validate", directory, "--precision", "int8,fp16", "--no-speed", "--no-long-audio", "-q"], capsys)
    assert ran.code == 0, ran.out
    first = json.loads((directory / "validation" / "report.json").read_text())
    second = json.loads((directory / "validation-fp16" / "report.json").read_text())
    assert (first["variant"], second["variant"]) == ("int8", "fp16")
    assert second["checks"]["precision"]["reference"] == "fp32"
    assert ran.out.count("PASSED: ") == 2
