"""publish: refusals, the model card, the dry-run tree, and the upload through huggingface_hub to a local fake Hub.

One tiny model is converted per session; every test works on a copy with a hand-written validation report that
follows docs/validation-report.md. Expectations are computed from the fixture files, never typed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_server import FakeHub
from nemo2sherpa.errors import UserError
from nemo2sherpa.hashing import sha256_file
from nemo2sherpa.manifest import MANIFEST_NAME, read_manifest
from nemo2sherpa.publish import PublishOptions, publish
from nemo2sherpa.recipes import load_catalog

pytestmark = pytest.mark.nemo

NAME = "tiny-tdt"  # the model directory's name: reports name the directory they were written for
REPO = "someone/tiny-tdt-sherpa-onnx"
TOKEN = "hf_publishTestSecret0123456789"


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory) -> Path:
    """A real conversion whose encoder keeps its weights in an external file, as the big models do."""
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT
    from nemo2sherpa.testing.checkpoints import build_checkpoint

    root = tmp_path_factory.mktemp("publish-model")
    checkpoint = build_checkpoint(root / "checkpoints" / "tiny-local.nemo")
    output = root / NAME
    convert(ConvertOptions(source=str(checkpoint), output=output, external_threshold=64 * 1024,
                           license="apache-2.0"), SILENT)
    return output


@pytest.fixture
def model(converted_model, tmp_path) -> Path:
    """A private copy with a passing validation report, report.md and plot."""
    directory = copy_model(converted_model, tmp_path / "models" / NAME)
    write_validation(directory)
    return directory


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("validation"))
    return target


def make_report(directory: Path, **changes: Any) -> dict[str, Any]:
    """A passing report for `directory`, shaped as docs/validation-report.md says; `changes` replace top-level keys."""
    manifest = read_manifest(directory)
    variant = manifest.variants["fp32"]
    report = {
        "format": "nemo2sherpa-validation", "format_version": 1, "tool_version": "0.1.0",
        "created": "2026-11-24T09:00:00+00:00", "model_dir": directory.resolve().name, "variant": "fp32",
        "files": {**variant.graph_files(), "tokens": "tokens.txt"},
        "passed": True, "providers": ["cpu", "cuda"],
        "thresholds": {"encoder_max_abs_diff": 0.001, "min_exact_match": 0.9, "max_wer_vs_nemo_percent": 5.0},
        "audio": {"source": "synthesized (espeak-ng)", "utterances": 8, "total_seconds": 61.2, "with_text": 8},
        "checks": {
            "contract": {"status": "passed", "problems": [], "manifest": {"present": True}},
            "graph_fidelity": {"status": "passed", "problems": [], "reference": "nemo", "utterances": 8,
                               "encoder_max_abs_diff": 3.1e-06, "token_match_rate": 0.975, "mismatches": []},
            "transcripts": {"status": "passed", "problems": [], "reference": "nemo",
                            "providers": {"cpu": {"exact_match_rate": 0.875, "wer_vs_nemo_percent": 1.25,
                                                  "wer_vs_truth_percent": 3.5},
                                          "cuda": {"exact_match_rate": 0.75, "wer_vs_nemo_percent": 2.5,
                                                   "wer_vs_truth_percent": 4.25}},
                            "nemo_wer_vs_truth_percent": 2.75, "utterances": []},
            "providers": {"status": "passed", "problems": [], "cpu": {"available": True},
                          "cuda": {"available": True, "runtime": "onnxruntime 1.32.0 (CUDAExecutionProvider)"},
                          "cpu_cuda_exact_match_rate": 0.875},
            "speed": {"status": "passed", "problems": [], "threads": 2, "repeats": 3,
                      "load_seconds": {"cpu": 12.1, "cuda": 5.0},
                      "buckets": [{"seconds": 2.0, "cpu": {"decode_seconds": 0.52, "rtfx": 3.8},
                                   "cuda": {"decode_seconds": 0.36, "rtfx": 5.6}, "cuda_speedup": 1.44},
                                  {"seconds": 8.0, "cpu": {"decode_seconds": 2.1, "rtfx": 3.8},
                                   "cuda": {"decode_seconds": 0.5, "rtfx": 16.0}, "cuda_speedup": 4.2}],
                      "break_even_seconds": 4.2, "recommended_gpu_min_seconds": 5.0},
        },
        "environment": {"platform": "Linux-6.1-x86_64", "cpu": "AMD EPYC 7R13", "cores": 2,
                        "gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "570.86"},
                        "versions": {"nemo2sherpa": "0.1.0", "sherpa-onnx": "2.0.1", "onnxruntime": "1.32.0"}},
        "model": {"source": manifest.source, "facts": manifest.model.to_dict()},
    }
    report.update(changes)
    return report


def write_validation(directory: Path, report: dict[str, Any] | None = None, plot: bool = True) -> Path:
    folder = directory / "validation"
    folder.mkdir(exist_ok=True)
    report = report if report is not None else make_report(directory)
    (folder / "report.md").write_text(f"# Validation of `{report['model_dir']}`\n", encoding="utf-8")
    if plot:
        (folder / "decode_time.png").write_bytes(tiny_png())
    else:
        (folder / "decode_time.png").unlink(missing_ok=True)
    # sealed as validate seals it: the other files' hashes in the report, the report's hash beside it
    report.setdefault("artifacts", {name: sha256_file(folder / name) for name in ("report.md", "decode_time.png")
                                    if (folder / name).exists()})
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / "report.json.sha256").write_text(sha256_file(folder / "report.json") + "  report.json\n")
    return folder / "report.json"


def tiny_png() -> bytes:
    """A valid 1x1 PNG, built by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\xff\xff\xff")) + \
        chunk(b"IEND", b"")


