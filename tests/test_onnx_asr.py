"""The onnx-asr layout (`convert --layout onnx-asr`) with the real onnx-asr package: the trained fixtures converted,
loaded with onnx_asr.load_model and transcribing their 20 utterances exactly; int8 and external weights under
onnx-asr's names; what it cannot serve refused in one line; and what validate and publish need of these directories:
config.json and vocab.txt checked as onnx-asr reads them, the fused graph stepped by NeMo's greedy rules to the same
tokens as onnx-asr and NeMo, onnx-asr itself as the end-to-end recognizer, and a card whose code runs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_cli
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families import LAYOUTS, families_for
from nemo2sherpa.families.onnx_asr import INSTALL, ONNX_ASR_CTC, ONNX_ASR_TRANSDUCER
from nemo2sherpa.recipes import get_recipe

FRONTEND = {"window_size": 0.025, "window_stride": 0.01, "window": "hann", "n_fft": 512, "preemph": 0.97,
            "log": True, "log_zero_guard_type": "add", "log_zero_guard_value": 2**-24, "mag_power": 2.0,
            "mel_norm": "slaney", "lowfreq": 0, "highfreq": None, "pad_to": 0, "frame_splicing": 1}


def _facts(recipe: str = "tiny-tdt-en", **architecture) -> ModelFacts:
    arch = dataclasses.replace(get_recipe(recipe).architecture, **architecture)
    kind = "ctc" if arch.pred_hidden is None else ("tdt" if arch.durations else "rnnt")
    return ModelFacts(architecture=arch, decoder_kind=kind, normalize="per_feature", sample_rate=16000,
                      max_symbols_per_frame=10, frontend=dict(FRONTEND))


def _dataset(recipe: str) -> tuple[list[str], list[str]]:
    path = Path(get_recipe(recipe).dataset_path())
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [str(path.parent / row["audio"]) for row in rows], [row["text"] for row in rows]


def _transcribe(model_type: str | None, directory: Path, recipe: str, quantization: str | None = None) -> int:
    """How many of the recipe's utterances onnx-asr transcribes exactly as the reference text."""
    onnx_asr = pytest.importorskip("onnx_asr", reason="onnx-asr is not installed (the onnx-asr extra)")
    audio, texts = _dataset(recipe)
    model = onnx_asr.load_model(model_type, str(directory), quantization=quantization,
                                providers=["CPUExecutionProvider"])
    return sum(got == want for got, want in zip(model.recognize(audio), texts))


# ------------------------------------------------------------------------------------------- without NeMo


def test_onnx_asr_names_its_files_as_onnx_asr_looks_them_up():
    assert ONNX_ASR_TRANSDUCER.files() == {"encoder": "encoder-model.onnx", "decoder_joint": "decoder_joint-model.onnx"}
    assert ONNX_ASR_TRANSDUCER.files("int8") == {"encoder": "encoder-model.int8.onnx",
                                                 "decoder_joint": "decoder_joint-model.int8.onnx"}
    assert ONNX_ASR_CTC.files("int8") == {"model": "model.int8.onnx"}
    assert ONNX_ASR_TRANSDUCER.external_data_file("encoder-model.onnx") == "encoder-model.onnx.data"
    # the offline branches, under the same names as in sherpa-onnx's layout (onnx-asr has no streaming models)
    assert [f.branch for f in LAYOUTS["onnx-asr"].values()] == \
        [f.branch for f in LAYOUTS["sherpa-onnx"].values() if not f.online]
    companions = ONNX_ASR_TRANSDUCER.companion_files(_facts(), ["▁a", "b"])
    assert companions["vocab.txt"] == "▁a 0\nb 1\n<blk> 2\n"
    assert json.loads(companions["config.json"]) == {"model_type": "nemo-conformer-tdt", "features_size": 80,
                                                     "subsampling_factor": 8, "max_tokens_per_step": 10}


