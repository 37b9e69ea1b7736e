"""The offline CTC family: one graph, model.onnx (encoder and CTC head, log-probabilities out), run by sherpa-onnx's
`OfflineRecognizer.from_nemo_ctc`. It serves CTC-only checkpoints (EncDecCTCModelBPE: parakeet-ctc-0.6b, -1.1b) and
the CTC branch of hybrid TDT/RNNT-CTC checkpoints, which every public export script leaves out.

sherpa-onnx's contract (offline-nemo-enc-dec-ctc-model.cc, offline-recognizer-ctc-impl.h): metadata `vocab_size` and
`subsampling_factor` are required, `normalize_type` may be empty ("NA" reads as none), `is_giga_am` defaults to 0;
inputs are the features [N, C, T] and their lengths (int64), the first output is the log-probabilities [N, T', V+1];
the output lengths are the input lengths divided by subsampling_factor, computed by sherpa-onnx itself; the blank is
the id of `<blk>` in tokens.txt. It does not read `feat_dim`: the caller's feature_dim must match the model's mels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import Family, Hypothesis, ModelSpec, NemoOutput, Probe, Role
from nemo2sherpa.families.common import (
    common_metadata,
    dims,
    hypothesis_ids,
    int_metadata,
    make_session,
    offline_usage,
)
from nemo2sherpa.sherpa_front_end import SHERPA_ONNX_HANN_NYQUIST

REQUIRED_METADATA = ("vocab_size", "subsampling_factor")
HYBRID_NOTE = "only the CTC branch is exported"


def fold_ctc(ids: Sequence[int], blank: int) -> Hypothesis:
    """Per-frame ids to tokens: repeats merged, blanks dropped (NeMo's rule in its CTC decode_hypothesis)."""
    tokens: list[int] = []
    frames: list[int] = []
    previous = blank
    for frame, token in enumerate(ids):
        if token != blank and (token != previous or previous == blank):
            tokens.append(int(token))
            frames.append(frame)
        previous = token
    return Hypothesis(tokens=tokens, frames=frames)


def greedy_ctc(log_probs: np.ndarray, length: int, blank: int) -> Hypothesis:
    """Best class per frame, folded: NeMo's and sherpa-onnx's greedy CTC. log_probs: [T', V+1]."""
    return fold_ctc(np.argmax(log_probs[:length], axis=-1).tolist(), blank)


class GraphCtc:
    """model.onnx with onnxruntime: log-probabilities [T', V+1] (compared with NeMo's as [V+1, T']) and greedy ids."""

    def __init__(self, model: Path, vocab_size: int, subsampling_factor: int, provider: str = "cpu",
                 threads: int = 1) -> None:
        self.session = make_session(model, provider, threads)
        self.blank = int(vocab_size)
        self.subsampling_factor = int(subsampling_factor)
        self._inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        batch = features[np.newaxis].astype(np.float32)
        length = np.array([features.shape[1]], dtype=np.int64)
        outputs = self.session.run(None, {self._inputs[0]: batch, self._inputs[1]: length})
        log_probs = outputs[0][0]
        # the graph may give lengths as a second output; sherpa-onnx divides by the subsampling factor itself
        valid = int(np.asarray(outputs[1]).reshape(-1)[0]) if len(outputs) > 1 else \
            min(log_probs.shape[0], -(-features.shape[1] // self.subsampling_factor))
        return log_probs.T, valid

    def greedy(self, output: np.ndarray, length: int, max_symbols: int | None = None) -> Hypothesis:
        return greedy_ctc(output.T, length, self.blank)


class CtcFamily(Family):
    name = "ctc"
    title = "offline CTC"
    roles = (Role("model", holds_encoder=True),)
    sherpa_model_type = "nemo_ctc"
    graph_inputs = 2  # what sherpa-onnx feeds model.onnx
    runtime_front_end = SHERPA_ONNX_HANN_NYQUIST  # its offline NeMo CTC recognizer sets both, as NeMo has them

    def refusal(self, facts: ModelFacts) -> str | None:
        if not facts.architecture.has_ctc_head:
            return f"{facts.model_class} has no CTC head"
        return None

    # -------------------------------------------------------------------------------------------------- convert

    def prepare_for_export(self, model: Any) -> None:
        """A hybrid exports its CTC head only once NeMo's current decoder is the CTC one (its output_module)."""
        if hasattr(model, "ctc_decoder"):
            from nemo2sherpa.checkpoint.loading import quiet_nemo

            with quiet_nemo():
                model.change_decoding_strategy(decoder_type="ctc", verbose=False)

    def export_modules(self, model: Any) -> dict[str, Any]:
        return {"model": model}

    def probes(self, model: Any, frames: Sequence[int], generator: Any) -> list[Probe]:
        from nemo2sherpa.families.common import encoder_probes

        return encoder_probes(model, "model", frames, generator, mels=int(model.encoder._feat_in))

    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        if facts.architecture.model_class != "EncDecCTCModelBPE":  # a hybrid
            comment = f"{comment}; {HYBRID_NOTE}"
        return {**common_metadata(facts, comment), "url": url, "is_giga_am": "0"}

    # ------------------------------------------------------------------------------------------------- validate

    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result) -> ModelSpec | None:
        graph = graphs["model"]
        metadata = {p.key: p.value for p in graph.metadata_props}
        for key in REQUIRED_METADATA:
            if key not in metadata:
                result.fail(f"model metadata lacks {key!r}, which sherpa-onnx requires")
        vocab_size = int_metadata(metadata, "vocab_size", result)
        subsampling = int_metadata(metadata, "subsampling_factor", result)
        if len(graph.graph.input) != self.graph_inputs:
            result.fail(f"model.onnx takes {len(graph.graph.input)} inputs; sherpa-onnx feeds {self.graph_inputs} "
                        "(features and lengths, and a streaming model's three caches)")
        output = dims(graph.graph.output[0])
        width = output[-1] if len(output) == 3 and isinstance(output[-1], int) else None
        if width is not None and vocab_size is not None and width != vocab_size + 1:
            result.fail(f"the model gives {width} log-probabilities per frame; vocab_size {vocab_size} + blank needs "
                        f"{vocab_size + 1}")
        facts = manifest.model if manifest else None
        if facts is not None and vocab_size is not None and vocab_size != facts.vocab_size:
            result.fail(f"vocab_size {vocab_size} in the metadata, {facts.vocab_size} in the manifest")
        result.details.update({"output_width": width, "subsampling_factor": subsampling})
        if result.failed or vocab_size is None or subsampling is None:
            return None
        return ModelSpec(family=self.name, vocab_size=vocab_size, feat_dim=0, normalize_type="", metadata=metadata,
                         pieces=pieces)

    def graph_decoder(self, paths: Mapping[str, Path], spec: ModelSpec, threads: int = 1,
                      provider: str = "cpu") -> GraphCtc:
        return GraphCtc(paths["model"], spec.vocab_size, int(spec.metadata.get("subsampling_factor", 8)),
                        provider=provider, threads=threads)

    def nemo_output(self, model: Any, encoded: Any, encoded_length: Any) -> NemoOutput:
        """NeMo's CTC head on its encoder output, and NeMo's own greedy CTC decode of it (its hypothesis holds the
        per-frame argmax; folded here by NeMo's rule)."""
        head = getattr(model, "ctc_decoder", None) or model.decoder
        decoding = getattr(model, "ctc_decoding", None) or model.decoding
        log_probs = head(encoder_output=encoded)
        length = int(encoded_length[0])
        hypotheses = decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=encoded_length,
                                                             return_hypotheses=True)
        tokens = fold_ctc(hypothesis_ids(hypotheses)[:length], int(decoding.blank_id)).tokens
        return NemoOutput(output=log_probs[0, :length].numpy().T.copy(), tokens=tokens)

    def explain_transcript_difference(self, nemo: str, sherpa: str) -> str | None:
        """sherpa-onnx computes a NeMo CTC model's output length as input frames // subsampling_factor; NeMo's
        striding convolutions give ceil(frames / 8) (one more unless the count divides evenly), so sherpa-onnx never
        reads the last output frame, and a token emitted only there is lost: sherpa-onnx's text is NeMo's cut short."""
        a, b = " ".join(nemo.split()), " ".join(sherpa.split())
        if a != b and a.startswith(b):
            return ("sherpa-onnx ends early: it ignores a NeMo CTC model's last output frame (it takes input frames "
                    "// subsampling factor, NeMo ceil), so a token emitted only there is lost; audio that ends "
                    "right after the last word loses it, trailing silence (80 ms or more) keeps it")
        return None

    def runtime_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                           sample_rate: int, feature_dim: int, with_front_end_option: bool = False):
        import sherpa_onnx

        return sherpa_onnx.OfflineRecognizer.from_nemo_ctc(
            model=str(paths["model"]), tokens=str(tokens), num_threads=threads, provider=provider,
            sample_rate=sample_rate, feature_dim=feature_dim, decoding_method="greedy_search")

    # -------------------------------------------------------------------------------------------------- publish

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        head = "CTC head of a hybrid model (its transducer branch is not in these files)" \
            if "Hybrid" in facts.model_class else "CTC"
        return [("decoder", f"{head}; greedy decoding"),
                ("sherpa-onnx", "`OfflineRecognizer.from_nemo_ctc`; give `feature_dim` (sherpa-onnx does not read it "
                                "from the model)")]

    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str, metadata: Mapping[str, str] | None = None, variants: Sequence[str] = ()) -> str:
        model = files["model"]
        return offline_usage(
            "from_nemo_ctc",
            [("model", f'"{model}"', ""), ("tokens", f'"{tokens}"', ""),
             ("feature_dim", str(feature_dim), "required: sherpa-onnx does not read it from the model")],
            [f"--nemo-ctc-model={model}", f"--tokens={tokens}", f"--feat-dim={feature_dim}"],
            sample_rate=sample_rate, provider_note=provider_note)


CTC = CtcFamily()
