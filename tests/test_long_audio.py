"""Long audio: local attention exported faithfully at every length, full attention without the 400 s table limit,
--attention local conversions, and inputs beyond 400 s through sherpa-onnx for both kinds of export.

The fixtures are the trained tiny models: tiny-tdt-local-en (trained with local attention, context [8, 8]) and its
full-attention twin tiny-tdt-en. They memorised 20 short utterances: on long concatenated audio NeMo itself
transcribes them badly, so long inputs are judged on graph-level equality with NeMo, and through sherpa-onnx on
running and producing text, not on WER.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

import nemo2sherpa
from helpers import run_cli
from nemo2sherpa.convert.export.encoder_prep import AttentionRequest, target_attention
from nemo2sherpa.errors import UserError
from nemo2sherpa.manifest import read_manifest

pytestmark = pytest.mark.nemo

FIXTURES = Path(nemo2sherpa.__file__).parent / "fixtures"
LOCAL = FIXTURES / "tiny-tdt-local-en"
FULL = FIXTURES / "tiny-tdt-en"
# feature frames -> encoder frames 1, 8 (= the window), 13, 23, 32 (the trace example), 52, 57, 126, 501
LENGTHS = (5, 61, 97, 181, 256, 411, 453, 1001, 4003)
TOLERANCE = 1e-4


def _convert(source: str, output: Path, attention: AttentionRequest | None = None) -> Path:
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    return convert(ConvertOptions(source=source, output=output, attention=attention or AttentionRequest()),
                   SILENT).output


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    return _convert(str(LOCAL / "model.nemo"), tmp_path_factory.mktemp("long") / "local")


@pytest.fixture(scope="module")
def relocal_dir(tmp_path_factory) -> Path:
    """The full-attention fixture converted with --attention local --context 8,8."""
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    return _convert("tiny-tdt-en", tmp_path_factory.mktemp("long") / "relocal", AttentionRequest("local", (8, 8)))


def _restore(checkpoint: Path, manifest=None):
    import torch

    from nemo2sherpa.checkpoint.loading import quiet_nemo
    from nemo2sherpa.validate.long_audio import apply_reference_attention

    torch.set_num_threads(2)
    with quiet_nemo():
        from nemo.collections.asr.models import ASRModel

        model = ASRModel.restore_from(str(checkpoint), map_location="cpu")
        model.eval()
        if manifest is not None:
            apply_reference_attention(model, manifest)
    return model


def _session(path: Path):
    from nemo2sherpa.families.common import make_session

    return make_session(path, threads=2)


def _encoder_differences(model, encoder_path: Path, lengths=LENGTHS, seed: int = 7) -> dict[int, float]:
    """Max abs difference between the ONNX encoder and NeMo's encoder (a freshly restored model) per length."""
    import torch

    session = _session(encoder_path)
    names = [i.name for i in session.get_inputs()]
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for frames in lengths:
        features = torch.randn(1, model.encoder._feat_in, frames, generator=generator)
        length = torch.tensor([frames])
        with torch.inference_mode():
            expected, expected_length = model.encoder(audio_signal=features, length=length)
        got, got_length = session.run(None, {names[0]: features.numpy(), names[1]: length.numpy()})
        assert int(np.asarray(got_length).reshape(-1)[0]) == int(expected_length[0]), frames
        assert got.shape == tuple(expected.shape), frames
        out[frames] = float(np.max(np.abs(got - expected.numpy())))
    return out


def _fixture_clips(fixture: Path):
    from nemo2sherpa.validate.audio import read_dataset

    return read_dataset(fixture / "dataset.jsonl")


def _graphs(directory: Path):
    from nemo2sherpa.families.transducer import GraphTransducer

    arch = read_manifest(directory).model.architecture
    return GraphTransducer(directory / "encoder.onnx", directory / "decoder.onnx", directory / "joiner.onnx",
                           vocab_size=arch.vocab_size, durations=arch.durations, pred_rnn_layers=arch.pred_rnn_layers,
                           pred_hidden=arch.pred_hidden, threads=2)


