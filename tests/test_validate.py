"""validate on the trained fixture: a good directory passes with real text, every kind of damage is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, copy_dir, run_cli

pytestmark = pytest.mark.nemo
FAST = ["--speed-lengths", "2,5", "--repeats", "1", "-q"]


def test_the_fixture_directory_passes_and_nemo_graphs_and_truth_agree(validated, fixture_recipe):
    report = validated.report
    assert report["passed"] is True, json.dumps({k: v for k, v in report["checks"].items()}, indent=1)[:3000]
    fidelity = report["checks"]["graph_fidelity"]
    assert fidelity["status"] == "passed" and fidelity["token_match_rate"] == 1.0
    assert fidelity["encoder_max_abs_diff"] < 1e-3
    utterances = report["checks"]["transcripts"]["utterances"]
    dataset_lines = fixture_recipe.dataset_path().read_text().splitlines()
    assert len(utterances) == len([line for line in dataset_lines if line.strip()])
    # a trained model: NeMo says the very sentence, and graph-level decoding equals NeMo (token_match_rate above)
    assert all(u["nemo"] == u["truth"] for u in utterances)
    cpu = report["checks"]["transcripts"]["providers"]["cpu"]
    assert 0.0 <= cpu["exact_match_rate"] <= 1.0 and cpu["wer_vs_truth_percent"] is not None
    print(f"sherpa-onnx == NeMo on {cpu['exact_match_rate']:.0%} of the fixture's utterances, "
          f"WER vs truth {cpu['wer_vs_truth_percent']}%")


def test_report_files_exist_and_parse(validated):
    directory = validated.report_dir
    report = json.loads((directory / "report.json").read_text())
    assert report["format"] == "nemo2sherpa-validation" and report["format_version"] == 1
    assert set(report["checks"]) == {"contract", "graph_fidelity", "transcripts", "providers", "speed", "long_audio"}
    speed = report["checks"]["speed"]
    assert [b["seconds"] for b in speed["buckets"]] == [2.0, 5.0]
    assert all(b["cpu"]["decode_seconds"] > 0 and b["cpu"]["rtfx"] > 0 for b in speed["buckets"])
    markdown = (directory / "report.md").read_text()
    assert "## Graph fidelity" in markdown and "## Transcripts through sherpa-onnx" in markdown
    assert "## Long input (45" in markdown
    assert (directory / "decode_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_reports_the_decoding_process_memory(validated):
    """Peak resident memory of sherpa-onnx's process, measured in that process: at least the model's graphs."""
    speed = validated.report["checks"]["speed"]
    graphs = sum(p.stat().st_size for p in validated.report_dir.parent.glob("*.onnx"))
    assert speed["peak_rss_bytes"]["cpu"] > graphs
    assert speed["gpu_peak_bytes"] == {}
    assert "Peak resident memory of the decoding process: cpu" in (validated.report_dir / "report.md").read_text()


def test_an_export_that_claims_long_input_is_validated_beyond_400_s(validated):
    """The fixture's manifest claims no length limit: validate adds a 450 s input and judges it against NeMo."""
    long = validated.report["checks"]["long_audio"]
    assert long["status"] == "passed", long
    assert 450 <= long["seconds"] < 455 and long["claimed_max_seconds"] is None
    assert long["graph"]["tokens_equal_nemo"] is True and long["graph"]["encoder_max_abs_diff"] < 1e-3
    assert long["sherpa_onnx"]["ok"] and long["sherpa_onnx"]["words"] > 100


def test_cli_exit_codes_and_rerun_from_cache_without_nemo(validated, fixture_dir, tmp_path, capsys):
    ran = run_cli(["validate", fixture_dir, "--no-nemo", "--no-speed", "--report-dir", tmp_path / "r", "-q"], capsys)
    assert ran.code == 0, ran.out + ran.err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["checks"]["graph_fidelity"]["reference"] == "cache"
    assert report["checks"]["graph_fidelity"]["token_match_rate"] == 1.0
    ran = run_cli(["validate", fixture_dir, "--provider", "gpu"], capsys)
    assert ran.code == 2


def test_a_joiner_from_another_model_fails(fixture_dir, converted, tmp_path, capsys):
    broken = copy_dir(fixture_dir, tmp_path / "foreign")
    shutil.copyfile(converted["tdt-80"] / "joiner.onnx", broken / "joiner.onnx")
    ran = run_cli(["validate", broken, "--no-speed", "-q"], capsys)
    assert ran.code == 1
    report = json.loads((broken / "validation" / "report.json").read_text())
    problems = " ".join(report["checks"]["contract"]["problems"])
    assert "manifest: joiner.onnx" in problems and "the joiner takes 32-wide encoder frames" in problems


