"""Build the NeMo model in memory: from a checked archive (weights only, no pickled code) or from an architecture
with random weights. The only module of convert that needs NeMo and torch at import time of its functions.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

from nemo2sherpa.convert.archive import NEMO_PREFIX, NemoArchive
from nemo2sherpa.convert.nemo_config import nemo_model_config
from nemo2sherpa.convert.tokenizer import synthetic_tokenizer
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import Architecture

_DATA_SECTIONS = ("train_ds", "validation_ds", "test_ds")
_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)


@contextlib.contextmanager
def quiet_nemo() -> Iterator[None]:
    """NeMo and torch.onnx log pages of warnings for an ordinary export; users need the stage lines, not those."""
    os.environ.setdefault("NEMO_TESTING", "0")
    from nemo.utils import logging as nemo_logging

    previous = nemo_logging.getEffectiveLevel()
    nemo_logging.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        nemo_logging.setLevel(previous)


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Construct modules without initialising their weights: every parameter is replaced by the checkpoint's right
    after, and initialising a billion random numbers first costs tens of seconds and touches every page."""
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
    for name in saved:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def model_class(config: dict[str, Any]) -> type:
    """The NeMo class the config names; the name was checked to be NeMo's own before this point."""
    module_name, _, class_name = str(config["target"]).rpartition(".")
    if not module_name.startswith("nemo.collections.asr.models"):
        raise UserError(f"model class {config['target']!r} is not a NeMo ASR model")
    return getattr(importlib.import_module(module_name), class_name)


def instantiate(config: dict[str, Any], initialise: bool = True):
    """A NeMo model from a config whose tokenizer paths point at local files."""
    from omegaconf import OmegaConf

    config = {key: value for key, value in config.items() if key not in _DATA_SECTIONS}
    cls = model_class(config)
    with quiet_nemo(), (contextlib.nullcontext() if initialise else skip_weight_init()):
        model = cls(cfg=OmegaConf.create(config))
    model.eval()
    return model


def localise_tokenizer(archive: NemoArchive, config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Extract the tokenizer files the config references and point the config at them."""
    tokenizer = dict(config.get("tokenizer") or {})
    directory = workdir / "tokenizer"
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in list(tokenizer.items()):
        if isinstance(value, str) and value.startswith(NEMO_PREFIX):
            tokenizer[key] = str(archive.extract_artifact(value, directory))
    if "model_path" not in tokenizer:
        raise UserError.about(archive.path, "the config has no tokenizer.model_path; the tokenizer is missing")
    tokenizer["dir"] = str(directory)
    return {**config, "tokenizer": tokenizer}


def tokenizer_pieces(config: dict[str, Any], source: Path) -> list[str]:
    """The SentencePiece vocabulary of a config whose tokenizer was localised (checked against the model's size)."""
    import sentencepiece as spm

    try:
        processor = spm.SentencePieceProcessor(model_file=config["tokenizer"]["model_path"])
    except (RuntimeError, OSError) as exc:
        raise UserError.about(source, f"its tokenizer.model cannot be loaded ({str(exc).splitlines()[0]})") from None
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def load_from_archive(archive: NemoArchive, config: dict[str, Any], workdir: Path):
    """The checkpoint's model with its trained weights, loaded with torch.load(weights_only=True).

    `config` must come from localise_tokenizer()."""
    import pickle
    import zipfile

    import torch

    model = instantiate(config, initialise=False)
    with archive.open_weights(workdir) as stream:
        try:
            state = torch.load(stream, map_location="cpu", weights_only=True, mmap=False)
        except pickle.UnpicklingError as exc:
            raise UserError.about(archive.path, "model_weights.ckpt holds more than tensors (pickled code?); "
                                                f"refusing to unpickle it ({str(exc).splitlines()[0]})") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise UserError.about(archive.path, f"model_weights.ckpt cannot be read; truncated or corrupt "
                                                f"({str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a Lightning checkpoint saved inside the archive
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = _first_mismatch(str(exc))
        raise UserError.about(archive.path, f"its weights do not fit its config ({first})") from None
    del state
    model.eval()
    return model


def _first_mismatch(message: str) -> str:
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(("Missing key", "Unexpected key", "size mismatch")):
            return line[:300]
    return message.splitlines()[0][:300]


def random_model(architecture: Architecture, workdir: Path, seed: int = 0):
    """The architecture with seeded random weights and a tokenizer of its exact vocabulary size."""
    import torch

    tokenizer_dir = workdir / "tokenizer"
    synthetic_tokenizer(int(architecture.vocab_size or 0), tokenizer_dir)
    config = nemo_model_config(architecture, str(tokenizer_dir))
    torch.manual_seed(seed)
    return instantiate(config, initialise=True)
