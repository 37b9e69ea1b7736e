"""A .nemo from the internet is untrusted: a tar archive plus a pickled checkpoint plus a config that names classes.

Proven here, with crafted checkpoints:
- every archive member that could escape or alias (links, devices, FIFOs, sparse files, absolute or '..' or
  backslash names, duplicates) refuses the whole checkpoint before anything is read;
- no code from the checkpoint runs: a model_weights.ckpt whose unpickling would create a marker file is refused
  (zip and legacy pickle formats, and with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the environment), and a config
  _target_ that names NeMo's path but not NeMo's code ('nemo....os.system') is refused, marker absent (the full
  allow-list of config classes is proven in test_hostile_inputs.py);
- broken inputs not covered by test_convert_refusals.py end in one line naming the file, exit 1, nothing left;
- gzip-compressed checkpoints convert exactly like plain ones, and truncated ones are refused.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import assert_one_line_error, leftovers, run_cli, run_process
from nemo2sherpa.errors import UserError

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "nemo2sherpa" / "fixtures" / "tiny-tdt-en" / "model.nemo"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A local copy of the bundled trained checkpoint (converting a path, not the recipe: no recipe check)."""
    if not BUNDLED.is_file():
        pytest.skip("the bundled tiny-tdt-en checkpoint is not in this checkout")
    target = tmp_path_factory.mktemp("base") / "model.nemo"
    shutil.copyfile(BUNDLED, target)
    return target


def members_of(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read() if info.isfile() else None) for info in tar.getmembers()]


def write_tar(path: Path, members, mode: str = "w") -> Path:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def replaced(base: Path, target: Path, name: str, data: bytes | None) -> Path:
    """A copy of `base` with member `name` given new bytes (None drops it)."""
    out = []
    for info, content in members_of(base):
        if info.name.lstrip("./") == name:
            if data is None:
                continue
            content = data
        out.append((info, content))
    return write_tar(target, out)


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"x", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, (data if kind in (tarfile.REGTYPE, tarfile.GNUTYPE_SPARSE) else None)


# --------------------------------------------------------------------------------------------- archive members

EVIL_MEMBERS = {
    "symlink-out": ([member("tokenizer.model", tarfile.SYMTYPE, linkname="/etc/passwd")], "is a link to '/etc/passwd'"),
    "symlink-relative-out": ([member("x.txt", tarfile.SYMTYPE, linkname="../../../etc/passwd")], "is a link"),
    "symlink-inside": ([member("alias.yaml", tarfile.SYMTYPE, linkname="model_config.yaml")], "is a link"),
    "hardlink-out": ([member("passwd", tarfile.LNKTYPE, linkname="/etc/passwd")], "is a link to '/etc/passwd'"),
    "hardlink-inside": ([member("again.ckpt", tarfile.LNKTYPE, linkname="model_weights.ckpt")], "is a link"),
    "char-device": ([member("null", tarfile.CHRTYPE)], "device, FIFO or other special file"),
    "block-device": ([member("sda", tarfile.BLKTYPE)], "device, FIFO or other special file"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "device, FIFO or other special file"),
    "sparse": ([member("holes.bin", tarfile.GNUTYPE_SPARSE, data=b"")], "is a sparse file"),
    "absolute": ([member("/tmp/evil.txt")], "points outside the archive"),
    "dot-dot": ([member("../evil.txt")], "points outside the archive"),
    "dot-dot-nested": ([member("a/b/../../../evil.txt")], "points outside the archive"),
    "dot-slash-dot-dot": ([member("./../evil.txt")], "points outside the archive"),
    "backslash-dot-dot": ([member("..\\..\\evil.txt")], "points outside the archive"),
    "backslash": ([member("dir\\evil.txt")], "points outside the archive"),
    "control-characters": ([member("evil\x1b[2J.txt")], "control characters"),
    "duplicate": ([member("model_config.yaml", data=b"target: x\n")], "appears twice"),
    "duplicate-dot-slash": ([member("./model_config.yaml", data=b"target: x\n")], "appears twice"),
    "file-and-directory": ([member("model_weights.ckpt", tarfile.DIRTYPE)], "appears twice"),
}


