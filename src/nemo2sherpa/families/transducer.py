"""The offline transducer family (TDT and RNNT): encoder.onnx, decoder.onnx, joiner.onnx, run by sherpa-onnx's
`OfflineRecognizer.from_transducer(..., model_type="nemo_transducer")`.

sherpa-onnx's contract, from its offline NeMo transducer sources (docs/sherpa-onnx-contract.md): the encoder carries
the metadata (`vocab_size` without blank, `subsampling_factor`, `pred_rnn_layers`, `pred_hidden` required); a model is
decoded as TDT exactly when the metadata url contains "tdt", and then the argmax index of the duration logits is the
frame skip, so durations must be 0..n-1; the joiner gives vocab + blank (+ durations) raw logits; tokens.txt ends with
<blk>; greedy search stops after 5 symbols on one frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import (
    Blame,
    Family,
    Hypothesis,
    ModelSpec,
    NemoOutput,
    Probe,
    Role,
)
from nemo2sherpa.families.common import (
    common_metadata,
    dims,
    hypothesis_ids,
    int_metadata,
    make_session,
    offline_usage,
    run_export_forward,
)
from nemo2sherpa.sherpa_front_end import NYQUIST_MEL

MODEL_TYPE = "nemo_transducer"
SHERPA_RS_URL = "https://github.com/thewh1teagle/sherpa-rs"
REQUIRED_METADATA = ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden")
TDT_MARK = "tdt"
HYBRID_NOTE = "only the transducer branch is exported"
JOINT_EXAMPLE_FRAMES = 3


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


def expected_joiner_width(vocab_size: int, tdt: bool, num_durations: int) -> int:
    return vocab_size + 1 + (num_durations if tdt else 0)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Over the whole vector, in float64, as NeMo's CPU joint applies it (tokens and durations together)."""
    shifted = logits.astype(np.float64) - np.max(logits)
    return shifted - np.log(np.sum(np.exp(shifted)))