@pytest.mark.parametrize("change, message", [
    ({"mels": 64}, "onnx-asr computes 80 or 128 mel features only; this model takes 64"),
    ({"durations": (0, 2, 4)}, "durations [0, 2, 4] are not 0..2"),
])
def test_what_onnx_asr_cannot_decode_is_refused(change, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        families_for(_facts(**change), None, "m.nemo", "onnx-asr")
    assert families_for(_facts(**change), None, "m.nemo") != []  # sherpa-onnx's layout is not onnx-asr's business


def test_a_manifest_records_its_layout_and_old_ones_read_as_sherpa_onnx():
    from nemo2sherpa.manifest import Manifest

    base = {"format": "nemo2sherpa-manifest", "format_version": 2, "tool": {"version": "0"}, "created": "x",
            "source": {}, "versions": {}, "export": {}, "files": {},
            "model": {"architecture": {}, "decoder_kind": "ctc"}}
    ours = {**base, "layout": "onnx-asr",
            "families": {"onnx-asr-ctc": {"metadata": {}, "variants": {"fp32": {"model": "model.onnx"}}}}}
    assert Manifest.from_dict(ours).layout == "onnx-asr"
    assert Manifest.from_dict(json.loads(json.dumps(Manifest.from_dict(ours).to_dict()))).layout == "onnx-asr"
    old = {**base, "families": {"ctc": {"metadata": {}, "variants": {"fp32": {"model": "model.onnx"}}}}}
    assert Manifest.from_dict(old).layout == "sherpa-onnx"
    with pytest.raises(UserError, match="belongs to the onnx-asr layout"):
        Manifest.from_dict({**ours, "layout": "sherpa-onnx"})


# --------------------------------------------------------------------------------------- converted with NeMo


@pytest.fixture(scope="module")
def tdt_dir(tmp_path_factory) -> Path:
    """tiny-tdt-en for onnx-asr, with int8, and every weight above 1 KiB in external files (as a 0.6B has them)."""
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    target = tmp_path_factory.mktemp("onnx-asr") / "tdt"
    return convert(ConvertOptions(source="tiny-tdt-en", output=target, layout="onnx-asr", external_threshold=0,
                                  precisions=("fp32", "int8")), SILENT).output


@pytest.mark.nemo
def test_a_tdt_model_becomes_a_directory_onnx_asr_transcribes_exactly(tdt_dir):
    from nemo2sherpa.manifest import read_manifest

    assert sorted(p.name for p in tdt_dir.iterdir()) == [
        "config.json", "decoder_joint-model.int8.onnx", "decoder_joint-model.onnx", "decoder_joint-model.onnx.data",
        "encoder-model.int8.onnx", "encoder-model.onnx", "encoder-model.onnx.data", "manifest.json", "vocab.txt"]
    assert json.loads((tdt_dir / "config.json").read_text()) == {
        "model_type": "nemo-conformer-tdt", "features_size": 80, "subsampling_factor": 8, "max_tokens_per_step": 10}
    vocabulary = (tdt_dir / "vocab.txt").read_text().splitlines()
    assert len(vocabulary) == 65 and vocabulary[-1] == "<blk> 64"
    manifest = read_manifest(tdt_dir)
    assert manifest.layout == "onnx-asr" and list(manifest.families) == ["onnx-asr-transducer"]
    assert manifest.variants["int8"].files == {"encoder": "encoder-model.int8.onnx",
                                               "decoder_joint": "decoder_joint-model.int8.onnx"}
    assert manifest.export["external_data"] == {"encoder": "encoder-model.onnx.data",
                                                "decoder_joint": "decoder_joint-model.onnx.data"}
    assert set(manifest.export["self_check_max_abs_diff"]) == {"encoder", "decoder_joint"}
    assert "decoder_joint-model.onnx.data" in manifest.files

    assert _transcribe("nemo-conformer-tdt", tdt_dir, "tiny-tdt-en") == 20
    assert _transcribe(None, tdt_dir, "tiny-tdt-en") == 20  # the type from config.json
    assert _transcribe("nemo-conformer-tdt", tdt_dir, "tiny-tdt-en", quantization="int8") >= 18


@pytest.mark.nemo
def test_the_decoder_joint_graph_is_what_onnx_asr_steps(tdt_dir):
    """Exactly onnx-asr's feed names, static state layers and width, one frame's logits of tokens + blank +
    durations."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(tdt_dir / "decoder_joint-model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2"]
    assert inputs["input_states_1"][0] == 1 and inputs["input_states_1"][2] == 64
    assert {"outputs", "output_states_1", "output_states_2"} <= {o.name for o in session.get_outputs()}
    encoder = ort.InferenceSession(str(tdt_dir / "encoder-model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in encoder.get_inputs()] == ["audio_signal", "length"]
    assert [o.name for o in encoder.get_outputs()] == ["outputs", "encoded_lengths"]


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory) -> Path:
    """tiny-ctc-en for onnx-asr, with int8."""
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    target = tmp_path_factory.mktemp("onnx-asr") / "ctc"
    return convert(ConvertOptions(source="tiny-ctc-en", output=target, layout="onnx-asr",
                                  precisions=("fp32", "int8")), SILENT).output


@pytest.mark.nemo
def test_a_ctc_model_becomes_a_directory_onnx_asr_transcribes_exactly(ctc_dir):
    target = ctc_dir
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "manifest.json", "model.int8.onnx",
                                                        "model.onnx", "vocab.txt"]
    assert json.loads((target / "config.json").read_text()) == {
        "model_type": "nemo-conformer-ctc", "features_size": 80, "subsampling_factor": 8}
    assert _transcribe("nemo-conformer-ctc", target, "tiny-ctc-en") == 20
    assert _transcribe("nemo-conformer-ctc", target, "tiny-ctc-en", quantization="int8") >= 18


@pytest.mark.nemo
def test_a_hybrid_gives_onnx_asr_one_branch_per_directory(tmp_path, capsys):
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    both = run_cli(["convert", "tiny-hybrid-en", "--layout", "onnx-asr", "--decoder", "both", "-o",
                    tmp_path / "both"], capsys)
    assert_one_line_error(both, "--decoder both: onnx-asr reads one model per directory")
    assert not (tmp_path / "both").exists()
    ctc = run_cli(["convert", "tiny-hybrid-en", "--layout", "onnx-asr", "--decoder", "ctc", "-o", tmp_path / "ctc",
                   "-q"], capsys)
    assert ctc.code == 0, ctc.err
    assert json.loads((tmp_path / "ctc" / "config.json").read_text())["model_type"] == "nemo-conformer-ctc"
    assert not (tmp_path / "ctc" / "encoder-model.onnx").exists()
    assert _transcribe(None, tmp_path / "ctc", "tiny-hybrid-en") == 20


@pytest.mark.nemo
def test_a_checkpoint_whose_features_onnx_asr_cannot_compute_is_refused(tmp_path, capsys):
    """A 20 ms window: onnx-asr's feature extractor has 25 ms built in; refused by name before the weights load."""
    from nemo2sherpa.testing.checkpoints import rewrite_config

    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")

    def window_20ms(config: dict) -> None:
        config["preprocessor"]["window_size"] = 0.02

    checkpoint = rewrite_config(get_recipe("tiny-tdt-en").bundled_path(), tmp_path / "window20.nemo", window_20ms)
    ran = run_cli(["convert", checkpoint, "--layout", "onnx-asr", "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "window20.nemo", "--layout onnx-asr: onnx-asr computes NeMo's default features",
                          "window_size 0.02")
    assert not (tmp_path / "out").exists()


def _contract(directory: Path, family=ONNX_ASR_TRANSDUCER, variant: str = "fp32"):
    """validate's contract check of a directory as someone else's export (no manifest: its hashes would name every
    edit a test makes)."""
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import ModelDir

    graphs = {role: directory / name for role, name in family.files(variant).items()}
    return check_contract(ModelDir(directory=directory, family=family, variant=variant, graphs=graphs,
                                   tokens=directory / family.tokens_file, manifest=None))


@pytest.mark.nemo
def test_the_contract_reads_an_onnx_asr_directory_as_onnx_asr_does(tdt_dir, ctc_dir):
    result, spec = _contract(tdt_dir)
    assert not result.failed, result.problems
    assert (spec.family, spec.vocab_size, spec.feat_dim, spec.normalize_type) == ("onnx-asr-transducer", 64, 80,
                                                                                 "per_feature")
    assert (spec.is_tdt, spec.durations, spec.pred_rnn_layers, spec.pred_hidden, spec.max_symbols) == (
        True, (0, 1, 2, 3, 4), 1, 64, 10)
    assert len(spec.pieces) == 65 and spec.pieces[-1] == "<blk>"
    assert result.details["config.json"]["model_type"] == "nemo-conformer-tdt"
    int8, _ = _contract(tdt_dir, variant="int8")
    assert not int8.failed, int8.problems
    ctc, spec = _contract(ctc_dir, ONNX_ASR_CTC)
    assert not ctc.failed, ctc.problems  # without sherpa-onnx's vocab_size in the metadata
    assert (spec.family, spec.vocab_size, spec.feat_dim, spec.metadata["subsampling_factor"]) == (
        "onnx-asr-ctc", 64, 80, "8")
    assert ONNX_ASR_TRANSDUCER.runtime == ONNX_ASR_CTC.runtime == "onnx-asr"
    assert ONNX_ASR_TRANSDUCER.tokens_file == ONNX_ASR_CTC.tokens_file == "vocab.txt"


def _config_edit(**changes):
    def edit(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, **changes}))
    return edit