# --------------------------------------------------------------------------------------------------------------
# the cause, and that the conversion's self-check catches it


def test_plain_export_of_local_attention_is_wrong_even_at_the_traced_length_and_the_self_check_refuses_it(tmp_path):
    import torch

    from nemo2sherpa.checkpoint.loading import quiet_nemo
    from nemo2sherpa.convert.export.graphs import _export
    from nemo2sherpa.convert.export.selfcheck import check_probes
    from nemo2sherpa.families.base import Probe

    model = _restore(LOCAL / "model.nemo")
    path = tmp_path / "plain.onnx"
    with quiet_nemo(), torch.no_grad():
        _export(model.encoder, path)  # NeMo's export as is: no nemo2sherpa module swapped in
    generator = torch.Generator().manual_seed(0)
    probes, diffs = [], {}
    session = _session(path)
    for frames in (256, 411):  # 256: the length NeMo's input example traces
        features = torch.randn(1, 80, frames, generator=generator)
        length = torch.tensor([frames])
        with torch.inference_mode():
            expected = model.encoder.forward_for_export(features, length)
        probes.append(Probe("encoder", f"{frames} frames", [features.numpy(), length.numpy()],
                            [t.numpy() for t in expected]))
        got = session.run(None, {"audio_signal": features.numpy(), "length": length.numpy()})[0]
        diffs[frames] = float(np.max(np.abs(got - expected[0].numpy())))
    assert min(diffs.values()) > 0.1, diffs
    with pytest.raises(UserError, match="not faithful"):
        check_probes({"encoder": path}, probes)


# --------------------------------------------------------------------------------------------------------------
# local attention: faithful at every length


def test_local_attention_fixture_converts_and_records_its_attention(local_dir):
    manifest = read_manifest(local_dir)
    attention = manifest.export["attention"]
    assert attention["kind"] == "local" and attention["context"] == [8, 8] and attention["as_trained"] is True
    assert attention["memory_growth"] == "linear"
    assert manifest.export["max_audio_seconds"] is None  # no limit in the graph
    assert manifest.model.architecture.attention == "rel_pos_local_attn"
    assert manifest.model.architecture.att_context_size == (8, 8)
    assert max(manifest.export["self_check_max_abs_diff"]["encoder"].values()) < 1e-4


def test_local_attention_export_equals_nemo_at_lengths_it_never_traced(local_dir):
    differences = _encoder_differences(_restore(LOCAL / "model.nemo"), local_dir / "encoder.onnx")
    print("local [8, 8] encoder max abs diff by feature frames:", differences)
    assert max(differences.values()) < TOLERANCE, differences


def test_local_attention_export_with_a_padded_batch_equals_nemo(local_dir):
    import torch

    model = _restore(LOCAL / "model.nemo")
    session = _session(local_dir / "encoder.onnx")
    features = torch.randn(2, 80, 700, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([700, 333])
    with torch.inference_mode():
        expected, expected_lengths = model.encoder(audio_signal=features, length=lengths)
    got, got_lengths = session.run(None, {"audio_signal": features.numpy(), "length": lengths.numpy()})
    assert np.array_equal(np.asarray(got_lengths), expected_lengths.numpy())
    for row, valid in enumerate(expected_lengths.tolist()):
        assert np.max(np.abs(got[row, :, :valid] - expected[row, :, :valid].numpy())) < TOLERANCE


def test_local_attention_probe_lengths_cross_the_window_and_pass_the_self_check(local_dir):
    import torch

    from nemo2sherpa.convert.export.encoder_prep import prepare_encoder
    from nemo2sherpa.convert.export.selfcheck import check_probes
    from nemo2sherpa.families.base import Probe

    model = _restore(LOCAL / "model.nemo")
    facts = read_manifest(local_dir).model
    prep = prepare_encoder(model, dataclasses.replace(facts, parameters=10**6), AttentionRequest(), LOCAL)
    encoder_frames = [math.ceil(f / 8) for f in prep.probe_frames]
    assert encoder_frames == [23, 57]  # 3w - 1 and 7w + 1: several chunks, no multiple of the window
    probes = []
    for frames in prep.probe_frames:
        features = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(frames))
        length = torch.tensor([frames])
        with torch.inference_mode():  # after prepare_encoder PyTorch still runs NeMo's own attention
            expected = model.encoder.forward_for_export(features, length)
        probes.append(Probe("encoder", f"{frames} frames", [features.numpy(), length.numpy()],
                            [t.numpy() for t in expected]))
    results = check_probes({"encoder": local_dir / "encoder.onnx"}, probes)
    assert max(results["encoder"].values()) < TOLERANCE


