"""The seam every model family plugs into: what a family knows, and the records that cross between convert,
validate and publish.

A family is one kind of exported model (the offline transducer, offline CTC, ...): its graph roles and file names,
how each role is exported from NeMo and probed, the metadata sherpa-onnx reads, the contract check of a directory,
the graph-level greedy decoder that proves fidelity against NeMo, NeMo's own greedy result, the sherpa-onnx
recognizer that runs it, and its usage block in a model card. The rest of nemo2sherpa asks the family and never
branches on which one it is.

Nothing here imports NeMo, torch, onnxruntime or sherpa-onnx at import time: validate and publish use families on
machines without NeMo, and a family's NeMo-facing methods import it when called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.precision.catalog import PRECISIONS  # noqa: F401 - re-exported: the suffixes of a family's files
from nemo2sherpa.sherpa_front_end import SHERPA_ONNX, FrontEnd, FrontEndOption

#: the directory layout a family writes unless it says otherwise: sherpa-onnx's, which validate and publish run
DEFAULT_LAYOUT = "sherpa-onnx"
#: the vocabulary file of the sherpa-onnx layout
TOKENS_FILE = "tokens.txt"


@dataclass(frozen=True)
class Role:
    """One graph of a family.

    `holds_encoder`: the graph that contains the acoustic encoder; it takes the features, carries the sherpa-onnx
    metadata, gets the encoder's graph rewrites and optimisation, and is large (weights written ahead; int8-dynamic
    quantizes it with QUInt8 weights, as sherpa-onnx's published int8 models have it, and the small graphs with
    QInt8)."""

    name: str
    holds_encoder: bool = False


@dataclass
class Probe:
    """Flat ONNX-order inputs and the PyTorch outputs they gave, for one graph role."""

    graph: str
    label: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


@dataclass(frozen=True)
class ModelSpec:
    """What decoding a directory needs to know, as the directory itself states it (its metadata and files).
    Fields a family does not use keep their defaults."""

    family: str
    vocab_size: int
    feat_dim: int
    normalize_type: str
    metadata: dict[str, str]
    pieces: list[str]
    is_tdt: bool = False
    durations: tuple[int, ...] = ()
    pred_rnn_layers: int = 0
    pred_hidden: int = 0
    max_symbols: int | None = None


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]
    frames: list[int]  # the output frame each token was emitted on


class GraphDecoder(Protocol):
    """A family's graphs run with onnxruntime: the graph-level reference decoder for fidelity checks."""

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """features [mels, T] -> the output compared with NeMo's ([D, T']) and its valid length."""

    def greedy(self, output: np.ndarray, length: int, max_symbols: int | None = None) -> Hypothesis:
        """Greedy token ids from what encode() returned (or NeMo's equivalent, for the families that can)."""


@dataclass(frozen=True)
class NemoOutput:
    """NeMo's view of one clip for a family: the output the graphs must reproduce, and NeMo's greedy ids."""

    output: np.ndarray  # [D, T'], valid frames only
    tokens: list[int]


@dataclass(frozen=True)
class Recognized:
    """One decode in the shape validate reads a recognizer's result (sherpa-onnx's fields), for the runtime
    recognizers that are not sherpa-onnx's offline one (onnx-asr, sherpa-onnx's online one driven live): the text, the
    pieces with SentencePiece's word mark shown as a space, and each piece's time in seconds. Its own class: families
    do not import validate."""

    text: str
    tokens: list[str]
    timestamps: list[float]


@dataclass
class Blame:
    graph: str
    detail: str


@dataclass(frozen=True)
class FamilyFiles:
    """What one family wrote into a directory: its files per precision (role -> file name) and the sherpa-onnx
    metadata in its encoder-holding graph."""

    family: str
    variants: dict[str, dict[str, str]]
    metadata: dict[str, str] = field(default_factory=dict)