@pytest.mark.parametrize("case", list(EVIL_MEMBERS))
def test_every_unsafe_member_refuses_the_whole_checkpoint(base, tmp_path, case):
    from nemo2sherpa.checkpoint.archive import NemoArchive

    extra, message = EVIL_MEMBERS[case]
    evil = write_tar(tmp_path / f"{case}.nemo", [*members_of(base), *extra])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError) as refused:
        NemoArchive(evil)
    text = str(refused.value)
    assert text.startswith(str(evil)) and message in text and "\n" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    assert not Path("/tmp/evil.txt").exists()


def test_the_rules_are_at_least_tarfiles_data_filter(base, tmp_path):
    """Every member the 'data' filter of tarfile rejects is refused here too (the reverse does not hold: links that
    stay inside, duplicates and sparse files are refused here as well)."""
    if not hasattr(tarfile, "data_filter"):
        pytest.skip("tarfile.data_filter needs Python 3.12 or a 3.8-3.11 security release")
    from nemo2sherpa.checkpoint.archive import NemoArchive

    for case, (extra, _) in EVIL_MEMBERS.items():
        info = extra[0][0]
        try:
            tarfile.data_filter(info, str(tmp_path / "dest"))
        except tarfile.FilterError:
            with pytest.raises(UserError):
                NemoArchive(write_tar(tmp_path / f"df-{case}.nemo", [*members_of(base), *extra]))


def test_an_unsafe_member_is_refused_by_the_cli_with_nothing_left(base, tmp_path, capsys):
    evil = write_tar(tmp_path / "linked.nemo",
                     [*members_of(base), member("tokenizer.model", tarfile.SYMTYPE, linkname="/etc/shadow")])
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "linked.nemo", "is a link to '/etc/shadow'", "refusing the checkpoint")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_members_read_into_memory_are_capped(base, monkeypatch):
    """A compressed archive could unpack gigabytes of 'config' into RAM: members read whole are size-checked first."""
    from nemo2sherpa.checkpoint import archive

    monkeypatch.setattr(archive, "MAX_IN_MEMORY", 100)
    with archive.NemoArchive(base) as opened, pytest.raises(UserError, match="model_config.yaml claims"):
        opened.read_text("model_config.yaml")


# --------------------------------------------------------------------------------------------- pickled code

