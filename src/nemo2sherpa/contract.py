"""What sherpa-onnx requires of an offline NeMo transducer directory, in one place: convert writes to it, validate
checks against it. Facts from sherpa-onnx's offline NeMo transducer sources (see docs/sherpa-onnx-contract.md).
"""

from __future__ import annotations

from nemo2sherpa.facts import ModelFacts

MODEL_TYPE = "nemo_transducer"
REQUIRED_METADATA = ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden")
INFORMATIONAL_METADATA = ("normalize_type", "feat_dim", "model_type", "version", "model_author", "url", "comment")
SHERPA_NORMALIZE_TYPES = ("per_feature", "", "NA")
TDT_MARK = "tdt"
MAX_SYMBOLS_PER_FRAME = 5  # sherpa-onnx's greedy search stops after this many tokens on one frame
METADATA_VERSION = "1"


def is_tdt_url(url: str) -> bool:
    """sherpa-onnx decodes a model as TDT exactly when its url contains 'tdt' (case-sensitive substring)."""
    return TDT_MARK in url


def sherpa_url(base: str, tdt: bool) -> str:
    """A url that makes sherpa-onnx pick the right decoder whatever the checkpoint was called.

    A TDT model needs 'tdt' in it (a local file called final.nemo has none); a plain RNNT model must not have it
    (a repository called 'my-tdt-to-rnnt' would otherwise be decoded as TDT and fail the joiner width check).
    """
    if tdt:
        return base if is_tdt_url(base) else f"{base}#{TDT_MARK}"
    return base.replace(TDT_MARK, TDT_MARK.upper())


def sherpa_metadata(facts: ModelFacts, base_url: str, comment: str) -> dict[str, str]:
    """The encoder's metadata, every value a string as ONNX metadata_props hold them."""
    return {
        "vocab_size": str(facts.vocab_size),
        "normalize_type": facts.normalize,
        "subsampling_factor": str(facts.architecture.subsampling_factor),
        "pred_rnn_layers": str(facts.architecture.pred_rnn_layers),
        "pred_hidden": str(facts.architecture.pred_hidden),
        "feat_dim": str(facts.architecture.mels),
        "model_type": facts.model_class,
        "version": METADATA_VERSION,
        "model_author": "NeMo",
        "url": sherpa_url(base_url, facts.is_tdt),
        "comment": comment,
    }


def expected_joiner_width(vocab_size: int, tdt: bool, num_durations: int) -> int:
    return vocab_size + 1 + (num_durations if tdt else 0)
