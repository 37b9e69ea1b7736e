"""Which int8: the candidates side by side (accuracy, speed, size, memory, CUDA kernels), and the per-layer
sensitivity sweep behind the choice. docs/precision.md holds the figures and the choice they led to.

  python bench/int8.py sweep FP32_DIR [--method int8|int8-dynamic] [--clips 40] [--json F]
      quantize one layer at a time and rank the layers by the encoder output's signal-to-noise ratio against
      float32 on the held-out clips (features of nemo2sherpa's own front end)
  python bench/int8.py compare FP32_DIR --work WORK [--candidates A,B,...] [--accuracy] [--long 60,600]
                         [--rounds 2] [--lengths 2,30] [--json F]
      writes each candidate into WORK/<candidate>/ (float32 files linked, the candidate under the int8 names) in a
      fresh process (conversion seconds and peak RSS), then per candidate: size; sherpa-onnx decode time, the
      encoder alone and the decoding process's peak RSS against float32 (fresh processes, alternating, medians
      over rounds); the ops without a CUDA kernel; with --accuracy (a small-tdt-en conversion; NeMo needed) the
      WER on the bundled held-out clips and on inputs of each --long length joined from them, of the graphs fed
      NeMo's features and of sherpa-onnx end to end, and the distance to float32's own transcripts
  python bench/int8.py write FP32_DIR OUT --candidate NAME
      one candidate (what compare runs in a fresh process); prints seconds and peak RSS as JSON

FP32_DIR is a conversion (`nemo2sherpa convert small-tdt-en -o DIR`, or `convert parakeet-tdt-1.1b
--random-weights -o DIR` for speed, size and memory). OMP_WAIT_POLICY=PASSIVE is set here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from measure import own_peak_rss_bytes  # noqa: E402

GRAPHS = ("encoder", "decoder", "joiner")
CALIBRATION_SENTENCES = 48


def _blockwise(bits: int, block_size: int, keep_float: tuple[str, ...] = ()) -> Callable[[Path, Path, str], dict]:
    """The product's int8 options (accuracy level, pointwise convolutions) with these bits, blocks and exclusions."""
    def write(source: Path, target: Path, graph: str) -> dict:
        from dataclasses import replace

        from nemo2sherpa.precision.blockwise import INT8_BLOCKWISE, quantize_blockwise

        options = replace(INT8_BLOCKWISE, bits=bits, block_size=block_size, keep_float=keep_float)
        return quantize_blockwise(source, target, options)
    return write


def _dynamic_streamed(source: Path, target: Path, graph: str) -> dict:
    from nemo2sherpa.precision.int8 import ENCODER_INT8, SMALL_INT8, quantize_small, quantize_streamed

    return quantize_streamed(source, target, ENCODER_INT8) if graph == "encoder" else quantize_small(source, target,
                                                                                                    SMALL_INT8)


def _dynamic_ort(per_channel: bool, keep_float: tuple[str, ...] = ()) -> Callable[[Path, Path, str], dict]:
    """onnxruntime's quantize_dynamic on the whole graph (it loads the model whole: small models only)."""
    def write(source: Path, target: Path, graph: str) -> dict:
        import re

        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        excluded = [n.name for n in onnx.load(str(source), load_external_data=False).graph.node
                    if any(re.search(p, n.name) for p in keep_float)]
        quantize_dynamic(str(source), str(target), per_channel=per_channel,
                         weight_type=QuantType.QUInt8 if graph == "encoder" and not per_channel else QuantType.QInt8,
                         nodes_to_exclude=excluded, extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1})
        return {"excluded": len(excluded)}
    return write


def _calibration_features(feat_dim: int) -> list[np.ndarray]:
    """Features of training sentences (never the held-out ones) spoken as the corpus speaks them."""
    import random

    from nemo2sherpa.features import log_mel
    from nemo2sherpa.recipes import find_recipe
    from nemo2sherpa.testing import corpus

    bundled = find_recipe("small-tdt-en").bundled_path().parent
    sentences = (bundled / "training_sentences.txt").read_text(encoding="utf-8").splitlines()[:CALIBRATION_SENTENCES]
    rng = random.Random(0)
    return [log_mel(corpus.speak(s, corpus.rendering(rng), seed).astype(np.float32) / 32768.0, feat_dim, 16000)
            for seed, s in enumerate(sentences)]