class Family(ABC):
    """One kind of exported model. Subclasses are singletons registered in nemo2sherpa.families."""

    name: str  # registry key, recorded in manifests and reports
    title: str  # for people: "offline transducer (TDT/RNNT)"
    roles: tuple[Role, ...]
    sherpa_model_type: str  # what sherpa-onnx calls it (informational: --model-type, manifests)
    layout: str = DEFAULT_LAYOUT  # the runtime whose directory layout it writes (convert --layout)
    #: the runtime that loads this family's directories: validate decodes end to end with it, reports name it
    runtime: str = "sherpa-onnx"
    #: the vocabulary file beside the graphs
    tokens_file: str = "tokens.txt"
    #: why this family needs a directory of its own (convert --decoder both refuses it); None: it can share one
    alone: str | None = None
    #: whether its runtime recognizer streams (sherpa-onnx's OnlineRecognizer) rather than decodes whole inputs
    online: bool = False
    #: the features its runtime computes for it; None: NeMo's own (onnx-asr), so no transcript difference is theirs
    runtime_front_end: FrontEnd | None = SHERPA_ONNX
    #: a setting the runtime's users can give for features closer to NeMo's (validate measures it too); None: none
    front_end_option: FrontEndOption | None = None

    @property
    def branch(self) -> str:
        """The decoder of a checkpoint it exports, as `convert --decoder` names it: the same name in every layout."""
        return self.name

    # ------------------------------------------------------------------------------------------------ files

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)

    @property
    def encoder_role(self) -> Role:
        return next(r for r in self.roles if r.holds_encoder)

    def files(self, precision: str = "fp32") -> dict[str, str]:
        """sherpa-onnx users' file names: encoder.onnx, encoder.int8.onnx, model.fp16.onnx, ..."""
        suffix = "" if precision == "fp32" else f".{precision}"
        return {role.name: f"{role.name}{suffix}.onnx" for role in self.roles}

    def external_data_file(self, graph_file: str) -> str:
        """The one file a graph's external weights live in: nemo2sherpa's '<stem>.weights' unless the layout's
        runtime expects another name (a model hub fetches only the names it knows)."""
        return PurePath(graph_file).with_suffix(".weights").name

    def claims(self, metadata: Mapping[str, str]) -> bool:
        """Whether a directory of this family's file names, whose encoder-holding graph has this metadata, is this
        family's: an online and an offline transducer have the same files, and only the metadata tells them apart."""
        return ("window_size" in metadata) == self.online

    def companion_files(self, facts: ModelFacts, pieces: Sequence[str]) -> dict[str, str]:
        """The text files the runtime reads beside the graphs, name -> content (the vocabulary, a config): a family
        decision, because each runtime names and shapes them its own way. sherpa-onnx reads tokens.txt, blank last.
        `pieces`: the tokenizer's vocabulary, without the blank."""
        from nemo2sherpa.tokens_txt import render_tokens

        return {TOKENS_FILE: render_tokens(pieces)}

    # ------------------------------------------------------------------------------------- which checkpoints

    @abstractmethod
    def refusal(self, facts: ModelFacts) -> str | None:
        """Why this family cannot export a checkpoint with these facts, or None when it can."""

    # ------------------------------------------------------------------------------- convert (imports NeMo)

    def prepare_for_export(self, model: Any) -> None:
        """Put the NeMo model into the state its export needs (e.g. a hybrid's CTC branch selected)."""

    def encoder_feeds(self, graph: Any, mels: int) -> dict[str, np.ndarray]:
        """Inputs for a run of the written encoder-holding graph (onnx.ModelProto, weights not needed) on probe
        features: what the fp16 writer measures activation ranges with. A streaming family adds its caches."""
        from nemo2sherpa.precision.fp16 import encoder_feeds

        return encoder_feeds(graph, mels)

    @abstractmethod
    def export_modules(self, model: Any) -> dict[str, Any]:
        """role -> the NeMo module whose export is that graph, in role order."""

    def trace_example(self, role: str, module: Any) -> tuple | None:
        """The example the exporter traces a role with; None: NeMo's own."""
        return None

    @abstractmethod
    def probes(self, model: Any, frames: Sequence[int], generator: Any) -> list[Probe]:
        """PyTorch outputs on inputs the tracer never saw, per role (called after the export)."""

    @abstractmethod
    def metadata(self, facts: ModelFacts, url: str, comment: str) -> dict[str, str]:
        """The metadata sherpa-onnx reads from the encoder-holding graph, every value a string."""

    # ----------------------------------------------------------------------------------------------- validate

    @abstractmethod
    def check_contract(self, graphs: Mapping[str, Any], pieces: list[str], manifest, result) -> ModelSpec | None:
        """Check the loaded graphs (role -> onnx.ModelProto without weights) and tokens against what sherpa-onnx
        requires; problems go to `result` (a CheckResult), and the spec comes back when decoding is possible."""

    @abstractmethod
    def graph_decoder(self, paths: Mapping[str, Path], spec: ModelSpec, threads: int = 1,
                      provider: str = "cpu") -> GraphDecoder:
        ...

    @property
    def decodes_reference_output(self) -> bool:
        """Whether greedy() can decode NeMo's output (the transducer's decoder and joiner can take NeMo's encoder
        output, which tells an encoder difference from a decoder one); a one-graph family cannot."""
        return False

    def nemo_reference(self, model: Any, features: Any, feature_length: Any) -> NemoOutput:
        """NeMo's result on features [1, mels, T] (torch): its encoder on the whole input, then nemo_output. A
        streaming family streams them instead, as NeMo streams."""
        encoded, encoded_length = model.encoder(audio_signal=features, length=feature_length)
        return self.nemo_output(model, encoded, encoded_length)

    @abstractmethod
    def nemo_output(self, model: Any, encoded: Any, encoded_length: Any) -> NemoOutput:
        """From NeMo's encoder output (torch tensors, batch of one): what the graphs must reproduce and NeMo's own
        greedy decode."""

    def blame(self, decoder: GraphDecoder, reference, nemo, tolerance: float) -> Blame | None:
        """Which graph after the encoder causes a token mismatch, walking NeMo's path; None when the family has
        only one graph."""
        return None

    def explain_transcript_difference(self, nemo: str, sherpa: str) -> str | None:
        """The known cause when sherpa-onnx's text differs from NeMo's this way, for the report; None when there is
        none to give."""
        return None

    def runtime_contract(self, directory: Path, metadata: Mapping[str, str], pieces: list[str],
                         encoder_width: int | None, result) -> tuple[int | None, str]:
        """What the runtime reads beside the graphs, checked (each problem through result.fail): the feature size
        and the normalisation it will compute. sherpa-onnx reads them from the encoder's metadata (feat_dim,
        normalize_type) and checks vocab_size against tokens.txt."""
        from nemo2sherpa.families.common import sherpa_runtime_contract

        return sherpa_runtime_contract(metadata, pieces, encoder_width, self.encoder_role.name, result)

    def runtime_max_symbols(self, spec: ModelSpec) -> int | None:
        """The most tokens the runtime's own greedy search emits on one frame, where it differs from NeMo's limit;
        None: the same as NeMo's (or no such limit)."""
        return None

    @abstractmethod
    def runtime_recognizer(self, paths: Mapping[str, Path], tokens: Path, *, provider: str, threads: int,
                           sample_rate: int, feature_dim: int, with_front_end_option: bool = False):
        """The runtime's recognizer for the files: a sherpa_onnx.OfflineRecognizer (imports sherpa_onnx), or an object
        whose transcribe(audio, sample_rate) gives text, tokens and timestamps (another runtime).
        `with_front_end_option`: with the family's `front_end_option` set (only asked of a family that has one)."""

    # ----------------------------------------------------------------------------------------------- publish

    @abstractmethod
    def usage(self, files: Mapping[str, str], tokens: str, *, feature_dim: int, sample_rate: int,
              provider_note: str, metadata: Mapping[str, str] | None = None, variants: Sequence[str] = ()) -> str:
        """Markdown: how to load these files with the family's runtime (Python, command line, ...), paths as given.
        `metadata` (the manifest's record of the family) and `variants` (its precisions) let it name what the
        directory holds."""
