"""The CTC family end to end on the trained fixtures: a CTC model (tiny-ctc-en) and both branches of a hybrid
(tiny-hybrid-en), converted, validated against NeMo and through sherpa-onnx's from_nemo_ctc, and published (dry run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli

pytestmark = pytest.mark.nemo
FAST = ["--speed-lengths", "2", "--repeats", "1", "-q"]


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    target = tmp_path_factory.mktemp("ctc") / "tiny-ctc"
    return convert(ConvertOptions(source="tiny-ctc-en", output=target, precisions=("fp32", "int8", "fp16")),
                   SILENT).output


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    target = tmp_path_factory.mktemp("hybrid") / "tiny-hybrid"
    return convert(ConvertOptions(source="tiny-hybrid-en", output=target, decoder="both"), SILENT).output


def _report(directory: Path, name: str = "validation") -> dict:
    return json.loads((directory / name / "report.json").read_text())


def test_a_ctc_model_becomes_what_from_nemo_ctc_loads(ctc_dir):
    import onnx

    from nemo2sherpa.manifest import read_manifest

    manifest = read_manifest(ctc_dir)
    assert list(manifest.families) == ["ctc"]
    assert manifest.model.decoder_kind == "ctc" and manifest.model.vocab_size == 64
    assert {p: v.files for p, v in manifest.variants.items()} == {
        "fp32": {"model": "model.onnx"}, "int8": {"model": "model.int8.onnx"}, "fp16": {"model": "model.fp16.onnx"}}
    graph = onnx.load(str(ctc_dir / "model.onnx"), load_external_data=False)
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["vocab_size"] == "64" and metadata["subsampling_factor"] == "8"
    assert metadata["normalize_type"] == "per_feature" and metadata["model_type"] == "EncDecCTCModelBPE"
    output = graph.graph.output[0].type.tensor_type.shape.dim
    assert output[-1].dim_value == 65  # log-probabilities over 64 tokens + blank
    assert (ctc_dir / "tokens.txt").read_text().splitlines()[-1] == "<blk> 64"
    assert not (ctc_dir / "encoder.onnx").exists()


def test_ctc_graph_ids_equal_nemo_and_sherpa_onnx_differs_only_where_it_drops_the_last_frame(ctc_dir, capsys):
    """The graph reproduces NeMo's log-probabilities and greedy ids on every utterance. sherpa-onnx reads
    input frames // 8 output frames where NeMo's convolutions give ceil(frames / 8): this fixture emits its last
    tokens on the final frame, so sherpa-onnx's text is NeMo's cut short, and the report says why."""
    ran = run_cli(["validate", ctc_dir, *FAST], capsys)
    report = _report(ctc_dir)
    assert report["family"] == "ctc" and report["files"] == {"model": "model.onnx", "tokens": "tokens.txt"}
    fidelity = report["checks"]["graph_fidelity"]
    assert fidelity["status"] == "passed" and fidelity["token_match_rate"] == 1.0, fidelity
    assert fidelity["encoder_max_abs_diff"] < 1e-3
    cpu = report["checks"]["transcripts"]["providers"]["cpu"]
    assert cpu.get("differing_with_known_cause") == cpu.get("differing", 0), cpu
    for utterance in report["checks"]["transcripts"]["utterances"]:
        nemo, sherpa = utterance["nemo"], utterance["sherpa"]["cpu"]
        assert nemo == utterance["truth"]  # a trained model: NeMo says the sentence
        assert nemo.startswith(sherpa.strip())  # sherpa-onnx: the same words, at most cut short at the end
    if cpu.get("differing"):
        assert ran.code == 1 and "ignores a NeMo CTC model's last output frame" in ran.out
    assert report["checks"]["long_audio"]["status"] == "passed"  # the same in-graph positions as the transducer


def test_ctc_variants_match_fp32(ctc_dir, capsys):
    for precision in ("int8", "fp16"):
        run_cli(["validate", ctc_dir, "--precision", precision, "--no-long-audio", *FAST], capsys)
        precision_check = _report(ctc_dir)["checks"]["precision"]
        graphs = precision_check["graphs"]["onnxruntime_cpu"]
        assert graphs["token_match_rate"] == 1.0 and graphs["blank_only"] == 0, precision_check
        assert precision_check["transcripts"]["cpu"]["exact_match_vs_fp32"] == 1.0


def test_a_hybrid_converts_both_branches_and_each_is_validated(hybrid_dir, capsys):
    from nemo2sherpa.manifest import read_manifest

    manifest = read_manifest(hybrid_dir)
    assert list(manifest.families) == ["transducer", "ctc"]
    assert manifest.family("ctc").variants["fp32"].files == {"model": "model.onnx"}
    assert "only the CTC branch" in manifest.family("ctc").metadata["comment"]
    assert "only the transducer branch" in manifest.family("transducer").metadata["comment"]
    run_cli(["validate", hybrid_dir, *FAST], capsys)
    transducer = _report(hybrid_dir)
    assert transducer["family"] == "transducer" and transducer["passed"] is True
    run_cli(["validate", hybrid_dir, "--decoder", "ctc", *FAST], capsys)
    ctc = _report(hybrid_dir, "validation-ctc")
    assert ctc["family"] == "ctc"
    assert ctc["checks"]["graph_fidelity"]["token_match_rate"] == 1.0
    assert all(u["nemo"] == u["truth"] for u in ctc["checks"]["transcripts"]["utterances"])  # a trained CTC head


def test_the_ctc_card_shows_from_nemo_ctc(ctc_dir, tmp_path, capsys):
    run_cli(["validate", ctc_dir, "--no-long-audio", *FAST], capsys)
    ran = run_cli(["publish", ctc_dir, "--repo-id", "me/tiny-ctc", "--dry-run", tmp_path / "staging", "--force",
                   "-q"], capsys)
    assert ran.code == 0, ran.err
    card = (tmp_path / "staging" / "README.md").read_text()
    usage = card.split("## Usage")[1]
    assert "OfflineRecognizer.from_nemo_ctc(" in usage and 'model="tiny-ctc/model.onnx"' in usage
    assert "--nemo-ctc-model=tiny-ctc/model.onnx" in usage and "feature_dim=80" in usage
    assert "from_transducer" not in usage
    assert (tmp_path / "staging" / "model.onnx").is_file()


def test_the_front_end_replay_computes_what_from_nemo_ctc_computes(ctc_dir):
    """sherpa-onnx's offline NeMo CTC recognizer sets a hann window and mel filters up to Nyquist (its transducer
    keeps a povey window and stops 400 Hz below), and the family's runtime_front_end says so: on speech the fixture
    never heard, where its output hangs on every detail of the features, the graphs fed that front end's features
    come closer to sherpa-onnx's text than fed the transducer's."""
    import jiwer

    from nemo2sherpa.families import CTC
    from nemo2sherpa.recipes import find_recipe
    from nemo2sherpa.sherpa_front_end import SHERPA_ONNX
    from nemo2sherpa.validate.audio import read_dataset
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.front_end_replay import replay
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    model = open_model_dir(ctc_dir, "fp32")
    _, spec = check_contract(model)
    graphs = model.family.graph_decoder(model.graphs, spec, threads=2)
    recognizer = make_recognizer(model, threads=2)
    clips = read_dataset(find_recipe("small-tdt-en").dataset_path())[:30]
    sherpa = [transcribe(recognizer, clip.audio).text.strip() or "-" for clip in clips]

    def distance(front_end) -> float:
        return jiwer.cer(sherpa, [replay(graphs, spec, clip, None, front_end) or "-" for clip in clips])

    assert model.family.runtime_front_end == CTC.runtime_front_end != SHERPA_ONNX
    assert distance(CTC.runtime_front_end) < 0.5 * distance(SHERPA_ONNX)