def test_local_attention_fixture_decodes_like_nemo_with_real_text(local_dir):
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.nemo_reference import NemoReference
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe
    from nemo2sherpa.validate.transcripts import same_text

    nemo = NemoReference(LOCAL / "model.nemo", threads=2)
    graphs = _graphs(local_dir)
    recognizer = make_recognizer(open_model_dir(local_dir), threads=2)
    clips = _fixture_clips(LOCAL)
    sherpa_right = 0
    for clip in clips:
        reference = nemo.run(clip.audio)
        assert graphs.decode_features(reference.features, nemo.max_symbols or 10).tokens == reference.tokens
        assert reference.text == clip.text
        sherpa_right += same_text(transcribe(recognizer, clip.audio, 16000).text, clip.text)
    print(f"sherpa-onnx says the very sentence on {sherpa_right} of {len(clips)} utterances")
    assert sherpa_right >= 0.9 * len(clips)


# --------------------------------------------------------------------------------------------------------------
# --attention local on a full-attention checkpoint


def test_attention_local_conversion_records_its_context(relocal_dir):
    manifest = read_manifest(relocal_dir)
    attention = manifest.export["attention"]
    assert attention["kind"] == "local" and attention["context"] == [8, 8] and attention["as_trained"] is False
    assert attention["trained"] == {"self_attention_model": "rel_pos", "context": [-1, -1]}
    assert manifest.model.architecture.attention == "rel_pos_local_attn"
    assert manifest.model.architecture.att_context_size == (8, 8)


def test_attention_local_conversion_equals_nemo_switched_to_the_same_attention(relocal_dir):
    model = _restore(FULL / "model.nemo", read_manifest(relocal_dir))
    assert model.encoder.self_attention_model == "rel_pos_local_attn"
    differences = _encoder_differences(model, relocal_dir / "encoder.onnx", lengths=(97, 411, 1001, 4003))
    assert max(differences.values()) < TOLERANCE, differences


def test_attention_requests_are_checked():
    path = Path("m.nemo")
    assert target_attention("rel_pos", (-1, -1), AttentionRequest(), path) == ("rel_pos", (-1, -1))
    assert target_attention("rel_pos", (-1, -1), AttentionRequest("local"), path) == ("rel_pos_local_attn", (128, 128))
    assert target_attention("rel_pos", (-1, -1), AttentionRequest("local", (64, 32)), path) == \
        ("rel_pos_local_attn", (64, 32))
    assert target_attention("rel_pos_local_attn", (8, 8), AttentionRequest(None, (16, 16)), path) == \
        ("rel_pos_local_attn", (16, 16))
    assert target_attention("rel_pos_local_attn", (8, 8), AttentionRequest("full"), path) == ("rel_pos", (-1, -1))
    for trained, request, fragment in (
        ("rel_pos", AttentionRequest(None, (8, 8)), "--context needs --attention local"),
        ("rel_pos", AttentionRequest("full", (8, 8)), "full attention has none"),
        ("rel_pos", AttentionRequest("local", (1, 0)), "one at least 2"),
        ("rel_pos", AttentionRequest("local", (-1, 8)), "both must be >= 0"),
        ("abs_pos", AttentionRequest("local", (8, 8)), "relative-position attention"),
    ):
        with pytest.raises(UserError, match=fragment):
            target_attention(trained, (-1, -1), request, path)