def _blank_first(directory: Path) -> None:
    lines = (directory / "vocab.txt").read_text().splitlines()
    pieces = [line.split()[0] for line in lines]
    pieces = [pieces[-1], *pieces[1:-1], pieces[0]]
    (directory / "vocab.txt").write_text("".join(f"{piece} {i}\n" for i, piece in enumerate(pieces)))


@pytest.mark.nemo
@pytest.mark.parametrize("edit, problem", [
    (_config_edit(model_type="nemo-conformer-ctc"),
     "config.json: model_type is 'nemo-conformer-ctc'; onnx-asr runs onnx-asr transducer (TDT/RNNT) graphs as "
     "nemo-conformer-tdt or nemo-conformer-rnnt"),
    (_config_edit(model_type="nemo-conformer-rnnt"),
     "the decoder_joint graph gives 70 logits; an RNNT model (config.json: nemo-conformer-rnnt) with 64 tokens + "
     "blank needs 65; a TDT model's config.json names nemo-conformer-tdt"),
    (_config_edit(features_size=128), "config.json: features_size is 128, but the encoder graph takes 80 features"),
    (_config_edit(subsampling_factor=0), "config.json: subsampling_factor is 0, not a positive integer"),
    (_blank_first, "vocab.txt's last token is '<unk>', not <blk>"),
    (lambda directory: (directory / "config.json").unlink(), "config.json: is missing"),
    (lambda directory: (directory / "config.json").write_text("{"), "config.json: is not readable JSON"),
    (lambda directory: os.truncate(directory / "config.json", 8 << 30), "config.json: is 8589934592 bytes"),
], ids=["ctc-type", "rnnt-type", "features", "subsampling", "blank-first", "no-config", "bad-json", "huge"])
def test_what_onnx_asr_would_misread_is_one_named_problem(tdt_dir, tmp_path, edit, problem):
    directory = tmp_path / "copy"
    shutil.copytree(tdt_dir, directory, ignore=shutil.ignore_patterns("*.int8.onnx", "manifest.json"))
    edit(directory)
    result, spec = _contract(directory)
    assert spec is None
    assert len(result.problems) == 1 and result.problems[0].startswith(problem), result.problems