def edit_manifest(directory: Path, edit) -> None:
    """manifest.json does not hash itself: tests may reshape its source or facts, then write a matching report."""
    path = directory / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def dry_run(directory: Path, staging: Path, **options: Any) -> str:
    publish(PublishOptions(directory=directory, repo_id=REPO, dry_run=staging, quiet=True, **options))
    return (staging / "README.md").read_text(encoding="utf-8")


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def table(card: str, *first: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with `first`, as dicts keyed by header cell."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    lines = card.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and cells(line)[: len(first)] == list(first):
            header = cells(line)
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(row))))
            return rows
    raise AssertionError(f"no table starting with {first}")


def number(cell: str) -> float:
    return float(cell.rstrip("%s ").replace(",", ""))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expected_paths(directory: Path, validation: tuple[str, ...] = ("report.json", "report.md", "decode_time.png",
                                                                   "report.json.sha256")):
    manifest = read_manifest(directory)
    return {"README.md", MANIFEST_NAME, *manifest.files, *(f"validation/{n}" for n in validation)}


# --- the model card -----------------------------------------------------------------------------------------------


def test_card_metadata_and_provenance_of_a_local_checkpoint(model, tmp_path):
    card = dry_run(model, tmp_path / "staging")
    manifest = read_manifest(model)
    meta = front_matter(card)
    assert meta["library_name"] == "sherpa-onnx"
    assert meta["pipeline_tag"] == "automatic-speech-recognition"
    assert {"nemo", "parakeet", "tdt", "onnx"} <= set(meta["tags"]) and "rnnt" not in meta["tags"]
    assert "base_model" not in meta  # a local file: no repository to name
    assert meta["license"] == "apache-2.0" and manifest.source["license"] == "apache-2.0"  # convert --license
    assert manifest.source["sha256"] in card
    assert f"`{manifest.source['filename']}`" in card
    # No local path leaks: not the checkpoint's folder, not the model directory, not the test's temp root.
    for leak in (str(model), str(model.parent), str(tmp_path), str(Path(manifest.source["filename"]).parent)):
        if leak not in (".", ""):
            assert leak not in card
    assert "/tmp" not in card and str(Path.home()) not in card


def test_local_paths_in_the_manifest_or_report_do_not_reach_the_card(model, tmp_path):
    secret = "/home/someone/private-projects"
    edit_manifest(model, lambda data: data["source"].update(filename=f"{secret}/finetune.nemo"))
    report = make_report(model)
    report["checks"]["speed"] = {"status": "skipped", "reason": f"no timing audio in {secret}/clips", "problems": []}
    write_validation(model, report)
    card = dry_run(model, tmp_path / "staging")
    assert "/home/someone" not in card and "private-projects" not in card
    assert "`finetune.nemo`" in card
    statuses = {r["check"]: r["status"] for r in table(card, "check", "status")}
    assert statuses["speed"] == "skipped: no timing audio in clips"


