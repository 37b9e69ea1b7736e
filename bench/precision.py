"""Precision variants: conversion cost, size, CPU decode speed and transcripts against float32.

  python bench/precision.py variant FP32_DIR OUT_DIR --precision int8 [--no-conv] [--all-matmuls]
      writes OUT_DIR (links to FP32_DIR's files plus the variant) and prints seconds and peak RSS as JSON
  python bench/precision.py decode DIR --precision int8 [--lengths 2,30] [--repeats 3] [--threads 2]
      sherpa-onnx decode time per audio length (median after a warm-up), fixture speech tiled to length
  python bench/precision.py encoder DIR --precision int8 [--lengths 2,30] [--repeats 3]
      the encoder alone through onnxruntime (CPU): decode time without the token loop
  python bench/precision.py compare DIR --precision int8 [--rounds 3] [--lengths 2,30] [--repeats 3] [--json F]
      fp32 and the variant side by side in one run: `decode` and `encoder` for each, in fresh processes, the
      order alternating per round; prints the medians over rounds and the speed-up
  python bench/precision.py wer DIR --precision int8 [--dataset JSONL]
      sherpa-onnx transcripts of a test set (default: the bundled tiny-tdt-en), WER vs truth and vs fp32
  python bench/precision.py fp16-cause DIR
      the evidence behind docs/precision.md: onnxruntime CPU hides float16 overflow; the naive (all-float16)
      length path against float32 at 5..45 s of audio (emulated float16, as CUDA computes it)

OMP_WAIT_POLICY=PASSIVE is set here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import own_peak_rss_bytes  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "src" / "nemo2sherpa" / "fixtures" / "tiny-tdt-en"


def _names(precision: str) -> tuple[str, str, str]:
    suffix = "" if precision == "fp32" else f".{precision}"
    return tuple(f"{g}{suffix}.onnx" for g in ("encoder", "decoder", "joiner"))  # type: ignore[return-value]


def cmd_variant(args) -> None:
    from nemo2sherpa.families import TRANSDUCER
    from nemo2sherpa.manifest import Variant
    from nemo2sherpa.precision import int8 as quantize
    from nemo2sherpa.precision.variants import write_variants
    from nemo2sherpa.progress import Progress

    source, out = Path(args.fp32), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        variant_file = ".int8" in path.name or ".fp16." in path.name
        if path.is_file() and not (out / path.name).exists() and not variant_file:
            os.link(path, out / path.name) if args.link else shutil.copy(path, out / path.name)
    if args.no_conv or args.all_matmuls:
        quantize.ENCODER_INT8 = quantize.Int8Options("QUInt8", const_b_only=not args.all_matmuls, conv=not args.no_conv)
    record: dict = {}
    started = time.perf_counter()
    write_variants(out, TRANSDUCER, Variant(TRANSDUCER.files()), None, ("fp32", args.precision), Progress(),
                   record=record)
    seconds = time.perf_counter() - started
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if f".{args.precision}." in p.name}
    print(json.dumps({"precision": args.precision, "seconds": round(seconds, 1),
                      "peak_rss_gb": round(own_peak_rss_bytes() / 2**30, 2),
                      "sizes": sizes, "record": record}, default=str))


def _speech(seconds: float) -> np.ndarray:
    from nemo2sherpa.validate.audio import read_dataset
    from nemo2sherpa.validate.speed import make_bucket_clips

    clips = read_dataset(FIXTURE / "dataset.jsonl", 16000)
    return next(iter(make_bucket_clips(clips, [seconds], 16000).values())).audio


def _recognizer(directory: Path, precision: str, threads: int, provider: str = "cpu"):
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer

    return make_recognizer(open_model_dir(directory, precision), provider=provider, threads=threads)


def _timing(wall: list[float], cpu: list[float]) -> dict:
    """Wall seconds (median, min, all) and the process's CPU seconds (all threads; median). On a shared machine the
    CPU seconds move much less with other people's load than the wall time does."""
    return {"median": round(statistics.median(wall), 3), "min": round(min(wall), 3),
            "all": [round(t, 3) for t in wall], "cpu_seconds_median": round(statistics.median(cpu), 3)}


def cmd_decode(args) -> None:
    from nemo2sherpa.validate.sherpa_runner import transcribe

    directory = Path(args.dir)
    started = time.perf_counter()
    recognizer = _recognizer(directory, args.precision, args.threads)
    load = time.perf_counter() - started
    result = {"precision": args.precision, "threads": args.threads, "load_seconds": round(load, 2), "decode": {},
              "tokens": {}}
    for length in (float(x) for x in args.lengths.split(",")):
        audio = _speech(length)
        result["tokens"][f"{length:g}s"] = len(transcribe(recognizer, audio).tokens)
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            transcribe(recognizer, audio)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        result["decode"][f"{length:g}s"] = _timing(times, cpu)
    result["peak_rss_gb"] = round(own_peak_rss_bytes() / 2**30, 2)
    print(json.dumps(result))