def _static_qdq(source: Path, target: Path, graph: str) -> dict:
    """Static QDQ, per-channel QInt8 weights and QUInt8 activations calibrated (min-max) on speech of training
    sentences; the decoder and joiner take block-wise int8 (no audio reaches them directly)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if graph != "encoder":
        return _blockwise(8, 128)(source, target, graph)
    structure = onnx.load(str(source), load_external_data=False)
    names = [i.name for i in structure.graph.input]
    feat_dim = int(structure.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    features = iter(_calibration_features(feat_dim))

    class Reader(CalibrationDataReader):
        def get_next(self):
            f = next(features, None)
            return None if f is None else {names[0]: f[None], names[1]: np.array([f.shape[1]], dtype=np.int64)}

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul",
                                                                                                         "Conv"],
                    extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1})
    return {"calibration_sentences": CALIBRATION_SENTENCES}


# the sweeps' most sensitive layers (docs/precision.md): under dynamic quantization the subsampling and depthwise
# convolutions (block-wise int8 leaves both in float32 anyway), under block-wise int8 the second pointwise convolution
SENSITIVE = (r"pre_encode/conv", r"depthwise_conv")
SENSITIVE_BLOCKWISE = (r"pointwise_conv2",)
CANDIDATES: dict[str, tuple[str, Callable[[Path, Path, str], dict]]] = {
    "int8-dynamic": ("dynamic, per-tensor (QUInt8 encoder, QInt8 decoder/joiner): sherpa-onnx's published int8",
                     _dynamic_streamed),
    "dynamic-per-channel": ("dynamic, per-channel QInt8 weights (onnxruntime quantize_dynamic)",
                            _dynamic_ort(per_channel=True)),
    "dynamic-sensitive-float": ("dynamic, the sweep's sensitive layers (subsampling, depthwise convs) in float32",
                                _dynamic_ort(per_channel=False, keep_float=SENSITIVE)),
    "static-qdq": ("static QDQ, per-channel, calibrated on 48 spoken training sentences", _static_qdq),
    "int8-b32": ("block-wise weight-only int8 (MatMulNBits), blocks of 32", _blockwise(8, 32)),
    "int8-b64": ("block-wise weight-only int8 (MatMulNBits), blocks of 64", _blockwise(8, 64)),
    "int8-b128": ("block-wise weight-only int8 (MatMulNBits), blocks of 128: the int8 default", _blockwise(8, 128)),
    "int8-b128-sensitive-float": ("block-wise int8, blocks of 128, the sweep's sensitive layers (pointwise_conv2) "
                                  "in float32", _blockwise(8, 128, SENSITIVE_BLOCKWISE)),
    "int4-b32": ("block-wise weight-only int4 (MatMulNBits), blocks of 32", _blockwise(4, 32)),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cmd_write(args) -> None:
    """The candidate beside links to the float32 files, under the int8 names, with the manifest's hashes updated
    (so that validate and the runners open it as the directory's int8 variant)."""
    source, out = Path(args.fp32), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and ".int8" not in path.name and ".fp16" not in path.name and path.name != "manifest.json":
            if not (out / path.name).exists():
                os.link(path, out / path.name)
    _, write = CANDIDATES[args.candidate]
    started = time.perf_counter()
    record = {graph: write(source / f"{graph}.onnx", out / f"{graph}.int8.onnx", graph) for graph in GRAPHS}
    seconds = time.perf_counter() - started
    peak = own_peak_rss_bytes() / 2**30
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"] = {k: v for k, v in manifest["files"].items() if ".int8" not in k and ".fp16" not in k}
    for graph in GRAPHS:
        path = out / f"{graph}.int8.onnx"
        manifest["files"][path.name] = {"sha256": _sha256(path), "size": path.stat().st_size}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    print(json.dumps({"candidate": args.candidate, "seconds": round(seconds, 1), "peak_rss_gb": round(peak, 2),
                      "record": {g: {k: v for k, v in r.items() if k != "sha256"} for g, r in record.items()}},
                     default=str))


def cuda_kernels(directory: Path) -> dict[str, int]:
    """Ops of the int8 graphs that onnxruntime's CUDA provider has no kernel for (empty: CUDA-clean)."""
    from nemo2sherpa.validate.precision_check import predicted_cpu_ops

    return predicted_cpu_ops(*(directory / f"{graph}.int8.onnx" for graph in GRAPHS))


def _fresh(command: list[str]) -> dict:
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _speed(directories: dict[str, Path], args) -> dict[str, Any]:
    """sherpa-onnx decode and the encoder alone for float32 and each candidate, fresh processes, the order
    rotating per round; medians over rounds (bench/precision.py's decode and encoder commands)."""
    precision_bench = str(BENCH / "precision.py")
    runs: dict[str, dict[str, list[dict]]] = {name: {"decode": [], "encoder": []} for name in directories}
    names = list(directories)
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            precision = "fp32" if name == "fp32" else "int8"
            for command in ("decode", "encoder"):
                runs[name][command].append(_fresh([precision_bench, command, str(directories[name]), "--precision",
                                                   precision, "--lengths", args.lengths, "--repeats",
                                                   str(args.repeats), "--threads", str(args.threads)]))
            print(f"speed round {round_index + 1}: {name}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for name, by_command in runs.items():
        entry: dict[str, Any] = {"peak_rss_gb": max(r["peak_rss_gb"] for r in by_command["decode"])}
        for length in (f"{float(x):g}s" for x in args.lengths.split(",")):
            entry[f"decode {length}"] = statistics.median(r["decode"][length]["median"] for r in by_command["decode"])
            entry[f"encoder {length}"] = statistics.median(r["run"][length]["median"] for r in by_command["encoder"])
        out[name] = entry
    return out


def _accuracy(directories: dict[str, Path], args) -> dict[str, Any]:
    """WER against the truth of the graphs fed NeMo's features and of sherpa-onnx, and against float32's own
    transcripts (the distance the candidate adds, less noisy than a difference of two WERs)."""
    import accuracy

    from nemo2sherpa.validate import sherpa_runner
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.front_end_replay import text_of
    from nemo2sherpa.validate.model_dir import open_model_dir

    clips = accuracy.read_heldout(Path(args.heldout))
    sets = {"short": clips, **{f"{float(s):.0f} s": accuracy.joined(clips, float(s))
                               for s in args.long.split(",") if s}}
    sets = {name: inputs for name, inputs in sets.items() if inputs}  # a held-out set shorter than a --long length
    nemo = accuracy.Nemo(Path(args.nemo))
    features = {name: [nemo.run(audio)[0] for _, audio, _ in inputs] for name, inputs in sets.items()}
    truth = {name: [text for _, _, text in inputs] for name, inputs in sets.items()}
    texts: dict[str, dict[str, dict[str, list[str]]]] = {}
    for name, directory in directories.items():
        model = open_model_dir(directory, variant=None if name == "fp32" else "int8")
        _, spec = check_contract(model)
        graphs = model.family.graph_decoder(model.graphs, spec, threads=args.threads)
        recognizer = sherpa_runner.make_recognizer(model, threads=args.threads, feature_dim=spec.feat_dim)
        texts[name] = {"graphs": {}, "sherpa": {}}
        for set_name, inputs in sets.items():
            graph_texts = []
            for feats in features[set_name]:
                encoded, length = graphs.encode(feats)
                graph_texts.append(text_of(graphs.greedy(encoded, length, 10).tokens, spec.pieces))
            texts[name]["graphs"][set_name] = graph_texts
            texts[name]["sherpa"][set_name] = [sherpa_runner.transcribe(recognizer, audio).text
                                               for _, audio, _ in inputs]
        print(f"accuracy: {name}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"sets": {n: len(i) for n, i in sets.items()}}
    for name in directories:
        entry = {}
        for set_name in sets:
            graph_texts, reference = texts[name]["graphs"][set_name], texts["fp32"]["graphs"][set_name]
            entry[set_name] = {
                "graphs_wer": accuracy.wer(truth[set_name], graph_texts),
                "sherpa_wer": accuracy.wer(truth[set_name], texts[name]["sherpa"][set_name]),
                "graphs_wer_vs_fp32": accuracy.wer(reference, graph_texts),
                "graphs_same_as_fp32": round(sum(a == b for a, b in zip(reference, graph_texts)) / len(reference), 4),
            }
        out[name] = entry
    return out


def cmd_compare(args) -> None:
    fp32, work = Path(args.fp32), Path(args.work)
    chosen = [c for c in args.candidates.split(",") if c]
    unknown = [c for c in chosen if c not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    results: dict[str, Any] = {"fp32": str(fp32), "threads": args.threads, "candidates": {}}
    directories = {"fp32": fp32}
    for name in chosen:
        directory = work / name
        written = _fresh([__file__, "write", str(fp32), str(directory), "--candidate", name])
        size = sum((directory / f"{g}.int8.onnx").stat().st_size for g in GRAPHS)
        results["candidates"][name] = {"what": CANDIDATES[name][0], "conversion_seconds": written["seconds"],
                                       "conversion_peak_rss_gb": written["peak_rss_gb"], "bytes": size,
                                       "without_cuda_kernel": cuda_kernels(directory)}
        directories[name] = directory
        print(f"wrote {name}: {written['seconds']} s, {size / 1e6:.1f} MB", file=sys.stderr, flush=True)
    results["fp32_bytes"] = sum((fp32 / f"{g}.onnx").stat().st_size for g in GRAPHS) + sum(
        p.stat().st_size for p in fp32.glob("*.weights"))
    results["speed"] = _speed(directories, args)
    if args.json:  # kept should the accuracy part fail
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.accuracy:
        results["accuracy"] = _accuracy(directories, args)
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def print_tables(results: dict) -> None:
    speed, lengths = results["speed"], [k[7:] for k in results["speed"]["fp32"] if k.startswith("decode ")]
    print("| candidate | MB | conversion s | peak GB | " + " | ".join(
        f"decode {n} s (x fp32)" for n in lengths) + " | " + " | ".join(f"encoder {n} s (x fp32)" for n in lengths)
        + " | decode peak RSS GB | ops without CUDA kernel |")
    print("|---" * (6 + 2 * len(lengths)) + "|")
    rows = {"fp32": {"bytes": results["fp32_bytes"], "without_cuda_kernel": {}}, **results["candidates"]}
    for name, row in rows.items():
        cells = [name, f"{row['bytes'] / 1e6:.1f}", str(row.get("conversion_seconds", "")),
                 str(row.get("conversion_peak_rss_gb", ""))]
        for what in ("decode", "encoder"):
            for length in lengths:
                value, base = speed[name][f"{what} {length}"], speed["fp32"][f"{what} {length}"]
                cells.append(f"{value:.3f} ({base / value:.2f}x)")
        cells.append(f"{speed[name]['peak_rss_gb']:.2f}")
        cells.append(", ".join(f"{op} x{n}" for op, n in row["without_cuda_kernel"].items()) or "none")
        print("| " + " | ".join(cells) + " |")
    if "accuracy" in results:
        accuracy = results["accuracy"]
        sets = list(accuracy["sets"])
        print("\n| candidate | " + " | ".join(
            f"{s}: graphs WER / sherpa-onnx WER / WER vs fp32 / same as fp32" for s in sets) + " |")
        print("|---" * (1 + len(sets)) + "|")
        for name in rows:
            cells = [f"{accuracy[name][s]['graphs_wer']:.2f}% / {accuracy[name][s]['sherpa_wer']:.2f}% / "
                     f"{accuracy[name][s]['graphs_wer_vs_fp32']:.2f}% / "
                     f"{100 * accuracy[name][s]['graphs_same_as_fp32']:.0f}%" for s in sets]
            print(f"| {name} | " + " | ".join(cells) + " |")


def cmd_sweep(args) -> None:
    """One layer quantized at a time; its cost is the encoder output's SNR against float32 (higher: harmless)."""
    import tempfile

    import accuracy
    import onnx
    import onnxruntime as ort

    from nemo2sherpa.features import log_mel
    from nemo2sherpa.precision.blockwise import INT8_BLOCKWISE, quantize_blockwise

    encoder = Path(args.fp32) / "encoder.onnx"
    structure = onnx.load(str(encoder), load_external_data=False)
    feat_dim = int(structure.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    clips = accuracy.read_heldout(Path(args.heldout))[:args.clips]
    features = [log_mel(audio, feat_dim, 16000) for _, audio, _ in clips]

    def outputs(path: Path) -> list[np.ndarray]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return [session.run(None, {names[0]: f[None], names[1]: np.array([f.shape[1]], dtype=np.int64)})[0]
                for f in features]

    reference = outputs(encoder)
    signal = sum(float((r.astype(np.float64) ** 2).sum()) for r in reference)
    initializers = {t.name: t for t in structure.graph.initializer}
    layers = [n for n in structure.graph.node if n.op_type in ("MatMul", "Conv") and len(n.input) > 1
              and n.input[1] in initializers]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nemo2sherpa-sweep-") as scratch:
        candidate = Path(scratch) / "one.onnx"
        for index, layer in enumerate(layers):
            if args.method == "int8":
                info = quantize_blockwise(encoder, candidate, INT8_BLOCKWISE, include=lambda n, name=layer.name:
                                          n.name == name)
                if not sum(info["quantized"].values()):
                    continue  # not a candidate of this method (a depthwise or 2-D convolution)
            else:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(encoder), str(candidate), weight_type=QuantType.QUInt8,
                                 nodes_to_quantize=[layer.name],
                                 extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1})
            noise = sum(float(((o.astype(np.float64) - r) ** 2).sum()) for o, r in zip(outputs(candidate), reference))
            rows.append({"layer": layer.name, "op": layer.op_type,
                         "snr_db": round(10 * np.log10(signal / max(noise, 1e-30)), 2)})
            print(f"sweep {index + 1}/{len(layers)}", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r["snr_db"])
    median = statistics.median(r["snr_db"] for r in rows)
    print(f"{args.method}: {len(rows)} layers, median SNR {median:.1f} dB; the 12 most sensitive:")
    print("| layer | op | SNR dB |\n|---|---|---|")
    for row in rows[:12]:
        print(f"| {row['layer']} | {row['op']} | {row['snr_db']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"method": args.method, "median_snr_db": median, "layers": rows},
                                              indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    import accuracy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep")
    sweep.add_argument("fp32")
    sweep.add_argument("--method", choices=("int8", "int8-dynamic"), default="int8")
    sweep.add_argument("--clips", type=int, default=40)
    compare = sub.add_parser("compare")
    compare.add_argument("fp32")
    compare.add_argument("--work", required=True)
    compare.add_argument("--candidates", default=",".join(CANDIDATES))
    compare.add_argument("--accuracy", action="store_true")
    compare.add_argument("--long", default="60,600")
    compare.add_argument("--rounds", type=int, default=2)
    compare.add_argument("--lengths", default="2,30")
    compare.add_argument("--repeats", type=int, default=3)
    compare.add_argument("--nemo", default=str(accuracy.BUNDLED / "model.nemo"))
    write = sub.add_parser("write")
    write.add_argument("fp32")
    write.add_argument("out")
    write.add_argument("--candidate", choices=list(CANDIDATES), required=True)
    for each in (sweep, compare):
        each.add_argument("--heldout", default=str(accuracy.BUNDLED / "heldout.jsonl"))
        each.add_argument("--threads", type=int, default=2)
        each.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    {"sweep": cmd_sweep, "compare": cmd_compare, "write": cmd_write}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