def test_card_lists_every_file_with_size_and_hash(model, tmp_path):
    card = dry_run(model, tmp_path / "staging")
    manifest = read_manifest(model)
    rows = {r["file"].strip("`"): r for r in table(card, "file", "bytes", "sha256")}
    for name, record in manifest.files.items():
        assert int(number(rows[name]["bytes"])) == record.size
        assert rows[name]["sha256"].strip("`") == record.sha256
    manifest_bytes = (model / MANIFEST_NAME).read_bytes()
    assert rows[MANIFEST_NAME]["sha256"].strip("`") == hashlib.sha256(manifest_bytes).hexdigest()
    external = set(manifest.export["external_data"].values())
    assert external and all(f"`{name}`" in card.split("## Files")[1].split("## Usage")[0] for name in external)


def test_card_shows_how_to_load_it(model, tmp_path):
    card = dry_run(model, tmp_path / "staging")
    usage = card.split("## Usage")[1].split("## Validation")[0]
    local = REPO.split("/")[1]
    variant = read_manifest(model).variants["fp32"]
    assert f"hf download {REPO}" in usage
    assert 'model_type="nemo_transducer"' in usage and "provider=" in usage  # Python
    for flag in ("--encoder", "--decoder", "--joiner", "--tokens"):
        assert f"{flag}={local}/" in usage  # sherpa-onnx-offline
    assert "--model-type=nemo_transducer" in usage and "--provider=" in usage and "sherpa-onnx-offline" in usage
    assert "sherpa_rs::transducer::{TransducerConfig, TransducerRecognizer}" in usage  # Rust
    assert 'model_type: "nemo_transducer"' in usage
    for name in (*variant.files.values(), "tokens.txt"):
        assert f"{local}/{name}" in usage


def test_card_validation_tables_carry_the_report_figures(model, tmp_path):
    card = dry_run(model, tmp_path / "staging")
    report = json.loads((model / "validation" / "report.json").read_text())
    checks = report["checks"]

    statuses = {r["check"]: r["status"] for r in table(card, "check", "status")}
    assert list(statuses.values()) == ["passed"] * len(checks)

    fidelity = table(card, "reference", "utterances")[0]
    assert int(fidelity["utterances"]) == checks["graph_fidelity"]["utterances"]
    assert number(fidelity["encoder max abs diff"]) == pytest.approx(checks["graph_fidelity"]["encoder_max_abs_diff"],
                                                                     rel=0.01)
    assert number(fidelity["token ids equal to NeMo's"]) == pytest.approx(
        100 * checks["graph_fidelity"]["token_match_rate"], abs=0.05)

    rows = {r["provider"]: r for r in table(card, "provider", "exact match with NeMo")}
    for provider, figures in checks["transcripts"]["providers"].items():
        assert number(rows[provider]["exact match with NeMo"]) == pytest.approx(100 * figures["exact_match_rate"],
                                                                                abs=0.05)
        assert number(rows[provider]["WER vs NeMo"]) == pytest.approx(figures["wer_vs_nemo_percent"], abs=0.005)
        assert number(rows[provider]["WER vs reference text"]) == pytest.approx(figures["wer_vs_truth_percent"],
                                                                                abs=0.005)

    speed = checks["speed"]
    timings = table(card, "audio (s)")
    assert [number(r["audio (s)"]) for r in timings] == [b["seconds"] for b in speed["buckets"]]
    for row, bucket in zip(timings, speed["buckets"]):
        for provider in ("cpu", "cuda"):
            assert number(row[f"{provider.upper()} decode (s)"]) == pytest.approx(
                bucket[provider]["decode_seconds"], abs=0.0005)
        assert number(row["CUDA speedup"]) == pytest.approx(bucket["cuda_speedup"], abs=0.005)
    assert f"{speed['break_even_seconds']:.1f} s" in card
    assert f"at least {speed['recommended_gpu_min_seconds']:.1f} s" in card
    env = report["environment"]
    assert env["cpu"] in card and env["gpu"]["name"] in card
    assert "validation/decode_time.png" in card
    versions = {r["package"]: r["version"] for r in table(card, "package", "version")}
    assert versions == read_manifest(model).versions


