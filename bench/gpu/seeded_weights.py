"""Model directories whose large weights travel as a recipe, not as bytes: strip here, regenerate there.

Why: a GPU machine that is reached only through small transfers (tens of MB) cannot receive a 2.5-4.3 GB encoder,
yet CPU and CUDA figures must refer to the same model. `strip` keeps every graph and every small tensor of a model
directory as it is and replaces each large tensor by its description (dtype, shape, mean, standard deviation, range);
`restore` regenerates those tensors from a seed derived from the graph file and tensor name, so both machines
write the same values (the restore prints the sha256 of every file it wrote, and the payload carries the hashes of the
dry run to compare). The values are drawn per tensor from a normal distribution with the original tensor's mean and
standard deviation, clipped to its range (integers: uniform over its range), so activations keep the scale of the
exported random-weight model (LayerNorm gains stay 1, quantization scales stay positive) and speed figures are those
of a model of this architecture. They are not the exported weights: a directory made this way carries
`random_weights: true` in its manifest like any random-weight export, and its transcripts mean nothing.

    python bench/gpu/seeded_weights.py strip MODEL_DIR STRIPPED_DIR      # here, after convert --random-weights
    python bench/gpu/seeded_weights.py restore STRIPPED_DIR MODEL_DIR    # anywhere: numpy and onnx only

Needs numpy, onnx and nemo2sherpa's base package (no NeMo, no torch, no onnxruntime).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nemo2sherpa.graphs.tensors import external_array, graph_tensors
from nemo2sherpa.manifest import read_manifest

FORMAT = "nemo2sherpa-seeded-weights"
SPEC_NAME = "seeded.json"
MANIFEST_NAME = "manifest.json"
MIN_ELEMENTS = 16384  # smaller tensors (biases, norms, shape constants) travel as they are
ALIGNMENT = 4096  # page-aligned offsets, as convert writes them (onnxruntime can map them)
_SUPPORTED = {"float32", "float16", "int8", "uint8"}


def _tensor_values(tensor, directory: Path) -> np.ndarray:
    """The tensor's values, wherever they are stored (raw data, typed fields or an external file)."""
    from onnx import numpy_helper
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if not uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    with open(directory / ExternalDataInfo(tensor).location, "rb") as stream:
        return external_array(tensor, stream)


def _set_external(tensor, location: str, offset: int, length: int) -> None:
    from onnx import TensorProto

    for field_name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(field_name)
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL


def _set_inline(tensor, values: np.ndarray) -> None:
    from onnx import TensorProto

    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = np.ascontiguousarray(values).tobytes()


def _weights_name(graph_file: str) -> str:
    return Path(graph_file).with_suffix(".weights").name