@pytest.mark.parametrize("window", [(1, 1), (1, 0), (0, 1), (2, 0), (0, 2), (8, 8)])
def test_one_rule_for_a_local_attention_window_and_it_is_nemos(window, tmp_path, capsys):
    """The command line, the conversion request and a checkpoint's own modules accept the same windows, and those
    are exactly the windows NeMo's local attention runs with (if NeMo learns to run a window of 1, this fails and
    the rule should follow)."""
    import torch
    from nemo.collections.asr.parts.submodules.multi_head_attention import (
        LocalAttRelPositionalEncoding,
        RelPositionMultiHeadAttentionLongformer,
    )

    from nemo2sherpa.convert.export.local_attention import unsupported_reason

    module = RelPositionMultiHeadAttentionLongformer(n_head=2, n_feat=16, dropout_rate=0.0, pos_bias_u=None,
                                                     pos_bias_v=None, att_context_size=list(window)).eval()
    positions = LocalAttRelPositionalEncoding(att_context_size=list(window), d_model=16, dropout_rate=0.0)
    positions.extend_pe(64, "cpu", torch.float32)
    x = torch.randn(1, 7, 16)
    try:
        with torch.no_grad():
            module(x, x, x, pad_mask=torch.zeros(1, 7, dtype=torch.bool), pos_emb=positions(x)[1])
        nemo_runs = True
    except RuntimeError:
        nemo_runs = False

    assert (unsupported_reason(module) is None) == nemo_runs
    request = AttentionRequest("local", window)
    if nemo_runs:
        assert target_attention("rel_pos", (-1, -1), request, Path("m.nemo")) == ("rel_pos_local_attn", window)
        return
    with pytest.raises(UserError, match="one at least 2"):
        target_attention("rel_pos", (-1, -1), request, Path("m.nemo"))
    output = tmp_path / "out"
    ran = run_cli(["convert", "missing.nemo", "-o", output, "--attention", "local",
                   "--context", ",".join(map(str, window))], capsys)
    assert ran.code == 2 and "Traceback" not in ran.err, ran.err
    assert "--context" in ran.err and "one at least 2" in ran.err, ran.err
    assert not output.exists()


# --------------------------------------------------------------------------------------------------------------
# full attention: no table limit


def test_full_attention_export_claims_long_input_and_carries_no_position_table(fixture_dir):
    import onnx

    manifest = read_manifest(fixture_dir)
    attention = manifest.export["attention"]
    assert attention["kind"] == "full" and attention["memory_growth"] == "quadratic"
    assert manifest.export["max_audio_seconds"] is None
    graph = onnx.load(str(fixture_dir / "encoder.onnx"), load_external_data=False)
    tables = [i.name for i in graph.graph.initializer if 2 * 5000 - 1 in i.dims]
    assert tables == []


def _long(directory: Path, fixture: Path):
    from nemo2sherpa.validate.long_audio import long_input_clip

    clip = long_input_clip(read_manifest(directory), _fixture_clips(fixture), 16000)
    assert clip is not None and 450 <= clip.seconds < 455 and clip.text
    return clip


def test_full_attention_probe_beyond_the_old_table_passes_the_self_check(fixture_dir):
    import torch

    from nemo2sherpa.convert.export.encoder_prep import prepare_encoder
    from nemo2sherpa.convert.export.selfcheck import check_probes
    from nemo2sherpa.families.base import Probe

    model = _restore(FULL / "model.nemo")
    facts = read_manifest(fixture_dir).model
    prep = prepare_encoder(model, facts, AttentionRequest(), FULL)
    assert [math.ceil(f / 8) for f in prep.probe_frames] == [5037]  # past the 5000-frame table of a plain export
    frames = prep.probe_frames[0]
    features = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(1))
    length = torch.tensor([frames])
    with torch.inference_mode():
        expected = model.encoder.forward_for_export(features, length)
    probe = Probe("encoder", f"{frames} frames", [features.numpy(), length.numpy()], [t.numpy() for t in expected])
    results = check_probes({"encoder": fixture_dir / "encoder.onnx"}, [probe])
    assert results["encoder"][f"{frames} frames"] < TOLERANCE


