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
from nemo2sherpa.sherpa_front_end import FrontEnd
from nemo2sherpa.validate.audio import Clip


def applies(family: Family) -> bool:
    """Only a runtime that computes features of its own that differ from NeMo's (sherpa-onnx; onnx-asr computes
    NeMo's)."""
    return family.runtime_front_end is not None


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


def replay(graphs: GraphDecoder, spec: ModelSpec, clip: Clip, max_symbols: int | None, front_end: FrontEnd,
           online: bool = False) -> str:
    """The graphs' greedy text on the clip's features as sherpa-onnx computes them for the family (`front_end`),
    with `max_symbols` tokens per frame at most (sherpa-onnx's own limit, where the family knows one). `online`: fed
    as its online recognizer feeds them: its windows from the stream's first frame, over the audio and the trailing
    silence that flushes the last one."""
    import numpy as np

    from nemo2sherpa.sherpa_front_end import features

    audio = clip.audio
    encode = graphs.encode
    if online:
        from nemo2sherpa.families.streaming_step import shape_from_metadata, tail_seconds

        silence = np.zeros(int(tail_seconds(shape_from_metadata(spec.metadata)) * clip.sample_rate), np.float32)
        audio = np.concatenate([np.asarray(audio, dtype=np.float32), silence])
        encode = graphs.encode_like_runtime  # type: ignore[attr-defined]
    feats = features(audio, spec.feat_dim, front_end, normalize=spec.normalize_type == "per_feature",
                     sample_rate=clip.sample_rate)
    encoded, length = encode(feats)
    return text_of(graphs.greedy(encoded, length, max_symbols).tokens, spec.pieces)