class _Payload:
    """Unpickling this object runs `call(*args)`: what a malicious model_weights.ckpt does."""

    def __init__(self, call, args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def evil_weights(marker: Path, kind: str) -> bytes:
    import torch

    payloads = {
        "system": _Payload(os.system, (f"touch {marker}",)),
        "exec": _Payload(exec, (f"open({str(marker)!r}, 'w').close()",)),
    }
    call = payloads["exec" if kind.endswith("exec") else "system"]
    state = {"encoder.weight": torch.zeros(2), "payload": call}
    buffer = io.BytesIO()
    if kind.startswith("zip"):
        torch.save(state, buffer)
    elif kind.startswith("legacy-torch"):
        torch.save(state, buffer, _use_new_zipfile_serialization=False)
    else:
        pickle.dump({"payload": call}, buffer, protocol=2)
    return buffer.getvalue()


@pytest.mark.nemo
@pytest.mark.parametrize("kind", ["zip-system", "zip-exec", "legacy-torch-system", "pickle-exec"])
def test_pickled_code_in_the_weights_never_runs(base, tmp_path, capsys, kind):
    pytest.importorskip("torch")
    marker = tmp_path / "MARKER"
    evil = replaced(base, tmp_path / "evil.nemo", "model_weights.ckpt", evil_weights(marker, kind))
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    wanted = "posix.system" if kind.endswith("system") else "exec"
    assert_one_line_error(ran, "evil.nemo", f"model_weights.ckpt needs to unpickle {wanted}", "refusing it")
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
def test_pickled_code_never_runs_even_when_the_environment_asks_torch_for_unsafe_loading(base, tmp_path):
    """A real process with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: torch honours it only where weights_only is not
    passed; nemo2sherpa always passes weights_only=True."""
    pytest.importorskip("torch")
    marker = tmp_path / "MARKER"
    evil = replaced(base, tmp_path / "evil.nemo", "model_weights.ckpt", evil_weights(marker, "zip-system"))
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    ran = run_process(["convert", evil, "-o", tmp_path / "out", "-q"], env=env)
    assert_one_line_error(ran, "evil.nemo", "needs to unpickle posix.system")
    assert not marker.exists() and not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def _evil_full_checkpoint(base: Path, target: Path, marker: Path) -> Path:
    """The real weights plus one pickled payload: NeMo's restore_from loads it if its torch.load is unsafe."""
    import torch

    good = dict((i.name.lstrip("./"), d) for i, d in members_of(base))["model_weights.ckpt"]
    state = torch.load(io.BytesIO(good), weights_only=True)
    state["payload"] = _Payload(os.system, (f"touch {marker}",))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return replaced(base, target, "model_weights.ckpt", buffer.getvalue())


@pytest.mark.nemo
def test_weights_only_everywhere_makes_nemos_own_restore_safe(base, tmp_path, monkeypatch):
    """NeMo's restore_from calls torch.load without weights_only, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes it
    unpickle anything. Inside weights_only_everywhere() torch refuses the payload; the environment is restored."""
    from nemo2sherpa.checkpoint.loading import quiet_nemo, vet_checkpoint, weights_only_everywhere

    marker = tmp_path / "MARKER"
    evil = _evil_full_checkpoint(base, tmp_path / "evil.nemo", marker)
    vet_checkpoint(evil)  # archive and config are fine: the payload is in the weights
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    from nemo.collections.asr.models import ASRModel

    with weights_only_everywhere(), quiet_nemo(), pytest.raises(pickle.UnpicklingError, match="posix.system"):
        ASRModel.restore_from(str(evil), map_location="cpu")
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


@pytest.mark.nemo
def test_vet_checkpoint_refuses_what_convert_refuses(base, tmp_path):
    from nemo2sherpa.checkpoint.loading import vet_checkpoint

    linked = write_tar(tmp_path / "linked.nemo", [*members_of(base), member("x", tarfile.SYMTYPE, linkname="/")])
    with pytest.raises(UserError, match="is a link"):
        vet_checkpoint(linked)
    sneaky = edit_config(base, tmp_path / "sneaky.nemo", lambda config: config.update(
        spec_augment={"_target_": "nemo.collections.asr.models.rnnt_models.os.system", "_args_": ["true"]}))
    with pytest.raises(UserError, match="spec_augment._target_ names .* not a class nemo2sherpa lets NeMo build"):
        vet_checkpoint(sneaky)


@pytest.mark.nemo
def test_validate_never_runs_code_from_the_nemo_checkpoint(base, fixture_dir, tmp_path):
    """NeMo's restore_from retries torch.load with weights_only=False when the safe loader refuses; with the
    environment override that makes torch honour that, validate must still run nothing from the checkpoint."""
    marker = tmp_path / "MARKER"
    evil = _evil_full_checkpoint(base, tmp_path / "evil.nemo", marker)
    plain = tmp_path / "third-party"
    shutil.copytree(fixture_dir, plain, ignore=shutil.ignore_patterns("validation", "manifest.json"))
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", NEMO2SHERPA_CACHE=str(tmp_path / "cache"))
    ran = run_process(["validate", plain, "--nemo", evil, "--no-speed", "-q"], env=env)
    assert not marker.exists(), "the checkpoint's pickled code ran"
    assert ran.code == 1 and "Traceback" not in ran.err, ran.err[-2000:]


def test_a_torch_with_a_bypassable_weights_only_loader_is_refused():
    from nemo2sherpa.checkpoint.loading import check_torch_version

    for version in ("2.4.1", "2.5.1+cu121", "1.13.0"):
        with pytest.raises(UserError, match="CVE-2025-32434"):
            check_torch_version(version)
    for version in ("2.6.0", "2.13.0+cpu", "3.0.0a0"):
        check_torch_version(version)


# --------------------------------------------------------------------------------------------- config targets

def edit_config(base: Path, target: Path, edit) -> Path:
    import yaml

    with tarfile.open(base) as tar:
        config = yaml.safe_load(tar.extractfile("./model_config.yaml").read())
    edit(config)
    return replaced(base, target, "model_config.yaml", yaml.safe_dump(config, sort_keys=False).encode())


@pytest.mark.nemo
def test_a_target_that_names_nemos_path_but_not_nemos_code_is_refused(base, tmp_path, capsys):
    """'nemo.<module>.os.system' starts with 'nemo.': Hydra would import the NeMo module, then take its 'os'
    attribute. It is not on the allow-list of classes NeMo builds for spec_augment, so it is refused by name."""
    marker = tmp_path / "MARKER"

    def edit(config):
        config["spec_augment"] = {"_target_": "nemo.collections.asr.models.rnnt_models.os.system",
                                  "_args_": [f"touch {marker}"]}

    evil = edit_config(base, tmp_path / "target.nemo", edit)
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "target.nemo", "spec_augment._target_", "rnnt_models.os.system",
                          "only SpectrogramAugmentation is built from spec_augment")
    assert not marker.exists() and not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
