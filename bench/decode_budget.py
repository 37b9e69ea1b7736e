"""Where a sherpa-onnx decode of a converted model spends its time, and what the installed onnxruntime charges.

For one model directory (a `nemo2sherpa convert` output), in one run:
1. sherpa-onnx CPU decode of --seconds of espeak-ng speech (a fresh process, one warm-up decode, --runs timed), the
   tokens it emits;
2. with the onnxruntime installed beside this script (its version is printed): the encoder alone on random features
   of the same length, and the greedy search that follows it (sherpa-onnx's rule: a joiner call per step, a decoder
   call per emitted token) timed over that encoder output, with the number of calls; then onnxruntime's profile of
   one encoder run: the matrix products' share, which no float32 rewrite can remove;
3. the encoder against the same graph with its LayerNormalization nodes written as primitive operators (ReduceMean,
   Sub, Mul, Sqrt, Reciprocal, Add; a temporary graph beside the model, the weights file hard-linked), both run by
   this onnxruntime, alternating: onnxruntime 1.27-1.29 (sherpa-onnx 2.0.1 bundles 1.28.2) run LayerNormalization
   about ten times slower than earlier and later releases do; the primitive form costs about the same in all.
   Also each form alone, timed at the encoder's shape (--layer-norm-kernel WIDTH does only that, without a model,
   to compare releases).

Step 2 and 3 need only numpy, onnx and onnxruntime (plus this repository's src/ on PYTHONPATH), so they can be run
against another onnxruntime release in a separate environment, e.g. the one sherpa-onnx bundles:
  python -m venv ort128 && ort128/bin/pip install onnxruntime==1.28.0 onnx numpy
  PYTHONPATH=src ort128/bin/python bench/decode_budget.py models/tdt-1.1b --no-sherpa
Usage: python bench/decode_budget.py MODEL_DIR [--seconds 30] [--runs 3] [--threads 2] [--no-sherpa] [--json out.json]
       python bench/decode_budget.py --layer-norm-kernel 1024
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from encoder_speed import PROFILE_CODE, _link_or_copy, speech  # bench/encoder_speed.py

PRODUCTS = ("MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv", "MultiHeadAttention")


def sherpa_decode(directory: Path, seconds: float, runs: int, threads: int) -> dict:
    from nemo2sherpa.validate.audio import Clip
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_child import SherpaRequest, run_sherpa

    audio = speech(seconds, directory.parent / f"speech-{int(seconds)}s.wav")
    request = SherpaRequest.for_model(open_model_dir(directory), threads=threads, transcribe=["speech"],
                                      speed=["speech"], warmup=1, repeats=runs)
    run = run_sherpa(request, {"speech": Clip(name="speech", audio=audio, sample_rate=16000)})
    if not run.ok:
        raise SystemExit(f"sherpa-onnx failed: {run.error}")
    return {"decode_s": run.timings["speech"], "tokens": len(run.transcripts["speech"]["tokens"]),
            "load_s": run.load_seconds}


class CountingTransducer:
    """The project's graph-level greedy decoder, counting the joiner and decoder calls it makes."""

    def __init__(self, graphs) -> None:
        self.joiner_calls, self.decoder_calls = 0, 0
        step, joint = graphs.step, graphs.joint_logits

        def counted_step(*args):
            self.decoder_calls += 1
            return step(*args)

        def counted_joint(*args):
            self.joiner_calls += 1
            return joint(*args)

        graphs.step, graphs.joint_logits = counted_step, counted_joint


def encoder_and_greedy(directory: Path, seconds: float, runs: int, threads: int) -> dict:
    import onnxruntime as ort

    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import open_model_dir

    model = open_model_dir(directory)
    _, spec = check_contract(model)
    if spec is None:
        raise SystemExit(f"{directory}: not a directory sherpa-onnx can load (nemo2sherpa validate says why)")
    graphs = model.family.graph_decoder(model.graphs, spec, threads=threads)
    features = np.random.default_rng(0).standard_normal((spec.feat_dim, int(seconds * 100))).astype(np.float32)
    graphs.encode(features)  # warm-up
    encoder_s, greedy_s = [], []
    counting = CountingTransducer(graphs)
    for _ in range(runs):
        start = time.perf_counter()
        encoded, length = graphs.encode(features)
        middle = time.perf_counter()
        counting.joiner_calls = counting.decoder_calls = 0
        graphs.greedy(encoded, length, max_symbols=5)
        encoder_s.append(middle - start)
        greedy_s.append(time.perf_counter() - middle)
    return {"onnxruntime": ort.__version__, "encoder_s": encoder_s, "greedy_s": greedy_s,
            "joiner_calls": counting.joiner_calls, "decoder_calls": counting.decoder_calls,
            "encoder_frames": int(length)}