def test_skipped_and_missing_checks_are_shown_as_such(model, tmp_path):
    report = make_report(model)
    reason = "no GPU in this machine"
    report["checks"]["speed"] = {"status": "skipped", "reason": reason, "problems": []}
    del report["checks"]["providers"]
    write_validation(model, report, plot=False)
    card = dry_run(model, tmp_path / "staging")
    statuses = {r["check"]: r["status"] for r in table(card, "check", "status")}
    assert statuses["speed"] == f"skipped: {reason}"
    assert statuses["providers"] == "not run"
    with pytest.raises(AssertionError):
        table(card, "audio (s)")  # no timing table, no invented numbers
    assert "Break-even" not in card and "decode_time.png" not in card
    assert "validation/decode_time.png" not in tree(tmp_path / "staging")


def test_card_of_a_recipe_source_has_licence_base_model_language_and_attribution(model, tmp_path):
    recipe = next(r for r in load_catalog().values() if r.repo_id and r.license and r.languages)
    commit = hashlib.sha1(b"resolved").hexdigest()

    def as_recipe(data):
        data["source"] = {**data["source"], "kind": "recipe", "recipe": recipe.name, "repo_id": recipe.repo_id,
                          "revision": "main", "resolved_revision": commit, "filename": recipe.filename}
        data["source"].pop("license")  # a manifest that recorded none: the catalog's licence applies

    edit_manifest(model, as_recipe)
    write_validation(model)
    card = dry_run(model, tmp_path / "staging")
    meta = front_matter(card)
    assert meta["license"] == recipe.license.lower()
    assert meta["base_model"] == recipe.repo_id
    assert meta["language"] == list(recipe.languages)
    assert f"https://huggingface.co/{recipe.repo_id}" in card and commit in card
    attribution = next(line for line in card.splitlines() if line.startswith("Attribution"))
    assert recipe.repo_id in attribution and recipe.license in attribution


def test_a_source_without_a_licence_needs_one_to_publish(model, tmp_path):
    edit_manifest(model, lambda data: data["source"].pop("license"))
    write_validation(model)
    message = refused(model, tmp_path)
    assert MANIFEST_NAME in message and "records no licence" in message and "--license" in message
    card = dry_run(model, tmp_path / "other", license="other:Research Only:https://example.org/licence")
    meta = front_matter(card)
    assert (meta["license"], meta["license_name"], meta["license_link"]) == \
        ("other", "Research Only", "https://example.org/licence")
    with pytest.raises(UserError, match="other:NAME:URL"):
        dry_run(model, tmp_path / "bad", license="other:no link")
    forced = dry_run(model, tmp_path / "forced", force=True)
    assert "license" not in front_matter(forced) and "licence | not recorded" in forced


def test_rnnt_models_are_tagged_rnnt(model, tmp_path):
    def as_rnnt(data):
        data["model"]["decoder_kind"] = "rnnt"
        data["model"]["architecture"]["durations"] = []

    edit_manifest(model, as_rnnt)
    write_validation(model)
    tags = front_matter(dry_run(model, tmp_path / "staging"))["tags"]
    assert "rnnt" in tags and "tdt" not in tags


# --- refusals -----------------------------------------------------------------------------------------------------


def refused(directory: Path, tmp_path: Path, **options: Any) -> str:
    staging = tmp_path / "refused-staging"
    with pytest.raises(UserError) as caught:
        publish(PublishOptions(directory=directory, repo_id=REPO, dry_run=staging, quiet=True, **options))
    message = str(caught.value)
    assert "\n" not in message
    assert not staging.exists()  # nothing written
    return message


def test_refuses_a_directory_without_a_report(model, tmp_path):
    shutil.rmtree(model / "validation")
    message = refused(model, tmp_path)
    assert str(model / "validation" / "report.json") in message and "no validation report" in message


def test_refuses_a_failing_report(model, tmp_path):
    report = make_report(model, passed=False)
    report["checks"]["transcripts"]["status"] = "failed"
    write_validation(model, report)
    message = refused(model, tmp_path)
    assert "report.json" in message and "validation failed (transcripts)" in message


def test_refuses_an_unproven_report(model, tmp_path):
    """Every check passed or was skipped, but nothing was compared with NeMo: that is no evidence to publish on."""
    report = make_report(model, passed=False, verdict="unproven",
                         not_proven=["graph fidelity to NeMo: no manifest and no --nemo"])
    report["checks"]["graph_fidelity"] = {"status": "skipped", "reason": "no NeMo reference", "problems": []}
    write_validation(model, report)
    message = refused(model, tmp_path)
    assert "report.json" in message and "proved nothing about fidelity" in message
    card = dry_run(model, tmp_path / "staging", force=True)
    assert "**UNPROVEN**" in card and "Not proven: graph fidelity to NeMo" in card


