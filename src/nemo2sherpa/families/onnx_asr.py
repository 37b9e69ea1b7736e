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

validate and publish run these directories with onnx-asr itself (`runtime = "onnx-asr"`): the contract check reads
config.json and vocab.txt as onnx-asr does, the fidelity check steps the fused decoder_joint graph by NeMo's greedy
rules (which are onnx-asr's), the end-to-end decode is `load_model(...).with_timestamps().recognize(...)`, and the
model card shows onnx-asr's Python and command line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from nemo2sherpa.confinement import outside_reason
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import PRECISIONS, ModelSpec, Probe, Recognized, Role
from nemo2sherpa.families.common import dims, encoder_probes, flatten, make_session, run_export_forward
from nemo2sherpa.families.ctc import CtcFamily
from nemo2sherpa.families.transducer import JOINT_EXAMPLE_FRAMES, GraphTransducer, TransducerFamily
from nemo2sherpa.tokens_txt import BLANK

LAYOUT = "onnx-asr"
VOCABULARY = "vocab.txt"
CONFIG = "config.json"
RUNTIME = "onnx-asr"
INSTALL = "pip install 'nemo2sherpa[onnx-asr]'"
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
#: what onnx-asr assumes when config.json leaves a key out
DEFAULT_FEATURES_SIZE = 80
DEFAULT_SUBSAMPLING_FACTOR = 8
#: a larger config.json is refused unread (onnx-asr's holds four keys)
MAX_CONFIG_BYTES = 1 << 20
#: the keys of config.json onnx-asr reads for these models
CONFIG_KEYS = ("model_type", "features_size", "subsampling_factor", "max_tokens_per_step")
#: what onnx-asr feeds and reads by name: the encoder (or CTC model.onnx) and the fused decoder_joint graph
ENCODER_INPUTS = ("audio_signal", "length")
ENCODER_OUTPUTS = ("outputs", "encoded_lengths")
CTC_OUTPUT = "logprobs"
FUSED_INPUTS = ("encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2")
FUSED_OUTPUTS = ("outputs", "output_states_1", "output_states_2")
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


# ------------------------------------------------------------------------------------------------- validate


def _is_count(value: Any) -> bool:
    """A positive JSON integer (true and false are not counts, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_config(directory: Path) -> dict[str, Any]:
    """config.json as onnx-asr reads it, or a UserError naming the file: a directory from someone else may have none,
    a damaged one, or a link to a file elsewhere."""
    reason = outside_reason(directory, CONFIG)
    if reason:
        raise UserError(f"{reason}; onnx-asr's config must be a file inside the model directory")
    path = directory / CONFIG
    if not path.is_file():
        raise UserError.about(CONFIG, "is missing; onnx-asr reads the model type, feature size and subsampling from it")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:  # never read a planted multi-gigabyte file into memory to parse four keys
        raise UserError.about(CONFIG, f"is {size} bytes; onnx-asr's config holds four keys (at most "
                                      f"{MAX_CONFIG_BYTES} bytes accepted)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError.about(CONFIG, f"is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise UserError.about(CONFIG, "is not a JSON object")
    return config


def _names_fed(graph: Any, role: str, inputs: Sequence[str], outputs: Sequence[str], result) -> bool:
    """onnx-asr feeds and reads its graphs by name, not by position: a missing name is a crash at its first call."""
    have = {i.name for i in graph.graph.input} | {o.name for o in graph.graph.output}
    missing = [name for name in (*inputs, *outputs) if name not in have]
    if missing:
        result.fail(f"the {role} graph has no {', '.join(missing)}: onnx-asr feeds and reads its graphs by these "
                    "names")
    return not missing


def _int(metadata: Mapping[str, str], key: str, default: int) -> int:
    try:
        value = int(metadata.get(key, default))
    except ValueError:
        return default
    return value if value > 0 else default


class GraphDecoderJoint(GraphTransducer):
    """The encoder and NeMo's fused decoder_joint graph with onnxruntime, greedy by NeMo's rules (which onnx-asr's
    search follows).

    The fused graph runs the prediction network and the joint in one call, so no step hands out the prediction
    network's output as the split graphs do: step() returns the token and the state it is fed with (all the joint
    call needs) and runs the graph on a silent frame only for the next state, which the prediction network computes
    from the token and the old state alone."""

    def __init__(self, encoder: Path, decoder_joint: Path, vocab_size: int, durations: Sequence[int] = (),
                 pred_rnn_layers: int = 1, pred_hidden: int = 640, provider: str = "cpu", threads: int = 1) -> None:
        self._set_up(encoder, vocab_size, durations, pred_rnn_layers, pred_hidden, provider, threads)
        self.decoder_joint = make_session(decoder_joint, provider, threads)
        width = next(i.shape[1] for i in self.decoder_joint.get_inputs() if i.name == FUSED_INPUTS[0])
        if not isinstance(width, int):
            width = self.encoder.get_outputs()[0].shape[1]
        self._silence = np.zeros((1, int(width), 1), dtype=np.float32)

    def _run(self, frame: np.ndarray, token: int, states: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = dict(zip(FUSED_INPUTS, (frame, np.array([[token]], dtype=np.int32), np.array([1], dtype=np.int32),
                                       *states)))
        return self.decoder_joint.run(list(FUSED_OUTPUTS), feed)

    def step(self, token: int, states: list[np.ndarray]) -> tuple[Any, list[np.ndarray]]:
        _, *next_states = self._run(self._silence, token, states)
        return (token, list(states)), next_states

    def joint_logits(self, frame: np.ndarray, decoder_out: Any) -> np.ndarray:
        token, states = decoder_out
        frame = np.ascontiguousarray(frame, dtype=np.float32)[np.newaxis, :, np.newaxis]
        return self._run(frame, token, states)[0].reshape(-1)


class OnnxAsrRecognizer:
    """onnx-asr's own model over a directory, answering validate one clip at a time as a recognizer does."""

    def __init__(self, model: Any) -> None:
        self.model = model.with_timestamps()

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> Recognized:
        samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        if samples.size == 0:  # onnx-asr pads a batch to its longest clip: an empty one has nothing to pad to
            return Recognized(text="", tokens=[], timestamps=[])
        result = self.model.recognize(samples, sample_rate=sample_rate)
        return Recognized(text=result.text, tokens=list(result.tokens or []),
                          timestamps=[float(t) for t in result.timestamps or []])


