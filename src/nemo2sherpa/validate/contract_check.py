"""Check 1: does the directory satisfy sherpa-onnx's contract? Reads the graphs without their weights: seconds even
for a 4 GB encoder, and no NeMo, no torch.

Each problem is named (file, key, expected vs found). What is learned here (vocab, TDT, durations, states) feeds the
later checks, so a third-party directory without a manifest is judged by its own metadata.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nemo2sherpa.confinement import outside_reason
from nemo2sherpa.errors import UserError
from nemo2sherpa.families import ModelSpec
from nemo2sherpa.families.common import dims
from nemo2sherpa.graphs.tensors import graph_tensors
from nemo2sherpa.manifest import file_problems
from nemo2sherpa.tokens_txt import parse_tokens
from nemo2sherpa.validate.model_dir import ModelDir
from nemo2sherpa.validate.results import CheckResult


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
        outside = outside_reason(directory, info.location)
        if outside:  # never stat it: its existence and size are nobody's business
            problems.append(f"{name} names external data outside the model directory: {outside}")
            break
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


def check_contract(model: ModelDir) -> tuple[CheckResult, ModelSpec | None]:
    """What every family's directory must satisfy (files, hashes, external data, tokens, features), then the
    family's own contract (family.check_contract)."""
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

    encoder_graph = graphs[model.family.encoder_role.name]
    metadata = {p.key: p.value for p in encoder_graph.metadata_props}
    result.details["metadata"] = metadata
    try:  # named by file name only: reports get published, local paths must not leak into them
        pieces = parse_tokens(model.tokens.read_text(encoding="utf-8", errors="replace"), model.tokens.name)
    except UserError as exc:
        result.fail(str(exc))
        pieces = []
    encoder_in = dims(encoder_graph.graph.input[0])
    encoder_width = encoder_in[1] if len(encoder_in) == 3 and isinstance(encoder_in[1], int) else None
    feat_dim, normalize = model.family.runtime_contract(model.directory, metadata, pieces, encoder_width, result)
    result.details.update({"family": model.family.name, "runtime": model.family.runtime,
                           "encoder_input_width": encoder_width,
                           "tokens": len(pieces)})

    spec = model.family.check_contract(graphs, pieces, model.manifest, result)
    if result.failed or spec is None:
        return result, None
    spec = replace(spec, feat_dim=feat_dim or encoder_width or 80, normalize_type=normalize)
    return result, spec