def products(encoder: Path, seconds: float, threads: int) -> dict[str, float]:
    """onnxruntime's profile of one encoder run (bench/encoder_speed.py's): the matrix products' kernel time (MatMul,
    Conv, the fused attention) against all kernels', the floor under which no float32 rewrite can take the encoder."""
    done = subprocess.run([sys.executable, "-c", PROFILE_CODE, str(encoder), str(int(seconds * 100)), str(threads)],
                          capture_output=True, text=True, check=True)
    by_op = json.loads(done.stdout.strip().splitlines()[-1])["by_op_ms"]
    return {"products_ms": sum(v for k, v in by_op.items() if k in PRODUCTS), "kernels_ms": sum(by_op.values()),
            "by_op_ms": by_op}


def primitive_layer_norms(model) -> int:
    """Rewrite every LayerNormalization of `model` (last axis) as primitive operators; returns how many."""
    from onnx import helper, numpy_helper

    graph, nodes, count = model.graph, [], 0
    for node in graph.node:
        if node.op_type != "LayerNormalization":
            nodes.append(node)
            continue
        x, scale, bias = node.input
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        eps, p = f"{node.name}/eps", f"{node.name}/primitive/"
        graph.initializer.append(numpy_helper.from_array(np.array(epsilon, np.float32), eps))
        steps = [("ReduceMean", [x], "mean", {"axes": [-1]}), ("Sub", [x, p + "mean"], "centred", {}),
                 ("Mul", [p + "centred", p + "centred"], "squared", {}),
                 ("ReduceMean", [p + "squared"], "variance", {"axes": [-1]}),
                 ("Add", [p + "variance", eps], "shifted", {}), ("Sqrt", [p + "shifted"], "deviation", {}),
                 ("Reciprocal", [p + "deviation"], "inverse", {}),
                 ("Mul", [p + "centred", p + "inverse"], "normalised", {}),
                 ("Mul", [p + "normalised", scale], "scaled", {})]
        nodes += [helper.make_node(op, inputs, [p + out], name=p + out, **attrs) for op, inputs, out, attrs in steps]
        nodes.append(helper.make_node("Add", [p + "scaled", bias], [node.output[0]], name=p + "biased"))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def layer_norm_kernel(width: int, frames: int, threads: int, calls: int = 200) -> dict[str, float]:
    """ms per call of LayerNormalization alone on [1, frames, width], and of the same graph written as primitive
    operators by primitive_layer_norms: the kernel's own cost in this onnxruntime release."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), name) for name in ("s", "b")]
    graph = helper.make_graph([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, name="norm")],
                              "norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, frames, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    fused = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused.ir_version = 8  # loadable by every onnxruntime release this is meant to compare
    primitive = fused.__class__()
    primitive.CopyFrom(fused)
    primitive_layer_norms(primitive)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    x = (rng.standard_normal((1, frames, width)) * 3 + 1).astype(np.float32)
    costs = {}
    for kind, model in (("LayerNormalization", fused), ("primitive", primitive)):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(calls // 10):
            session.run(None, {"x": x})
        start = time.perf_counter()
        for _ in range(calls):
            session.run(None, {"x": x})
        costs[kind] = (time.perf_counter() - start) / calls * 1e3
    return costs


def layer_norm_ab(encoder: Path, seconds: float, runs: int, threads: int, work: Path) -> dict | None:
    """The encoder as converted against the same graph with primitive normalisations, timed alternately."""
    import onnx

    from nemo2sherpa.families.common import make_session

    model = onnx.load(str(encoder), load_external_data=False)
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    if not norms:
        return None
    width = next(int(i.dims[0]) for i in model.graph.initializer if i.name == norms[0].input[1])
    count = primitive_layer_norms(model)
    for external in {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}:
        _link_or_copy(encoder.parent / external, work / external)
    onnx.save(model, str(work / encoder.name))
    sessions = {"LayerNormalization": make_session(encoder, threads=threads),
                "primitive": make_session(work / encoder.name, threads=threads)}
    inputs = sessions["primitive"].get_inputs()
    frames = int(seconds * 100)
    features = np.random.default_rng(0).standard_normal((1, inputs[0].shape[1], frames)).astype(np.float32)
    feed = {inputs[0].name: features, inputs[1].name: np.array([frames], np.int64)}
    outputs = {kind: s.run(None, feed)[0] for kind, s in sessions.items()}
    times: dict[str, list[float]] = {kind: [] for kind in sessions}
    for round_index in range(runs):
        for kind in list(sessions) if round_index % 2 == 0 else list(sessions)[::-1]:
            start = time.perf_counter()
            sessions[kind].run(None, feed)
            times[kind].append(time.perf_counter() - start)
    return {"count": count, "width": width, "encoder_s": times,
            "max_abs_diff": float(np.abs(outputs["primitive"] - outputs["LayerNormalization"]).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, nargs="?")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sherpa", action="store_true", help="skip the sherpa-onnx decode (step 1)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--layer-norm-kernel", type=int, metavar="WIDTH", default=0,
                        help="only time LayerNormalization alone at this width (no model needed)")
    args = parser.parse_args()
    if args.layer_norm_kernel:
        import onnxruntime as ort

        cost = layer_norm_kernel(args.layer_norm_kernel, int(args.seconds * 100) // 8, args.threads)
        print(f"onnxruntime {ort.__version__}: LayerNormalization [1, {int(args.seconds * 100) // 8}, "
              f"{args.layer_norm_kernel}] {cost['LayerNormalization']:.3f} ms per call, primitive operators "
              f"{cost['primitive']:.3f} ms")
        return
    if args.directory is None:
        parser.error("a model directory is needed (or --layer-norm-kernel WIDTH)")

    result: dict = {"directory": str(args.directory), "seconds": args.seconds, "threads": args.threads}
    if not args.no_sherpa:
        result["sherpa"] = sherpa = sherpa_decode(args.directory, args.seconds, args.runs, args.threads)
        print(f"sherpa-onnx decode of {args.seconds:g} s: median {statistics.median(sherpa['decode_s']):.3f} s "
              f"(runs {' '.join(f'{t:.3f}' for t in sherpa['decode_s'])}), {sherpa['tokens']} tokens")
    parts = result["onnxruntime"] = encoder_and_greedy(args.directory, args.seconds, args.runs, args.threads)
    print(f"onnxruntime {parts['onnxruntime']}: encoder median {statistics.median(parts['encoder_s']):.3f} s, greedy "
          f"search median {statistics.median(parts['greedy_s']):.3f} s over {parts['encoder_frames']} frames "
          f"({parts['joiner_calls']} joiner and {parts['decoder_calls']} decoder calls)")
    floor = result["products"] = products(args.directory / "encoder.onnx", args.seconds, args.threads)
    print(f"profile of one encoder run: matrix products {floor['products_ms']:.0f} ms of {floor['kernels_ms']:.0f} ms "
          f"of kernel time (" + ", ".join(f"{k} {v:.0f}" for k, v in floor["by_op_ms"].items() if k in PRODUCTS) + ")")
    with tempfile.TemporaryDirectory(dir=args.directory.parent) as work:
        ab = result["layer_norm"] = layer_norm_ab(args.directory / "encoder.onnx", args.seconds, 2 * args.runs,
                                                  args.threads, Path(work))
    if ab:  # the kernel alone once the encoders are released: their idle thread pools would skew a 0.1 ms call
        ab["kernel_ms"] = layer_norm_kernel(ab["width"], parts["encoder_frames"], args.threads)
        fused, primitive = (statistics.median(ab["encoder_s"][k]) for k in ("LayerNormalization", "primitive"))
        print(f"encoder with its {ab['count']} LayerNormalization nodes: median {fused:.3f} s; written as primitive "
              f"operators: {primitive:.3f} s ({fused / primitive:.2f}x, max abs diff {ab['max_abs_diff']:.1e}); "
              f"one LayerNormalization {ab['kernel_ms']['LayerNormalization']:.3f} ms, its primitive form "
              f"{ab['kernel_ms']['primitive']:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