class _OnnxAsrFamily:
    """What both onnx-asr families do on the validate and publish side, ahead of their sherpa-onnx bases."""

    runtime = RUNTIME
    tokens_file = VOCABULARY
    layout = LAYOUT
    alone = ALONE
    sherpa_model_type = ""  # not a sherpa-onnx model
    runtime_front_end = None  # onnx-asr computes NeMo's features (its nemo80/nemo128 preprocessors)
    front_end_option = None
    #: the model types config.json may name for this family's graphs
    model_types: tuple[str, ...] = ()

    def external_data_file(self, graph_file: str) -> str:
        return f"{graph_file}.data"

    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        return _metadata(facts, self.branch == "transducer", url, comment)

    def companion_files(self, facts: ModelFacts, pieces: Sequence[str]) -> dict[str, str]:
        return _companions(facts, pieces, transducer=self.branch == "transducer")

    # ------------------------------------------------------------------------------------------------ validate

    def runtime_contract(self, directory: Path, metadata: Mapping[str, str], pieces: list[str],
                         encoder_width: int | None, result) -> tuple[int | None, str]:
        """config.json and vocab.txt as onnx-asr reads them; what config.json said goes into the check's details,
        where check_contract takes the model type from (onnx-asr decodes by config.json's type, not by the
        graphs)."""
        try:
            config = read_config(directory)
        except UserError as exc:
            result.fail(str(exc))
            return None, NORMALIZE
        result.details[CONFIG] = {key: config[key] for key in CONFIG_KEYS if key in config}
        model_type = config.get("model_type")
        if model_type not in self.model_types:
            result.fail(f"{CONFIG}: model_type is {model_type!r}; onnx-asr runs {self.title} graphs as "
                        f"{' or '.join(self.model_types)}")
        features = config.get("features_size", DEFAULT_FEATURES_SIZE)
        if not _is_count(features) or features not in FEATURE_SIZES:
            result.fail(f"{CONFIG}: features_size is {features!r}; onnx-asr computes "
                        f"{' or '.join(map(str, FEATURE_SIZES))} mel features only")
            features = None
        elif encoder_width is not None and features != encoder_width:
            result.fail(f"{CONFIG}: features_size is {features}, but the {self.encoder_role.name} graph takes "
                        f"{encoder_width} features")
        for key in ("subsampling_factor", "max_tokens_per_step"):
            if key in config and not _is_count(config[key]):
                result.fail(f"{CONFIG}: {key} is {config[key]!r}, not a positive integer")
        if pieces and pieces[-1] != BLANK:
            result.fail(f"{VOCABULARY}'s last token is {pieces[-1]!r}, not {BLANK}: onnx-asr finds the blank by name "
                        "and the graphs give it the last id")
        return features, NORMALIZE

    def _spec_metadata(self, graph: Any, result) -> dict[str, str]:
        """The graph's metadata with config.json's values over it: onnx-asr reads only the config."""
        metadata = {p.key: p.value for p in graph.metadata_props}
        return {**metadata, **{key: str(value) for key, value in (result.details.get(CONFIG) or {}).items()}}

    def _vocabulary_against_manifest(self, vocab_size: int, manifest, result) -> None:
        facts = manifest.model if manifest else None
        if facts is not None and facts.vocab_size != vocab_size:
            result.fail(f"{VOCABULARY} has {vocab_size} tokens + blank; the manifest's model has {facts.vocab_size}")

    def explain_transcript_difference(self, nemo: str, sherpa: str) -> str | None:
        return None  # onnx-asr counts output frames as NeMo does; sherpa-onnx's known causes are not its

    def quantization(self, graph_file: str) -> str | None:
        """onnx-asr's `quantization` argument that loads this encoder-holding file: it finds a variant's graphs by
        name, so a file under another name cannot be loaded at all."""
        role = self.encoder_role.name
        for precision in PRECISIONS:
            if self.files(precision)[role] == graph_file:
                return None if precision == "fp32" else precision
        raise UserError.about(graph_file, f"onnx-asr loads a model's graphs by name; this is none of "
                                          f"{', '.join(self.files(p)[role] for p in PRECISIONS)}")

    def runtime_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                           sample_rate: int, feature_dim: int,
                           with_front_end_option: bool = False) -> OnnxAsrRecognizer:
        """onnx-asr itself over the directory that holds the files, as its users load it: it finds the graphs,
        vocab.txt and config.json there by name and computes its own features (feature_dim and the tokens file are
        its business, read from config.json and vocab.txt)."""
        try:
            import onnx_asr
        except ImportError:
            raise UserError(f"onnx-asr is not installed; it runs onnx-asr directories: {INSTALL}") from None
        import onnxruntime as ort

        encoder = Path(paths[self.encoder_role.name])
        directory = encoder.parent
        quantization = self.quantization(encoder.name)
        expected = self.files(quantization or "fp32")
        for role, path in paths.items():
            if Path(path).parent != directory or Path(path).name != expected[role]:
                raise UserError.about(Path(path).name, f"onnx-asr loads {expected[role]} beside {encoder.name}, "
                                                       "from the same directory")
        model_type = read_config(directory).get("model_type")
        if model_type not in self.model_types:
            raise UserError.about(CONFIG, f"model_type is {model_type!r}; onnx-asr runs {self.title} graphs as "
                                          f"{' or '.join(self.model_types)}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else \
            ["CPUExecutionProvider"]
        model = onnx_asr.load_model(model_type, str(directory), quantization=quantization, sess_options=options,
                                    providers=providers)
        return OnnxAsrRecognizer(model)

    # ------------------------------------------------------------------------------------------------- publish

    def _onnx_asr_row(self, model_type: str) -> tuple[str, str]:
        return (RUNTIME, f"`onnx_asr.load_model(\"{model_type}\", directory)`; `{CONFIG}` gives the model type, "
                         f"feature size and subsampling, `{VOCABULARY}` the vocabulary (`{BLANK}` last)")

    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str, metadata: Mapping[str, str] | None = None, variants: Sequence[str] = ()) -> str:
        """onnx-asr's Python and command line for the files' directory (`tokens` and `feature_dim` go unused: onnx-asr
        reads vocab.txt and config.json there). `metadata` (the manifest's record of the family) names the
        transducer's model type and `variants` the precisions the directory has; without them the card says what to
        look for."""
        encoder = PurePosixPath(files[self.encoder_role.name])
        try:
            quantization = self.quantization(encoder.name)
        except UserError:
            quantization = None
        model_type = (metadata or {}).get("model_type")
        if model_type in self.model_types:
            type_line = f'    "{model_type}",'
        else:
            model_type = self.model_types[0]
            others = " or ".join(f'"{other}"' for other in self.model_types[1:])
            type_line = f'    "{model_type}",' + (f"  # or {others}: the model_type in {CONFIG}" if others else "")
        directory = str(encoder.parent)
        argument = f'\n    quantization="{quantization}",' if quantization else ""
        flag = f" -q {quantization}" if quantization else ""
        int8 = self.files("int8")
        int8_files = " and ".join(f"`{name}`" for name in int8.values())
        if quantization:
            variant_note = ""
        elif "int8" in variants:
            variant_note = (f"\nThe int8 variant ({int8_files}) loads with `quantization=\"int8\"` (`-q int8` on the "
                            "command line).\n")
        elif not variants:
            variant_note = (f"\nWhere the repository has the int8 variant ({int8_files}), `quantization=\"int8\"` "
                            "loads it (`-q int8` on the command line).\n")
        else:
            variant_note = ""
        return f"""### Python (onnx-asr)

```bash
pip install "onnx-asr[cpu,hub]"  # or onnx-asr with the onnxruntime you have; onnx-asr[gpu,hub] for CUDA
```

```python
import onnx_asr

model = onnx_asr.load_model(
{type_line}
    "{directory}",{argument}
    providers=["CPUExecutionProvider"],  # {provider_note}; "cuda" here is ["CUDAExecutionProvider", \
"CPUExecutionProvider"]
)
print(model.recognize("speech.wav"))  # a PCM WAV file, {sample_rate} Hz mono (other rates are resampled)
result = model.with_timestamps().recognize("speech.wav")
print(result.tokens, result.timestamps)  # the tokens and their times in seconds
```
{variant_note}
### Command line (`onnx-asr`)

```bash
onnx-asr {model_type} speech.wav -p {directory}{flag}
```
"""