@pytest.mark.parametrize("target, message", [
    ("nemo.collections.asr.models.nothing_here.EncDecRNNTBPEModel", "is not where NeMo defines EncDecRNNTBPEModel"),
    ("nemo.collections.asr.models.rnnt_bpe_models.os.EncDecRNNTBPEModel",
     "is not where NeMo defines EncDecRNNTBPEModel"),
])
def test_a_model_class_path_that_does_not_resolve_is_one_line(base, tmp_path, capsys, target, message):
    evil = edit_config(base, tmp_path / "cls.nemo", lambda config: config.update(target=target))
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "cls.nemo", message)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
def test_tokenizer_paths_outside_the_checkpoint_are_never_read(base, tmp_path, capsys):
    """A config could point the tokenizer at files of the converting machine. A plain path is honoured only as the
    name of an archive member; a file that is not in the archive is refused, never opened."""
    evil = edit_config(base, tmp_path / "tok.nemo",
                       lambda config: config["tokenizer"].update(model_path="/etc/passwd"))
    ran = run_cli(["convert", evil, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "tok.nemo", "tokenizer.model_path names '/etc/passwd'", "outside the checkpoint")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []

    # an old-style absolute path whose file name the archive holds: the archive's file is used, not the machine's
    decoy = tmp_path / "elsewhere" / "tokenizer.model"
    decoy.parent.mkdir()
    decoy.write_bytes(b"not a sentencepiece model")
    old_style = edit_config(base, tmp_path / "old.nemo",
                            lambda config: config["tokenizer"].update(model_path=str(decoy)))
    ran = run_cli(["convert", old_style, "-o", tmp_path / "out", "-q"], capsys)
    assert ran.code == 0, ran.err


# --------------------------------------------------------------------------------------------- broken inputs

def _torch_bytes(value) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


BROKEN_WEIGHTS = {
    "random-bytes": (lambda good: os.urandom(4096), "model_weights.ckpt cannot be read; truncated or corrupt"),
    "zeros": (lambda good: bytes(len(good)), "model_weights.ckpt cannot be read; truncated or corrupt"),
    "half-of-it": (lambda good: good[: len(good) // 2], "model_weights.ckpt cannot be read; truncated or corrupt"),
    "empty": (lambda good: b"", "model_weights.ckpt cannot be read; truncated or corrupt"),
    "text": (lambda good: b"hello world\n" * 100, "model_weights.ckpt cannot be read; truncated or corrupt"),
    "flipped-bytes": (lambda good: good[:2000] + bytes(b ^ 0xFF for b in good[2000:6000]) + good[6000:],
                      "model_weights.ckpt cannot be read"),
    "a-list": (lambda good: _torch_bytes([1, 2, 3]), "holds a list, not a state dict"),
    "other-tensors": (lambda good: _torch_bytes({"x": __import__("torch").zeros(3)}), "weights do not fit its config"),
}


@pytest.mark.nemo
@pytest.mark.parametrize("case", list(BROKEN_WEIGHTS))
def test_corrupt_weights_inside_an_intact_archive(base, tmp_path, capsys, case):
    pytest.importorskip("torch")
    damage, message = BROKEN_WEIGHTS[case]
    good = dict((i.name.lstrip("./"), d) for i, d in members_of(base))["model_weights.ckpt"]
    broken = replaced(base, tmp_path / f"{case}.nemo", "model_weights.ckpt", damage(good))
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, f"{case}.nemo", message)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


BROKEN_CONFIGS = {
    "not-yaml": (b"encoder: {d_model: [64\n  - : :\n", "model_config.yaml cannot be parsed"),
    "deep-nesting": (b"[" * 100000, "model_config.yaml cannot be parsed"),
    "python-tag": (b"target: !!python/object/apply:os.system ['true']\n", "model_config.yaml cannot be parsed"),
    "binary": (bytes(range(256)) * 4, "model_config.yaml is not UTF-8 text"),
    "a-list": (b"- 1\n- 2\n", "model_config.yaml is not a mapping"),
    "empty": (b"", "model_config.yaml"),
    "unresolvable-interpolation": (b"target: ${nowhere.at_all}\n", "model_config.yaml cannot be parsed"),
}
@pytest.mark.nemo
@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_configs_that_are_not_yaml_mappings(base, tmp_path, capsys, case):
    data, message = BROKEN_CONFIGS[case]
    broken = replaced(base, tmp_path / f"{case}.nemo", "model_config.yaml", data)
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, f"{case}.nemo", message)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
def test_a_yaml_python_tag_never_runs(base, tmp_path, capsys):
    """OmegaConf reads YAML with a safe loader: a python/object tag is an error, never a call."""
    marker = tmp_path / "MARKER"
    data = f"target: !!python/object/apply:os.system ['touch {marker}']\n".encode()
    broken = replaced(base, tmp_path / "tag.nemo", "model_config.yaml", data)
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "tag.nemo", "model_config.yaml cannot be parsed")
    assert not marker.exists() and not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