def cmd_encoder(args) -> None:
    """The encoder alone (onnxruntime, CPU, like sherpa-onnx's session: all optimisations, `threads` intra-op):
    the decode time without the decoder/joiner loop, whose length depends on how many tokens a model emits (a
    random-weight model emits up to 5 per frame, and int8 changes how many)."""
    import onnx
    import onnxruntime as ort

    from nemo2sherpa.features import log_mel

    encoder = Path(args.dir) / _names(args.precision)[0]
    structure = onnx.load(str(encoder), load_external_data=False)
    feat_dim = int({p.key: p.value for p in structure.metadata_props}.get("feat_dim", "80"))
    inputs = [i.name for i in structure.graph.input]
    del structure
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    started = time.perf_counter()
    session = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
    result = {"precision": args.precision, "graph": "encoder", "threads": args.threads,
              "load_seconds": round(time.perf_counter() - started, 2), "run": {}}
    for length in (float(x) for x in args.lengths.split(",")):
        features = log_mel(_speech(length), feat_dim)
        feeds = {inputs[0]: features[np.newaxis], inputs[1]: np.array([features.shape[1]], dtype=np.int64)}
        session.run(None, feeds)
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        result["run"][f"{length:g}s"] = _timing(times, cpu)
    result["peak_rss_gb"] = round(own_peak_rss_bytes() / 2**30, 2)
    print(json.dumps(result))


def cmd_wer(args) -> None:
    from nemo2sherpa.validate.audio import read_dataset
    from nemo2sherpa.validate.sherpa_runner import transcribe
    from nemo2sherpa.validate.transcripts import corpus_wer, same_text

    clips = read_dataset(Path(args.dataset), 16000)
    texts = {}
    for precision in ("fp32", args.precision):
        recognizer = _recognizer(Path(args.dir), precision, args.threads)
        texts[precision] = [transcribe(recognizer, c.audio).text for c in clips]
    truth = [c.text or "" for c in clips]
    wer = {p: corpus_wer(truth, t, normalize=True) for p, t in texts.items()}
    print(json.dumps({
        "precision": args.precision, "utterances": len(clips),
        "wer_vs_truth_percent": wer,
        "wer_delta_abs": round(wer[args.precision] - wer["fp32"], 3) if None not in wer.values() else None,
        "exact_match_vs_fp32": round(sum(same_text(a, b) for a, b in zip(texts["fp32"], texts[args.precision]))
                                     / len(clips), 4),
        "wer_vs_fp32_percent": corpus_wer(texts["fp32"], texts[args.precision]),
        "empty": sum(not t.strip() for t in texts[args.precision]),
    }))