class OnnxAsrTransducerFamily(_OnnxAsrFamily, TransducerFamily):
    """A TDT or RNNT model (or a hybrid's transducer branch) for onnx-asr: the encoder as for sherpa-onnx, the
    prediction network and joint as NeMo's own fused decoder_joint graph."""

    name = "onnx-asr-transducer"
    title = "onnx-asr transducer (TDT/RNNT)"
    branch = "transducer"
    roles = (Role("encoder", holds_encoder=True), Role("decoder_joint"))
    model_types = (MODEL_TYPES["tdt"], MODEL_TYPES["rnnt"])
    prediction_graph = joint_graph = "decoder_joint"  # one graph: blame compares its logits and names it

    def files(self, precision: str = "fp32") -> dict[str, str]:
        suffix = "" if precision == "fp32" else f".{precision}"
        return {role.name: f"{role.name}-model{suffix}.onnx" for role in self.roles}

    def refusal(self, facts: ModelFacts) -> str | None:
        reason = super().refusal(facts) or frontend_refusal(facts)
        if reason is None and facts.is_tdt and facts.durations != tuple(range(len(facts.durations))):
            reason = (f"onnx-asr takes a TDT model's duration index as its frame skip; durations "
                      f"{list(facts.durations)} are not 0..{len(facts.durations) - 1}")
        return reason

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

    # ------------------------------------------------------------------------------------------------- validate

    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result) -> ModelSpec | None:
        """The graphs against vocab.txt and config.json (whose model type runtime_contract recorded; the encoder's
        metadata, which convert writes alike, stands in when it did not run): the vocabulary comes from vocab.txt,
        the state sizes from the fused graph's static state shape, TDT or RNNT from the model type, which must fit
        the joint's width."""
        encoder, fused = graphs["encoder"], graphs["decoder_joint"]
        metadata = self._spec_metadata(encoder, result)
        named = _names_fed(encoder, "encoder", ENCODER_INPUTS, ENCODER_OUTPUTS, result)
        named = _names_fed(fused, "decoder_joint", FUSED_INPUTS, FUSED_OUTPUTS, result) and named
        if not named or not pieces:
            return None
        vocab_size = len(pieces) - 1
        inputs = {i.name: dims(i) for i in fused.graph.input}
        outputs = {o.name: dims(o) for o in fused.graph.output}
        state = inputs["input_states_1"]
        if len(state) != 3 or not isinstance(state[0], int) or not isinstance(state[2], int):
            result.fail(f"the decoder_joint graph's input_states_1 has shape {state}; onnx-asr builds its zero state "
                        "from static layer and hidden sizes")
            return None
        layers, hidden = state[0], state[2]
        other = inputs["input_states_2"]
        if len(other) != 3 or (other[0], other[2]) != (layers, hidden):
            result.fail(f"the decoder_joint graph's input_states_2 has shape {other}, input_states_1 {state}")
        frame = inputs["encoder_outputs"]
        encoder_out = dims(next(o for o in encoder.graph.output if o.name == ENCODER_OUTPUTS[0]))
        d_frame = frame[1] if len(frame) == 3 else None
        d_encoder = encoder_out[1] if len(encoder_out) == 3 else None
        if isinstance(d_frame, int) and isinstance(d_encoder, int) and d_frame != d_encoder:
            result.fail(f"the decoder_joint graph takes {d_frame}-wide encoder frames but the encoder gives "
                        f"{d_encoder}: decoder_joint and encoder come from different models")
        logits = outputs["outputs"]
        width = logits[-1] if logits and isinstance(logits[-1], int) else None
        model_type = metadata.get("model_type")
        if model_type in self.model_types:
            is_tdt = model_type == MODEL_TYPES["tdt"]
        else:  # neither config.json nor the metadata says: the graph's width does
            is_tdt = width is not None and width > vocab_size + 1
        count = width - vocab_size - 1 if width is not None else 0
        if width is not None and is_tdt and count < 1:
            result.fail(f"{CONFIG} names {model_type}, but the decoder_joint graph gives {width} logits for "
                        f"{vocab_size} tokens + blank: no duration outputs")
        elif width is not None and not is_tdt and count != 0:
            result.fail(f"the decoder_joint graph gives {width} logits; an RNNT model ({CONFIG}: {model_type}) with "
                        f"{vocab_size} tokens + blank needs {vocab_size + 1}"
                        + (f"; a TDT model's {CONFIG} names {MODEL_TYPES['tdt']}" if count > 0 else ""))
        durations = tuple(range(max(count, 0))) if is_tdt else ()
        self._vocabulary_against_manifest(vocab_size, manifest, result)
        facts = manifest.model if manifest else None
        if facts is not None:
            if facts.is_tdt != is_tdt:
                result.fail(f"the manifest says {facts.decoder_kind.upper()} but {CONFIG}'s model_type {model_type!r} "
                            f"makes onnx-asr decode it as {'TDT' if is_tdt else 'RNNT'}")
            elif is_tdt and tuple(facts.durations) != durations:
                result.fail(f"the manifest's durations {list(facts.durations)} are not the duration outputs' indices "
                            f"0..{len(durations) - 1}, which onnx-asr takes as frame skips")
        max_symbols = _int(metadata, "max_tokens_per_step", DEFAULT_MAX_TOKENS_PER_STEP)
        result.details.update({"joint_width": width, "tdt": is_tdt, "durations": list(durations),
                               "pred_rnn_layers": layers, "pred_hidden": hidden})
        if result.failed:
            return None
        return ModelSpec(family=self.name, vocab_size=vocab_size, feat_dim=0, normalize_type="", metadata=metadata,
                         pieces=pieces, is_tdt=is_tdt, durations=durations, pred_rnn_layers=layers,
                         pred_hidden=hidden, max_symbols=max_symbols)

    def graph_decoder(self, paths: Mapping[str, Path], spec: ModelSpec, threads: int = 1,
                      provider: str = "cpu") -> GraphDecoderJoint:
        return GraphDecoderJoint(paths["encoder"], paths["decoder_joint"], vocab_size=spec.vocab_size,
                                 durations=spec.durations, pred_rnn_layers=spec.pred_rnn_layers,
                                 pred_hidden=spec.pred_hidden, provider=provider, threads=threads)

    def runtime_max_symbols(self, spec: ModelSpec) -> int | None:
        """onnx-asr stops at config.json's max_tokens_per_step, which convert writes from NeMo's own limit."""
        return spec.max_symbols

    # -------------------------------------------------------------------------------------------------- publish

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        decoder = [row for row in super().card_rows(facts, metadata, redact) if row[0] == "decoder"]
        return [*decoder, self._onnx_asr_row(MODEL_TYPES.get(facts.decoder_kind, MODEL_TYPES["tdt"]))]