@pytest.fixture(scope="module")
def full_long_reference(fixture_dir):
    from nemo2sherpa.validate.nemo_reference import NemoReference

    clip = _long(fixture_dir, FULL)
    return clip, NemoReference(FULL / "model.nemo", threads=2).run(clip.audio)


def test_full_attention_graphs_equal_nemo_beyond_400_s(fixture_dir, full_long_reference):
    _, reference = full_long_reference
    graphs = _graphs(fixture_dir)
    encoded, length = graphs.encode(reference.features)
    assert length == reference.encoded_length > 5000  # beyond the 5000-frame table of a plain export
    assert np.max(np.abs(encoded[:, :length] - reference.encoded)) < TOLERANCE
    assert graphs.greedy(encoded, length, 10).tokens == reference.tokens


def test_full_attention_long_input_decodes_through_sherpa_onnx(fixture_dir, full_long_reference):
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.long_audio import check_long_input
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.references import Reference

    clip, result = full_long_reference
    model = open_model_dir(fixture_dir)
    _, spec = check_contract(model)
    reference = Reference(tokens=result.tokens, text=result.text, features=result.features, encoded=result.encoded)
    check = check_long_input(clip, model, spec, reference, graphs=_graphs(fixture_dir),
                             memory_limit_bytes=12 * 2**30)
    assert check.status == "passed", check.problems
    sherpa = check.details["sherpa_onnx"]
    assert sherpa["ok"] and sherpa["words"] > 100 and sherpa["peak_rss_gb"] > 0
    assert check.details["graph"]["tokens_equal_nemo"] is True
    print("full attention, 450 s through sherpa-onnx:", sherpa)
    from nemo2sherpa.validate.long_audio import markdown_lines

    section = "\n".join(markdown_lines({"long_audio": check.to_dict()}))
    assert "## Long input (45" in section and "full attention" in section


def test_local_attention_long_input_equals_nemo_and_decodes_through_sherpa_onnx(local_dir):
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.long_audio import check_long_input
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.nemo_reference import NemoReference
    from nemo2sherpa.validate.references import Reference

    clip = _long(local_dir, LOCAL)
    result = NemoReference(LOCAL / "model.nemo", threads=2).run(clip.audio)
    model = open_model_dir(local_dir)
    _, spec = check_contract(model)
    reference = Reference(tokens=result.tokens, text=result.text, features=result.features, encoded=result.encoded)
    check = check_long_input(clip, model, spec, reference, memory_limit_bytes=8 * 2**30)
    assert check.status == "passed", check.problems
    assert check.details["graph"]["tokens_equal_nemo"] and check.details["graph"]["encoder_max_abs_diff"] < TOLERANCE
    assert check.details["sherpa_onnx"]["words"] > 100


def test_attention_local_conversion_decodes_900_s_through_sherpa_onnx(relocal_dir):
    from nemo2sherpa.validate.long_audio import long_input_clip
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_child import decode_in_child

    clip = long_input_clip(read_manifest(relocal_dir), _fixture_clips(FULL), 16000, seconds=900)
    decoded = decode_in_child(open_model_dir(relocal_dir), clip.audio, 16000, memory_limit_bytes=8 * 2**30)
    assert decoded.ok, decoded.error
    assert len(decoded.text.split()) > 200 and decoded.peak_rss_bytes < 4e9


# --------------------------------------------------------------------------------------------------------------
# validate's helpers