CONFIG_VALUES = {  # any one line naming the file and model_config.yaml will do
    "d-model-not-a-number": (lambda c: c["encoder"].update(d_model="wide"), "model_config.yaml"),
    "n-layers-missing": (lambda c: c["encoder"].pop("n_layers"), "model_config.yaml"),
    "prednet-missing": (lambda c: c["decoder"].pop("prednet"), "model_config.yaml"),
    "durations-not-numbers": (lambda c: c["decoding"].update(durations=["a", "b"]), "model_config.yaml"),
    "tokenizer-a-list": (lambda c: c.update(tokenizer=[1, 2]), "model_config.yaml"),
}


@pytest.mark.nemo
@pytest.mark.parametrize("case", list(CONFIG_VALUES))
def test_config_values_of_the_wrong_kind_are_one_line(base, tmp_path, capsys, case):
    edit, fragment = CONFIG_VALUES[case]
    broken = edit_config(base, tmp_path / f"{case}.nemo", edit)
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, f"{case}.nemo", fragment)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
def test_a_gzip_compressed_checkpoint_converts_like_the_plain_one(base, tmp_path, capsys):
    plain_dir, gz_dir = tmp_path / "plain", tmp_path / "gz"
    plain_dir.mkdir(), gz_dir.mkdir()
    shutil.copyfile(base, plain_dir / "model.nemo")
    with open(base, "rb") as src, gzip.open(gz_dir / "model.nemo", "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    for directory in (plain_dir, gz_dir):
        ran = run_cli(["convert", directory / "model.nemo", "-o", directory / "out", "-q"], capsys)
        assert ran.code == 0, ran.err
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"):
        assert (plain_dir / "out" / name).read_bytes() == (gz_dir / "out" / name).read_bytes(), name
    manifest = json.loads((gz_dir / "out" / "manifest.json").read_text())
    assert manifest["source"]["sha256"] != json.loads((plain_dir / "out" / "manifest.json").read_text())["source"][
        "sha256"]  # the file that was converted, compressed as it is
    assert sorted(p.name for p in (gz_dir / "out").iterdir()) == sorted(p.name for p in (plain_dir / "out").iterdir())
    assert leftovers(gz_dir, "out") == []


@pytest.mark.nemo
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.9, 0.999])
def test_a_truncated_gzip_checkpoint_is_refused(base, tmp_path, capsys, fraction):
    data = gzip.compress(base.read_bytes(), compresslevel=1)
    broken = tmp_path / "cut.nemo"
    broken.write_bytes(data[: int(len(data) * fraction)])
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "cut.nemo")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
def test_a_gzip_checkpoint_with_a_corrupt_stream_is_refused(base, tmp_path, capsys):
    data = bytearray(gzip.compress(base.read_bytes(), compresslevel=1))
    for offset in range(len(data) // 2, len(data) // 2 + 64):
        data[offset] ^= 0x5A
    broken = tmp_path / "crc.nemo"
    broken.write_bytes(bytes(data))
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "crc.nemo")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