@pytest.mark.nemo
def test_the_fused_graph_decodes_as_onnx_asr_and_nemo_do(tdt_dir):
    """NeMo's features through the encoder and decoder_joint graphs, greedy by NeMo's rules: NeMo's token ids on
    every clip, and the very tokens onnx-asr's own recognition gives; blame walks NeMo's path through the fused
    graph."""
    import onnx_asr
    import soundfile

    from nemo2sherpa.validate.nemo_reference import NemoReference

    _, spec = _contract(tdt_dir)
    paths = {role: tdt_dir / name for role, name in ONNX_ASR_TRANSDUCER.files().items()}
    graphs = ONNX_ASR_TRANSDUCER.graph_decoder(paths, spec, threads=2)
    nemo = NemoReference(get_recipe("tiny-tdt-en").bundled_path(), threads=2)
    audio, _ = _dataset("tiny-tdt-en")
    model = onnx_asr.load_model("nemo-conformer-tdt", str(tdt_dir), providers=["CPUExecutionProvider"])
    recognized = model.with_timestamps().recognize(audio)
    for path, by_onnx_asr in zip(audio, recognized):
        reference = nemo.run(soundfile.read(path, dtype="float32")[0])
        hypothesis = graphs.decode_features(reference.features, nemo.max_symbols or spec.max_symbols)
        assert hypothesis.tokens == reference.tokens, path
        assert [spec.pieces[i].replace("▁", " ") for i in hypothesis.tokens] == by_onnx_asr.tokens, path
        assert graphs.greedy(reference.encoded, reference.encoded.shape[1], spec.max_symbols).tokens == \
            reference.tokens
    blame = ONNX_ASR_TRANSDUCER.blame(graphs, reference, nemo, 1e-3)
    assert (blame.graph, blame.detail) == ("decoder_joint", "outputs agree within tolerance on NeMo's path; the "
                                                            "difference is a near-tie")


