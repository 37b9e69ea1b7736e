"""Cache-aware streaming end to end on the trained streaming fixture (tiny-streaming-en: a hybrid RNNT-CTC model with
chunked attention, look-aheads of 3 and 1 encoder frames, causal convolutions): converted into online directories,
streamed chunk by chunk against NeMo's own cache-aware streaming, and fed to sherpa-onnx's OnlineRecognizer in
100 ms pieces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, leftovers, metadata, run_cli

pytestmark = pytest.mark.nemo
FAST = ["--no-speed", "--no-long-audio", "-q"]


def _convert(target: Path, **options) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    return convert(ConvertOptions(source="tiny-streaming-en", output=target, **options), SILENT).output


@pytest.fixture(scope="module")
def online_dir(tmp_path_factory) -> Path:
    return _convert(tmp_path_factory.mktemp("streaming") / "online", precisions=("fp32", "int8", "fp16"))


@pytest.fixture(scope="module")
def nemo_model():
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo.collections.asr.models import ASRModel

    from nemo2sherpa.checkpoint.loading import quiet_nemo
    from nemo2sherpa.recipes import get_recipe

    with quiet_nemo():
        model = ASRModel.restore_from(str(get_recipe("tiny-streaming-en").bundled_path()), map_location="cpu")
    model.eval()
    return model


def _report(directory: Path) -> dict:
    return json.loads((directory / "validation" / "report.json").read_text())


def test_a_cache_aware_checkpoint_converts_to_what_the_online_recognizer_reads(online_dir, nemo_model):
    """By default: the streaming transducer, its encoder with the three caches in and out, and every metadata key
    sherpa-onnx's online loader reads, equal to what NeMo's own streaming config says for the default look-ahead."""
    import onnx

    from nemo2sherpa.manifest import read_manifest

    manifest = read_manifest(online_dir)
    assert list(manifest.families) == ["streaming-transducer"]
    graph = onnx.load(str(online_dir / "encoder.onnx"), load_external_data=False)
    assert [i.name for i in graph.graph.input] == ["audio_signal", "length", "cache_last_channel", "cache_last_time",
                                                   "cache_last_channel_len"]
    assert len(graph.graph.output) == 5
    meta = metadata(online_dir / "encoder.onnx")
    encoder = nemo_model.encoder
    encoder.set_default_att_context_size([16, 3])
    config = encoder.streaming_cfg
    assert int(meta["window_size"]) == config.chunk_size[1] + config.pre_encode_cache_size[1]
    assert int(meta["chunk_shift"]) == config.chunk_size[1] == 32  # (3 + 1) encoder frames of 8 feature frames
    assert (meta["cache_last_channel_dim1"], meta["cache_last_channel_dim2"], meta["cache_last_channel_dim3"]) == \
        ("2", "16", "64")  # layers, left context, d_model
    assert (meta["cache_last_time_dim1"], meta["cache_last_time_dim2"], meta["cache_last_time_dim3"]) == \
        ("2", "64", "8")  # layers, d_model, kernel 9 - 1
    assert meta["normalize_type"] == "" and meta["vocab_size"] == "64"
    assert "tdt" not in meta["url"]  # sherpa-onnx's online transducer decodes RNNT
    streaming = manifest.export["streaming"]
    assert streaming["lookahead_frames"] == 3 and streaming["trained_lookaheads"] == [3, 1]
    assert streaming["lookahead_ms"] == 240 and streaming["chunk_ms"] == 320


def test_the_streamed_graphs_equal_nemos_cache_aware_streaming_and_sherpa_onnx_streams_the_sentences(online_dir,
                                                                                                     capsys):
    """validate streams the encoder chunk by chunk with its caches, as NeMo's CacheAwareStreamingAudioBuffer cuts
    the features, and compares it with NeMo's own cache_aware_stream_step and its greedy decode continued across
    chunks; sherpa-onnx's online recognizer, fed 100 ms at a time, gives the reference texts."""
    run_cli(["validate", online_dir, *FAST], capsys)
    report = _report(online_dir)
    fidelity = report["checks"]["graph_fidelity"]
    assert fidelity["status"] == "passed" and fidelity["token_match_rate"] == 1.0, fidelity
    assert fidelity["encoder_max_abs_diff"] < 1e-3
    transcripts = report["checks"]["transcripts"]["providers"]["cpu"]
    assert transcripts["wer_vs_truth_percent"] <= 5.0, transcripts
    streaming = report["checks"]["streaming"]
    assert streaming["status"] == "passed" and streaming["window_frames"] == 41
    figures = streaming["providers"]["cpu"]
    assert figures["clips"] == 20 and figures["chunks"] > 20 and figures["rtfx"] > 1
    # a token is shown no earlier than its audio plus the wait for the look-ahead, and within a few chunks
    assert 0.24 <= figures["mean_token_latency_s"] < 2.0, figures
    markdown = (online_dir / "validation" / "report.md").read_text()
    assert "## Streaming" in markdown and "Look-ahead 3 encoder frames (240 ms)" in markdown