@pytest.mark.nemo
def test_a_plain_tar_truncated_inside_the_weights_is_refused_before_loading(base, tmp_path, capsys):
    from nemo2sherpa.checkpoint.archive import NemoArchive

    with NemoArchive(base) as opened:
        weights = opened.members["model_weights.ckpt"]
    broken = tmp_path / "short.nemo"
    broken.write_bytes(base.read_bytes()[: weights.offset + weights.size // 2])
    ran = run_cli(["convert", broken, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "short.nemo", "truncated")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_unreadable_sources_are_one_line(tmp_path, capsys):
    fifo = tmp_path / "pipe.nemo"
    os.mkfifo(fifo)
    ran = run_cli(["convert", fifo, "-o", tmp_path / "out", "-q"], capsys)
    assert_one_line_error(ran, "pipe.nemo", "is not a file")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("the crafted archives use Linux paths")


# --------------------------------------------------------------------------------------------- tampered directories

def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("validation"))
    return target


def _contract_problems(directory: Path, ran) -> str:
    assert ran.code == 1, (ran.out, ran.err)
    report = json.loads((directory / "validation" / "report.json").read_text())
    return " ".join(report["checks"]["contract"]["problems"])


@pytest.mark.nemo
def test_a_manifest_that_is_not_json_is_one_line(fixture_dir, tmp_path, capsys):
    broken = _copy_model(fixture_dir, tmp_path / "m")
    (broken / "manifest.json").write_text('{"format": "nemo2sherpa-manifest", "files": [[[' + "[" * 50000)
    ran = run_cli(["validate", broken, "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "manifest.json", "is not valid JSON")


@pytest.mark.nemo
def test_a_manifest_pointing_outside_the_directory_is_refused_or_not_read(fixture_dir, tmp_path, capsys):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 1234)
    broken = _copy_model(fixture_dir, tmp_path / "m")
    data = json.loads((broken / "manifest.json").read_text())
    data["files"]["../secret.bin"] = {"sha256": "0" * 64, "size": 1}
    (broken / "manifest.json").write_text(json.dumps(data))
    problems = _contract_problems(broken, run_cli(["validate", broken, "--no-speed", "-q"], capsys))
    assert "'../secret.bin', which is not a plain file name" in problems and "1234" not in problems

    # an absolute path: another directory
    data["families"]["transducer"]["variants"]["fp32"]["encoder"] = str(fixture_dir / "encoder.onnx")
    (broken / "manifest.json").write_text(json.dumps(data))
    ran = run_cli(["validate", broken, "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "manifest.json", "variants.fp32.encoder", "not a plain file name")


@pytest.mark.nemo
def test_a_truncated_graph_is_named(fixture_dir, tmp_path, capsys):
    broken = _copy_model(fixture_dir, tmp_path / "m")
    data = (broken / "encoder.onnx").read_bytes()
    (broken / "encoder.onnx").write_bytes(data[: len(data) // 3])
    ran = run_cli(["validate", broken, "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "encoder.onnx", "is not a readable ONNX model")


@pytest.mark.nemo
def test_a_blank_that_is_not_last_is_named(fixture_dir, tmp_path, capsys):
    broken = _copy_model(fixture_dir, tmp_path / "m")
    lines = (broken / "tokens.txt").read_text().splitlines()
    (first, first_id), (last, last_id) = lines[0].split(), lines[-1].split()
    lines[0], lines[-1] = f"{last} {first_id}", f"{first} {last_id}"
    (broken / "tokens.txt").write_text("\n".join(lines) + "\n")
    problems = _contract_problems(broken, run_cli(["validate", broken, "--no-speed", "-q"], capsys))
    assert f"tokens.txt's last token is {first!r}, not <blk>" in problems
    assert "manifest: tokens.txt does not match its sha256" in problems


@pytest.mark.nemo
def test_external_weights_changed_in_place_are_named(tmp_path, capsys):
    """Same size, different bytes: only the manifest's hash can tell, and it does, naming the file."""
    ran = run_cli(["convert", BUNDLED, "-o", tmp_path / "ext", "--external-data-above", "0", "-q"], capsys)
    assert ran.code == 0, ran.err
    weights = tmp_path / "ext" / "encoder.weights"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    problems = _contract_problems(tmp_path / "ext", run_cli(["validate", tmp_path / "ext", "--no-speed", "-q"],
                                                            capsys))
    assert "manifest: encoder.weights does not match its sha256" in problems
