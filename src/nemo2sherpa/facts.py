"""Model facts: one typed record read once from a checkpoint's config, carried through convert, manifest, validate
and publish.

Pure Python on purpose: validate and publish read these facts back from manifest.json without NeMo or torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

#: NeMo model classes nemo2sherpa reads: BPE transducers, BPE CTC models, and hybrids of both
SUPPORTED_CLASSES = ("EncDecRNNTBPEModel", "EncDecHybridRNNTCTCBPEModel", "EncDecCTCModelBPE")
CTC_HEAD_CLASSES = ("EncDecCTCModelBPE", "EncDecHybridRNNTCTCBPEModel")
#: decoder_kind of a model: how its transducer decodes (tdt, rnnt), or ctc for a model that has only a CTC head
DECODER_KINDS = ("tdt", "rnnt", "ctc")
#: the attention style of NeMo's cache-aware streaming encoders
CACHE_AWARE_STYLE = "chunked_limited"
_TUPLE_FIELDS = ("att_context_size", "durations", "lookaheads")
STREAMING_FIELDS = ("att_context_style", "lookaheads", "conv_context", "causal_downsampling", "conv_norm")


@dataclass(frozen=True)
class Architecture:
    """The shape of a FastConformer transducer: what a recipe expects and what a checkpoint has.

    A field left as None is unknown (recipes) and is not compared.
    """

    model_class: str | None = None
    encoder_layers: int | None = None
    d_model: int | None = None
    attention_heads: int | None = None
    ff_expansion_factor: int | None = None
    conv_kernel_size: int | None = None
    subsampling_factor: int | None = None
    subsampling_conv_channels: int | None = None
    attention: str | None = None
    att_context_size: tuple[int, int] | None = None
    xscaling: bool | None = None
    use_bias: bool | None = None
    pos_emb_max_len: int | None = None
    mels: int | None = None
    vocab_size: int | None = None
    durations: tuple[int, ...] | None = None
    pred_hidden: int | None = None
    pred_rnn_layers: int | None = None
    joint_hidden: int | None = None
    # cache-aware streaming encoders only (None for offline ones): the attention style ("chunked_limited"), the
    # look-aheads it was trained with (right contexts in encoder frames, the default first), its convolutions'
    # context ("causal") and subsampling ("causal_downsampling"), and the convolution module's normalisation
    att_context_style: str | None = None
    lookaheads: tuple[int, ...] | None = None
    conv_context: str | None = None
    causal_downsampling: bool | None = None
    conv_norm: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture field(s): {', '.join(unknown)}")
        values = dict(data)
        for name in _TUPLE_FIELDS:
            if values.get(name) is not None:
                values[name] = tuple(int(v) for v in values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in _TUPLE_FIELDS:
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    def differences(self, actual: "Architecture", ignore: tuple[str, ...] = ()) -> list[str]:
        """Fields where `actual` differs from this (expected) architecture, as 'name X (expected Y)'."""
        found = []
        for f in fields(self):
            expected = getattr(self, f.name)
            if expected is None or f.name in ignore:
                continue
            got = getattr(actual, f.name)
            if got != expected:
                found.append(f"{f.name} {_show(got)} (expected {_show(expected)})")
        return found

    def missing(self) -> list[str]:
        """The fields a model config cannot be written without (the streaming ones only for a streaming shape)."""
        optional = () if self.att_context_style else STREAMING_FIELDS
        return [f.name for f in fields(self) if getattr(self, f.name) is None and f.name not in optional]

    @property
    def is_tdt(self) -> bool:
        return bool(self.durations)

    @property
    def is_cache_aware(self) -> bool:
        """Trained for cache-aware streaming: attention limited to chunks (with look-ahead), so the encoder can run
        chunk by chunk with caches and give what it gives on the whole input."""
        return self.att_context_style == CACHE_AWARE_STYLE

    @property
    def has_ctc_head(self) -> bool:
        """CTC models and hybrids have one; NeMo builds none for a transducer, even from an aux_ctc config section."""
        return self.model_class in CTC_HEAD_CLASSES


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class StreamingShape:
    """How a cache-aware encoder is exported to run chunk by chunk, read from NeMo's streaming config for the chosen
    look-ahead: what sherpa-onnx's online recognizer needs to feed it (window_size, chunk_shift, the caches' shapes)
    and what a reference streaming run needs to cut the same chunks."""

    lookahead: int  # encoder frames of right context
    left_context: int  # encoder frames the attention cache keeps
    chunk_frames: int  # feature frames one step advances by (sherpa-onnx's chunk_shift)
    pre_encode_cache_frames: int  # feature frames before the chunk that the subsampling needs again
    drop_extra_pre_encoded: int  # encoder frames the graph drops, computed from those cached feature frames
    output_frames: int  # encoder frames one step emits
    conv_cache: int  # frames of left context each causal convolution keeps
    layers: int
    d_model: int

    @property
    def window_frames(self) -> int:
        """Feature frames one step reads (sherpa-onnx's window_size): the cached ones and the new chunk."""
        return self.chunk_frames + self.pre_encode_cache_frames

    def latency_ms(self, hop_ms: float, subsampling: int) -> dict[str, float]:
        """The algorithmic latency of a step: the look-ahead, and the chunk (a frame at its start waits for the whole
        chunk to arrive), before any compute."""
        frame = hop_ms * subsampling
        return {"lookahead_ms": round(self.lookahead * frame, 3), "chunk_ms": round(self.chunk_frames * hop_ms, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StreamingShape":
        return cls(**{f.name: int(data[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class ModelFacts:
    """Everything the export, the sherpa-onnx metadata and the validation need to know about a checkpoint."""

    architecture: Architecture
    decoder_kind: str  # "tdt" or "rnnt": how sherpa-onnx must decode the joiner's output; "ctc": no transducer
    normalize: str  # the preprocessor's feature normalisation; sherpa-onnx implements "per_feature" and ""
    sample_rate: int
    max_symbols_per_frame: int | None  # NeMo's greedy limit; sherpa-onnx stops at 5
    frontend: dict[str, Any] = field(default_factory=dict)  # NeMo preprocessor settings, for reports
    parameters: int | None = None
    streaming: StreamingShape | None = None  # how a cache-aware encoder was exported to stream (convert sets it)

    @property
    def model_class(self) -> str:
        return self.architecture.model_class or ""

    @property
    def vocab_size(self) -> int:
        """Number of tokens WITHOUT the blank, as sherpa-onnx's metadata expects."""
        return int(self.architecture.vocab_size or 0)

    @property
    def durations(self) -> tuple[int, ...]:
        return tuple(self.architecture.durations or ())

    @property
    def joiner_width(self) -> int:
        """Width of the joiner's logits: tokens + blank (+ one per TDT duration)."""
        return self.vocab_size + 1 + len(self.durations)

    @property
    def is_tdt(self) -> bool:
        return self.decoder_kind == "tdt"

    @property
    def hop_ms(self) -> float:
        """Milliseconds between feature frames (10 for every NeMo ASR front end so far)."""
        return 1000.0 * float(self.frontend.get("window_stride") or 0.01)

    @property
    def encoder_frame_seconds(self) -> float:
        """Seconds of audio per encoder output frame (0.08 for FastConformer: 10 ms hop x 8)."""
        return self.hop_ms / 1000.0 * int(self.architecture.subsampling_factor or 8)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_class": self.model_class,
            "decoder_kind": self.decoder_kind,
            "architecture": self.architecture.to_dict(),
            "normalize": self.normalize,
            "sample_rate": self.sample_rate,
            "max_symbols_per_frame": self.max_symbols_per_frame,
            "frontend": dict(self.frontend),
            "parameters": self.parameters,
            **({"streaming": asdict(self.streaming)} if self.streaming else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelFacts":
        return cls(
            architecture=Architecture.from_dict(data["architecture"]),
            decoder_kind=str(data["decoder_kind"]),
            normalize=str(data.get("normalize", "")),
            sample_rate=int(data.get("sample_rate", 16000)),
            max_symbols_per_frame=data.get("max_symbols_per_frame"),
            frontend=dict(data.get("frontend") or {}),
            parameters=data.get("parameters"),
            streaming=StreamingShape.from_dict(data["streaming"]) if data.get("streaming") else None,
        )