def test_refuses_validation_files_changed_or_linked_after_validation(model, tmp_path):
    """What goes out under validation/ is what validate wrote: hashed, sealed, regular files only."""
    (model / "validation" / "decode_time.png").write_bytes(tiny_png() + b"\0")
    assert "decode_time.png is not the file validate wrote" in refused(model, tmp_path, force=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("hf_not_for_publishing")
    (model / "validation" / "decode_time.png").unlink()
    (model / "validation" / "decode_time.png").symlink_to(secret)
    assert "decode_time.png is a link" in refused(model, tmp_path, force=True)
    write_validation(model)
    report = model / "validation" / "report.json"
    report.write_text(report.read_text().replace('"cpu": 12.1', '"cpu": 1.1'))
    assert "report.json changed after validation" in refused(model, tmp_path, force=True)


def test_refuses_a_model_file_that_links_outside_even_with_force(model, tmp_path):
    secret = tmp_path / "token"
    secret.write_bytes((model / "tokens.txt").read_bytes())  # same bytes: the hash check alone would pass
    (model / "tokens.txt").unlink()
    (model / "tokens.txt").symlink_to(secret)
    message = refused(model, tmp_path, force=True)
    assert "tokens.txt: a link or not a regular file" in message


def test_refuses_random_weights_even_with_force(model, tmp_path):
    edit_manifest(model, lambda data: data.update(random_weights=True))
    write_validation(model)
    message = refused(model, tmp_path, force=True)
    assert MANIFEST_NAME in message and "random weights" in message


def test_refuses_files_that_no_longer_match_the_manifest(model, tmp_path):
    manifest = read_manifest(model)
    name = max(manifest.files, key=lambda n: manifest.files[n].size)
    data = bytearray((model / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / name).write_bytes(bytes(data))
    message = refused(model, tmp_path, force=True)
    assert str(model) in message and f"{name} does not match its sha256" in message


def test_refuses_a_directory_without_manifest(model, tmp_path):
    (model / MANIFEST_NAME).unlink()
    message = refused(model, tmp_path, force=True)
    assert str(model) in message and "has no manifest.json" in message and "traced to a source" in message


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "README.md", "validation/report.json"])
def test_refuses_a_manifest_naming_files_it_cannot_upload_as_is(model, tmp_path, name):
    record = {"sha256": hashlib.sha256(b"").hexdigest(), "size": 0}
    edit_manifest(model, lambda data: data["files"].update({name: record}))
    write_validation(model)
    message = refused(model, tmp_path, force=True)
    assert MANIFEST_NAME in message and f"cannot upload as is: {name!r}" in message


@pytest.mark.parametrize("case, expected", [
    ("model_dir", "was written for model directory"),
    ("variant", "validated variant"),
    ("files", "validated files"),
    ("source", "was written for another conversion"),
])
def test_refuses_a_report_written_for_another_directory(model, tmp_path, case, expected):
    report = make_report(model)
    if case == "model_dir":
        report["model_dir"] = "another-model"
    elif case == "variant":
        report["variant"] = "int8"
    elif case == "files":
        report["files"]["encoder"] = "encoder.int8.onnx"
    else:
        report["model"]["source"] = {**report["model"]["source"], "sha256": hashlib.sha256(b"other").hexdigest()}
    write_validation(model, report)
    message = refused(model, tmp_path, force=True)  # --force never adopts another model's report
    assert "report.json" in message and expected in message


def test_refuses_a_report_that_is_not_one(model, tmp_path):
    (model / "validation" / "report.json").write_text("{not json")
    assert "is not valid JSON" in refused(model, tmp_path, force=True)
    missing = tmp_path / "elsewhere" / "report.json"
    assert str(missing) in refused(model, tmp_path, report=missing)


def test_refuses_bad_repo_ids_and_a_non_empty_staging_directory(model, tmp_path):
    for bad in ("no-owner", "a/b/c", "owner/", "owner/bad name"):
        with pytest.raises(UserError, match="--repo-id"):
            publish(PublishOptions(directory=model, repo_id=bad, dry_run=tmp_path / "s", quiet=True))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        dry_run(model, occupied)
    assert tree(occupied) == {"keep.txt": b"mine"}


