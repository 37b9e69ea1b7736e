"""The cache-aware streaming families: NeMo's chunked-attention FastConformers exported with their caches, for
sherpa-onnx's online recognizer. One family per decoder branch: the RNNT transducer (encoder.onnx, decoder.onnx,
joiner.onnx; `OnlineRecognizer.from_transducer(..., model_type="nemo_transducer")`) and CTC (model.onnx;
`OnlineRecognizer.from_nemo_ctc`), the latter also for a streaming hybrid's CTC branch.

sherpa-onnx's contract (online-transducer-nemo-model.cc, online-nemo-ctc-model.cc, online-recognizer-*-impl.h):
- the encoder-holding graph takes features [N, C, T], their length (int64, always set to window_size), then
  cache_last_channel [N, dim1, dim2, dim3], cache_last_time [N, dim1, dim2, dim3] and cache_last_channel_len [N]
  (int64), and gives its output, a length (ignored) and the three next caches, in that order;
- metadata `window_size` (feature frames each step reads), `chunk_shift` (frames it advances), the six cache
  dimensions, `vocab_size` (without blank), `subsampling_factor`, `normalize_type`; the transducer also
  `pred_rnn_layers` and `pred_hidden`; the caches start as zeros;
- the first step reads frames [0, window_size): the first pre-encode-cache frames of a stream are real audio, not
  zeros as in NeMo's own streaming buffer, so the first output frames may differ (validate compares transcripts as a
  rate for that reason, and graph fidelity on NeMo's scheme);
- the transducer's online greedy search is RNNT only (it ignores TDT durations), up to 10 symbols per frame; a
  window is decoded only once the next one has begun to arrive, so the end of a stream needs trailing silence.

NeMo exports the cache-aware step itself (`export_cache_support`): forward_for_export transposes the caches to
batch-first and drops the outputs of the cached pre-encode frames, so the graph is NeMo's streaming step as its
CacheAwareStreamingAudioBuffer drives it with `pad_and_drop_preencoded`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo2sherpa.facts import ModelFacts, StreamingShape
from nemo2sherpa.families.base import ModelSpec, NemoOutput, Probe
from nemo2sherpa.families.common import (
    command_line,
    dims,
    flatten,
    hypothesis_ids,
    int_metadata,
    run_export_forward,
)
from nemo2sherpa.families.ctc import CtcFamily, GraphCtc, fold_ctc
from nemo2sherpa.families.online_recognizer import PIECE_SECONDS, OnlineSherpa, online_recognizer
from nemo2sherpa.families.streaming_step import (
    ONLINE_KEYS,
    SHAPE_KEYS,
    StreamingEncoder,
    initial_caches,
    shape_from_metadata,
    streaming_metadata,
    streaming_shape,
    tail_seconds,
)
from nemo2sherpa.families.transducer import MODEL_TYPE, GraphTransducer, TransducerFamily
from nemo2sherpa.graphs.rewriting import metadata_of
from nemo2sherpa.sherpa_front_end import SHERPA_ONNX_HANN_NYQUIST

ONLINE_MAX_SYMBOLS = 10  # online-transducer-greedy-search-nemo-decoder.cc
SHORT_CHUNK_FRAMES = 15  # a stream's last, shorter chunk, probed: no multiple of the subsampling factor


class GraphStreamingTransducer(GraphTransducer):
    """The online transducer's graphs: the encoder streamed with its caches, then RNNT greedy search over the
    frames as they come (greedy RNNT carries its state across chunks, so it is the same over the joined frames)."""

    def __init__(self, paths: Mapping[str, Path], spec: ModelSpec, provider: str = "cpu", threads: int = 1) -> None:
        super().__init__(paths["encoder"], paths["decoder"], paths["joiner"], vocab_size=spec.vocab_size,
                         pred_rnn_layers=spec.pred_rnn_layers, pred_hidden=spec.pred_hidden, provider=provider,
                         threads=threads)
        self.streaming = StreamingEncoder(self.encoder, shape_from_metadata(spec.metadata),
                                          int(spec.metadata.get("subsampling_factor", 8)))

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        return self.streaming.stream(features)

    def encode_like_runtime(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """As sherpa-onnx's online recognizer runs the encoder: its windows, from the stream's first frame."""
        return self.streaming.stream(features, like_runtime=True)


class GraphStreamingCtc(GraphCtc):
    """The online CTC graph streamed with its caches; greedy CTC over the joined log-probabilities."""

    def __init__(self, paths: Mapping[str, Path], spec: ModelSpec, provider: str = "cpu", threads: int = 1) -> None:
        super().__init__(paths["model"], spec.vocab_size, int(spec.metadata.get("subsampling_factor", 8)),
                         provider=provider, threads=threads)
        self.streaming = StreamingEncoder(self.session, shape_from_metadata(spec.metadata), self.subsampling_factor,
                                          time_last=False)

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """Log-probabilities [V+1, T'] as GraphCtc gives them, streamed."""
        return self.streaming.stream(features)

    def encode_like_runtime(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        return self.streaming.stream(features, like_runtime=True)


class _CacheAware:
    """What both streaming families add to their offline counterparts (a mixin ahead of each in the class order, so
    that super() is the offline family): the export with caches, the step's metadata and contract, NeMo's own
    streaming as the reference, and sherpa-onnx's online recognizer."""

    online = True
    runtime_front_end = SHERPA_ONNX_HANN_NYQUIST  # its online NeMo recognizers set both
    front_end_option = None  # they set the mel filters' upper edge themselves, whatever the user gives

    def refusal(self, facts: ModelFacts) -> str | None:
        if not facts.architecture.is_cache_aware:
            return f"{facts.model_class} is not a cache-aware streaming model (its attention is not chunked)"
        return super().refusal(facts)

    def prepare_for_export(self, model: Any) -> None:
        """The offline family's preparation (a hybrid's CTC branch selected), then NeMo's export of the cache-aware
        step: caches as inputs and outputs, batch first."""
        super().prepare_for_export(model)
        model.encoder.export_cache_support = True

    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        assert facts.streaming is not None, "convert selects the look-ahead before the metadata is written"
        return {**super().metadata(facts, url, comment), **streaming_metadata(facts.streaming)}

    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result) -> ModelSpec | None:
        """The offline family's contract, then the online metadata against the cache inputs."""
        spec = super().check_contract(graphs, pieces, manifest, result)
        role = self.encoder_role.name
        shape = self._check_streaming_contract(graphs[role], role, result)
        if spec is not None and spec.is_tdt:
            result.fail("the url marks a TDT model, but sherpa-onnx's online transducer decodes RNNT only")
        return spec if shape is not None and not result.failed else None

    def encoder_feeds(self, graph: Any, mels: int) -> dict[str, np.ndarray]:
        """The probe features as one step, from a stream's first (empty) caches."""
        feeds = super().encoder_feeds(graph, mels)
        shape = shape_from_metadata(metadata_of(graph))
        names = [i.name for i in graph.graph.input]
        return {**feeds, **dict(zip(names[2:], initial_caches(shape)))}

    def _encoder_probes(self, module: Any, encoder: Any, role: str, generator: Any) -> list[Probe]:
        """Steps of the shape sherpa-onnx feeds (a full window) from empty and from filled caches, and NeMo's shorter
        last chunk, through the module as its export runs it."""
        import torch

        shape = streaming_shape(encoder)
        mels = int(encoder._feat_in)
        probes = []
        short = shape.pre_encode_cache_frames + SHORT_CHUNK_FRAMES
        for label, frames, filled in (("first window", shape.window_frames, 0),
                                      ("window, filled caches", shape.window_frames, shape.left_context),
                                      ("short last chunk", short, 5)):
            features = torch.randn(1, mels, frames, generator=generator)
            length = torch.tensor([frames], dtype=torch.int64)
            channel = torch.randn(1, shape.layers, shape.left_context, shape.d_model, generator=generator)
            channel[:, :, filled:] = 0
            conv = torch.randn(1, shape.layers, shape.d_model, shape.conv_cache, generator=generator) * bool(filled)
            cache_len = torch.tensor([filled], dtype=torch.int64)
            outputs = run_export_forward(module, features, length, channel, conv, cache_len)
            probes.append(Probe(role, label, flatten((features, length, channel, conv, cache_len)), flatten(outputs)))
        return probes

    def _check_streaming_contract(self, graph: Any, role: str, result) -> StreamingShape | None:
        """The online metadata and the cache inputs' shapes against each other."""
        metadata = metadata_of(graph)
        for key in ONLINE_KEYS:
            if key not in metadata:
                result.fail(f"{role} metadata lacks {key!r}, which sherpa-onnx's online recognizer requires")
        values = {key: int_metadata(metadata, key, result) for key in ONLINE_KEYS if key in metadata}
        inputs = [dims(i) for i in graph.graph.input]
        outputs = len(graph.graph.output)
        if len(inputs) != 5 or outputs != 5:
            result.fail(f"{role}.onnx has {len(inputs)} inputs and {outputs} outputs; sherpa-onnx's online recognizer "
                        "feeds features, length and three caches and reads the output, a length and three caches")
            return None
        for index, kind in ((2, "channel"), (3, "time")):
            stated = [values.get(f"cache_last_{kind}_dim{i}") for i in (1, 2, 3)]
            actual = inputs[index][1:]
            if any(isinstance(a, int) and s is not None and a != s for a, s in zip(actual, stated)):
                result.fail(f"cache_last_{kind} is {actual} in the graph but {stated} in the metadata")
        window, shift = values.get("window_size"), values.get("chunk_shift")
        if window is not None and shift is not None and not 0 < shift <= window:
            result.fail(f"chunk_shift {shift} must lie in (0, window_size {window}]")
        result.details["streaming"] = {key: metadata.get(key) for key in (*ONLINE_KEYS, *SHAPE_KEYS.values())}
        try:
            return shape_from_metadata(metadata)
        except (KeyError, ValueError):
            result.fail("the metadata does not state the streaming step's shape (lookahead, output_frames, ...): "
                        "not a nemo2sherpa export, so its graphs cannot be streamed as NeMo streams")
            return None

    def nemo_reference(self, model: Any, features: Any, feature_length: Any) -> NemoOutput:
        """NeMo's own streaming: its CacheAwareStreamingAudioBuffer (pad_and_drop_preencoded, as the export drops
        the cached frames' outputs) cuts the features, its encoder's cache_aware_stream_step runs each chunk, and
        its decoding continues from the previous chunk's hypothesis: what conformer_stream_step does, with the
        encoder output kept for comparison."""
        import torch
        from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

        encoder = model.encoder
        buffer = CacheAwareStreamingAudioBuffer(model, pad_and_drop_preencoded=True)
        buffer.append_processed_signal(features[:, :, : int(feature_length[0])])
        caches = encoder.get_initial_cache_state(batch_size=1)
        outputs, state = [], None
        for chunk, lengths in buffer:
            encoded, encoded_len, *caches = encoder.cache_aware_stream_step(
                processed_signal=chunk, processed_signal_length=lengths, cache_last_channel=caches[0],
                cache_last_time=caches[1], cache_last_channel_len=caches[2],
                keep_all_outputs=buffer.is_buffer_empty())
            output, state = self._nemo_step(model, encoded, encoded_len, state)
            outputs.append(output)
        joined = torch.cat(outputs, dim=-1) if outputs else torch.zeros(1, 1, 0)
        return NemoOutput(output=joined[0].numpy().copy(), tokens=self._nemo_tokens(model, state))

    def _nemo_step(self, model: Any, encoded: Any, encoded_len: Any, state: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def _nemo_tokens(self, model: Any, state: Any) -> list[int]:
        raise NotImplementedError

    def runtime_max_symbols(self, spec: ModelSpec) -> int | None:
        return ONLINE_MAX_SYMBOLS

    def _online_usage(self, constructor: str, arguments: Sequence[tuple[str, str]], flags: Sequence[str],
                      metadata: Mapping[str, str] | None, sample_rate: int, provider_note: str) -> str:
        """The card's Python block (audio fed in 100 ms pieces, as a microphone delivers it, with trailing silence so
        the last window is decoded) and `sherpa-onnx` online command line."""
        tail = round(tail_seconds(shape_from_metadata(metadata or {})), 2)
        lines = "\n".join(f"    {name}={value}," for name, value in arguments)
        command = command_line("sherpa-onnx", flags)
        return f"""### Python (sherpa-onnx, streaming)

```python
import numpy as np
import sherpa_onnx
import soundfile as sf

recognizer = sherpa_onnx.OnlineRecognizer.{constructor}(
{lines}
    num_threads=2,
    provider="cpu",  # {provider_note}
)
audio, sample_rate = sf.read("speech.wav", dtype="float32")  # {sample_rate} Hz mono expected
stream = recognizer.create_stream()
piece = int({PIECE_SECONDS} * sample_rate)  # feed it as a microphone would, 100 ms at a time
for start in range(0, len(audio), piece):
    stream.accept_waveform(sample_rate, audio[start:start + piece])
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    print(recognizer.get_result(stream), end="\\r")
# a window is decoded once the next has begun: {tail} s of silence flushes the last one
stream.accept_waveform(sample_rate, np.zeros(int({tail} * sample_rate), dtype=np.float32))
stream.input_finished()
while recognizer.is_ready(stream):
    recognizer.decode_stream(stream)
print(recognizer.get_result(stream))
```

### Command line (`sherpa-onnx`, streaming)

```bash
{command}
```
"""


class StreamingTransducerFamily(_CacheAware, TransducerFamily):
    name = "streaming-transducer"
    title = "cache-aware streaming transducer (RNNT)"
    sherpa_model_type = MODEL_TYPE

    def refusal(self, facts: ModelFacts) -> str | None:
        reason = super().refusal(facts)
        if reason is None and facts.is_tdt:
            return ("sherpa-onnx's online NeMo transducer decodes RNNT only (it ignores TDT durations); convert this "
                    "TDT model with --decoder transducer for offline use")
        return reason

    def probes(self, model: Any, frames: Sequence[int], generator: Any) -> list[Probe]:
        offline = super().probes(model, (), generator)  # the decoder's and joiner's (no encoder lengths asked)
        return [*self._encoder_probes(model.encoder, model.encoder, "encoder", generator),
                *[p for p in offline if p.graph != "encoder"]]

    def graph_decoder(self, paths: Mapping[str, Path], spec: ModelSpec, threads: int = 1,
                      provider: str = "cpu") -> GraphStreamingTransducer:
        return GraphStreamingTransducer(paths, spec, provider=provider, threads=threads)

    def _nemo_step(self, model: Any, encoded: Any, encoded_len: Any, state: Any) -> tuple[Any, Any]:
        hypotheses = model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=encoded_len, return_hypotheses=True, partial_hypotheses=state)
        return encoded[:, :, : int(encoded_len[0])], hypotheses

    def _nemo_tokens(self, model: Any, state: Any) -> list[int]:
        return hypothesis_ids(state) if state else []

    def runtime_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                           sample_rate: int, feature_dim: int, with_front_end_option: bool = False) -> OnlineSherpa:
        import sherpa_onnx

        recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
            encoder=str(paths["encoder"]), decoder=str(paths["decoder"]), joiner=str(paths["joiner"]),
            tokens=str(tokens), model_type=MODEL_TYPE, provider=provider, num_threads=threads,
            sample_rate=sample_rate, feature_dim=feature_dim, decoding_method="greedy_search")
        return online_recognizer(recognizer, paths["encoder"])

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        arch = facts.architecture
        return [("decoder", f"RNNT; prediction network {arch.pred_rnn_layers} x LSTM {arch.pred_hidden}"),
                *_streaming_rows(facts, metadata),
                ("sherpa-onnx", f"`OnlineRecognizer.from_transducer`, `model_type=\"{MODEL_TYPE}\"`")]

    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str, metadata: Mapping[str, str] | None = None, variants: Sequence[str] = ()) -> str:
        encoder, decoder, joiner = files["encoder"], files["decoder"], files["joiner"]
        return self._online_usage(
            "from_transducer",
            [("encoder", f'"{encoder}"'), ("decoder", f'"{decoder}"'), ("joiner", f'"{joiner}"'),
             ("tokens", f'"{tokens}"'), ("model_type", f'"{MODEL_TYPE}"'), ("feature_dim", str(feature_dim))],
            [f"--encoder={encoder}", f"--decoder={decoder}", f"--joiner={joiner}", f"--tokens={tokens}",
             f"--model-type={MODEL_TYPE}"], metadata, sample_rate, provider_note)