def strip(source: Path, target: Path, min_elements: int = MIN_ELEMENTS) -> dict:
    """Write `target`: the graphs of `source` with each large tensor described in seeded.json, not stored."""
    import onnx

    manifest = json.loads((source / MANIFEST_NAME).read_text())
    if not manifest.get("random_weights"):
        raise SystemExit(f"{source}: not a random-weight export; only those may have their weights replaced")
    target.mkdir(parents=True, exist_ok=True)
    graphs = sorted({name for family in read_manifest(source).families.values()
                     for variant in family.variants.values() for name in variant.files.values()})
    tensors = []
    for graph_file in graphs:
        model = onnx.load(str(source / graph_file), load_external_data=False)
        weights, offset = _weights_name(graph_file), 0
        for tensor in graph_tensors(model.graph):
            values = _tensor_values(tensor, source)
            dtype = str(values.dtype)
            if values.size < min_elements or dtype not in _SUPPORTED:
                _set_inline(tensor, values)
                continue
            offset = -(-offset // ALIGNMENT) * ALIGNMENT
            wide = values.astype(np.float64)
            tensors.append({"graph": graph_file, "file": weights, "name": tensor.name, "dtype": dtype,
                            "shape": list(values.shape), "offset": offset, "length": values.nbytes,
                            "mean": float(wide.mean()), "std": float(wide.std()),
                            "min": float(wide.min()), "max": float(wide.max())})
            _set_external(tensor, weights, offset, values.nbytes)
            offset += values.nbytes
        onnx.save(model, str(target / graph_file))
    for name in ("tokens.txt",):
        shutil.copy2(source / name, target / name)
    kept = {name: record for name, record in manifest["files"].items() if not name.endswith(".weights")
            and name not in graphs}
    manifest["files"] = kept  # graph and weights hashes are written by restore
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    spec = {"format": FORMAT, "version": 1, "source": source.name, "min_elements": min_elements,
            "graphs": graphs, "tensors": tensors}
    (target / SPEC_NAME).write_text(json.dumps(spec, indent=1) + "\n")
    return spec


def _seed(graph_file: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{graph_file}\0{name}".encode()).digest()[:8], "little")


def _fill(entry: dict, out: np.ndarray) -> None:
    """Regenerate one tensor into `out` (a view of the weights file)."""
    rng = np.random.default_rng(_seed(entry["graph"], entry["name"]))
    flat = out.reshape(-1)
    if entry["dtype"] in ("int8", "uint8"):
        low, high = int(round(entry["min"])), int(round(entry["max"]))
        flat[:] = rng.integers(low, high, size=flat.size, dtype=np.dtype(entry["dtype"]), endpoint=True)
        return
    if entry["std"] == 0.0:
        flat[:] = entry["mean"]
        return
    chunk = 1 << 22
    buffer = np.empty(min(chunk, flat.size), dtype=np.float32)
    for start in range(0, flat.size, chunk):
        part = buffer[:min(chunk, flat.size - start)]
        rng.standard_normal(out=part, dtype=np.float32)
        part *= np.float32(entry["std"])
        part += np.float32(entry["mean"])
        np.clip(part, np.float32(entry["min"]), np.float32(entry["max"]), out=part)
        flat[start:start + part.size] = part  # casts to float16 where the tensor is


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def restore(stripped: Path, target: Path, threads: int | None = None) -> dict[str, str]:
    """Write the model directory `target` from `stripped`; returns {file: sha256} of every file written."""
    spec = json.loads((stripped / SPEC_NAME).read_text())
    if spec.get("format") != FORMAT:
        raise SystemExit(f"{stripped / SPEC_NAME}: not a {FORMAT} file")
    start = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[dict]] = {}
    for entry in spec["tensors"]:
        by_file.setdefault(entry["file"], []).append(entry)
    maps = {}
    for name, entries in by_file.items():
        size = max(e["offset"] + e["length"] for e in entries)
        path = target / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        maps[name] = np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,))

    def one(entry: dict) -> None:
        view = maps[entry["file"]][entry["offset"]:entry["offset"] + entry["length"]]
        _fill(entry, view.view(np.dtype(entry["dtype"])))

    work = sorted(spec["tensors"], key=lambda e: -e["length"])
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        list(pool.map(one, work))
    for array in maps.values():
        array.flush()
    del maps
    copied = spec["graphs"] + ["tokens.txt"]
    for name in copied:
        shutil.copy2(stripped / name, target / name)
    written = copied + sorted(by_file)
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        hashes = dict(zip(written, pool.map(lambda n: _sha256(target / n), written)))
    manifest = json.loads((stripped / MANIFEST_NAME).read_text())
    for name in written:
        manifest["files"][name] = {"sha256": hashes[name], "size": (target / name).stat().st_size}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest.setdefault("export", {})["seeded_weights"] = {
        "note": "large tensors regenerated from seeds with the exported tensors' statistics (bench/gpu)",
        "tensors": len(spec["tensors"])}
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    hashes["seconds"] = round(time.perf_counter() - start, 2)  # type: ignore[assignment]
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    strip_parser = sub.add_parser("strip")
    strip_parser.add_argument("source", type=Path)
    strip_parser.add_argument("target", type=Path)
    strip_parser.add_argument("--min-elements", type=int, default=MIN_ELEMENTS)
    restore_parser = sub.add_parser("restore")
    restore_parser.add_argument("stripped", type=Path)
    restore_parser.add_argument("target", type=Path)
    restore_parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "strip":
        spec = strip(args.source, args.target, args.min_elements)
        total = sum(e["length"] for e in spec["tensors"])
        print(f"{args.target}: {len(spec['tensors'])} tensors ({total / 1e9:.2f} GB) described, not stored")
    else:
        hashes = restore(args.stripped, args.target, args.threads)
        print(json.dumps(hashes, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