class GraphTransducer:
    """encoder/decoder/joiner sessions plus the few facts greedy decoding needs; follows NeMo's greedy rules (up
    to `max_symbols` tokens per frame; TDT: the duration head's argmax is the frame skip, a blank never skips less
    than one frame)."""

    def __init__(self, encoder: Path, decoder: Path, joiner: Path, vocab_size: int, durations: Sequence[int] = (),
                 pred_rnn_layers: int = 1, pred_hidden: int = 640, provider: str = "cpu", threads: int = 1) -> None:
        self._set_up(encoder, vocab_size, durations, pred_rnn_layers, pred_hidden, provider, threads)
        self.decoder = make_session(decoder, provider, threads)
        self.joiner = make_session(joiner, provider, threads)
        self._decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        self._joiner_inputs = [i.name for i in self.joiner.get_inputs()]

    def _set_up(self, encoder: Path, vocab_size: int, durations: Sequence[int], pred_rnn_layers: int,
                pred_hidden: int, provider: str, threads: int) -> None:
        """The encoder session and the facts greedy decoding needs, whichever graphs hold the prediction network
        and the joint."""
        self.encoder = make_session(encoder, provider, threads)
        self._encoder_inputs = [i.name for i in self.encoder.get_inputs()]
        self.vocab_size = int(vocab_size)
        self.blank = self.vocab_size
        self.durations = list(durations)
        self.state_shape = (int(pred_rnn_layers), 1, int(pred_hidden))

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """features [mels, T] -> encoder output [D, T'] and its valid length."""
        batch = features[np.newaxis].astype(np.float32)
        length = np.array([features.shape[1]], dtype=np.int64)
        out, out_len = self.encoder.run(None, {self._encoder_inputs[0]: batch, self._encoder_inputs[1]: length})
        return out[0], int(np.asarray(out_len).reshape(-1)[0])

    def step(self, token: int, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {
            self._decoder_inputs[0]: np.array([[token]], dtype=np.int32),
            self._decoder_inputs[1]: np.array([1], dtype=np.int32),
        }
        for name, state in zip(self._decoder_inputs[2:], states):
            feed[name] = state
        outputs = self.decoder.run(None, feed)
        return outputs[0], list(outputs[2:])

    def joint_logits(self, frame: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        feed = {self._joiner_inputs[0]: frame[np.newaxis, :, np.newaxis], self._joiner_inputs[1]: decoder_out}
        return self.joiner.run(None, feed)[0].reshape(-1)

    def greedy(self, output: np.ndarray, length: int, max_symbols: int | None = 10) -> Hypothesis:
        states = [np.zeros(self.state_shape, dtype=np.float32) for _ in range(2)]
        decoder_out, next_states = self.step(self.blank, states)
        tokens: list[int] = []
        frames: list[int] = []
        t = 0
        emitted_here = 0
        limit = max_symbols if max_symbols is not None else 1 << 30
        while t < length:
            logits = self.joint_logits(output[:, t], decoder_out)
            token = int(np.argmax(logits[: self.vocab_size + 1]))
            if self.durations:
                skip = self.durations[int(np.argmax(logits[self.vocab_size + 1:]))]
            else:
                skip = 1 if token == self.blank else 0
            if token != self.blank:
                tokens.append(token)
                frames.append(t)
                emitted_here += 1
                states = next_states
                decoder_out, next_states = self.step(token, states)
            if token == self.blank and skip == 0:
                skip = 1
            if skip == 0 and emitted_here >= limit:
                skip = 1
            if skip:
                t += skip
                emitted_here = 0
        return Hypothesis(tokens=tokens, frames=frames)

    def decode_features(self, features: np.ndarray, max_symbols: int | None = 10) -> Hypothesis:
        encoded, length = self.encode(features)
        return self.greedy(encoded, length, max_symbols)


def _recognizer_from_config(paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                            sample_rate: int, feature_dim: int, high_freq: float):
    """The recognizer from_transducer() makes, with the mel filters' upper edge set: from_transducer() has no argument
    for it, so its config is built here as from_transducer builds it, and the recognizer from that (the card shows
    users the same)."""
    import sherpa_onnx
    from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer as NativeRecognizer

    config = sherpa_onnx.OfflineRecognizerConfig(
        feat_config=sherpa_onnx.FeatureExtractorConfig(sampling_rate=sample_rate, feature_dim=feature_dim,
                                                       high_freq=high_freq),
        model_config=sherpa_onnx.OfflineModelConfig(
            transducer=sherpa_onnx.OfflineTransducerModelConfig(
                encoder_filename=str(paths["encoder"]), decoder_filename=str(paths["decoder"]),
                joiner_filename=str(paths["joiner"])),
            tokens=str(tokens), num_threads=threads, provider=provider, model_type=MODEL_TYPE),
        decoding_method="greedy_search")
    recognizer = sherpa_onnx.OfflineRecognizer.__new__(sherpa_onnx.OfflineRecognizer)
    recognizer.recognizer, recognizer.config = NativeRecognizer(config), config
    return recognizer


class TransducerFamily(Family):
    name = "transducer"
    #: the graphs that hold the prediction network and the joint, as blame names them (one fused graph may hold both)
    prediction_graph = "decoder"
    joint_graph = "joiner"
    title = "offline transducer (TDT/RNNT)"
    roles = (Role("encoder", holds_encoder=True), Role("decoder"), Role("joiner"))
    sherpa_model_type = MODEL_TYPE
    front_end_option = NYQUIST_MEL

    def refusal(self, facts: ModelFacts) -> str | None:
        if facts.decoder_kind not in ("tdt", "rnnt"):
            return f"{facts.model_class} has no transducer decoder"
        return None

    # -------------------------------------------------------------------------------------------------- convert

    def export_modules(self, model: Any) -> dict[str, Any]:
        return {"encoder": model.encoder, "decoder": model.decoder, "joiner": model.joint}

    def trace_example(self, role: str, module: Any) -> tuple | None:
        """The joint is traced on a few encoder frames instead of NeMo's 8192.

        NeMo's example makes the joint compute the logits of the whole vocabulary for 8192 frames, twice (a forward
        for the output example, one for the trace): on the 0.6B-v3 (8198 outputs) a 2.9 s export and 0.7 GB of peak
        memory, for a graph that sherpa-onnx runs one frame at a time. The joint has no length-dependent branch, the
        frame axis stays dynamic, and the self-check runs the written graph on one frame. Not 1: a dimension of size
        1 can be specialised by the tracer."""
        if role != "joiner":
            return None
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(0)
            example = module.input_example(max_batch=1, max_dim=JOINT_EXAMPLE_FRAMES)
        return tuple(example)

    def probes(self, model: Any, frames: Sequence[int], generator: Any) -> list[Probe]:
        import torch

        from nemo2sherpa.families.common import encoder_probes, flatten

        probes = encoder_probes(model.encoder, "encoder", frames, generator)
        decoder, joint = model.decoder, model.joint
        layers, hidden = int(decoder.pred_rnn_layers), int(decoder.pred_hidden)
        targets = torch.tensor([[min(3, int(decoder.vocab_size) - 1)]], dtype=torch.int32)
        target_length = torch.tensor([1], dtype=torch.int32)
        states = (torch.randn(layers, 1, hidden, generator=generator),
                  torch.randn(layers, 1, hidden, generator=generator))
        outputs = run_export_forward(decoder, targets, target_length, states)
        probes.append(Probe("decoder", "one step", flatten((targets, target_length, states)), flatten(outputs)))
        encoder_out = torch.randn(1, int(joint.encoder_hidden), 1, generator=generator)
        decoder_out = torch.randn(1, int(joint.pred_hidden), 1, generator=generator)
        outputs = run_export_forward(joint, encoder_out, decoder_out)
        probes.append(Probe("joiner", "one frame", flatten((encoder_out, decoder_out)), flatten(outputs)))
        return probes

    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        if facts.architecture.has_ctc_head:
            comment = f"{comment}; {HYBRID_NOTE}"
        return {
            **common_metadata(facts, comment),
            "pred_rnn_layers": str(facts.architecture.pred_rnn_layers),
            "pred_hidden": str(facts.architecture.pred_hidden),
            "url": sherpa_url(url, facts.is_tdt),
        }

    # ------------------------------------------------------------------------------------------------- validate

    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result) -> ModelSpec | None:
        metadata = {p.key: p.value for p in graphs["encoder"].metadata_props}
        for key in REQUIRED_METADATA:
            if key not in metadata:
                result.fail(f"encoder metadata lacks {key!r}, which sherpa-onnx requires")
        vocab_size = int_metadata(metadata, "vocab_size", result)
        layers = int_metadata(metadata, "pred_rnn_layers", result)
        hidden = int_metadata(metadata, "pred_hidden", result)
        url = metadata.get("url", "")
        is_tdt = is_tdt_url(url)

        encoder_out = dims(graphs["encoder"].graph.output[0])
        joiner_inputs = [dims(i) for i in graphs["joiner"].graph.input]
        joiner_out = dims(graphs["joiner"].graph.output[0])
        width = joiner_out[-1] if joiner_out and isinstance(joiner_out[-1], int) else None
        if len(joiner_inputs) == 2:
            d_enc, d_dec = joiner_inputs[0][1], joiner_inputs[1][1]
            if isinstance(encoder_out[1], int) and isinstance(d_enc, int) and d_enc != encoder_out[1]:
                result.fail(f"the joiner takes {d_enc}-wide encoder frames but the encoder gives {encoder_out[1]}: "
                            "joiner and encoder come from different models")
            if hidden is not None and isinstance(d_dec, int) and d_dec != hidden:
                result.fail(f"the joiner takes {d_dec}-wide decoder outputs but pred_hidden is {hidden}")
        for state in [dims(i) for i in graphs["decoder"].graph.input[2:]]:
            if len(state) == 3 and layers is not None and hidden is not None:
                if isinstance(state[0], int) and state[0] != layers or isinstance(state[2], int) and state[2] != hidden:
                    result.fail(f"decoder state shape {state} does not match pred_rnn_layers={layers}, "
                                f"pred_hidden={hidden}")
                    break

        durations: tuple[int, ...] = ()
        facts = manifest.model if manifest else None
        if width is not None and vocab_size is not None:
            if is_tdt:
                count = width - vocab_size - 1
                if count < 1:
                    result.fail(f"url {url!r} marks a TDT model, but the joiner gives {width} logits for "
                                f"{vocab_size} tokens + blank: no duration outputs")
                durations = tuple(range(max(count, 0)))
            elif width != vocab_size + 1:
                result.fail(f"the joiner gives {width} logits but an RNNT model with vocab_size {vocab_size} needs "
                            f"{vocab_size + 1}" + ("; if this is a TDT model its url must contain 'tdt'"
                                                  if width > vocab_size + 1 else ""))
        if facts is not None:
            if facts.is_tdt != is_tdt:
                result.fail(f"the manifest says {facts.decoder_kind.upper()} but the url {url!r} makes "
                            f"sherpa-onnx decode it as {'TDT' if is_tdt else 'RNNT'}")
            expected = expected_joiner_width(facts.vocab_size, facts.is_tdt, len(facts.durations))
            if width is not None and width != expected:
                result.fail(f"the joiner gives {width} logits; the manifest's model needs {expected}")
            durations = facts.durations or durations
        result.details.update({"joiner_width": width, "tdt": is_tdt, "durations": list(durations)})
        if result.failed or vocab_size is None or layers is None or hidden is None:
            return None
        return ModelSpec(family=self.name, vocab_size=vocab_size, feat_dim=0, normalize_type="", metadata=metadata,
                         pieces=pieces, is_tdt=is_tdt, durations=durations, pred_rnn_layers=layers,
                         pred_hidden=hidden, max_symbols=facts.max_symbols_per_frame if facts else None)

    def graph_decoder(self, paths: Mapping[str, Path], spec: ModelSpec, threads: int = 1,
                      provider: str = "cpu") -> GraphTransducer:
        return GraphTransducer(paths["encoder"], paths["decoder"], paths["joiner"], vocab_size=spec.vocab_size,
                               durations=spec.durations, pred_rnn_layers=spec.pred_rnn_layers,
                               pred_hidden=spec.pred_hidden, provider=provider, threads=threads)

    @property
    def decodes_reference_output(self) -> bool:
        return True

    def nemo_output(self, model: Any, encoded: Any, encoded_length: Any) -> NemoOutput:
        hypotheses = model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=encoded_length, return_hypotheses=True)
        return NemoOutput(output=encoded[0, :, : int(encoded_length[0])].numpy().copy(),
                          tokens=hypothesis_ids(hypotheses))

    def blame(self, decoder: GraphTransducer, reference, nemo, tolerance: float) -> Blame | None:
        """Walk NeMo's token path with PyTorch and ONNX side by side; the first graph whose output drifts is
        blamed (a family whose one graph holds both the prediction network and the joint compares the joint's
        output only, and blames that graph)."""
        fused = self.prediction_graph == self.joint_graph
        states = [np.zeros(decoder.state_shape, dtype=np.float32) for _ in range(2)]
        torch_state = nemo.initial_state()
        path = [decoder.blank, *reference.tokens[:20]]
        for step, token in enumerate(path):
            onnx_out, states = decoder.step(token, states)
            torch_out, torch_state = nemo.decoder_step(token, torch_state)
            diff = 0.0 if fused else float(np.max(np.abs(onnx_out.reshape(-1) - torch_out.reshape(-1))))
            if diff > tolerance:
                return Blame(self.prediction_graph, f"prediction network output differs by {diff:.3g} after token "
                                                    f"{token} (step {step})")
            frame = reference.encoded[:, min(step, reference.encoded.shape[1] - 1)]
            onnx_logits = decoder.joint_logits(frame, onnx_out)
            torch_logits = nemo.joint(frame, torch_out.reshape(-1))
            if onnx_logits.shape != torch_logits.shape:
                return Blame(self.joint_graph, f"{self.joint_graph} gives {onnx_logits.shape[0]} logits, NeMo's "
                                               f"joint {torch_logits.shape[0]}")
            # NeMo's joint log-softmaxes its output on CPU (RNNTJoint with log_softmax None), the exported joiner
            # gives raw logits as sherpa-onnx wants them: compared after one log-softmax each (idempotent)
            onnx_logits, torch_logits = log_softmax(onnx_logits), log_softmax(torch_logits)
            diff = float(np.max(np.abs(onnx_logits - torch_logits)))
            if diff > tolerance * max(1.0, float(np.max(np.abs(torch_logits)))):
                return Blame(self.joint_graph, f"log-probabilities differ by {diff:.3g} after token {token} "
                                               f"(step {step})")
        after = self.joint_graph if fused else f"{self.prediction_graph}/{self.joint_graph}"
        return Blame(after, "outputs agree within tolerance on NeMo's path; the difference is a near-tie")

    def runtime_max_symbols(self, spec: ModelSpec) -> int | None:
        """sherpa-onnx's offline NeMo greedy search allows 5 tokens per frame for TDT models (10 for RNNT, as NeMo's
        default): offline-transducer-greedy-search-nemo-decoder.cc."""
        return 5 if spec.is_tdt else None

    def runtime_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                           sample_rate: int, feature_dim: int, with_front_end_option: bool = False):
        """model_type must be given: the default selects icefall's transducer, and an empty one makes sherpa-onnx
        open the encoder once more just to read its metadata."""
        import sherpa_onnx

        if with_front_end_option:
            return _recognizer_from_config(paths, tokens, provider=provider, threads=threads, sample_rate=sample_rate,
                                           feature_dim=feature_dim, high_freq=self.front_end_option.front_end.high_freq)
        return sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(paths["encoder"]), decoder=str(paths["decoder"]), joiner=str(paths["joiner"]),
            tokens=str(tokens), model_type=MODEL_TYPE, provider=provider, num_threads=threads,
            sample_rate=sample_rate, feature_dim=feature_dim, decoding_method="greedy_search")

    # -------------------------------------------------------------------------------------------------- publish

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        arch = facts.architecture
        decoder = (f"TDT, durations {list(facts.durations)}" if facts.is_tdt else "RNNT") + \
            f"; prediction network {arch.pred_rnn_layers} x LSTM {arch.pred_hidden}"
        return [("decoder", decoder),
                ("sherpa-onnx", f"`model_type=\"{MODEL_TYPE}\"`; the encoder's metadata url "
                                f"`{redact(metadata.get('url', ''))}` makes it decode as "
                                f"{'TDT' if facts.is_tdt else 'RNNT'}")]

    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str, metadata: Mapping[str, str] | None = None, variants: Sequence[str] = ()) -> str:
        encoder, decoder, joiner = files["encoder"], files["decoder"], files["joiner"]
        return offline_usage(
            "from_transducer",
            [("encoder", f'"{encoder}"', ""), ("decoder", f'"{decoder}"', ""), ("joiner", f'"{joiner}"', ""),
             ("tokens", f'"{tokens}"', ""),
             ("model_type", f'"{MODEL_TYPE}"', "required: the default selects another model family"),
             ("feature_dim", str(feature_dim), "")],
            [f"--encoder={encoder}", f"--decoder={decoder}", f"--joiner={joiner}", f"--tokens={tokens}",
             f"--model-type={MODEL_TYPE}"],
            sample_rate=sample_rate, provider_note=provider_note) + f"""
### NeMo's mel range (`{NYQUIST_MEL.flag}`)

sherpa-onnx computes this model's features itself, and its mel filters end 400 Hz below Nyquist where NeMo's end at
Nyquist: every filter sits a little off the ones the model was trained with. The command-line tools take
`{NYQUIST_MEL.flag}`; in Python `from_transducer` has no argument for it, so build the recognizer from its config
(what `nemo2sherpa validate` measures as the front-end option; its report says what the default costs this model):

```python
import sherpa_onnx
from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer as NativeRecognizer

config = sherpa_onnx.OfflineRecognizerConfig(
    feat_config=sherpa_onnx.FeatureExtractorConfig(
        sampling_rate={sample_rate}, feature_dim={feature_dim}, {NYQUIST_MEL.python}),
    model_config=sherpa_onnx.OfflineModelConfig(
        transducer=sherpa_onnx.OfflineTransducerModelConfig(
            encoder_filename="{encoder}", decoder_filename="{decoder}", joiner_filename="{joiner}"),
        tokens="{tokens}", num_threads=2, provider="cpu", model_type="{MODEL_TYPE}"),
    decoding_method="greedy_search")
recognizer = sherpa_onnx.OfflineRecognizer.__new__(sherpa_onnx.OfflineRecognizer)
recognizer.recognizer, recognizer.config = NativeRecognizer(config), config
```

The C API's feature config has no such field, so the bindings built on it (sherpa-rs below, Go, C#, Swift) keep the
default.

### Rust ([sherpa-rs]({SHERPA_RS_URL}))

With the `sherpa-rs` crate (0.6.8 or later: `TransducerConfig` has `model_type`; the `cuda` feature for `"cuda"`):

```rust
use sherpa_rs::read_audio_file;
use sherpa_rs::transducer::{{TransducerConfig, TransducerRecognizer}};

fn main() {{
    let (samples, sample_rate) = read_audio_file("speech.wav").unwrap(); // {sample_rate} Hz mono
    let config = TransducerConfig {{
        encoder: "{encoder}".into(),
        decoder: "{decoder}".into(),
        joiner: "{joiner}".into(),
        tokens: "{tokens}".into(),
        model_type: "{MODEL_TYPE}".into(),
        sample_rate: {sample_rate},
        feature_dim: {feature_dim},
        num_threads: 2,
        provider: Some("cpu".into()),
        ..Default::default()
    }};
    let mut recognizer = TransducerRecognizer::new(config).unwrap();
    println!("{{}}", recognizer.transcribe(sample_rate, &samples));
}}
```
"""


TRANSDUCER = TransducerFamily()