class StreamingCtcFamily(_CacheAware, CtcFamily):
    name = "streaming-ctc"
    title = "cache-aware streaming CTC"
    sherpa_model_type = "nemo_ctc"
    graph_inputs = 5

    def probes(self, model: Any, frames: Sequence[int], generator: Any) -> list[Probe]:
        return self._encoder_probes(model, model.encoder, "model", generator)

    def graph_decoder(self, paths: Mapping[str, Path], spec: ModelSpec, threads: int = 1,
                      provider: str = "cpu") -> GraphStreamingCtc:
        return GraphStreamingCtc(paths, spec, provider=provider, threads=threads)

    def _nemo_step(self, model: Any, encoded: Any, encoded_len: Any, state: Any) -> tuple[Any, Any]:
        head = getattr(model, "ctc_decoder", None) or model.decoder
        log_probs = head(encoder_output=encoded)[:, : int(encoded_len[0])]  # [1, t, V+1]
        ids = log_probs.argmax(dim=-1)[0].tolist()
        return log_probs.transpose(1, 2), [*(state or []), *ids]

    def _nemo_tokens(self, model: Any, state: Any) -> list[int]:
        decoding = getattr(model, "ctc_decoding", None) or model.decoding
        return fold_ctc(state or [], int(decoding.blank_id)).tokens

    def runtime_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                           sample_rate: int, feature_dim: int, with_front_end_option: bool = False) -> OnlineSherpa:
        import sherpa_onnx

        recognizer = sherpa_onnx.OnlineRecognizer.from_nemo_ctc(
            model=str(paths["model"]), tokens=str(tokens), num_threads=threads, provider=provider,
            sample_rate=sample_rate, feature_dim=feature_dim, decoding_method="greedy_search")
        return online_recognizer(recognizer, paths["model"])

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        head = "CTC head of a hybrid model" if "Hybrid" in facts.model_class else "CTC"
        return [("decoder", f"{head}; greedy decoding"), *_streaming_rows(facts, metadata),
                ("sherpa-onnx", "`OnlineRecognizer.from_nemo_ctc`")]

    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str, metadata: Mapping[str, str] | None = None, variants: Sequence[str] = ()) -> str:
        model = files["model"]
        return self._online_usage(
            "from_nemo_ctc", [("model", f'"{model}"'), ("tokens", f'"{tokens}"'), ("feature_dim", str(feature_dim))],
            [f"--nemo-ctc-model={model}", f"--tokens={tokens}"], metadata, sample_rate, provider_note)


def _streaming_rows(facts: ModelFacts, metadata: Mapping[str, str]) -> list[tuple[str, str]]:
    shape = facts.streaming or shape_from_metadata(metadata)
    latency = shape.latency_ms(facts.hop_ms, int(facts.architecture.subsampling_factor or 8))
    trained = ", ".join(str(v) for v in facts.architecture.lookaheads or ())
    return [("streaming", f"cache-aware; look-ahead {shape.lookahead} encoder frames ({latency['lookahead_ms']:g} ms; "
                          f"trained with {trained}), chunks of {latency['chunk_ms']:g} ms, left context "
                          f"{shape.left_context} frames")]


STREAMING_TRANSDUCER = StreamingTransducerFamily()
STREAMING_CTC = StreamingCtcFamily()
