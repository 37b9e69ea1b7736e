"""Check 1: does the directory satisfy sherpa-onnx's contract? Reads the graphs without their weights: seconds even
for a 4 GB encoder, and no NeMo, no torch.

Each problem is named (file, key, expected vs found). What is learned here (vocab, TDT, durations, states) feeds the
later checks, so a third-party directory without a manifest is judged by its own metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo2sherpa.contract import REQUIRED_METADATA, SHERPA_NORMALIZE_TYPES, expected_joiner_width, is_tdt_url
from nemo2sherpa.errors import UserError
from nemo2sherpa.manifest import file_problems
from nemo2sherpa.onnx_graph import graph_tensors
from nemo2sherpa.tokens import BLANK, parse_tokens
from nemo2sherpa.validate.model_dir import ModelDir
from nemo2sherpa.validate.results import CheckResult


@dataclass(frozen=True)
class ModelSpec:
    """What decoding needs to know, as the directory itself states it."""

    vocab_size: int
    is_tdt: bool
    durations: tuple[int, ...]
    pred_rnn_layers: int
    pred_hidden: int
    feat_dim: int
    normalize_type: str
    max_symbols: int | None
    metadata: dict[str, str]
    pieces: list[str]


def _dims(value_info) -> list[Any]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value_info.type.tensor_type.shape.dim]


def _load_graph(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a damaged file
        raise UserError.about(path.name, f"is not a readable ONNX model ({type(exc).__name__})") from None


def external_data_problems(graph, directory: Path, name: str) -> list[str]:
    """Every external tensor must lie inside its data file: a truncated .weights file is named here."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    problems = []
    sizes: dict[str, int] = {}
    for tensor in graph_tensors(graph.graph):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        location = directory / info.location
        if info.location not in sizes:
            if not location.is_file():
                problems.append(f"{name} needs {info.location}, which is missing")
                sizes[info.location] = -1
                continue
            sizes[info.location] = location.stat().st_size
        size = sizes[info.location]
        end = (info.offset or 0) + (info.length or 0)
        if size >= 0 and end > size:
            problems.append(f"{info.location} is truncated: {name} tensor {tensor.name} ends at byte {end}, "
                            f"the file has {size}")
            break
    return problems


def _int_metadata(metadata: dict[str, str], key: str, result: CheckResult) -> int | None:
    if key not in metadata:
        return None
    try:
        return int(metadata[key])
    except ValueError:
        result.fail(f"encoder metadata {key}={metadata[key]!r} is not an integer")
        return None