def test_lookahead_picks_another_trained_latency_and_refuses_an_untrained_one(tmp_path, capsys):
    from nemo2sherpa.convert.export.encoder_prep import AttentionRequest

    target = _convert(tmp_path / "la1", attention=AttentionRequest(lookahead=1))
    meta = metadata(target / "encoder.onnx")
    assert (meta["window_size"], meta["chunk_shift"], meta["lookahead"]) == ("25", "16", "1")
    from nemo2sherpa.recipes import get_recipe
    from nemo2sherpa.validate.audio import read_dataset
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    clips = read_dataset(get_recipe("tiny-streaming-en").dataset_path(), 16000)[:4]
    recognizer = make_recognizer(open_model_dir(target), threads=1)
    texts = [transcribe(recognizer, clip.audio).text.strip().lower() for clip in clips]
    assert texts == [clip.text for clip in clips]
    assert recognizer.latency["chunk_compute_ms_mean"] > 0

    ran = run_cli(["convert", "tiny-streaming-en", "-o", tmp_path / "la5", "--lookahead", "5"], capsys)
    assert_one_line_error(ran, "--lookahead 5", "3, 1")
    assert not (tmp_path / "la5").exists() and not leftovers(tmp_path, "la5")
    ran = run_cli(["convert", "tiny-tdt-en", "-o", tmp_path / "offline", "--lookahead", "1"], capsys)
    assert_one_line_error(ran, "--lookahead needs a cache-aware streaming checkpoint")


def test_the_same_checkpoint_converts_offline_and_its_ctc_branch_streams(tmp_path, capsys):
    """--decoder transducer: the offline transducer of the same checkpoint, its chunked attention computed over the
    whole input, which NeMo's offline forward reproduces; --decoder streaming-ctc: the hybrid's CTC branch with
    caches, which sherpa-onnx's online CTC recognizer streams."""
    from nemo2sherpa.families import family_of_files
    from nemo2sherpa.recipes import get_recipe
    from nemo2sherpa.validate.audio import read_dataset
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    offline = _convert(tmp_path / "offline", decoder="transducer")
    assert "window_size" not in metadata(offline / "encoder.onnx")
    run_cli(["validate", offline, *FAST], capsys)
    report = _report(offline)
    assert report["family"] == "transducer"
    assert report["checks"]["graph_fidelity"]["token_match_rate"] == 1.0, report["checks"]["graph_fidelity"]
    assert "streaming" not in report["checks"]
    (offline / "manifest.json").unlink()  # someone else's export: told apart from an online one by its metadata
    assert family_of_files(offline, "fp32").name == "transducer"

    ctc = _convert(tmp_path / "ctc", decoder="streaming-ctc")
    assert sorted(p.name for p in ctc.glob("*.onnx")) == ["model.onnx"]
    assert family_of_files(ctc, "fp32").name == "streaming-ctc"
    clips = read_dataset(get_recipe("tiny-streaming-en").dataset_path(), 16000)[::4]
    recognizer = make_recognizer(open_model_dir(ctc), threads=1)
    texts = [transcribe(recognizer, c.audio).text for c in clips]
    assert all(c.text.split()[-1] in text for c, text in zip(clips, texts)), texts  # it streams the sentences
    run_cli(["validate", ctc, *FAST], capsys)
    report = _report(ctc)
    fidelity = report["checks"]["graph_fidelity"]
    assert fidelity["status"] == "passed" and fidelity["token_match_rate"] == 1.0, fidelity
    # the fixture's auxiliary CTC head, unlike its transducer, is not robust to sherpa-onnx's stream (its start,
    # the digital silence that flushes the last window): the graphs fed sherpa-onnx's features in sherpa-onnx's
    # windows give sherpa-onnx's text on every clip where it differs from NeMo's, so none is the export's
    figures = report["checks"]["transcripts"]["providers"]["cpu"]
    assert figures["differing"] > 0 and figures["front_end_caused"] == figures["differing"], figures
    assert figures["wer_vs_nemo_without_front_end_percent"] == 0.0
    ran = run_cli(["convert", "tiny-streaming-en", "-o", tmp_path / "both", "--decoder", "both", "-q"], capsys)
    assert ran.code == 0, ran.err  # a streaming hybrid's two branches, side by side, both online
    both = json.loads((tmp_path / "both" / "manifest.json").read_text())["families"]
    assert list(both) == ["streaming-transducer", "streaming-ctc"]