@pytest.mark.nemo
def test_the_ctc_graph_decodes_as_onnx_asr_and_nemo_do(ctc_dir):
    """model.onnx on NeMo's features: NeMo's ids, and onnx-asr's tokens (both count ceil(T / 8) output frames)."""
    import onnx_asr
    import soundfile

    from nemo2sherpa.validate.nemo_reference import NemoReference

    _, spec = _contract(ctc_dir, ONNX_ASR_CTC)
    graphs = ONNX_ASR_CTC.graph_decoder({"model": ctc_dir / "model.onnx"}, spec, threads=2)
    nemo = NemoReference(get_recipe("tiny-ctc-en").bundled_path(), threads=2, family=ONNX_ASR_CTC)
    audio, _ = _dataset("tiny-ctc-en")
    model = onnx_asr.load_model("nemo-conformer-ctc", str(ctc_dir), providers=["CPUExecutionProvider"])
    for path, by_onnx_asr in zip(audio, model.with_timestamps().recognize(audio)):
        reference = nemo.run(soundfile.read(path, dtype="float32")[0])
        hypothesis = graphs.greedy(*graphs.encode(reference.features))
        assert hypothesis.tokens == reference.tokens, path
        assert [spec.pieces[i].replace("▁", " ") for i in hypothesis.tokens] == by_onnx_asr.tokens, path


@pytest.mark.nemo
def test_onnx_asr_is_the_recognizer_validate_runs(tdt_dir, ctc_dir):
    """What validate's end-to-end decode gets: onnx-asr itself on the directory, text with sherpa-onnx's tokens and
    times; the int8 variant loaded by its names."""
    import soundfile

    from nemo2sherpa.validate.model_dir import open_model_dir

    for directory, variant, recipe, at_least in [(tdt_dir, "fp32", "tiny-tdt-en", 20),
                                                 (tdt_dir, "int8", "tiny-tdt-en", 18),
                                                 (ctc_dir, "fp32", "tiny-ctc-en", 20)]:
        model = open_model_dir(directory, variant)
        assert model.tokens.name == "vocab.txt"
        recognizer = model.family.runtime_recognizer(model.graphs, model.tokens, provider="cpu", threads=2,
                                                    sample_rate=16000, feature_dim=80)
        right = 0
        audio, texts = _dataset(recipe)
        for path, text in zip(audio, texts):
            result = recognizer.transcribe(*soundfile.read(path, dtype="float32"))
            assert len(result.tokens) == len(result.timestamps) and result.timestamps == sorted(result.timestamps)
            assert "".join(result.tokens).strip() == result.text
            right += result.text == text
        assert right >= at_least, (directory.name, variant, right)
    assert recognizer.transcribe(soundfile.read(audio[0], dtype="float32")[0][:0], 16000).text == ""


