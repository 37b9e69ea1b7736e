"""Every input convert refuses ends in one line naming the file and the problem, exit 1, and nothing on disk."""

from __future__ import annotations

import tarfile

import pytest

from helpers import assert_one_line_error, leftovers, run_cli, run_process
from nemo2sherpa.testing.checkpoints import rewrite_config, rewrite_member

pytestmark = pytest.mark.nemo


def _set(path: str, value):
    def edit(config: dict) -> None:
        node = config
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


CONFIG_REFUSALS = {
    # a CTC model converts (tests/test_ctc.py); one whose head is not NeMo's ConvASRDecoder is refused
    "ctc-with-a-transducer-decoder": (_set("target", "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE"),
                                      "CTC decoder RNNTDecoder is not supported"),
    "character-ctc": (_set("target", "nemo.collections.asr.models.ctc_models.EncDecCTCModel"),
                      "EncDecCTCModel is a character-level CTC model"),
    "aed-canary": (_set("target", "nemo.collections.asr.models.aed_multitask_models.EncDecMultiTaskModel"),
                   "EncDecMultiTaskModel is an attention encoder-decoder"),
    "speaker-model": (_set("target", "nemo.collections.asr.models.label_models.EncDecSpeakerLabelModel"),
                      "EncDecSpeakerLabelModel is not a supported model class"),
    "durations-not-0-to-n": (_set("decoding.durations", [0, 2, 4, 6, 8]),
                             "TDT durations [0, 2, 4, 6, 8] are not 0..4"),
    "joint-extra-outputs": (_set("joint.num_extra_outputs", 3), "joint has 3 extra outputs"),
    "wordpiece-tokenizer": (_set("tokenizer.type", "wpe"), "only SentencePiece"),
    "foreign-target": (_set("encoder._target_", "os.system"), "config encoder._target_ names 'os.system'"),
    "unsupported-normalize": (_set("preprocessor.normalize", "all_features"), "preprocessor.normalize"),
}


@pytest.mark.parametrize("decoder, message", [("ctc", "--decoder ctc: EncDecRNNTBPEModel has no CTC head"),
                                              ("both", "--decoder both needs a hybrid model")])
def test_a_decoder_the_checkpoint_lacks_is_refused(checkpoints, tmp_path, capsys, decoder, message):
    ran = run_cli(["convert", checkpoints["tdt-80"].checkpoint, "-o", tmp_path / "out", "--decoder", decoder], capsys)
    assert_one_line_error(ran, checkpoints["tdt-80"].checkpoint.name, message)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path, "out")


@pytest.mark.parametrize("case", list(CONFIG_REFUSALS))
def test_unsupported_checkpoints_are_refused_by_name(checkpoints, tmp_path, capsys, case):
    edit, message = CONFIG_REFUSALS[case]
    broken = rewrite_config(checkpoints["tdt-80"].checkpoint, tmp_path / f"{case}.nemo", edit)
    ran = run_cli(["convert", broken, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, f"{case}.nemo", message)
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path, "out") == []


def test_weights_that_do_not_fit_the_config_are_refused(checkpoints, tmp_path, capsys):
    broken = rewrite_config(checkpoints["tdt-80"].checkpoint, tmp_path / "mismatch.nemo",
                            _set("encoder.d_model", 48))
    ran = run_cli(["convert", broken, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "mismatch.nemo", "weights do not fit its config")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_missing_tokenizer_is_refused(checkpoints, tmp_path, capsys):
    source = checkpoints["tdt-80"].checkpoint
    with tarfile.open(source) as tar:
        model_member = next(m.name for m in tar.getmembers() if m.name.endswith("_tokenizer.model"))
    broken = rewrite_member(source, tmp_path / "notok.nemo", model_member.lstrip("./"), lambda data: None)
    ran = run_cli(["convert", broken, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "notok.nemo", "does not hold")


def test_truncated_checkpoint_is_refused(checkpoints, tmp_path, capsys):
    data = checkpoints["tdt-80"].checkpoint.read_bytes()
    broken = tmp_path / "truncated.nemo"
    broken.write_bytes(data[: len(data) * 2 // 3])
    ran = run_cli(["convert", broken, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "truncated.nemo")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("content, message", [(b"not a tar archive at all" * 100, "not a .nemo checkpoint"),
                                               (b"", "not a .nemo checkpoint")])
def test_files_that_are_not_checkpoints_are_refused(tmp_path, capsys, content, message):
    path = tmp_path / "final.nemo"
    path.write_bytes(content)
    ran = run_cli(["convert", path, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "final.nemo", message)


def test_a_tar_without_model_files_is_refused(tmp_path, capsys):
    path = tmp_path / "other.nemo"
    (tmp_path / "readme.txt").write_text("hello")
    with tarfile.open(path, "w") as tar:
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    ran = run_cli(["convert", path, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "other.nemo", "has no model_config.yaml")


def test_directory_and_missing_sources_are_refused(tmp_path, capsys):
    ran = run_cli(["convert", tmp_path, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, str(tmp_path), "is a directory")
    ran = run_cli(["convert", tmp_path / "absent.nemo", "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "absent.nemo", "no such file")


def test_unknown_recipe_suggests_close_names(tmp_path, capsys):
    ran = run_cli(["convert", "parakeet-tdt-1.1", "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "parakeet-tdt-1.1", "did you mean parakeet-tdt-1.1b")


def test_existing_output_is_kept_unless_overwrite(checkpoints, converted, tmp_path, capsys):
    target = tmp_path / "model"
    target.mkdir()
    (target / "mine.txt").write_text("precious")
    source = checkpoints["tdt-80"].checkpoint
    ran = run_cli(["convert", source, "-o", target, "-q"], capsys)
    assert_one_line_error(ran, "already exists", "--overwrite")
    assert (target / "mine.txt").read_text() == "precious"

    ran = run_cli(["convert", source, "-o", target, "-q", "--overwrite"], capsys)
    assert ran.code == 0, ran.err
    assert not (target / "mine.txt").exists()
    assert (target / "encoder.onnx").read_bytes() == (converted["tdt-80"] / "encoder.onnx").read_bytes()
    assert leftovers(tmp_path, "model") == []


def test_random_weights_needs_a_recipe(checkpoints, tmp_path, capsys):
    ran = run_cli(["convert", checkpoints["tdt-80"].checkpoint, "--random-weights", "-o", tmp_path / "out"], capsys)
    assert_one_line_error(ran, "--random-weights builds a recipe's architecture")


def test_a_real_process_exits_1_with_one_line_and_2_on_usage_errors(tmp_path):
    (tmp_path / "x.nemo").write_bytes(b"garbage")
    ran = run_process(["convert", tmp_path / "x.nemo", "-o", tmp_path / "out"])
    assert_one_line_error(ran, "x.nemo", "not a .nemo checkpoint")
    ran = run_process(["convert", tmp_path / "x.nemo"])
    assert ran.code == 2 and "Missing option" in ran.err and "Traceback" not in ran.err
