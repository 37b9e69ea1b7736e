"""The onnx-asr layout (`convert --layout onnx-asr`) with the real onnx-asr package: the trained fixtures converted,
loaded with onnx_asr.load_model and transcribing their 20 utterances exactly; int8 and external weights under
onnx-asr's names; what it cannot serve refused in one line, and validate/publish refusing its directories."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_cli
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families import LAYOUTS, families_for
from nemo2sherpa.families.onnx_asr import ONNX_ASR_CTC, ONNX_ASR_TRANSDUCER, UNSERVED
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
    assert [f.branch for f in LAYOUTS["onnx-asr"].values()] == [f.branch for f in LAYOUTS["sherpa-onnx"].values()]
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


@pytest.mark.nemo
def test_a_ctc_model_becomes_a_directory_onnx_asr_transcribes_exactly(tmp_path, capsys):
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    target = tmp_path / "ctc"
    ran = run_cli(["convert", "tiny-ctc-en", "--layout", "onnx-asr", "--precision", "int8", "-o", target, "-q"],
                  capsys)
    assert ran.code == 0, ran.err
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


@pytest.mark.nemo
def test_validate_and_publish_refuse_an_onnx_asr_directory_in_one_line(tdt_dir, tmp_path, capsys):
    validate = run_cli(["validate", tdt_dir, "--no-nemo", "--no-speed", "-q"], capsys)
    assert_one_line_error(validate, UNSERVED)
    assert not (tdt_dir / "validation").exists()
    publish = run_cli(["publish", tdt_dir, "--repo-id", "me/tiny", "--dry-run", tmp_path / "staging", "--force",
                       "-q"], capsys)
    assert_one_line_error(publish, UNSERVED)