class OnnxAsrCtcFamily(_OnnxAsrFamily, CtcFamily):
    """A CTC model (or a hybrid's CTC branch) for onnx-asr: the same model.onnx as for sherpa-onnx (NeMo's encoder
    and CTC head, `logprobs` out)."""

    name = "onnx-asr-ctc"
    title = "onnx-asr CTC"
    branch = "ctc"
    model_types = (MODEL_TYPES["ctc"],)

    def refusal(self, facts: ModelFacts) -> str | None:
        return super().refusal(facts) or frontend_refusal(facts)

    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result) -> ModelSpec | None:
        """The graph against vocab.txt: onnx-asr reads no metadata (sherpa-onnx's vocab_size is not there), and
        computes the output lengths itself from config.json's subsampling factor."""
        graph = graphs["model"]
        metadata = self._spec_metadata(graph, result)
        if not _names_fed(graph, "model", ENCODER_INPUTS, (CTC_OUTPUT,), result) or not pieces:
            return None
        vocab_size = len(pieces) - 1
        output = dims(next(o for o in graph.graph.output if o.name == CTC_OUTPUT))
        width = output[-1] if len(output) == 3 and isinstance(output[-1], int) else None
        if width is not None and width != len(pieces):
            result.fail(f"the model gives {width} log-probabilities per frame; {VOCABULARY}'s {vocab_size} tokens + "
                        f"blank need {len(pieces)}")
        self._vocabulary_against_manifest(vocab_size, manifest, result)
        subsampling = _int(metadata, "subsampling_factor", DEFAULT_SUBSAMPLING_FACTOR)
        result.details.update({"output_width": width, "subsampling_factor": subsampling})
        if result.failed:
            return None
        return ModelSpec(family=self.name, vocab_size=vocab_size, feat_dim=0, normalize_type="",
                         metadata={**metadata, "subsampling_factor": str(subsampling)}, pieces=pieces)

    def card_rows(self, facts: ModelFacts, metadata: Mapping[str, str], redact) -> list[tuple[str, str]]:
        decoder = [row for row in super().card_rows(facts, metadata, redact) if row[0] == "decoder"]
        return [*decoder, self._onnx_asr_row(MODEL_TYPES["ctc"])]


ONNX_ASR_TRANSDUCER = OnnxAsrTransducerFamily()
ONNX_ASR_CTC = OnnxAsrCtcFamily()