# --- --force ------------------------------------------------------------------------------------------------------


def test_force_without_report_is_stated_plainly(model, tmp_path):
    shutil.rmtree(model / "validation")
    card = dry_run(model, tmp_path / "staging", force=True)
    intro = card.split("## Source")[0]
    assert "Not validated" in intro and "--force" in intro and "no validation report" in intro
    assert "No validation report" in card.split("## Validation")[1]
    assert set(tree(tmp_path / "staging")) == expected_paths(model, validation=())


def test_force_with_failing_report_publishes_the_failure(model, tmp_path):
    report = make_report(model, passed=False)
    report["checks"]["graph_fidelity"].update(status="failed", problems=["joiner differs on 2 utterances"])
    write_validation(model, report)
    card = dry_run(model, tmp_path / "staging", force=True)
    assert "Not validated" in card.split("## Source")[0]
    assert "**FAILED**" in card
    statuses = {r["check"]: r for r in table(card, "check", "status")}
    assert statuses["graph fidelity"]["status"] == "failed"
    assert "joiner differs on 2 utterances" in statuses["graph fidelity"]["problems"]


# --- dry run ------------------------------------------------------------------------------------------------------


def test_dry_run_writes_exactly_the_repository_tree(model, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()  # an existing empty directory is fine
    result = publish(PublishOptions(directory=model, repo_id=REPO, dry_run=staging, quiet=True))
    assert result.dry_run and result.location == str(staging)
    staged = tree(staging)
    assert set(staged) == expected_paths(model) == set(result.files)
    for path, content in staged.items():
        if path == "README.md":
            continue
        local = model / path
        assert content == local.read_bytes()
    weights = max(read_manifest(model).files.items(), key=lambda item: item[1].size)[0]
    assert (staging / weights).stat().st_ino == (model / weights).stat().st_ino  # hard-linked, not copied
    assert read_manifest(staging).files == read_manifest(model).files


def test_publish_never_imports_torch_or_nemo(model, tmp_path):
    ran = run_publish_process({"directory": str(model), "repo_id": REPO, "dry_run": str(tmp_path / "staging"),
                               "quiet": True}, env=hub_env(None, tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["heavy"] == []


# --- upload through huggingface_hub to the fake Hub ---------------------------------------------------------------

SCRIPT = """
import json, sys
from pathlib import Path
from nemo2sherpa.errors import UserError
from nemo2sherpa.hashing import sha256_file
from nemo2sherpa.publish import PublishOptions, publish
options = json.loads(sys.argv[1])
for key in ("directory", "dry_run", "report"):
    if options.get(key):
        options[key] = Path(options[key])
try:
    result = publish(PublishOptions(**options))
except UserError as exc:
    print(f"nemo2sherpa: error: {exc}", file=sys.stderr)
    sys.exit(1)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nemo"))
print(json.dumps({"location": result.location, "files": list(result.files), "heavy": heavy}))
"""


def hub_env(hub: FakeHub | None, tmp_path: Path, token: str | None = TOKEN) -> dict[str, str]:
    """The environment a user would set: endpoint, token, no Xet (the fake Hub speaks LFS), an empty HF home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    if token:
        env["HF_TOKEN"] = token
    return env


def run_publish_process(options: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(options)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_upload_end_to_end_through_huggingface_hub(model, tmp_path):
    dry_run(model, tmp_path / "staging")
    staged = tree(tmp_path / "staging")
    sizes = {path: len(content) for path, content in staged.items()}
    text_sizes = sorted(size for path, size in sizes.items() if b"\0" not in staged[path][:512])
    lfs_files = sorted(size for path, size in sizes.items() if b"\0" in staged[path][:512])
    # Route the larger text files to LFS by size, split the largest binary file into parts.
    with FakeHub(TOKEN, lfs_above=text_sizes[len(text_sizes) // 2], multipart_chunk=lfs_files[-1] // 2 + 1) as hub:
        options = {"directory": str(model), "repo_id": REPO, "private": True}
        ran = run_publish_process(options, hub_env(hub, tmp_path))
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout)

        # Exactly the dry run's tree arrived, card included, in one commit.
        assert hub.tree(REPO) == staged
        assert len(hub.repos[REPO].commits) == 1
        assert result["location"] == f"{hub.url}/{REPO}"
        assert result["heavy"] == []
        # --private reached create_repo.
        assert [c["visibility"] for c in hub.created] == ["private"]

        # Both upload paths were taken, as the server decided: regular blobs and LFS (single PUT and multipart).
        modes = hub.upload_modes
        lfs = {p for p, m in modes.items() if m == "lfs"}
        assert lfs and set(modes) - lfs and set(modes) == set(staged)
        assert {p for p in lfs if b"\0" not in staged[p][:512]}, "no file went to LFS by its size"
        oids = {hashlib.sha256(staged[p]).hexdigest(): p for p in lfs}
        assert set(oids) == set(hub.objects)
        assert hub.multipart and hub.single_part
        assert {oids[o] for o in hub.multipart} == {p for p in lfs if sizes[p] > hub.multipart_chunk}

        # The token went as a header, and nowhere else.
        api = [r for r in hub.requests if r.path.startswith("/api/")]
        assert api and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)
        assert TOKEN not in ran.stdout + ran.stderr
        assert all(TOKEN.encode() not in content for content in hub.tree(REPO).values())

        # A second run (to a new branch) sends only changed content again: the card, which names the branch.
        first = len(hub.requests)
        again = run_publish_process({**options, "revision": "v1"}, hub_env(hub, tmp_path))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["location"] == f"{hub.url}/{REPO}/tree/v1"
        branch = hub.tree(REPO, "v1")
        assert "--revision v1" in branch["README.md"].decode()
        assert {p: c for p, c in branch.items() if p != "README.md"} == \
            {p: c for p, c in staged.items() if p != "README.md"}
        card_oid = hashlib.sha256(branch["README.md"]).hexdigest()
        assert all(card_oid in r.path for r in hub.requests[first:] if r.method == "PUT")


def test_401_is_a_one_line_error_without_the_token(model, tmp_path, monkeypatch):
    wrong = "hf_wrongTokenThatMustNotBePrinted"
    with FakeHub(TOKEN) as hub:
        monkeypatch.setenv("HF_TOKEN", wrong)
        with pytest.raises(UserError) as caught:
            publish(PublishOptions(directory=model, repo_id=REPO, endpoint=hub.url, quiet=True))
        assert hub.requests and hub.requests[0].headers["authorization"] == f"Bearer {wrong}"
        assert not hub.repos
    message = str(caught.value)
    assert message == f"{REPO}: not authorized: set HF_TOKEN or run `hf auth login`"
    assert wrong not in message


def test_forbidden_and_unreachable_hubs_are_one_line_errors(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(TOKEN) as hub:
        hub.fail[("POST", f"/api/models/{REPO}/preupload")] = (403, {})
        with pytest.raises(UserError, match="forbidden: the token cannot write here"):
            publish(PublishOptions(directory=model, repo_id=REPO, endpoint=hub.url, quiet=True))
        assert not hub.repos[REPO].commits
        closed = hub.url
    with pytest.raises(UserError, match=f"cannot reach {closed}"):
        publish(PublishOptions(directory=model, repo_id=REPO, endpoint=closed, quiet=True))


def test_private_is_never_ignored_for_an_existing_public_repo(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(TOKEN) as hub:
        from hub_server import Repo

        hub.repos[REPO] = Repo(private=False)
        with pytest.raises(UserError, match="already exists and is public"):
            publish(PublishOptions(directory=model, repo_id=REPO, private=True, endpoint=hub.url, quiet=True))
        assert hub.created[0]["visibility"] == "private"
        assert not hub.repos[REPO].commits and not any(r.path.endswith("/preupload/main") for r in hub.requests)


def test_no_token_stops_before_any_request(model, tmp_path):
    with FakeHub(TOKEN) as hub:
        ran = run_publish_process({"directory": str(model), "repo_id": REPO, "quiet": True},
                                  hub_env(hub, tmp_path, token=None))
        assert hub.requests == []
    assert ran.returncode == 1
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in ran.stderr


def test_offline_mode_is_a_clear_refusal(model, tmp_path):
    env = {**hub_env(None, tmp_path), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    ran = run_publish_process({"directory": str(model), "repo_id": REPO, "quiet": True}, env)
    assert ran.returncode == 1
    assert "HF_HUB_OFFLINE is set" in ran.stderr and "--dry-run" in ran.stderr
    assert TOKEN not in ran.stderr + ran.stdout
