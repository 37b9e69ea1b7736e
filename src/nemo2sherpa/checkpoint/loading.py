"""Build the NeMo model in memory: from a checked archive (weights only, no pickled code) or from an architecture
with random weights. The only module of convert that needs NeMo and torch at import time of its functions.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

from nemo2sherpa.checkpoint.architecture_config import nemo_model_config
from nemo2sherpa.checkpoint.archive import NEMO_PREFIX, WEIGHTS_NAME, NemoArchive
from nemo2sherpa.checkpoint.config import facts_from_config
from nemo2sherpa.checkpoint.config_targets import MODEL_CLASSES, built_sections, model_class_paths, target_problem
from nemo2sherpa.checkpoint.local_tokenizer import synthetic_tokenizer
from nemo2sherpa.checkpoint.model_size import check_model_size
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import Architecture

_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)


@contextlib.contextmanager
def quiet_nemo(level: int = logging.ERROR) -> Iterator[None]:
    """NeMo and torch.onnx log pages of warnings for an ordinary export; users need the stage lines, not those.
    level=logging.CRITICAL also hides the tracebacks NeMo logs as errors before raising (from_config_dict does), for
    callers that turn the exception into one line themselves."""
    os.environ.setdefault("NEMO_TESTING", "0")
    from nemo.utils import logging as nemo_logging

    previous = nemo_logging.getEffectiveLevel()
    nemo_logging.setLevel(level)
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


NEMO_ASR_MODELS = "nemo.collections.asr.models"


def model_class(config: dict[str, Any]) -> type:
    """The NeMo ASR model class the config names: one of the allow-listed classes, by its exact path, imported from
    the module that defines it (nothing else is imported to look at it)."""
    target = config.get("target")
    name = target.rsplit(".", 1)[-1] if isinstance(target, str) else ""
    if target not in model_class_paths(name):
        raise UserError(f"model class {target!r} is not one nemo2sherpa builds "
                        f"({', '.join(model_class_paths(n)[0] for n in MODEL_CLASSES)}); refusing it")
    module_name = model_class_paths(name)[0].rpartition(".")[0]
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise UserError(f"model class {target!r} does not exist in this NeMo") from None
    if not isinstance(cls, type):
        raise UserError(f"model class {target!r} is not a class in this NeMo; refusing it")
    return cls


def instantiate(config: dict[str, Any], initialise: bool = True):
    """A NeMo model from a config whose tokenizer paths point at local files. Every class the config names is checked
    against the allow-list first; the sections no constructor builds (data loaders, optimiser) are left out."""
    from omegaconf import OmegaConf

    config = built_sections(config)
    problem = target_problem(config)
    if problem:
        raise UserError(problem)
    cls = model_class(config)
    if cls.__name__.endswith("BPEModel"):
        config = _without_vocabulary_lists(config)
    with quiet_nemo(), (contextlib.nullcontext() if initialise else skip_weight_init()):
        model = cls(cfg=OmegaConf.create(config))
    model.eval()
    return model


def _without_vocabulary_lists(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the token lists a BPE model's constructor rebuilds from its tokenizer anyway.

    A saved config carries the vocabulary up to three times (labels, joint.vocabulary, aux_ctc.decoder.vocabulary),
    and NeMo's constructor copies the whole config through OmegaConf several times before it replaces them: with
    parakeet-tdt-0.6b-v3's 8192 tokens that was seconds of a conversion (docs/benchmarks.md)."""
    config = {key: value for key, value in config.items() if key != "labels"}
    if isinstance(config.get("joint"), dict):
        config["joint"] = {key: value for key, value in config["joint"].items() if key != "vocabulary"}
    aux = config.get("aux_ctc")
    if isinstance(aux, dict) and isinstance(aux.get("decoder"), dict):
        decoder = {key: value for key, value in aux["decoder"].items() if key != "vocabulary"}
        config["aux_ctc"] = {**aux, "decoder": decoder}
    return config


# Tokenizer settings NeMo opens as files: they must name files inside the checkpoint, never the converting machine's.
_TOKENIZER_FILES = ("model_path", "vocab_path", "spe_tokenizer_vocab")