def test_a_third_party_directory_without_manifest_validates(fixture_dir, fixture_recipe, tmp_path, capsys):
    plain = copy_dir(fixture_dir, tmp_path / "third-party", without=("validation", "manifest.json"))
    ran = run_cli(["validate", plain, "--dataset", fixture_recipe.dataset_path(), "--no-speed", "-q"], capsys)
    # nothing failed, but with no manifest and no --nemo nothing was compared with NeMo: unproven, exit 3
    assert ran.code == 3, ran.out
    assert "UNPROVEN" in ran.out and "not proven: graph fidelity to NeMo" in ran.out
    report = json.loads((plain / "validation" / "report.json").read_text())
    assert report["verdict"] == "unproven" and report["passed"] is False
    assert any("reference texts at WER" in line for line in report["proven"])
    assert report["checks"]["contract"]["manifest"] == {"present": False}
    assert report["checks"]["graph_fidelity"]["status"] == "skipped"
    assert "--nemo" in report["checks"]["graph_fidelity"]["reason"]
    assert report["checks"]["transcripts"]["providers"]["cpu"]["wer_vs_truth_percent"] is not None
    # given the checkpoint, the same directory is compared with NeMo too
    ran = run_cli(["validate", plain, "--nemo", fixture_recipe.bundled_path(), "--no-speed", "-q",
                   "--dataset", fixture_recipe.dataset_path()], capsys)
    report = json.loads((plain / "validation" / "report.json").read_text())
    assert report["checks"]["graph_fidelity"]["token_match_rate"] == 1.0


