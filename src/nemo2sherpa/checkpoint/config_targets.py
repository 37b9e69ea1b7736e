"""The classes a checkpoint's config may name: an allow-list per section of what NeMo's transducer, CTC and hybrid
constructors build, checked by name over the whole config tree before anything is instantiated (a `_target_` is code
the config makes NeMo run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from nemo2sherpa.errors import UserError

_MODULES = "nemo.collections.asr.modules"
_MODELS = "nemo.collections.asr.models"
#: The model classes nemo2sherpa builds, by the module of nemo.collections.asr.models that defines each.
MODEL_CLASSES = {
    "EncDecRNNTBPEModel": "rnnt_bpe_models",
    "EncDecHybridRNNTCTCBPEModel": "hybrid_rnnt_ctc_bpe_models",
    "EncDecCTCModelBPE": "ctc_bpe_models",
}
#: What the constructors of those classes build from each section with from_config_dict (rnnt_models.py,
#: ctc_models.py, hybrid_rnnt_ctc_models.py), by the module of nemo.collections.asr.modules that defines it. Parakeet's
#: FastConformer is ConformerEncoder with dw_striding subsampling; there is no separate class.
SECTION_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "preprocessor": (("audio_preprocessing", "AudioToMelSpectrogramPreprocessor"),),
    "spec_augment": (("audio_preprocessing", "SpectrogramAugmentation"),),
    "encoder": (("conformer_encoder", "ConformerEncoder"),),
    "decoder": (("rnnt", "RNNTDecoder"), ("conv_asr", "ConvASRDecoder")),
    "joint": (("rnnt", "RNNTJoint"),),
    "aux_ctc.decoder": (("conv_asr", "ConvASRDecoder"),),
}
#: Sections no model constructor instantiates (data loaders are set up only for training, the optimiser only by
#: Lightning's configure_optimizers): dropped before the config is checked or built, so nothing they name can run.
NEVER_BUILT = ("train_ds", "validation_ds", "test_ds", "optim")
_TARGET_KEYS = ("_target_", "cls")  # NeMo turns a Hydra 0.x 'cls' into '_target_' (maybe_update_config_version)


def built_sections(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the sections no model constructor builds."""
    return {key: value for key, value in config.items() if key not in NEVER_BUILT}


def allowed_targets(section: str) -> tuple[str, ...]:
    """The _target_ values allowed in `section`: each class by its public name and by its defining module."""
    return tuple(name for module, cls in SECTION_CLASSES.get(section, ())
                 for name in (f"{_MODULES}.{cls}", f"{_MODULES}.{module}.{cls}"))


def model_class_paths(name: str) -> tuple[str, ...]:
    module = MODEL_CLASSES.get(name)
    return (f"{_MODELS}.{module}.{name}", f"{_MODELS}.{name}") if module else ()


def target_problem(config: Mapping[str, Any]) -> str | None:
    """Why the config's classes cannot be built, or None: every _target_ (and 'cls') anywhere in the sections that
    are built, nested ones and ones inside lists included, must be the class NeMo's model constructors build for
    that section; nothing else may name a class. Checked on names only: nothing is imported to look at it."""
    for where, key, value in _targets(built_sections(config)):
        if key == "target":
            if where:
                return f"config {where}.target names {value!r}; only the model class (the top-level target) " \
                       "may be named with 'target'; refusing it"
            problem = _model_class_problem(value)
            if problem:
                return problem
            continue
        allowed = allowed_targets(where)
        if not isinstance(value, str) or value not in allowed:
            names = sorted({name.rsplit(".", 1)[-1] for name in allowed})
            what = f"only {' or '.join(names)} is built from {where}" if names else "nothing is built from it"
            return f"config {where + '.' if where else ''}{key} names {value!r}, which is not a class nemo2sherpa " \
                   f"lets NeMo build there ({what}); refusing it"
    return None


def _model_class_problem(target: Any) -> str | None:
    if not isinstance(target, str) or not target.startswith(f"{_MODELS}.") or \
            not all(part.isidentifier() for part in target.split(".")):
        return f"config target names {target!r}, outside NeMo's ASR models; refusing it"
    name = target.rsplit(".", 1)[-1]
    if name in MODEL_CLASSES and target not in model_class_paths(name):
        return f"config target names {target!r}, which is not where NeMo defines {name} " \
               f"({model_class_paths(name)[0]}); refusing it"
    return None


def _targets(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path of the mapping, key, value) of every key that names a class."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key in _TARGET_KEYS or (key == "target" and (isinstance(value, str) or not path)):
                yield path, str(key), value
            else:
                yield from _targets(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _targets(value, f"{path}[{index}]")


def check_targets(config: Mapping[str, Any], source: Path) -> None:
    """Instantiating a config runs whatever its _target_s name: only the allow-listed NeMo classes may be named."""
    problem = target_problem(config)
    if problem:
        raise UserError.about(source, problem)
