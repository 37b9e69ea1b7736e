"""Where checkpoints come from: the Hugging Face cache (offline), and how large graphs are laid out on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, dead_bytes, run_process
from nemo2sherpa.manifest import read_manifest

pytestmark = pytest.mark.nemo
COMMIT = "4f6c2b9e1d0a7c3b5e8f9a1b2c3d4e5f60718293"


def fill_hf_cache(cache: Path, repo_id: str, checkpoint: Path, filename: str, commit: str = COMMIT) -> None:
    """Lay the checkpoint out exactly as huggingface_hub caches a download: blob, snapshot link, ref."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    blob = folder / "blobs" / "f00dfeed"
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, blob)
    snapshot = folder / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, snapshot.parent), snapshot)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def offline_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HOME=str(cache.parent / "hf-home"))
    return env


def test_repo_id_converts_from_the_offline_cache_and_records_the_commit(checkpoints, tmp_path):
    cache = tmp_path / "hub"
    fill_hf_cache(cache, "acme/tiny-tdt", checkpoints["tdt-80"].checkpoint, "tiny-tdt.nemo")
    ran = run_process(["convert", "acme/tiny-tdt", "-o", tmp_path / "model", "-q"], env=offline_env(cache))
    assert ran.code == 0, ran.err
    manifest = read_manifest(tmp_path / "model")
    assert manifest.source["kind"] == "huggingface"
    assert manifest.source["repo_id"] == "acme/tiny-tdt"
    assert manifest.source["resolved_revision"] == COMMIT
    assert manifest.source["filename"] == "tiny-tdt.nemo"
    assert manifest.sherpa_metadata["url"] == "https://huggingface.co/acme/tiny-tdt"


def test_a_recipe_download_that_does_not_match_its_recipe_is_refused(checkpoints, tmp_path):
    cache = tmp_path / "hub"
    fill_hf_cache(cache, "nvidia/parakeet-tdt-1.1b", checkpoints["tdt-80"].checkpoint, "parakeet-tdt-1.1b.nemo")
    ran = run_process(["convert", "parakeet-tdt-1.1b", "-o", tmp_path / "model"], env=offline_env(cache))
    assert_one_line_error(ran, "parakeet-tdt-1.1b.nemo", "does not match recipe parakeet-tdt-1.1b",
                          "encoder_layers 1 (expected 42)", "d_model 32 (expected 1024)")
    assert not (tmp_path / "model").exists()


def test_offline_without_the_checkpoint_in_cache_says_so(tmp_path):
    ran = run_process(["convert", "acme/absent", "-o", tmp_path / "model"], env=offline_env(tmp_path / "hub"))
    assert_one_line_error(ran, "acme/absent", "not in the local Hugging Face cache")
    ran = run_process(["convert", "acme/absent", "--revision", "v9", "-o", tmp_path / "model"],
                      env=offline_env(tmp_path / "hub"))
    assert_one_line_error(ran, "acme/absent")


def test_large_graphs_keep_all_weights_in_one_external_file(checkpoints, converted, signal, tmp_path):
    """Forced with a lowered threshold: the layout the 0.6B and 1.1B encoders get above protobuf's 2 GiB."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.families.transducer import GraphTransducer
    from nemo2sherpa.progress import SILENT
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    inline = converted["tdt-80"]
    external = convert(ConvertOptions(source=str(checkpoints["tdt-80"].checkpoint), output=tmp_path / "ext",
                                      external_threshold=0), SILENT).output
    names = {p.name for p in external.iterdir()}
    assert names == {"encoder.onnx", "encoder.weights", "decoder.onnx", "decoder.weights", "joiner.onnx",
                     "joiner.weights", "tokens.txt", "manifest.json"}
    assert oct(os.stat(external / "encoder.weights").st_mode & 0o777) == "0o644"
    graph = onnx.load(str(external / "encoder.onnx"), load_external_data=False)
    locations = {e.value for t in graph.graph.initializer if uses_external_data(t) for e in t.external_data
                 if e.key == "location"}
    assert locations == {"encoder.weights"}
    constants = [a.t for n in graph.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    tensors = [*graph.graph.initializer, *constants]
    assert [t.name for t in tensors if not uses_external_data(t) and len(t.raw_data) >= 1024] == []
    export = read_manifest(external).export
    assert export["external_data"]["encoder"] == "encoder.weights"
    # the linear weights went to disk while the encoder was exported (weights_ahead), and every byte of the file
    # belongs to a tensor of the graph but for alignment padding: nothing written ahead was left dead
    assert export["encoder_weights_bytes_written_during_export"] > 0.5 * (external / "encoder.weights").stat().st_size
    assert dead_bytes(external / "encoder.weights", tensors) == 0

    arch = checkpoints["tdt-80"].architecture
    features = np.random.default_rng(0).standard_normal((arch.mels, 300)).astype(np.float32)
    outputs = []
    for directory in (inline, external):
        graphs = GraphTransducer(directory / "encoder.onnx", directory / "decoder.onnx", directory / "joiner.onnx",
                                 vocab_size=arch.vocab_size, durations=arch.durations,
                                 pred_rnn_layers=arch.pred_rnn_layers, pred_hidden=arch.pred_hidden)
        outputs.append(graphs.encode(features)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])

    texts = [transcribe(make_recognizer(open_model_dir(d)), signal).tokens for d in (inline, external)]
    assert texts[0] == texts[1] and texts[0]