def _edit_metadata(path: Path, key: str, value: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
    onnx.save(model, str(path))


def _damage_tokens(directory: Path) -> None:
    lines = (directory / "tokens.txt").read_text().splitlines()
    (directory / "tokens.txt").write_text("\n".join(lines[:-2] + lines[-1:]) + "\n")


def _damage_feat_dim(directory: Path) -> None:
    _edit_metadata(directory / "encoder.onnx", "feat_dim", "128")


def _damage_vocab(directory: Path) -> None:
    _edit_metadata(directory / "encoder.onnx", "vocab_size", "63")


def _damage_url(directory: Path) -> None:
    _edit_metadata(directory / "encoder.onnx", "url", "https://example.com/rnnt")


def _rename_piece(directory: Path) -> None:
    text = (directory / "tokens.txt").read_text().replace("\u2581the ", "\u2581teh ", 1)
    (directory / "tokens.txt").write_text(text)


TAMPERING = {
    "tokens-line-removed": (_damage_tokens, ["tokens.txt: ids are not contiguous from 0", "manifest: tokens.txt has"]),
    "wrong-feat-dim": (_damage_feat_dim, ["feat_dim=128", "encoder takes 80 features"]),
    "vocab-size-edited": (_damage_vocab, ["tokens.txt has 65 tokens; vocab_size 63"]),
    "tdt-url-lost": (_damage_url, ["needs 65", "the manifest says TDT"]),
    "piece-renamed": (_rename_piece, ["manifest: tokens.txt does not match its sha256"]),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected_and_named(fixture_dir, tmp_path, capsys, case):
    damage, expected = TAMPERING[case]
    broken = copy_dir(fixture_dir, tmp_path / case)
    damage(broken)
    ran = run_cli(["validate", broken, "--no-speed", "-q"], capsys)
    assert ran.code == 1, ran.out
    problems = " ".join(json.loads((broken / "validation" / "report.json").read_text())["checks"]["contract"]
                        ["problems"])
    for fragment in expected:
        assert fragment in problems, (fragment, problems)


def test_truncated_external_weights_are_named(tmp_path, capsys):
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    directory = convert(ConvertOptions(source="tiny-tdt-en", output=tmp_path / "ext", external_threshold=0),
                        SILENT).output
    weights = directory / "encoder.weights"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    ran = run_cli(["validate", directory, "--no-speed", "-q"], capsys)
    assert ran.code == 1
    problems = " ".join(json.loads((directory / "validation" / "report.json").read_text())["checks"]["contract"]
                        ["problems"])
    assert "encoder.weights is truncated" in problems


def test_cuda_without_a_cuda_runtime_fails_clearly(fixture_dir, tmp_path, capsys):
    ran = run_cli(["validate", fixture_dir, "--provider", "cpu,cuda", "--speed-lengths", "2", "--repeats", "1",
                   "--report-dir", tmp_path / "r", "-q"], capsys)
    assert ran.code == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    providers = report["checks"]["providers"]
    assert providers["status"] == "failed" and providers["cuda"]["available"] is False
    assert "onnxruntime-gpu" in " ".join(providers["problems"])
    assert all("cuda" not in bucket for bucket in report["checks"]["speed"]["buckets"])
    assert "cuda" not in report["checks"]["transcripts"]["providers"]


def test_audio_of_any_rate_and_channels_is_accepted_and_bad_audio_named(fixture_dir, fixture_recipe, tmp_path,
                                                                       capsys):
    import soundfile as sf
    import soxr

    first = json.loads(fixture_recipe.dataset_path().read_text().splitlines()[0])
    samples, rate = sf.read(str(fixture_recipe.dataset_path().parent / first["audio"]), dtype="float32")
    stereo = np.stack([soxr.resample(samples, rate, 44100)] * 2, axis=1)
    sf.write(str(tmp_path / "stereo.flac"), stereo, 44100)
    ran = run_cli(["validate", fixture_dir, "--audio", tmp_path / "stereo.flac", "--no-speed", "--report-dir",
                   tmp_path / "r", "-q"], capsys)
    assert ran.code == 0, ran.out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["checks"]["transcripts"]["utterances"][0]["nemo"] == first["text"]

    (tmp_path / "empty.wav").write_bytes(b"")
    ran = run_cli(["validate", fixture_dir, "--audio", tmp_path / "empty.wav", "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "empty.wav")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(0, dtype=np.float32), 16000)
    ran = run_cli(["validate", fixture_dir, "--audio", tmp_path / "silent.wav", "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "silent.wav", "holds no audio samples")


def test_compare_with_something_that_is_not_a_directory_is_one_line(fixture_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-export"
    ran = run_cli(["validate", fixture_dir, "--compare-with", missing, "--report-dir", tmp_path / "r", "-q"], capsys)
    assert_one_line_error(ran, str(missing), "--compare-with needs a model directory")
    assert not (tmp_path / "r").exists()  # refused before anything ran


def test_validate_never_reads_through_a_link_out_of_the_directory(fixture_dir, tmp_path, capsys):
    linked = copy_dir(fixture_dir, tmp_path / "linked")
    secret = tmp_path / "token"
    secret.write_text("hf_secret_token 0\n")
    (linked / "tokens.txt").unlink()
    (linked / "tokens.txt").symlink_to(secret)
    ran = run_cli(["validate", linked, "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "tokens.txt is a link to a file outside the directory")
    assert not (linked / "validation").exists() and "hf_secret_token" not in ran.out + ran.err


def test_an_external_data_location_outside_the_directory_is_refused_unread(fixture_dir, tmp_path, capsys):
    import onnx

    moved = copy_dir(fixture_dir, tmp_path / "moved")
    model = onnx.load(str(moved / "encoder.onnx"))
    onnx.save_model(model, str(moved / "encoder.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    probe = onnx.load(str(moved / "encoder.onnx"), load_external_data=False)
    for tensor in probe.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = str(tmp_path / "elsewhere.bin")
    onnx.save_model(probe, str(moved / "encoder.onnx"))
    ran = run_cli(["validate", moved, "--no-speed", "--no-nemo", "-q"], capsys)
    assert ran.code == 1
    report = json.loads((moved / "validation" / "report.json").read_text())
    problems = " ".join(report["checks"]["contract"]["problems"])
    assert "names external data outside the model directory" in problems and "elsewhere.bin" in problems
    assert "missing" not in problems  # its existence was never looked up


def test_a_directory_that_is_no_model_gets_no_report(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    ran = run_cli(["validate", empty, "-q"], capsys)
    assert_one_line_error(ran, "is not a model directory")
    assert list(empty.iterdir()) == []


def test_several_audio_files_after_one_audio_option(fixture_dir, fixture_recipe, tmp_path, capsys):
    """`--audio clips/*.wav` (the shell expands it into several words) validates every file."""
    lines = fixture_recipe.dataset_path().read_text().splitlines()[:2]
    files = [fixture_recipe.dataset_path().parent / json.loads(line)["audio"] for line in lines]
    ran = run_cli(["validate", fixture_dir, "--audio", *files, "--no-speed", "--no-long-audio", "--report-dir",
                   tmp_path / "r", "-q"], capsys)
    assert ran.code == 0, ran.out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["audio"]["utterances"] == 2
    stray = run_cli(["validate", fixture_dir, files[0], "-q"], capsys)
    assert stray.code == 2 and "audio files go after --audio" in stray.err


def test_validate_says_its_plan_and_progress_inside_the_long_step(fixture_dir, fixture_recipe, tmp_path, capsys):
    ran = run_cli(["validate", fixture_dir, "--speed-lengths", "2,5", "--repeats", "1", "--no-long-audio",
                   "--report-dir", tmp_path / "r"], capsys)
    assert ran.code == 0, ran.out
    plan = next(line for line in ran.err.splitlines() if line.startswith("plan: "))
    assert "s of audio through sherpa-onnx" in plan and "--no-long-audio" in plan
    progress = [line for line in ran.err.splitlines() if " decodes (" in line]
    clips = len(fixture_recipe.dataset_path().read_text().splitlines())
    expected = clips + 2 * (1 + 1)  # each clip once, each of the 2 lengths after a warm-up
    assert progress and progress[-1].strip().startswith(f"{expected}/{expected} decodes")


def test_a_long_input_that_would_not_fit_the_machine_is_skipped_with_the_reason(fixture_dir, tmp_path, capsys,
                                                                                monkeypatch):
    """The decision, on the real estimate for the fixture's 450 s input, against a machine of 1 GB."""
    from nemo2sherpa.validate import pipeline

    monkeypatch.setattr(pipeline, "physical_memory_bytes", lambda: 10**9)
    ran = run_cli(["validate", fixture_dir, "--no-speed", "--report-dir", tmp_path / "r", "-q"], capsys)
    assert ran.code == 0, ran.out
    long = json.loads((tmp_path / "r" / "report.json").read_text())["checks"]["long_audio"]
    assert long["status"] == "skipped" and "would need about" in long["reason"] and "this machine has 1 GB" in \
        long["reason"]
