"""convert: small TDT, RNNT and hybrid checkpoints (80 and 128 mels) become sherpa-onnx directories whose graphs
decode exactly like NeMo, and which sherpa-onnx loads and runs."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from conftest import KINDS
from helpers import metadata
from nemo2sherpa.hashing import sha256_file
from nemo2sherpa.manifest import file_problems, read_manifest
from nemo2sherpa.tokens_txt import BLANK, read_tokens

pytestmark = pytest.mark.nemo
EXPECTED_FILES = {"encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt", "manifest.json"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_directory_holds_exactly_the_model_files_readable_by_all(converted, kind):
    directory = converted[kind]
    assert {p.name for p in directory.iterdir()} == EXPECTED_FILES
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize("kind", list(KINDS))
def test_manifest_records_source_facts_versions_and_hashes(converted, checkpoints, kind):
    directory, built = converted[kind], checkpoints[kind]
    manifest = read_manifest(directory)
    assert manifest is not None
    assert manifest.source["kind"] == "local"
    assert manifest.source["sha256"] == sha256_file(built.checkpoint)
    assert manifest.source["size"] == built.checkpoint.stat().st_size
    assert manifest.random_weights is False
    assert manifest.model.architecture == built.architecture
    assert manifest.model.parameters and manifest.model.parameters > 1000
    assert {"nemo", "torch", "onnx", "nemo2sherpa"} <= set(manifest.versions)
    assert manifest.conversion_seconds and manifest.conversion_seconds > 0
    assert set(manifest.files) == EXPECTED_FILES - {"manifest.json"}
    assert file_problems(directory, manifest.files) == []
    assert manifest.export["weights_written_from"] == "captured from the exporter"
    raw = json.loads((directory / "manifest.json").read_text())
    assert raw["model"]["decoder_kind"] == ("tdt" if built.architecture.durations else "rnnt")


@pytest.mark.parametrize("kind", list(KINDS))
def test_encoder_metadata_is_what_sherpa_onnx_reads(converted, checkpoints, kind):
    arch = checkpoints[kind].architecture
    meta = metadata(converted[kind] / "encoder.onnx")
    assert set(meta) == {"vocab_size", "normalize_type", "subsampling_factor", "pred_rnn_layers", "pred_hidden",
                         "feat_dim", "model_type", "version", "model_author", "url", "comment"}
    assert meta["vocab_size"] == str(arch.vocab_size)
    assert meta["feat_dim"] == str(arch.mels)
    assert meta["pred_rnn_layers"] == str(arch.pred_rnn_layers)
    assert meta["pred_hidden"] == str(arch.pred_hidden)
    assert meta["subsampling_factor"] == "8"
    assert meta["normalize_type"] == "per_feature"
    assert meta["model_type"] == arch.model_class
    # sherpa-onnx treats a model as TDT exactly when its url contains "tdt"
    assert ("tdt" in meta["url"]) == bool(arch.durations)
    assert metadata(converted[kind] / "decoder.onnx") == {}


@pytest.mark.parametrize("kind", list(KINDS))
def test_joiner_width_and_tokens_match_the_vocabulary(converted, checkpoints, kind):
    import onnx

    arch = checkpoints[kind].architecture
    joiner = onnx.load(str(converted[kind] / "joiner.onnx"))
    width = joiner.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    assert width == arch.vocab_size + 1 + len(arch.durations)
    pieces = read_tokens(converted[kind] / "tokens.txt")
    assert len(pieces) == arch.vocab_size + 1
    assert pieces[-1] == BLANK


@pytest.mark.parametrize("kind", list(KINDS))
def test_graph_decode_on_nemo_features_gives_nemo_token_ids(converted, checkpoints, signal, kind):
    from nemo2sherpa.families.transducer import GraphTransducer
    from nemo2sherpa.validate.nemo_reference import NemoReference

    arch = checkpoints[kind].architecture
    directory = converted[kind]
    reference = NemoReference(checkpoints[kind].checkpoint).run(signal)
    graphs = GraphTransducer(directory / "encoder.onnx", directory / "decoder.onnx", directory / "joiner.onnx",
                             vocab_size=arch.vocab_size, durations=arch.durations,
                             pred_rnn_layers=arch.pred_rnn_layers, pred_hidden=arch.pred_hidden)
    encoded, length = graphs.encode(reference.features)
    assert length == reference.encoded_length
    assert np.max(np.abs(encoded[:, :length] - reference.encoded[:, :length])) < 1e-4
    hypothesis = graphs.greedy(encoded, length, max_symbols=10)
    assert reference.tokens, "the reference decode is empty: the comparison would prove nothing"
    assert hypothesis.tokens == reference.tokens


@pytest.mark.parametrize("kind", list(KINDS))
def test_sherpa_onnx_loads_and_decodes(converted, checkpoints, signal, kind):
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, token_ids, transcribe

    arch = checkpoints[kind].architecture
    recognizer = make_recognizer(open_model_dir(converted[kind]), feature_dim=arch.mels)
    result = transcribe(recognizer, signal)
    pieces = read_tokens(converted[kind] / "tokens.txt")
    assert result.tokens, "sherpa-onnx decoded nothing"
    assert all(0 <= i < arch.vocab_size for i in token_ids(result.tokens, pieces))
    assert result.timestamps == sorted(result.timestamps)
    assert max(result.timestamps) < len(signal) / 16000


def test_vocabulary_lists_left_out_of_the_config_are_rebuilt_by_nemo(checkpoints, tmp_path):
    """loading drops the saved token lists before NeMo builds the model (they cost seconds of copying for an
    8192-token vocabulary); NeMo's constructor must put them back from the tokenizer, identical."""
    from nemo2sherpa.checkpoint.archive import CONFIG_NAME, NemoArchive
    from nemo2sherpa.checkpoint.config_reading import parse_config
    from nemo2sherpa.checkpoint.loading import load_from_archive, localise_tokenizer, tokenizer_pieces

    path = checkpoints["hybrid-tdt-80"].checkpoint
    with NemoArchive(path) as archive:
        config = localise_tokenizer(archive, parse_config(archive.read_text(CONFIG_NAME), path), tmp_path)
    saved = list(config["labels"])
    assert saved and list(config["joint"]["vocabulary"]) == saved  # what was left out, so the test means something
    with NemoArchive(path) as archive:
        model = load_from_archive(archive, config, tmp_path)
    assert list(model.cfg.labels) == saved == tokenizer_pieces(config, path)
    assert list(model.cfg.joint.vocabulary) == saved
    assert list(model.cfg.aux_ctc.decoder.vocabulary) == saved