def test_without_onnx_asr_the_recognizer_is_refused_in_one_line(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnx_asr", None)
    with pytest.raises(UserError, match=re.escape(INSTALL)):
        ONNX_ASR_CTC.runtime_recognizer({"model": tmp_path / "model.onnx"}, tmp_path / "vocab.txt", provider="cpu",
                                       threads=1, sample_rate=16000, feature_dim=80)
    assert INSTALL == "pip install 'nemo2sherpa[onnx-asr]'"


def test_the_card_shows_onnx_asr_for_the_model_type_and_variants():
    metadata = {"model_type": "nemo-conformer-rnnt"}
    files = {"encoder": "tiny/encoder-model.onnx", "decoder_joint": "tiny/decoder_joint-model.onnx"}
    usage = ONNX_ASR_TRANSDUCER.usage(files, "tiny/vocab.txt", feature_dim=80, sample_rate=16000,
                                      provider_note="or \"cuda\"", metadata=metadata, variants=["fp32", "int8"])
    assert 'onnx_asr.load_model(\n    "nemo-conformer-rnnt",\n    "tiny",\n' in usage
    assert "loads with `quantization=\"int8\"`" in usage
    assert "onnx-asr nemo-conformer-rnnt speech.wav -p tiny\n" in usage
    only_int8 = ONNX_ASR_CTC.usage({"model": "tiny/model.int8.onnx"}, "tiny/vocab.txt", feature_dim=80,
                                   sample_rate=16000, provider_note="")
    assert '"nemo-conformer-ctc",\n    "tiny",\n    quantization="int8",' in only_int8
    assert "onnx-asr nemo-conformer-ctc speech.wav -p tiny -q int8\n" in only_int8
    unknown = ONNX_ASR_TRANSDUCER.usage(files, "", feature_dim=80, sample_rate=16000, provider_note="")
    assert '"nemo-conformer-tdt",  # or "nemo-conformer-rnnt": the model_type in config.json' in unknown
    rows = dict(ONNX_ASR_TRANSDUCER.card_rows(_facts(), {}, str))
    assert rows["decoder"].startswith("TDT, durations [0, 1, 2, 3, 4]")
    assert rows["onnx-asr"].startswith('`onnx_asr.load_model("nemo-conformer-tdt", directory)`')
    assert dict(ONNX_ASR_CTC.card_rows(_facts("tiny-ctc-en"), {}, str))["onnx-asr"].startswith(
        '`onnx_asr.load_model("nemo-conformer-ctc", directory)`')


@pytest.mark.nemo
def test_the_cards_python_runs(tdt_dir, tmp_path, monkeypatch):
    """The card's Python block, as a reader copies it, transcribes a clip from the directory."""
    (tmp_path / "tiny").symlink_to(tdt_dir)
    monkeypatch.chdir(tmp_path)
    audio, texts = _dataset("tiny-tdt-en")
    shutil.copy(audio[0], tmp_path / "speech.wav")
    files = {role: f"tiny/{name}" for role, name in ONNX_ASR_TRANSDUCER.files().items()}
    usage = ONNX_ASR_TRANSDUCER.usage(files, "tiny/vocab.txt", feature_dim=80, sample_rate=16000,
                                      provider_note="or \"cuda\"", metadata={"model_type": "nemo-conformer-tdt"})
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    printed = []
    exec(code, {"print": lambda *values: printed.append(values)})
    assert printed[0] == (texts[0],)


@pytest.mark.nemo
def test_validate_runs_onnx_asr_and_publish_writes_its_card(tdt_dir, tmp_path, capsys):
    """The whole path a user takes: validate proves the onnx-asr directory against NeMo with onnx-asr itself as the
    end-to-end runtime (PASSED), and publish's dry run stages a card that tells how to run it with onnx-asr."""
    ran = run_cli(["validate", tdt_dir, "--no-speed", "--no-long-audio", "-q"], capsys)
    assert ran.code == 0, ran.out + ran.err
    report = json.loads((tdt_dir / "validation" / "report.json").read_text(encoding="utf-8"))
    assert report["verdict"] == "passed" and report["family"] == ONNX_ASR_TRANSDUCER.name
    assert report["files"]["tokens"] == "vocab.txt"
    transcripts = report["checks"]["transcripts"]
    assert transcripts["runtime"] == "onnx-asr"
    assert transcripts["providers"]["cpu"]["exact_match_rate"] == 1.0
    assert report["checks"]["graph_fidelity"]["token_match_rate"] == 1.0
    assert "## Transcripts through onnx-asr" in (tdt_dir / "validation" / "report.md").read_text(encoding="utf-8")

    staged = tmp_path / "staged"
    ran = run_cli(["publish", tdt_dir, "--repo-id", "me/tiny-onnx-asr", "--dry-run", staged, "-q"], capsys)
    assert ran.code == 0, ran.err
    card = (staged / "README.md").read_text(encoding="utf-8")
    assert 'onnx_asr.load_model("nemo-conformer-tdt"' in card
    assert "sherpa_onnx" not in card
    assert (staged / "vocab.txt").is_file() and (staged / "config.json").is_file()


@pytest.mark.nemo
def test_a_directory_without_manifest_is_recognised_by_its_vocabulary(tdt_dir, ctc_dir, tmp_path):
    """Someone else's onnx-asr export has no manifest: its files and vocab.txt name its family, and a CTC model.onnx
    is onnx-asr's beside vocab.txt but sherpa-onnx's beside tokens.txt."""
    from nemo2sherpa.families import CTC
    from nemo2sherpa.validate.model_dir import open_model_dir

    plain = tmp_path / "tdt"
    plain.mkdir()
    for name in ("encoder-model.onnx", "decoder_joint-model.onnx", "vocab.txt", "config.json"):
        shutil.copy(tdt_dir / name, plain / name)
    for data in tdt_dir.glob("*.onnx.data"):
        if not data.name.endswith(".int8.onnx.data"):
            shutil.copy(data, plain / data.name)
    assert open_model_dir(plain).family is ONNX_ASR_TRANSDUCER
    assert _contract(plain)[0].status == "passed"

    ctc = tmp_path / "ctc"
    ctc.mkdir()
    for name in ("model.onnx", "vocab.txt", "config.json"):
        shutil.copy(ctc_dir / name, ctc / name)
    assert open_model_dir(ctc).family is ONNX_ASR_CTC
    (ctc / "vocab.txt").rename(ctc / "tokens.txt")
    assert open_model_dir(ctc).family is CTC
