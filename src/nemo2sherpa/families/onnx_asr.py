"""The onnx-asr layout (PyPI onnx-asr 0.12.0): the same NeMo graphs under the names and files onnx-asr's
`load_model("nemo-conformer-tdt" | "nemo-conformer-rnnt" | "nemo-conformer-ctc", directory)` reads.

onnx-asr's contract, from its source (onnx_asr/models/nemo.py, asr.py, resolver.py, preprocessors):

- a transducer is `encoder-model.onnx` (audio_signal [B, F, T], length int64 -> outputs [B, D, T'],
  encoded_lengths int64) and `decoder_joint-model.onnx`, NeMo's fused prediction network and joint
  (nemo.collections.asr.modules.rnnt.RNNTDecoderJoint: encoder_outputs, targets, target_length, input_states_1/2 with
  static layer and hidden sizes -> outputs, prednet_lengths, output_states_1/2), called one frame at a time;
- a CTC model is `model.onnx` (audio_signal, length -> logprobs [B, T', V+1], log-softmaxed); onnx-asr computes the
  output lengths itself as ceil(T / subsampling_factor);
- `vocab.txt` is "<piece> <id>" per line, `<blk>` last (tokens.txt's format under another name), and `config.json`
  names the model type, the feature size, the subsampling factor and the greedy limit per frame;
- a precision variant is found by `glob("encoder-model?int8.onnx")`, so int8 is `encoder-model.int8.onnx` +
  `decoder_joint-model.int8.onnx` (both) or `model.int8.onnx`; external weights are `<graph>.onnx.data`, the name a
  Hub download fetches;
- onnx-asr computes the features itself (NeMo's 16 kHz, 25 ms Hann window, n_fft 512, per-feature normalised log-mel,
  80 or 128 mels only), and decodes TDT by taking the duration head's argmax index as the frame skip: durations must be
  0..N-1.

validate and publish run sherpa-onnx directories only, for now: they refuse these families with one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import Probe, Role
from nemo2sherpa.families.common import encoder_probes, flatten, run_export_forward
from nemo2sherpa.families.ctc import CtcFamily
from nemo2sherpa.families.transducer import JOINT_EXAMPLE_FRAMES, TransducerFamily

LAYOUT = "onnx-asr"
VOCABULARY = "vocab.txt"
CONFIG = "config.json"
UNSERVED = "onnx-asr layout: validate runs sherpa-onnx directories only for now (and publish too)"
ALONE = ("onnx-asr reads one model per directory (config.json names its type); convert each decoder into a directory "
         "of its own")
#: onnx-asr's model type per NeMo decoder kind
MODEL_TYPES = {"tdt": "nemo-conformer-tdt", "rnnt": "nemo-conformer-rnnt", "ctc": "nemo-conformer-ctc"}
#: the greedy limit onnx-asr applies when config.json gives none, and nemo2sherpa when the checkpoint gives none
DEFAULT_MAX_TOKENS_PER_STEP = 10
#: the feature sizes onnx-asr's bundled preprocessors compute (nemo80, nemo128)
FEATURE_SIZES = (80, 128)
SAMPLE_RATE = 16000
NORMALIZE = "per_feature"
#: NeMo preprocessor settings onnx-asr's feature extractor hard-codes: key -> the values that mean the same (None:
#: NeMo's default, which is that value)
FRONTEND: dict[str, tuple[Any, ...]] = {
    "window_size": (0.025,),
    "window_stride": (0.01,),
    "window": ("hann",),
    "n_fft": (None, 512),
    "preemph": (0.97,),
    "log": (True,),
    "log_zero_guard_type": ("add",),
    "log_zero_guard_value": (2**-24,),
    "mag_power": (2.0,),
    "mel_norm": ("slaney",),
    "lowfreq": (0, None),
    "highfreq": (None, 8000),
    "frame_splicing": (1, None),
}


def _same(value: Any, accepted: tuple[Any, ...]) -> bool:
    for wanted in accepted:
        if wanted is None or value is None or isinstance(wanted, (str, bool)) or isinstance(value, (str, bool)):
            if value == wanted:
                return True
        elif isinstance(value, (int, float)) and math.isclose(float(value), float(wanted), rel_tol=1e-6):
            return True
    return False


def frontend_refusal(facts: ModelFacts) -> str | None:
    """Why onnx-asr's own feature extractor would not compute this checkpoint's features, or None."""
    mels = facts.architecture.mels
    if mels not in FEATURE_SIZES:
        return (f"onnx-asr computes {' or '.join(map(str, FEATURE_SIZES))} mel features only; this model takes "
                f"{mels}")
    if facts.sample_rate != SAMPLE_RATE:
        return f"onnx-asr's NeMo models run at {SAMPLE_RATE} Hz; this model expects {facts.sample_rate} Hz"
    if facts.normalize != NORMALIZE:
        return (f"onnx-asr normalises features {NORMALIZE}; this model's preprocessor normalises "
                f"{facts.normalize or 'not at all'}")
    different = [f"{key} {facts.frontend[key]!r}" for key, accepted in FRONTEND.items()
                 if key in facts.frontend and not _same(facts.frontend[key], accepted)]
    if different:
        return (f"onnx-asr computes NeMo's default features (25 ms Hann window, n_fft 512, slaney mel, log guard "
                f"2^-24); this model's preprocessor has {', '.join(different)}")
    return None


def onnx_asr_config(facts: ModelFacts, transducer: bool) -> dict[str, Any]:
    """config.json: what onnx-asr cannot learn from the graphs (it reads no metadata)."""
    config: dict[str, Any] = {
        "model_type": MODEL_TYPES[facts.decoder_kind if transducer else "ctc"],
        "features_size": int(facts.architecture.mels or 0),
        "subsampling_factor": int(facts.architecture.subsampling_factor or 0),
    }
    if transducer:
        config["max_tokens_per_step"] = int(facts.max_symbols_per_frame or DEFAULT_MAX_TOKENS_PER_STEP)
    return config


def _companions(facts: ModelFacts, pieces: Sequence[str], transducer: bool) -> dict[str, str]:
    from nemo2sherpa.tokens_txt import render_tokens

    config = json.dumps(onnx_asr_config(facts, transducer), indent=2) + "\n"
    return {VOCABULARY: render_tokens(pieces), CONFIG: config}


def _metadata(facts: ModelFacts, transducer: bool, url: str, comment: str) -> dict[str, str]:
    """Not read by onnx-asr; kept in the encoder graph (and the manifest) so the graph says what it is."""
    return {**{key: str(value) for key, value in onnx_asr_config(facts, transducer).items()},
            "model_author": "NeMo", "url": url, "comment": comment}


class _Unserved:
    """The validate- and publish-side methods: these commands run sherpa-onnx directories only, for now."""

    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result):
        raise UserError(UNSERVED)

    def graph_decoder(self, paths: Mapping[str, Path], spec, threads: int = 1, provider: str = "cpu"):
        raise UserError(UNSERVED)

    def sherpa_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                          sample_rate: int, feature_dim: int):
        raise UserError(UNSERVED)

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        raise UserError(UNSERVED)

    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str) -> str:
        raise UserError(UNSERVED)


class OnnxAsrTransducerFamily(_Unserved, TransducerFamily):
    """A TDT or RNNT model (or a hybrid's transducer branch) for onnx-asr: the encoder as for sherpa-onnx, the
    prediction network and joint as NeMo's own fused decoder_joint graph."""

    name = "onnx-asr-transducer"
    title = "onnx-asr transducer (TDT/RNNT)"
    branch = "transducer"
    roles = (Role("encoder", holds_encoder=True), Role("decoder_joint"))
    sherpa_model_type = ""  # not a sherpa-onnx model
    layout = LAYOUT
    unserved = UNSERVED
    alone = ALONE

    def files(self, precision: str = "fp32") -> dict[str, str]:
        suffix = "" if precision == "fp32" else f".{precision}"
        return {role.name: f"{role.name}-model{suffix}.onnx" for role in self.roles}

    def external_data_file(self, graph_file: str) -> str:
        return f"{graph_file}.data"

    def refusal(self, facts: ModelFacts) -> str | None:
        reason = super().refusal(facts) or frontend_refusal(facts)
        if reason is None and facts.is_tdt and facts.durations != tuple(range(len(facts.durations))):
            reason = (f"onnx-asr takes a TDT model's duration index as its frame skip; durations "
                      f"{list(facts.durations)} are not 0..{len(facts.durations) - 1}")
        return reason

    def companion_files(self, facts: ModelFacts, pieces: Sequence[str]) -> dict[str, str]:
        return _companions(facts, pieces, transducer=True)

    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        return _metadata(facts, True, url, comment)

    # -------------------------------------------------------------------------------------------------- convert

    def export_modules(self, model: Any) -> dict[str, Any]:
        """NeMo's own fused module, the one EncDecRNNTModel.export writes as decoder_joint-model.onnx."""
        from nemo.collections.asr.modules.rnnt import RNNTDecoderJoint

        return {"encoder": model.encoder, "decoder_joint": RNNTDecoderJoint(model.decoder, model.joint)}

    def trace_example(self, role: str, module: Any) -> tuple | None:
        """NeMo's example for the fused graph, with a few encoder frames instead of the joint's 8192 (see
        TransducerFamily.trace_example): onnx-asr runs it one frame at a time."""
        if role != "decoder_joint":
            return None
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(0)
            targets, target_length, states = module.decoder.input_example(max_batch=1, max_dim=1)
            encoder_out = torch.randn(1, int(module.joint.encoder_hidden), JOINT_EXAMPLE_FRAMES)
        return (encoder_out, targets, target_length, *states)

    def probes(self, model: Any, frames: Sequence[int], generator: Any) -> list[Probe]:
        """The encoder on random features; the fused graph on one frame, a token and a random state, as onnx-asr
        calls it."""
        import torch
        from nemo.collections.asr.modules.rnnt import RNNTDecoderJoint

        probes = encoder_probes(model.encoder, "encoder", frames, generator)
        decoder, joint = model.decoder, model.joint
        layers, hidden = int(decoder.pred_rnn_layers), int(decoder.pred_hidden)
        inputs = (torch.randn(1, int(joint.encoder_hidden), 1, generator=generator),
                  torch.tensor([[min(3, int(decoder.vocab_size) - 1)]], dtype=torch.int32),
                  torch.tensor([1], dtype=torch.int32),
                  torch.randn(layers, 1, hidden, generator=generator),
                  torch.randn(layers, 1, hidden, generator=generator))
        outputs = run_export_forward(RNNTDecoderJoint(decoder, joint), *inputs)
        probes.append(Probe("decoder_joint", "one frame and token", flatten(inputs), flatten(outputs)))
        return probes


class OnnxAsrCtcFamily(_Unserved, CtcFamily):
    """A CTC model (or a hybrid's CTC branch) for onnx-asr: the same model.onnx as for sherpa-onnx (NeMo's encoder
    and CTC head, `logprobs` out)."""

    name = "onnx-asr-ctc"
    title = "onnx-asr CTC"
    branch = "ctc"
    sherpa_model_type = ""  # not a sherpa-onnx model
    layout = LAYOUT
    unserved = UNSERVED
    alone = ALONE

    def external_data_file(self, graph_file: str) -> str:
        return f"{graph_file}.data"

    def refusal(self, facts: ModelFacts) -> str | None:
        return super().refusal(facts) or frontend_refusal(facts)

    def companion_files(self, facts: ModelFacts, pieces: Sequence[str]) -> dict[str, str]:
        return _companions(facts, pieces, transducer=False)

    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        return _metadata(facts, False, url, comment)


ONNX_ASR_TRANSDUCER = OnnxAsrTransducerFamily()
ONNX_ASR_CTC = OnnxAsrCtcFamily()