def check_contract(model: ModelDir) -> tuple[CheckResult, ModelSpec | None]:
    result = CheckResult("contract")
    missing = [p.name for p in (*model.graphs.values(), model.tokens) if not p.is_file()]
    if missing:
        result.fail(f"missing file(s): {', '.join(missing)}")
        return result, None
    if model.manifest is not None:
        problems = file_problems(model.directory, model.manifest.files)
        for problem in problems:
            result.fail(f"manifest: {problem}")
        result.details["manifest"] = {"present": True, "files_checked": len(model.manifest.files),
                                      "hash_problems": len(problems)}
    else:
        result.details["manifest"] = {"present": False}

    graphs = {name: _load_graph(path) for name, path in model.graphs.items()}
    for name, graph in graphs.items():
        for problem in external_data_problems(graph, model.directory, model.graphs[name].name):
            result.fail(problem)

    metadata = {p.key: p.value for p in graphs["encoder"].metadata_props}
    result.details["metadata"] = metadata
    for key in REQUIRED_METADATA:
        if key not in metadata:
            result.fail(f"encoder metadata lacks {key!r}, which sherpa-onnx requires")
    vocab_size = _int_metadata(metadata, "vocab_size", result)
    layers = _int_metadata(metadata, "pred_rnn_layers", result)
    hidden = _int_metadata(metadata, "pred_hidden", result)
    _int_metadata(metadata, "subsampling_factor", result)
    feat_dim = _int_metadata(metadata, "feat_dim", result)
    normalize = metadata.get("normalize_type", "")
    if normalize not in SHERPA_NORMALIZE_TYPES:
        result.fail(f"encoder metadata normalize_type={normalize!r}; sherpa-onnx implements only per_feature and none")
    url = metadata.get("url", "")
    is_tdt = is_tdt_url(url)

    try:  # named by file name only: reports get published, local paths must not leak into them
        pieces = parse_tokens(model.tokens.read_text(encoding="utf-8", errors="replace"), model.tokens.name)
    except UserError as exc:
        result.fail(str(exc))
        pieces = []
    if pieces and vocab_size is not None:
        if len(pieces) != vocab_size + 1:
            result.fail(f"tokens.txt has {len(pieces)} tokens; vocab_size {vocab_size} + blank needs {vocab_size + 1}")
        elif pieces[-1] != BLANK:
            result.fail(f"tokens.txt's last token is {pieces[-1]!r}, not {BLANK}")

    encoder_in = _dims(graphs["encoder"].graph.input[0])
    encoder_out = _dims(graphs["encoder"].graph.output[0])
    encoder_width = encoder_in[1] if len(encoder_in) == 3 else None
    if feat_dim is not None and isinstance(encoder_width, int) and encoder_width != feat_dim:
        result.fail(f"feat_dim={feat_dim} in the metadata, but the encoder takes {encoder_width} features")
    joiner_inputs = [_dims(i) for i in graphs["joiner"].graph.input]
    joiner_out = _dims(graphs["joiner"].graph.output[0])
    width = joiner_out[-1] if joiner_out and isinstance(joiner_out[-1], int) else None
    if len(joiner_inputs) == 2:
        d_enc, d_dec = joiner_inputs[0][1], joiner_inputs[1][1]
        if isinstance(encoder_out[1], int) and isinstance(d_enc, int) and d_enc != encoder_out[1]:
            result.fail(f"the joiner takes {d_enc}-wide encoder frames but the encoder gives {encoder_out[1]}: "
                        "joiner and encoder come from different models")
        if hidden is not None and isinstance(d_dec, int) and d_dec != hidden:
            result.fail(f"the joiner takes {d_dec}-wide decoder outputs but pred_hidden is {hidden}")
    decoder_states = [_dims(i) for i in graphs["decoder"].graph.input[2:]]
    for state in decoder_states:
        if len(state) == 3 and layers is not None and hidden is not None:
            if isinstance(state[0], int) and state[0] != layers or isinstance(state[2], int) and state[2] != hidden:
                result.fail(f"decoder state shape {state} does not match pred_rnn_layers={layers}, "
                            f"pred_hidden={hidden}")
                break

    durations: tuple[int, ...] = ()
    manifest_facts = model.manifest.model if model.manifest else None
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
    if manifest_facts is not None:
        if manifest_facts.is_tdt != is_tdt:
            result.fail(f"the manifest says {manifest_facts.decoder_kind.upper()} but the url {url!r} makes "
                        f"sherpa-onnx decode it as {'TDT' if is_tdt else 'RNNT'}")
        expected = expected_joiner_width(manifest_facts.vocab_size, manifest_facts.is_tdt,
                                         len(manifest_facts.durations))
        if width is not None and width != expected:
            result.fail(f"the joiner gives {width} logits; the manifest's model needs {expected}")
        if vocab_size is not None and vocab_size != manifest_facts.vocab_size:
            result.fail(f"vocab_size {vocab_size} in the metadata, {manifest_facts.vocab_size} in the manifest")
        durations = manifest_facts.durations or durations
    result.details.update({"joiner_width": width, "tdt": is_tdt, "durations": list(durations),
                           "encoder_input_width": encoder_width, "tokens": len(pieces)})
    if result.failed or vocab_size is None or layers is None or hidden is None:
        return result, None
    spec = ModelSpec(
        vocab_size=vocab_size, is_tdt=is_tdt, durations=durations, pred_rnn_layers=layers, pred_hidden=hidden,
        feat_dim=feat_dim or (encoder_width if isinstance(encoder_width, int) else 80),
        normalize_type=normalize, max_symbols=manifest_facts.max_symbols_per_frame if manifest_facts else None,
        metadata=metadata, pieces=pieces,
    )
    return result, spec