def _fresh_process(command: str, directory: str, precision: str, args) -> dict:
    import subprocess

    done = subprocess.run([sys.executable, __file__, command, directory, "--precision", precision, "--lengths",
                           args.lengths, "--repeats", str(args.repeats), "--threads", str(args.threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cmd_compare(args) -> None:
    """fp32 (the baseline) and the variant in one run, each measurement in a fresh process, alternating."""
    runs: dict[str, dict[str, list[dict]]] = {"fp32": {"decode": [], "encoder": []},
                                              args.precision: {"decode": [], "encoder": []}}
    for round_index in range(args.rounds):
        order = ["fp32", args.precision] if round_index % 2 == 0 else [args.precision, "fp32"]
        for precision in order:
            for command in ("decode", "encoder"):
                runs[precision][command].append(_fresh_process(command, args.dir, precision, args))
                print(f"round {round_index + 1} {precision} {command} done", file=sys.stderr, flush=True)
    lengths = [f"{float(x):g}s" for x in args.lengths.split(",")]
    summary: dict = {"precision": args.precision, "rounds": args.rounds, "repeats": args.repeats,
                     "threads": args.threads, "load_average": os.getloadavg(), "rows": []}
    for length in lengths:
        for command, key in (("decode", "decode"), ("encoder", "run")):
            medians = {p: statistics.median(r[key][length]["median"] for r in runs[p][command]) for p in runs}
            cpu = {p: statistics.median(r[key][length]["cpu_seconds_median"] for r in runs[p][command])
                   for p in runs}
            row = {"what": "sherpa-onnx decode" if command == "decode" else "encoder alone (onnxruntime)",
                   "audio": length, "fp32_seconds": round(medians["fp32"], 3),
                   f"{args.precision}_seconds": round(medians[args.precision], 3),
                   "speedup": round(medians["fp32"] / medians[args.precision], 2),
                   "cpu_seconds": {p: round(v, 3) for p, v in cpu.items()}}
            if command == "decode":
                row["tokens"] = {p: runs[p]["decode"][0]["tokens"][length] for p in runs}
            summary["rows"].append(row)
    summary["load_seconds"] = {p: statistics.median(r["load_seconds"] for r in runs[p]["decode"]) for p in runs}
    summary["peak_rss_gb"] = {p: max(r["peak_rss_gb"] for r in runs[p]["decode"]) for p in runs}
    print(f"{'what':30} {'audio':>6} {'fp32 s':>8} {args.precision + ' s':>8} {'speed-up':>9}")
    for row in summary["rows"]:
        print(f"{row['what']:30} {row['audio']:>6} {row['fp32_seconds']:8.3f} "
              f"{row[args.precision + '_seconds']:8.3f} {row['speedup']:8.2f}x")
    print(f"load s {summary['load_seconds']}, peak RSS GB {summary['peak_rss_gb']}, "
          f"load average {summary['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))


def cmd_fp16_cause(args) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from nemo2sherpa.features import probe_features
    from nemo2sherpa.precision.fp16 import convert_graph_fp16, encoder_feeds

    # 1. onnxruntime's CPU provider computes a float16 MatMul chain in float32: no overflow where CUDA has one.
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    weights = [numpy_helper.from_array(np.array([[300.0]], np.float16), "w1"),
               numpy_helper.from_array(np.array([[0.001]], np.float16), "w2")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 1])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cpu = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = float(cpu.run(None, {"x": np.array([[300.0]], np.float16)})[0].ravel()[0])
    with np.errstate(over="ignore"):
        true = float(np.float16(300) * np.float16(300) * np.float16(0.001))
    print(json.dumps({"x@300@0.001 with x=300": {"onnxruntime_cpu": y, "float16_arithmetic": true}}))

    # 2. The naive all-float16 graph (emulated) against float32, by audio length: the float length path.
    directory = Path(args.dir)
    scratch = directory.parent / f".{directory.name}-fp16-cause"
    scratch.mkdir(exist_ok=True)
    try:
        for name in ("encoder.onnx",):
            shutil.copy(directory / name, scratch / name)
        weights_file = directory / "encoder.weights"
        if weights_file.exists():
            os.link(weights_file, scratch / "encoder.weights")
        convert_graph_fp16(scratch / "encoder.onnx", scratch / "naive.onnx", emulate=True, naive=True)
        structure = onnx.load(str(directory / "encoder.onnx"), load_external_data=False)
        feat_dim = int({p.key: p.value for p in structure.metadata_props}.get("feat_dim", "80"))
        convert_graph_fp16(scratch / "encoder.onnx", scratch / "ours.onnx", emulate=True,
                           probe=encoder_feeds(structure, feat_dim))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.log_severity_level = 3
        sessions = {n: ort.InferenceSession(str(scratch / f"{n}.onnx"), options, providers=["CPUExecutionProvider"])
                    for n in ("encoder", "naive", "ours")}
        for seconds in (5, 20, 25, 30, 45):
            features = probe_features(feat_dim, seconds)
            feeds = {"audio_signal": features[None], "length": np.array([features.shape[1]], np.int64)}
            reference, reference_length = sessions["encoder"].run(None, feeds)
            row = {"seconds": seconds, "frames": features.shape[1], "fp32_encoded_length": int(reference_length[0])}
            for name in ("naive", "ours"):
                out, length = sessions[name].run(None, feeds)
                n = min(out.shape[2], reference.shape[2])
                row[name] = {"encoded_length": int(length[0]),
                             "max_abs_diff": float(np.max(np.abs(out[..., :n] - reference[..., :n])))}
            print(json.dumps(row))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("variant")
    p.add_argument("fp32")
    p.add_argument("out")
    p.add_argument("--precision", choices=("int8", "fp16"), required=True)
    p.add_argument("--no-conv", action="store_true", help="int8: leave Conv in float32")
    p.add_argument("--all-matmuls", action="store_true", help="int8: quantize activation x activation MatMuls too")
    p.add_argument("--link", action="store_true", help="hard-link the fp32 files instead of copying them")
    p = sub.add_parser("decode")
    p.add_argument("dir")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--lengths", default="2,30")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("encoder")
    p.add_argument("dir")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--lengths", default="2,30")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("compare")
    p.add_argument("dir")
    p.add_argument("--precision", required=True)
    p.add_argument("--lengths", default="2,30")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p = sub.add_parser("wer")
    p.add_argument("dir")
    p.add_argument("--precision", required=True)
    p.add_argument("--dataset", default=str(FIXTURE / "dataset.jsonl"))
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("fp16-cause")
    p.add_argument("dir", help="a float32 model directory")
    args = parser.parse_args(argv)
    commands = {"variant": cmd_variant, "decode": cmd_decode, "encoder": cmd_encoder, "wer": cmd_wer,
                "compare": cmd_compare, "fp16-cause": cmd_fp16_cause}
    commands[args.command](args)


if __name__ == "__main__":
    main(sys.argv[1:])
