"""Whether sherpa-onnx's front end explains a transcript that differs from NeMo's.

The graph fidelity check feeds NeMo's features into the exported graphs; this feeds them sherpa-onnx's own features
(reproduced by nemo2sherpa.sherpa_front_end with the library and options sherpa-onnx uses) and decodes greedily. When
the graphs then give sherpa-onnx's text, the difference comes from the features, not from the export: the same
graphs give NeMo's text on NeMo's features. When they do not, something else differs (the graphs, the decoding, or
sherpa-onnx's own handling), and the difference stays unexplained.
"""

from __future__ import annotations

from typing import Sequence

from nemo2sherpa.families.base import Family, GraphDecoder, ModelSpec
from nemo2sherpa.validate.audio import Clip


def applies(family: Family) -> bool:
    """Only sherpa-onnx computes features of its own that differ from NeMo's (onnx-asr computes NeMo's)."""
    return family.runtime == "sherpa-onnx"


def available() -> str | None:
    """None when the replay can run, else why not (kaldi-native-fbank is part of the validate extra)."""
    try:
        import kaldi_native_fbank  # noqa: F401
    except ImportError:
        return "kaldi-native-fbank is not installed (pip install 'nemo2sherpa[validate]'), so transcript " \
               "differences are not attributed to sherpa-onnx's front end or to the graphs"
    return None


def text_of(ids: Sequence[int], pieces: Sequence[str]) -> str:
    """SentencePiece ids as text, the way sherpa-onnx joins a NeMo model's tokens."""
    return " ".join("".join(pieces[i] for i in ids).replace("\u2581", " ").split())


def replay(graphs: GraphDecoder, spec: ModelSpec, clip: Clip, max_symbols: int | None) -> str:
    """The graphs' greedy text on the clip's features as sherpa-onnx computes them, with `max_symbols` tokens per
    frame at most (sherpa-onnx's own limit, where the family knows one)."""
    from nemo2sherpa.sherpa_front_end import features

    feats = features(clip.audio, spec.feat_dim, normalize=spec.normalize_type == "per_feature",
                     sample_rate=clip.sample_rate)
    encoded, length = graphs.encode(feats)
    return text_of(graphs.greedy(encoded, length, max_symbols).tokens, spec.pieces)