def test_streamed_token_ids_follow_nemo_chunking(nemo_model):
    """The chunker the graphs are streamed with cuts features exactly as NeMo's CacheAwareStreamingAudioBuffer
    (pad_and_drop_preencoded): the same windows, the same valid lengths, the same short last chunk."""
    import torch
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    from nemo2sherpa.families.streaming_step import nemo_chunks, streaming_shape

    nemo_model.encoder.set_default_att_context_size([16, 1])
    shape = streaming_shape(nemo_model.encoder)
    for frames in (5, 17, 100, 163):
        features = np.random.default_rng(frames).standard_normal((80, frames)).astype(np.float32)
        buffer = CacheAwareStreamingAudioBuffer(nemo_model, pad_and_drop_preencoded=True)
        buffer.append_processed_signal(torch.from_numpy(features)[None])
        theirs = [(chunk[0].numpy(), int(length[0])) for chunk, length in buffer]
        ours = list(nemo_chunks(features, shape, 8))
        assert len(ours) == len(theirs), frames
        for (a, la), (b, lb) in zip(ours, theirs):
            assert la == lb and np.array_equal(a, b)


def test_online_card_shows_how_to_stream(online_dir, tmp_path, capsys):
    """The validated online directory publishes (dry run) with a card that streams: OnlineRecognizer, audio fed in
    pieces, the silence that flushes the last window, the look-ahead and the latency validate measured."""
    run_cli(["validate", online_dir, *FAST], capsys)
    ran = run_cli(["publish", online_dir, "--repo-id", "me/tiny-streaming", "--dry-run", tmp_path / "staging", "-q"],
                  capsys)
    assert ran.code == 0, ran.err
    card = (tmp_path / "staging" / "README.md").read_text()
    usage = card.split("## Usage")[1]
    assert "OnlineRecognizer.from_transducer(" in usage and "accept_waveform" in usage
    assert "input_finished()" in usage and "OfflineRecognizer" not in usage
    assert "look-ahead 3 encoder frames (240 ms" in card
    latency = card.split("### Streaming")[1]
    assert "first token shown after" in latency and "| cpu | " in latency


def test_int8_and_fp16_stream_like_float32(online_dir, capsys):
    """The precision variants of an online directory: their encoders step with the same caches, the fp16 writer's
    range probe runs one step from empty caches, and each streams through sherpa-onnx like float32."""
    from nemo2sherpa.families.streaming_step import ONLINE_KEYS

    for variant in ("int8", "fp16"):
        meta = metadata(online_dir / f"encoder.{variant}.onnx")
        assert all(meta[key] == metadata(online_dir / "encoder.onnx")[key] for key in ONLINE_KEYS)
    ran = run_cli(["validate", online_dir, "--precision", "int8,fp16", *FAST], capsys)
    assert ran.code == 0, ran.err
    for report_dir in ("validation", "validation-fp16"):
        report = json.loads((online_dir / report_dir / "report.json").read_text())
        assert report["verdict"] == "passed", report["checks"]
        assert report["checks"]["precision"]["status"] == "passed"
        assert report["checks"]["streaming"]["providers"]["cpu"]["rtfx"] > 1