def test_long_input_clip_only_when_the_manifest_claims_it(fixture_dir):
    from nemo2sherpa.validate.long_audio import claims_long_input, long_input_clip, supported_seconds

    clips = _fixture_clips(FULL)
    manifest = read_manifest(fixture_dir)
    assert supported_seconds(manifest) == math.inf and claims_long_input(manifest)
    clip = long_input_clip(manifest, clips, 16000)
    assert clip.name.startswith("long-input-") and clip.text.startswith(clips[0].text)
    older = dataclasses.replace(manifest, export={k: v for k, v in manifest.export.items() if k != "attention"})
    assert long_input_clip(older, clips, 16000) is None  # exported before the limit was lifted: 400 s
    limited = dataclasses.replace(manifest, export={**manifest.export, "max_audio_seconds": 400.0})
    assert long_input_clip(limited, clips, 16000) is None
    capped = dataclasses.replace(manifest, export={**manifest.export, "max_audio_seconds": 420.0})
    assert 420 <= long_input_clip(capped, clips, 16000).seconds < 425
    assert long_input_clip(None, clips, 16000) is None


def test_references_of_a_changed_attention_are_kept_apart(relocal_dir, fixture_dir):
    from nemo2sherpa.validate.long_audio import reference_attention, reference_key

    changed, as_trained = read_manifest(relocal_dir), read_manifest(fixture_dir)
    assert reference_attention(changed) == ("rel_pos_local_attn", [8, 8])
    assert reference_attention(as_trained) is None
    digest = "ab" * 32
    assert reference_key(digest, as_trained) == digest
    assert reference_key(digest, changed) != digest and len(reference_key(digest, changed)) == 64


def test_compare_exports_reports_wer_of_local_against_full(relocal_dir, fixture_dir):
    from nemo2sherpa.validate.long_audio import compare_exports
    from nemo2sherpa.validate.model_dir import open_model_dir

    check = compare_exports(open_model_dir(relocal_dir), fixture_dir, _fixture_clips(FULL)[:8])
    assert check.status == "passed", check.problems
    short = check.details["short"]
    assert short["utterances"] == 8 and short["wer_vs_other_percent"] is not None
    print("tiny-tdt-en, local [8, 8] vs full attention on its own utterances:", short)


def test_a_decode_beyond_its_memory_limit_fails_alone_and_says_so(local_dir):
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_child import decode_in_child

    audio = np.zeros(16000 * 600, dtype=np.float32)
    decoded = decode_in_child(open_model_dir(local_dir), audio, 16000, memory_limit_bytes=2**30)
    assert not decoded.ok and decoded.error
    print("1 GiB address space, 600 s:", decoded.error[:160])


def test_validate_cli_judges_a_changed_attention_against_nemo_switched_the_same_way(relocal_dir, fixture_dir,
                                                                                     tmp_path, capsys):
    """validate of an --attention local export: graph fidelity against NeMo running that same local attention (its
    references cached apart from the checkpoint's own), the comparison with the full-attention export reported."""
    import json

    # a window of 1.4 s on a model that memorised 3 s utterances: sherpa-onnx's front end flips some near-ties
    # (measured: 85% exact match with NeMo), so the transcript threshold is lowered; the graphs must still agree
    ran = run_cli(["validate", relocal_dir, "--compare-with", fixture_dir, "--no-speed", "--no-long-audio",
                   "--min-exact-match", "0.6", "--max-wer-vs-nemo", "20", "--report-dir", tmp_path / "r", "-q"],
                  capsys)
    assert ran.code == 0, ran.out + ran.err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    checks = report["checks"]
    assert checks["graph_fidelity"]["status"] == "passed" and checks["graph_fidelity"]["token_match_rate"] == 1.0
    assert checks["long_audio"]["status"] == "skipped" and "--no-long-audio" in checks["long_audio"]["reason"]
    compared = checks["attention"]
    assert compared["status"] == "passed" and compared["other_directory"] == fixture_dir.name
    assert compared["this"]["kind"] == "local" and compared["other"]["kind"] == "full"
    assert compared["short"]["utterances"] == report["audio"]["utterances"]
    assert f"## Against `{fixture_dir.name}`" in (tmp_path / "r" / "report.md").read_text()
    print("local [8, 8] vs full attention:", compared["short"], "; vs NeMo:", checks["transcripts"]["providers"])
