"""Hostile checkpoints, configs, output names and audio: each class of attack is refused at its root, in one line naming
the file and the problem, exit 1, with nothing executed, nothing written outside and memory bounded.

- config classes: every _target_ (nested, inside lists, 'cls', a nested 'target') must be the class NeMo's model
  constructors build for that section; NeMo functions with side effects are refused, for convert and validate --nemo;
- resource bombs: YAML alias and ${...} bombs, deep nesting, oversized configs and a config describing far more
  parameters than its weights are refused while reading the config, before NeMo builds anything;
- names and races: output names are literal (no glob), the lock file is never followed through a planted link;
- messages: torch's advice to load with weights_only=False is never repeated, audio too short for the encoder is
  refused by name, an unbuildable --nemo checkpoint is one line.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import Ran, assert_one_line_error, leftovers, run_cli
from nemo2sherpa.checkpoint.config import facts_from_config
from nemo2sherpa.checkpoint.config_reading import parse_config
from nemo2sherpa.checkpoint.config_targets import MODEL_CLASSES, SECTION_CLASSES, allowed_targets, target_problem
from nemo2sherpa.checkpoint.model_size import check_model_size
from nemo2sherpa.errors import UserError
from nemo2sherpa.testing.checkpoints import rewrite_config, rewrite_member

FIXTURES = Path(__file__).resolve().parents[1] / "src" / "nemo2sherpa" / "fixtures"
BUNDLED = FIXTURES / "tiny-tdt-en" / "model.nemo"
# A NeMo function that writes whatever file it is told to (inside nemo.collections.asr.parts, which NeMo's own
# safe_instantiate allows): what a config could point spec_augment at before the allow-list.
WRITER = "nemo.collections.asr.parts.utils.manifest_utils.write_manifest"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    if not BUNDLED.is_file():
        pytest.skip("the bundled tiny-tdt-en checkpoint is not in this checkout")
    target = tmp_path_factory.mktemp("hostile") / "model.nemo"
    shutil.copyfile(BUNDLED, target)
    return target


def _config_text(path: Path) -> str:
    import tarfile

    with tarfile.open(path) as tar:
        return tar.extractfile("./model_config.yaml").read().decode()


def _with_yaml(base: Path, target: Path, extra: str) -> Path:
    """The checkpoint with raw YAML appended to its model_config.yaml (bombs cannot be written through a dict)."""
    return rewrite_member(base, target, "model_config.yaml", lambda data: data + extra.encode())


def _refused(ran: Ran, tmp_path: Path, *fragments: str) -> None:
    assert_one_line_error(ran, *fragments)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def run_bounded(args: list, tmp_path: Path, timeout: float = 120) -> tuple[Ran, float, int]:
    """The CLI in a new process under a 16 GiB address-space limit: its result, seconds and peak resident bytes (its
    own, from wait4: a runaway build would show here long before the machine's OOM killer)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))

    started = time.monotonic()
    with open(tmp_path / "stdout", "w+") as out, open(tmp_path / "stderr", "w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "nemo2sherpa", *map(str, args)], stdout=out, stderr=err,
                                   text=True, preexec_fn=limit)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                process.kill()
                os.wait4(process.pid, 0)
                raise AssertionError(f"{args[1]} was not refused within {timeout} s")
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        ran = Ran(process.returncode, out.read(), err.read())
    return ran, time.monotonic() - started, usage.ru_maxrss * 1024


# ------------------------------------------------------------------------------------------------ 1. config classes

EVIL_TARGETS = {
    # a NeMo *function* with a side effect, where NeMo builds a class
    "function-as-spec-augment": (lambda m: {"spec_augment": {"_target_": WRITER, "output_path": str(m),
                                                             "target_manifest": [{"pwned": 1}]}},
                                 "spec_augment._target_", WRITER),
    "nested-in-encoder": (lambda m: {"encoder": {"extra": {"_target_": WRITER, "output_path": str(m),
                                                           "target_manifest": []}}},
                          "encoder.extra._target_", WRITER),
    "inside-a-list": (lambda m: {"decoding": {"hooks": [1, {"_target_": WRITER, "output_path": str(m)}]}},
                      "decoding.hooks[1]._target_", WRITER),
    "hydra-0-cls": (lambda m: {"spec_augment": {"cls": WRITER, "params": {"output_path": str(m)}}},
                    "spec_augment.cls", WRITER),
    "custom-tokenizer": (lambda m: {"tokenizer": {"custom_tokenizer": {"_target_": WRITER}}},
                         "tokenizer.custom_tokenizer._target_", WRITER),
    "adapters": (lambda m: {"adapters": {"evil": {"_target_": WRITER, "output_path": str(m)}}},
                 "adapters.evil._target_", WRITER),
    "nested-target-key": (lambda m: {"encoder": {"target": WRITER}}, "encoder.target", WRITER),
    "right-class-wrong-section": (lambda m: {"preprocessor": {"_target_": "nemo.collections.asr.modules."
                                                                          "ConformerEncoder"}},
                                 "preprocessor._target_", "ConformerEncoder"),
    "outside-nemo": (lambda m: {"joint": {"_target_": "builtins.exec"}}, "joint._target_", "builtins.exec"),
    "lookalike-path": (lambda m: {"encoder": {"_target_": "nemo.collections.asr.modules.conformer_encoder.os.system"}},
                       "encoder._target_", "os.system"),
}


def _merge(config: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = value


@pytest.mark.nemo
@pytest.mark.parametrize("case", list(EVIL_TARGETS))
def test_a_target_off_the_allow_list_is_refused_before_anything_runs(base, tmp_path, capsys, case):
    make, where, target = EVIL_TARGETS[case]
    marker = tmp_path / "MARKER"
    evil = rewrite_config(base, tmp_path / f"{case}.nemo", lambda config: _merge(config, make(marker)))
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    _refused(ran, tmp_path, f"{case}.nemo", f"config {where} names", target, "refusing it")
    assert not marker.exists()


@pytest.mark.nemo
def test_validate_vets_the_nemo_checkpoint_the_same_way(base, fixture_dir, tmp_path, capsys):
    """validate --nemo hands the checkpoint to NeMo's restore_from: the same allow-list runs first, nothing is
    written, and NeMo is given the checked config rather than the archive's."""
    from nemo2sherpa.checkpoint.loading import vet_checkpoint

    marker = tmp_path / "MARKER"
    make, where, target = EVIL_TARGETS["function-as-spec-augment"]
    evil = rewrite_config(base, tmp_path / "evil.nemo", lambda config: _merge(config, make(marker)))
    with pytest.raises(UserError, match=r"spec_augment\._target_ names .*write_manifest"):
        vet_checkpoint(evil)
    plain = tmp_path / "third-party"
    shutil.copytree(fixture_dir, plain, ignore=shutil.ignore_patterns("validation", "manifest.json"))
    ran = run_cli(["validate", plain, "--nemo", evil, "--no-speed", "--no-long-audio", "--report-dir",
                   tmp_path / "report", "-q"], capsys)
    assert_one_line_error(ran, "evil.nemo", "config spec_augment._target_ names", "write_manifest")
    assert not marker.exists()
    checked = vet_checkpoint(base)
    assert not ({"train_ds", "validation_ds", "test_ds", "optim", "model"} & set(checked))
    assert checked["tokenizer"]["model_path"].startswith("nemo:")


@pytest.mark.nemo
def test_sections_no_constructor_builds_never_run_what_they_name(base, tmp_path, capsys):
    """Data loaders and the optimiser are never instantiated by a model build: they are dropped, so a _target_ in
    them cannot run (the conversion succeeds, the marker never appears)."""
    marker = tmp_path / "MARKER"
    writer = {"_target_": WRITER, "output_path": str(marker), "target_manifest": []}

    def edit(config: dict) -> None:
        config["train_ds"] = {"manifest_filepath": None, "dataset": dict(writer)}
        config["optim"] = {"name": "adamw", "lr": 0.001, "sched": dict(writer)}

    quiet = rewrite_config(base, tmp_path / "train.nemo", edit)
    ran = run_cli(["convert", quiet, "-o", tmp_path / "out", "-q"], capsys)
    assert ran.code == 0, ran.err
    assert not marker.exists()


def test_every_config_nemo2sherpa_writes_or_ships_is_on_the_allow_list():
    from nemo2sherpa.checkpoint.architecture_config import nemo_model_config
    from nemo2sherpa.testing.checkpoints import variant

    for model_class in MODEL_CLASSES:
        assert target_problem(nemo_model_config(variant(model_class=model_class), "/tok")) is None, model_class
    for checkpoint in sorted(FIXTURES.glob("*/model.nemo")):
        assert target_problem(parse_config(_config_text(checkpoint), checkpoint)) is None, checkpoint


@pytest.mark.nemo
def test_the_allow_list_names_classes_of_this_nemo_and_what_its_constructors_build():
    """Every allowed name resolves to a class (never a function) of the installed NeMo, and every section the three
    model constructors build with from_config_dict is one the allow-list knows."""
    import importlib
    import inspect
    import re

    for section in SECTION_CLASSES:
        for name in allowed_targets(section):
            module, _, cls = name.rpartition(".")
            assert inspect.isclass(getattr(importlib.import_module(module), cls)), name
    built = set()
    for module in ("rnnt_models", "ctc_models", "hybrid_rnnt_ctc_models"):
        source = inspect.getsource(importlib.import_module(f"nemo.collections.asr.models.{module}"))
        built |= set(re.findall(r"from_config_dict\(self\._?cfg\.([\w.]+)\)", source))
    assert built and built <= set(SECTION_CLASSES), built - set(SECTION_CLASSES)


# ------------------------------------------------------------------------------------------------ 2. resource bombs

def _laughs(levels: int = 9, width: int = 10) -> str:
    lines = [f"lol0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"lol{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n" + "\n".join(lines) + "\n"


def _interpolation_bomb(levels: int = 9, width: int = 10) -> str:
    lines = ["s0: lollollollol"]
    for level in range(1, levels):
        lines.append(f"s{level}: \"{('${s' + str(level - 1) + '}') * width}\"")
    return "\n" + "\n".join(lines) + "\n"


def _section_bomb(levels: int = 9, width: int = 10) -> str:
    lines = ["c0: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    for level in range(1, levels):
        reference = '"${c%d}"' % (level - 1)  # quoted: '{' opens a mapping inside a flow sequence
        lines.append(f"c{level}: [{', '.join([reference] * width)}]")
    return "\n" + "\n".join(lines) + "\n"


BOMBS = {
    "billion-laughs": (_laughs(), "expands to more than"),
    "interpolation-bomb": (_interpolation_bomb(), "expand the config past"),
    "section-bomb": (_section_bomb(), "expand the config past"),
    "deep-nesting": ("\nnest:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)), "nests deeper than 64"),
    "recursive-alias": ("\nloop: &loop [1, *loop]\n", "recursive"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_config_bombs_are_refused_fast_with_bounded_memory(base, tmp_path, case):
    bomb, message = BOMBS[case]
    evil = _with_yaml(base, tmp_path / f"{case}.nemo", bomb)
    ran, seconds, peak = run_bounded(["convert", evil, "-o", tmp_path / "out", "-q"], tmp_path)
    _refused(ran, tmp_path, f"{case}.nemo", "model_config.yaml", message)
    assert seconds < 60 and peak < 1 << 30, (seconds, peak)


@pytest.mark.parametrize("extra, message", [
    ("\nhome: ${oc.env:HOME}\n", "home uses ${oc.env:HOME}; only references to other settings"),
    ("\nhome: x${oc.env:HOME,${sample_rate}}\n", "home has a nested, escaped or unterminated"),
    ("\nescaped: \\${sample_rate}\n", "escaped has a nested, escaped or unterminated"),
    ("\na: ${b}\nb: ${a}\n", "refers to itself"),
    ("\nsection: {x: 1, me: '${section}'}\n", "refers to itself"),
    ("\nwhere: ${nowhere.at_all}\n", "which the config does not have"),
    ("\nup: ${...x}\n", "above the top of the config"),
    ("\nglued: ${dollar}{sample_rate}\ndollar: $\n", "builds a new ${...}"),
    ("\nembedded: x${encoder}\n", "puts the section ${encoder} into a string"),
    ("\nbinary: !!binary aGVsbG8=\n", "holds a bytes"),
    ("\n" + "".join(f"r{i}: ${{r{i + 1}}}\n" for i in range(5000)) + "r5000: 1\n", "references to references"),
])
def test_references_are_resolved_only_to_other_settings(base, extra, message):
    with pytest.raises(UserError) as refused:
        parse_config(_config_text(base) + extra, Path("c.nemo"))
    assert message in str(refused.value) and str(refused.value).startswith("c.nemo: model_config.yaml")


def test_references_resolve_as_omegaconf_resolves_them():
    """Within the bounds, the result is OmegaConf's: absolute, relative and list references, references through an
    interpolated section, strings built from several references, typed whole-value references."""
    from omegaconf import OmegaConf

    text = """
    target: x
    a: {b: 1, c: '${.b}', d: {e: '${..b}', f: 'x${a.b}y${.e}'}}
    l: [1, '${.0}', '${l[0]}', '${l.0}']
    m: ${a.d}
    n: ${m.e}
    t: true
    u: ${t}-${z}
    z: null
    fl: 1e-5
    g: ${fl}!
    alias: &x {k: '${t}'}
    again: *x
    """
    assert parse_config(text, Path("c")) == OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def test_a_config_larger_than_a_config_can_be_is_refused_unread(base, tmp_path):
    from nemo2sherpa.checkpoint.archive import MAX_CONFIG_BYTES, NemoArchive

    padding = "\n# " + "x" * MAX_CONFIG_BYTES + "\n"
    evil = _with_yaml(base, tmp_path / "huge.nemo", padding)
    with NemoArchive(evil) as archive, pytest.raises(UserError, match="model_config.yaml claims .* bytes"):
        archive.read_text("model_config.yaml")
    with pytest.raises(UserError, match="larger than the .* bytes a model config may be"):
        parse_config(padding, evil)


@pytest.mark.nemo
def test_ten_million_encoder_layers_are_refused_before_nemo_builds_them(base, tmp_path):
    evil = rewrite_config(base, tmp_path / "layers.nemo", lambda config: config["encoder"].update(n_layers=10**7))
    ran, seconds, peak = run_bounded(["convert", evil, "-o", tmp_path / "out", "-q"], tmp_path)
    _refused(ran, tmp_path, "layers.nemo", "describes a model of at least 824,960,093,088 parameters",
             "model_weights.ckpt holds only 1,226,695 bytes", "refusing to build it")
    assert seconds < 90 and peak < 3 << 30, (seconds, peak)


SIZE_BOMBS = {
    "pred-rnn-layers": lambda c: c["decoder"]["prednet"].update(pred_rnn_layers=10**6),
    "vocabulary": lambda c: (c["decoder"].update(vocab_size=10**9), c["joint"].update(num_classes=10**9)),
    "joint-hidden": lambda c: c["joint"]["jointnet"].update(joint_hidden=10**8),
    "n-fft": lambda c: c["preprocessor"].update(n_fft=10**9),
    "window": lambda c: c["preprocessor"].update(window_size=1e300),
    "subsampling-channels": lambda c: c["encoder"].update(subsampling_conv_channels=10**6),
    "conv-kernel": lambda c: c["encoder"].update(conv_kernel_size=10**9 + 1),
    "infinite-width": lambda c: c["encoder"].update(d_model=float("inf")),
    "positional-table": lambda c: c["encoder"].update(pos_emb_max_len=10**8),
}


@pytest.mark.parametrize("case", list(SIZE_BOMBS))
def test_every_dimension_that_allocates_is_bounded_by_the_weights(base, case):
    """The estimate covers each setting that makes NeMo allocate: checked on the config alone, before any build
    (vet_checkpoint runs exactly this for validate --nemo, on the archive's member size)."""
    import copy

    config = parse_config(_config_text(base), base)
    broken = copy.deepcopy(config)
    SIZE_BOMBS[case](broken)
    weights = 1_226_695
    check_model_size(config, facts_from_config(config, base), weights, base)
    with pytest.raises(UserError, match="refusing to build it|model_config.yaml has a missing or malformed"):
        check_model_size(broken, facts_from_config(broken, base), weights, base)


@pytest.mark.nemo
def test_vet_checkpoint_refuses_a_model_its_weights_cannot_fill(base, tmp_path):
    from nemo2sherpa.checkpoint.loading import vet_checkpoint

    evil = rewrite_config(base, tmp_path / "layers.nemo", lambda config: config["encoder"].update(n_layers=10**7))
    with pytest.raises(UserError, match="at least 824,960,093,088 parameters"):
        vet_checkpoint(evil)


# ------------------------------------------------------------------------------------------------ 3. names, locks

@pytest.mark.parametrize("name", ["*", "?", "[m]odel", "mo*"])
def test_output_names_are_literal_never_glob_patterns(tmp_path, name):
    """Another conversion's staging directory ('.model.partial-xxxxxxxx') must survive a conversion into a target
    whose name is a glob pattern matching it; the pattern's own leftovers are still cleaned."""
    from nemo2sherpa.staging import staged_directory, stale_partials

    other = tmp_path / ".model.partial-abcd1234"
    (other / "encoder.onnx").parent.mkdir()
    (other / "encoder.onnx").write_bytes(b"half-written by another run")
    longer = tmp_path / f".{name}.partial-x.partial-abcd1234"  # leftovers of the target '<name>.partial-x'
    longer.mkdir()
    mine = tmp_path / f".{name}.partial-zz99zz99"
    mine.mkdir()
    assert stale_partials(tmp_path / name) == [mine]
    with staged_directory(tmp_path / name) as partial:
        (partial / "x").write_text("done")
    assert (other / "encoder.onnx").read_bytes() == b"half-written by another run"
    assert longer.is_dir() and not mine.exists() and (tmp_path / name / "x").is_file()


def _plant(kind: str, lock: Path, victim: Path) -> None:
    if kind == "symlink-to-nothing":
        lock.symlink_to(victim)
    elif kind == "symlink-to-a-file":
        victim.write_text("precious")
        lock.symlink_to(victim)
    elif kind == "hard-link":
        victim.write_text("precious")
        os.link(victim, lock)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()


@pytest.mark.parametrize("kind, message", [
    ("symlink-to-nothing", "is a symbolic link, not a lock file"),
    ("symlink-to-a-file", "is a symbolic link, not a lock file"),
    ("hard-link", "is a hard link to another file"),
    ("fifo", "is not a regular file"),
    ("directory", "is not a regular file"),
])
def test_a_planted_lock_file_is_refused_never_followed(base, tmp_path, capsys, kind, message):
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    lock = tmp_path / ".out.lock"
    _plant(kind, lock, victim)
    ran = run_cli(["convert", base, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, ".out.lock", message)
    assert not (tmp_path / "out").exists()
    if kind == "symlink-to-nothing":
        assert not victim.exists()
    elif kind != "fifo" and kind != "directory":
        assert victim.read_text() == "precious"
    assert lock.is_symlink() or lock.exists()  # refused, not removed: whoever planted it is told


@pytest.mark.nemo
def test_a_closed_terminal_cleans_up_like_sigterm(base, tmp_path, capsys, monkeypatch):
    """SIGHUP (the terminal or ssh session went away) while the weights load: exit 143, one line, no target and no
    staging leftovers, exactly as for SIGTERM."""
    import signal

    from nemo2sherpa import progress

    original = progress.Progress.note

    def note(self, message):
        original(self, message)
        if message == "-> load weights":
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(10)  # the handler raises during the sleep

    monkeypatch.setattr(progress.Progress, "note", note)
    try:
        ran = run_cli(["convert", base, "-o", tmp_path / "out"], capsys)
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert ran.code == 143 and "terminated; nothing was left half-written" in ran.err, ran.err
    assert "Traceback" not in ran.err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


# ------------------------------------------------------------------------------------------------ 4. messages

def _weights_bomb() -> bytes:
    """A checkpoint torch's weights_only unpickler rejects (a pickled set: an unsupported opcode)."""
    return pickle.dumps({"encoder.weight": {1, 2, 3}}, protocol=4)


def test_torch_advice_to_turn_weights_only_off_is_never_quoted():
    import torch

    from nemo2sherpa.checkpoint.loading import torch_reason

    messages = []
    for data in (_weights_bomb(), pickle.dumps({"x": print}, protocol=2)):
        with pytest.raises(pickle.UnpicklingError) as refused:
            torch.load(io.BytesIO(data), weights_only=True)
        messages.append(str(refused.value))
    assert all("weights_only" in message for message in messages)  # torch's own text does give that advice
    for message in messages:
        reason = torch_reason(message)
        assert "weights_only" not in reason and "Re-running" not in reason and reason, reason


@pytest.mark.nemo
def test_a_weights_bomb_is_refused_without_unsafe_advice(base, fixture_dir, tmp_path, capsys):
    evil = rewrite_member(base, tmp_path / "bomb.nemo", "model_weights.ckpt", lambda data: _weights_bomb())
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    _refused(ran, tmp_path, "bomb.nemo", "model_weights.ckpt cannot be read")
    padded = rewrite_member(base, tmp_path / "padded.nemo", "model_weights.ckpt",
                            lambda data: _weights_bomb() + b"\0" * len(data))  # passes the size check
    plain = tmp_path / "third-party"
    shutil.copytree(fixture_dir, plain, ignore=shutil.ignore_patterns("validation", "manifest.json"))
    validated = run_cli(["validate", plain, "--nemo", padded, "--no-speed", "--no-long-audio", "--report-dir",
                         tmp_path / "report", "-q"], capsys)
    assert_one_line_error(validated, "padded.nemo", "model_weights.ckpt")
    for text in (ran.err, validated.err):
        assert "weights_only" not in text and "Re-running" not in text and "trusted source" not in text, text


@pytest.mark.parametrize("samples, accepted", [(1, False), (480, False), (1599, False), (1600, True)])
def test_audio_shorter_than_the_encoder_can_take_is_refused_by_name(tmp_path, samples, accepted):
    import soundfile as sf

    from nemo2sherpa.validate.audio import load_audio

    path = tmp_path / f"short{samples}.wav"
    sf.write(str(path), np.full(samples, 0.1, dtype=np.float32), 16000)
    if accepted:
        assert load_audio(path).size == samples
        return
    with pytest.raises(UserError) as refused:
        load_audio(path)
    assert str(refused.value).startswith(str(path)) and "at least 0.1 s" in str(refused.value)


@pytest.mark.nemo
def test_the_minimum_length_is_what_the_encoder_needs(fixture_dir, tmp_path, capsys):
    """The tiny fixture's encoder graph fails inside onnxruntime below 9 feature frames (2 frames out of the 8x
    subsampling; NeMo makes 9 frames from 1440 samples, 0.09 s). validate refuses a 30 ms clip by name and runs a
    0.1 s clip through NeMo, the graphs and sherpa-onnx without a crash."""
    import onnxruntime as ort
    import soundfile as sf

    session = ort.InferenceSession(str(fixture_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for frames, runs in ((8, False), (9, True)):
        feed = {names[0]: np.zeros((1, 80, frames), np.float32), names[1]: np.array([frames], np.int64)}
        if runs:
            session.run(None, feed)
        else:
            with pytest.raises(Exception, match="ONNXRuntimeError"):
                session.run(None, feed)
    rng = np.random.default_rng(0)
    short = tmp_path / "30ms.wav"
    sf.write(str(short), (0.1 * rng.standard_normal(480)).astype(np.float32), 16000)
    ran = run_cli(["validate", fixture_dir, "--audio", short, "--no-speed", "--no-long-audio", "--report-dir",
                   tmp_path / "r1", "-q"], capsys)
    assert_one_line_error(ran, "30ms.wav", "is 0.030 s long", "at least 0.1 s")
    enough = tmp_path / "100ms.wav"
    sf.write(str(enough), (0.1 * rng.standard_normal(1600)).astype(np.float32), 16000)
    ran = run_cli(["validate", fixture_dir, "--audio", enough, "--no-speed", "--no-long-audio", "--report-dir",
                   tmp_path / "r2", "--min-exact-match", "0", "--max-wer-vs-nemo", "1000", "-q"], capsys)
    assert "Traceback" not in ran.err and "ONNXRuntimeError" not in ran.err, ran.err
    report = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert report["checks"]["graph_fidelity"]["status"] == "passed", report["checks"]["graph_fidelity"]


@pytest.mark.nemo
def test_an_unbuildable_nemo_checkpoint_is_one_line_in_validate(base, fixture_dir, tmp_path, capsys):
    broken = rewrite_config(base, tmp_path / "unbuildable.nemo",
                            lambda config: config["encoder"].update(subsampling="no-such-subsampling"))
    plain = tmp_path / "third-party"
    shutil.copytree(fixture_dir, plain, ignore=shutil.ignore_patterns("validation", "manifest.json"))
    ran = run_cli(["validate", plain, "--nemo", broken, "--no-speed", "--no-long-audio", "--report-dir",
                   tmp_path / "report", "-q"], capsys)
    assert_one_line_error(ran, "unbuildable.nemo", "NeMo cannot build the model its model_config.yaml describes")
    assert len(ran.err.strip().splitlines()) == 1, ran.err