def test_end_tokens_are_counted_where_the_vocabulary_has_them():
    from nemo2sherpa.validate.streaming import end_tokens

    runs = {"a": {"tokens": ["▁hi", "<EOU>"]}, "b": {"tokens": ["▁yeah", "<EOB>"]}, "c": {"tokens": ["▁so"]}}
    found = end_tokens(runs, ["▁hi", "▁yeah", "▁so", "<EOU>", "<EOB>", "<blk>"])
    assert found == {"tokens": ["<EOU>", "<EOB>"], "emitted": {"<EOU>": 1, "<EOB>": 1},
                     "transcripts_ending_with_one": 2, "transcripts": 3}
    assert end_tokens(runs, ["▁hi", "<blk>"]) is None


def test_nemotrons_streaming_shape_converts_and_streams_like_nemo(tmp_path, capsys):
    """nemotron-speech-streaming-en-0.6b's streaming architecture (128 mels, left context 70, look-aheads 13/6/1/0,
    two LSTM layers), scaled down in depth and width, with random weights: each look-ahead's step has the shape
    NeMo's streaming config gives, sherpa-onnx loads and streams it, and its streamed token ids equal NeMo's."""
    import dataclasses

    from nemo2sherpa.recipes import get_recipe
    from nemo2sherpa.testing.checkpoints import build_checkpoint

    nemotron = get_recipe("nemotron-speech-streaming-en-0.6b").architecture
    small = dataclasses.replace(nemotron, encoder_layers=2, d_model=64, subsampling_conv_channels=32, vocab_size=40,
                                pred_hidden=48, joint_hidden=48)
    checkpoint = build_checkpoint(tmp_path / "nemotron-small.nemo", small)
    for lookahead, window, shift in ((13, 121, 112), (0, 17, 8)):
        target = tmp_path / f"la{lookahead}"
        ran = run_cli(["convert", checkpoint, "-o", target, "--lookahead", str(lookahead), "-q"], capsys)
        assert ran.code == 0, ran.err
        meta = metadata(target / "encoder.onnx")
        assert (int(meta["window_size"]), int(meta["chunk_shift"])) == (window, shift)
        assert (meta["cache_last_channel_dim2"], meta["pred_rnn_layers"], meta["feat_dim"]) == ("70", "2", "128")
    run_cli(["validate", target, "--nemo", checkpoint, *FAST], capsys)
    report = _report(target)
    fidelity = report["checks"]["graph_fidelity"]
    assert fidelity["status"] == "passed" and fidelity["token_match_rate"] == 1.0, fidelity
    assert report["checks"]["streaming"]["providers"]["cpu"]["chunks"] > 0


def test_an_attention_style_nemo_cannot_stream_with_caches_is_refused(tmp_path, capsys):
    from nemo2sherpa.recipes import get_recipe
    from nemo2sherpa.testing.checkpoints import rewrite_config

    def edit(config: dict) -> None:
        config["encoder"]["att_context_style"] = "chunked_limited_with_rc"

    bad = rewrite_config(get_recipe("tiny-streaming-en").bundled_path(), tmp_path / "rc.nemo", edit)
    ran = run_cli(["convert", bad, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "rc.nemo", "chunked_limited_with_rc")
    assert not (tmp_path / "out").exists()


def test_a_streaming_tdt_model_converts_offline_and_is_refused_for_the_online_transducer(tmp_path, capsys):
    """sherpa-onnx's online transducer ignores TDT durations: such a model streams wrongly there, so it is refused
    for streaming, in one line, and converts offline by default."""
    import dataclasses

    from nemo2sherpa.recipes import get_recipe
    from nemo2sherpa.testing.checkpoints import build_checkpoint

    tdt = dataclasses.replace(get_recipe("tiny-streaming-en").architecture, model_class="EncDecRNNTBPEModel",
                              durations=(0, 1, 2, 3, 4), vocab_size=40)
    checkpoint = build_checkpoint(tmp_path / "streaming-tdt.nemo", tdt)
    ran = run_cli(["convert", checkpoint, "-o", tmp_path / "online", "--decoder", "streaming-transducer"], capsys)
    assert_one_line_error(ran, "streaming-tdt.nemo", "RNNT only")
    assert not (tmp_path / "online").exists()
    ran = run_cli(["convert", checkpoint, "-o", tmp_path / "offline", "-q"], capsys)
    assert ran.code == 0, ran.err
    assert list(json.loads((tmp_path / "offline" / "manifest.json").read_text())["families"]) == ["transducer"]