def localise_tokenizer(archive: NemoArchive, config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Extract the tokenizer files the config references and point the config at them."""
    tokenizer = dict(config.get("tokenizer") or {})
    directory = workdir / "tokenizer"
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in list(tokenizer.items()):
        if isinstance(value, str) and value.startswith(NEMO_PREFIX):
            tokenizer[key] = str(archive.extract_artifact(value, directory))
        elif key in _TOKENIZER_FILES and value is not None:
            tokenizer[key] = str(archive.extract_artifact(_plain_path_member(archive, key, value), directory))
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

    `config` must come from localise_tokenizer(). NeMo's ASR collection is imported on a second thread while this one
    reads the tensors: the import is about 5 s of Python, the read is I/O and memory copies, and they overlap. The
    tensors are read here, not there, so that they land in the main heap (see memory.py). A config that would build
    far more parameters than the tensors hold is refused after they are read (tensors only) and before NeMo builds
    anything."""
    facts = facts_from_config(config, archive.path)
    importing = _import_in_background(NEMO_ASR_MODELS)
    try:
        with archive.open_weights(workdir) as stream:
            state = _load_tensors(stream, archive.path)
    finally:
        importing.join()  # also on failure: never leave the interpreter to shut down in the middle of an import
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a Lightning checkpoint saved inside the archive
    if not isinstance(state, Mapping):
        raise UserError.about(archive.path, f"model_weights.ckpt holds a {type(state).__name__}, not a state dict "
                                            "of named tensors")
    elements = sum(int(value.numel()) for value in state.values() if hasattr(value, "numel"))
    check_model_size(config, facts, archive.members[WEIGHTS_NAME].size, archive.path, tensor_elements=elements)
    try:
        model = instantiate(config, initialise=False)
    except UserError as exc:
        raise UserError.about(archive.path, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - NeMo's own refusal of a config it cannot build (bad values, types)
        raise UserError.about(archive.path, unbuildable(exc)) from None
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        first = _first_mismatch(str(exc))
        raise UserError.about(archive.path, f"its weights do not fit its config ({first})") from None
    del state
    model.eval()
    return model


def _import_in_background(module: str) -> threading.Thread:
    """Import `module` on a daemon thread; a failure is left to the caller's own import, which reports it."""

    def run() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    thread = threading.Thread(target=run, name=f"import {module}", daemon=True)
    thread.start()
    return thread


def _load_tensors(stream, source: Path) -> Any:
    """torch.load(weights_only=True): tensors, containers and numbers only, never code. Whatever else goes wrong is a
    damaged file, said in one line; the environment cannot turn weights_only off (an explicit True wins)."""
    import pickle

    import torch

    check_torch_version(torch.__version__)
    try:
        return torch.load(stream, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        wanted = _unpickle_global(message)
        if wanted is not None:
            raise UserError.about(source, f"model_weights.ckpt needs to unpickle {wanted}, which is code or an object "
                                          "that is not a tensor; refusing it (only tensors are loaded, "
                                          "torch.load weights_only=True)") from None
        raise UserError.about(source, f"model_weights.ckpt cannot be read; truncated or corrupt "
                                      f"({torch_reason(message)})") from None
    except MemoryError:
        raise UserError.about(source, "model_weights.ckpt cannot be read; it claims more memory than "
                                      "this machine has (corrupt?)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        raise UserError.about(source, f"model_weights.ckpt cannot be read; truncated or corrupt "
                                      f"({_first_line(exc)})") from None


_FORCE_SAFE, _FORCE_UNSAFE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def weights_only_everywhere() -> Iterator[None]:
    """For code that calls torch.load without weights_only (NeMo's restore_from): make torch load tensors only.

    torch honours TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 wherever weights_only is not passed, which turns NeMo's
    restore_from into arbitrary code execution for a hostile checkpoint; TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 forces the
    safe loader instead. Not thread-safe (it edits os.environ for the duration)."""
    import torch

    check_torch_version(torch.__version__)
    saved = {name: os.environ.get(name) for name in (_FORCE_SAFE, _FORCE_UNSAFE)}
    os.environ.pop(_FORCE_UNSAFE, None)
    os.environ[_FORCE_SAFE] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def vet_checkpoint(path: Path) -> dict[str, Any]:
    """The checks convert makes before a checkpoint's config is used, for code that hands a .nemo to NeMo itself
    (validate's reference): archive members, the config's size, aliases and references, every class it names, its
    model's size against its weights, tokenizer files inside the archive. Returns the checked config, to be given to
    NeMo in place of the archive's own (restore_from(override_config_path=...)), so that NeMo builds exactly what was
    checked. Raises UserError naming the file. Its weights are not read here: load them inside
    weights_only_everywhere()."""
    from nemo2sherpa.checkpoint.archive import CONFIG_NAME
    from nemo2sherpa.checkpoint.config_reading import parse_config

    path = Path(path)
    with NemoArchive(path) as archive:
        config = parse_config(archive.read_text(CONFIG_NAME), path)
        facts = facts_from_config(config, path)
        try:
            model_class(config)
        except UserError as exc:
            raise UserError.about(path, str(exc)) from None
        check_model_size(config, facts, archive.members[WEIGHTS_NAME].size, path)
        tokenizer = _tokenizer_references(archive, config.get("tokenizer"))
    # NeMo would build from a 'model' section instead of the top level (a training config's wrapper): never from one
    # that parse_config did not unwrap and facts_from_config did not read.
    return {**{key: value for key, value in built_sections(config).items() if key != "model"}, "tokenizer": tokenizer}


def _tokenizer_references(archive: NemoArchive, tokenizer: Any) -> dict[str, Any]:
    """The tokenizer section with every file it names as a 'nemo:' reference to an archive member, which NeMo resolves
    inside the unpacked archive: a plain path would make NeMo open a file of this machine."""
    tokenizer = dict(tokenizer) if isinstance(tokenizer, Mapping) else {}
    for key, value in list(tokenizer.items()):
        if isinstance(value, str) and value.startswith(NEMO_PREFIX):
            archive.artifact_member(value)  # refused here when the archive lacks it
        elif key in _TOKENIZER_FILES and value is not None:
            tokenizer[key] = NEMO_PREFIX + _plain_path_member(archive, key, value)
    return tokenizer


def _plain_path_member(archive: NemoArchive, key: str, value: Any) -> str:
    """An old-style plain tokenizer path: acceptable only when the archive holds that file (matched by its name), so
    that a config can never make anyone open a file of this machine."""
    name = PurePosixPath(str(value).replace("\\", "/")).name
    try:
        member = archive.artifact_member(name) if name else None
    except UserError:
        member = None
    if member is None:
        raise UserError.about(archive.path, f"tokenizer.{key} names {value!r}, a file outside the checkpoint; "
                                            "refusing to read files of this machine")
    return member


# torch.load(weights_only=True) could be made to run code up to torch 2.5.1 (CVE-2025-32434, fixed in 2.6.0).
SAFE_TORCH = (2, 6)


def check_torch_version(version: str) -> None:
    """Refuse to unpickle untrusted weights with a torch whose weights_only loader is known to be bypassable."""
    import re

    numbers = tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:2])
    if len(numbers) == 2 and numbers < SAFE_TORCH:
        raise UserError(f"torch {version} can be made to run code while loading weights even with weights_only=True "
                        f"(CVE-2025-32434); install torch {SAFE_TORCH[0]}.{SAFE_TORCH[1]} or later to convert "
                        "checkpoints")


def _unpickle_global(message: str) -> str | None:
    """The global a weights_only refusal names ('Unsupported global: GLOBAL posix.system', 'unsupported GLOBAL
    posix.system whose module posix is blocked'), or None when torch refused something else (damaged data)."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", message)
    return found.group(1) if found else None


# torch's refusals start with advice to load the file with weights_only=False, which runs the code in it: never repeat
# that to a user about an untrusted file. Lines mentioning these are dropped from any message quoted from torch.
_UNSAFE_ADVICE = ("weights_only", "trusted source", "trust the source", "re-running", "safe_globals",
                  "add_safe_globals", "arbitrary code", "file an issue", "documentation of torch.load")


def torch_reason(message: str, default: str = "not a PyTorch checkpoint") -> str:
    """The specific part of a torch.load error (torch's 'WeightsUnpickler error: Unsupported operand 149'), without
    its advice to turn weights_only off; `default` when nothing else is left."""
    for line in message.replace("WeightsUnpickler error:", "\n").splitlines():
        line = line.strip().rstrip(":").strip()
        if line and not any(advice in line.lower() for advice in _UNSAFE_ADVICE):
            return line[:200]
    return default


def _first_line(exc: BaseException) -> str:
    return torch_reason(str(exc), type(exc).__name__)[:300]


def unbuildable(exc: BaseException) -> str:
    """One line for NeMo's refusal of a config it cannot build (bad values, types, shapes)."""
    return f"NeMo cannot build the model its model_config.yaml describes ({type(exc).__name__}: {_first_line(exc)})"


def _first_mismatch(message: str) -> str:
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(("Missing key", "Unexpected key", "size mismatch")):
            return line[:300]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0][:300] if lines else "no detail"


def random_model(architecture: Architecture, workdir: Path, seed: int = 0):
    """The architecture with seeded random weights and a tokenizer of its exact vocabulary size."""
    import torch

    tokenizer_dir = workdir / "tokenizer"
    synthetic_tokenizer(int(architecture.vocab_size or 0), tokenizer_dir)
    config = nemo_model_config(architecture, str(tokenizer_dir))
    torch.manual_seed(seed)
    return instantiate(config, initialise=True)
