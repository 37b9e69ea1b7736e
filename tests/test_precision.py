"""Precision variants (int8, int8-dynamic, fp16) on the trained fixture: written, hashed, loadable by sherpa-onnx,
transcribing like fp32; block-wise int8 is onnxruntime's own quantization, streamed, with pointwise convolutions
rewritten exactly; the fp16 pass keeps what float16 breaks in float32; the precision check measures and fails what
it should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nemo2sherpa.manifest import read_manifest

FIXTURE = Path(__file__).resolve().parent.parent / "src" / "nemo2sherpa" / "fixtures" / "tiny-tdt-en"
VARIANTS = ("int8", "int8-dynamic", "fp16")
VARIANT_FILES = {p: [f"{g}.{p}.onnx" for g in ("encoder", "decoder", "joiner")] for p in VARIANTS}


@pytest.fixture(scope="module")
def variants_dir(tmp_path_factory) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    target = tmp_path_factory.mktemp("precision") / "tiny"
    return convert(ConvertOptions(source="tiny-tdt-en", output=target, precisions=("fp32", *VARIANTS)),
                   SILENT).output


@pytest.fixture(scope="module")
def clips():
    from nemo2sherpa.validate.audio import read_dataset

    return read_dataset(FIXTURE / "dataset.jsonl", 16000)


def _transcripts(directory: Path, precision: str, clips) -> list[str]:
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    recognizer = make_recognizer(open_model_dir(directory, precision), threads=2)
    return [transcribe(recognizer, c.audio).text for c in clips]


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------------- convert

@pytest.mark.nemo
def test_variants_are_written_listed_hashed_and_keep_the_encoder_metadata(variants_dir):
    import onnx

    manifest = read_manifest(variants_dir)
    assert set(manifest.variants) == {"fp32", *VARIANTS}
    for precision, files in VARIANT_FILES.items():
        assert list(manifest.variants[precision].graph_files().values()) == files
        for name in files:
            assert name in manifest.files and (variants_dir / name).stat().st_size == manifest.files[name].size
            assert (variants_dir / name).stat().st_mode & 0o777 == 0o644
    assert not [p.name for p in variants_dir.iterdir() if p.name.startswith(".")], "scratch files left behind"
    fp32_metadata = {p.key: p.value for p in onnx.load(str(variants_dir / "encoder.onnx")).metadata_props}
    for precision in VARIANTS:
        model = onnx.load(str(variants_dir / f"encoder.{precision}.onnx"))
        assert {p.key: p.value for p in model.metadata_props} == fp32_metadata
        # sherpa-onnx feeds and reads float32
        for value in [*model.graph.input, *model.graph.output]:
            assert value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64)
    for precision, wanted in (("int8", {"MatMulNBits"}), ("int8-dynamic", {"DynamicQuantizeLinear", "MatMulInteger"})):
        int8 = onnx.load(str(variants_dir / f"encoder.{precision}.onnx"), load_external_data=False)
        assert wanted <= {n.op_type for n in int8.graph.node}, precision
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in int8.graph.initializer)
        weights = {t.name for t in int8.graph.initializer}
        assert not [n.name for n in int8.graph.node if n.op_type == "MatMul" and n.input[1] in weights], precision
    # block-wise int8: every weight MatMul and pointwise convolution quantized, nothing without a CUDA kernel
    record = json.loads((variants_dir / "manifest.json").read_text())["export"]["precision_variants"]["int8"]
    assert record["encoder"]["quantized"]["MatMul"] > 0 and record["encoder"]["quantized"]["Conv (pointwise)"] > 0
    from nemo2sherpa.validate.precision_check import predicted_cpu_ops

    assert not any(predicted_cpu_ops(variants_dir / name) for name in VARIANT_FILES["int8"])
    assert predicted_cpu_ops(variants_dir / "encoder.int8-dynamic.onnx")
    fp16 = onnx.load(str(variants_dir / "encoder.fp16.onnx"))
    half = [t for t in fp16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert half and sum(int(np.prod(t.dims)) for t in half) > 100_000  # the matmul/conv weights


@pytest.mark.nemo
def test_streamed_int8_encoder_equals_onnxruntime_quantize_dynamic(tmp_path):
    """On the graph as exported (onnxruntime's quantizer cannot type tensors behind its own contrib ops, so on the
    optimised graph it skips some Convs that the streamed quantizer, which can, quantizes)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.precision.fp16 import encoder_feeds
    from nemo2sherpa.precision.int8 import ENCODER_INT8, quantize_streamed
    from nemo2sherpa.progress import SILENT

    plain = convert(ConvertOptions(source="tiny-tdt-en", output=tmp_path / "plain", optimize=False), SILENT).output
    quantize_streamed(plain / "encoder.onnx", tmp_path / "ours.onnx", ENCODER_INT8)
    quantize_dynamic(str(plain / "encoder.onnx"), str(tmp_path / "ort.onnx"), weight_type=QuantType.QUInt8,
                     extra_options={"MatMulConstBOnly": True})
    feeds = encoder_feeds(onnx.load(str(plain / "encoder.onnx"), load_external_data=False), 80, 6.0)
    ours = _session(tmp_path / "ours.onnx").run(None, feeds)
    theirs = _session(tmp_path / "ort.onnx").run(None, feeds)
    assert int(ours[1][0]) == int(theirs[1][0])
    assert float(np.max(np.abs(ours[0] - theirs[0]))) < 1e-4


@pytest.mark.nemo
def test_blockwise_int8_equals_onnxruntimes_own_matmulnbits_quantizer(tmp_path):
    """The streamed writer's MatMuls are bit for bit what onnxruntime's MatMulNBitsQuantizer writes (same routine,
    same layout), so the outputs of the two graphs are identical."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.precision.blockwise import BlockwiseOptions, quantize_blockwise
    from nemo2sherpa.precision.fp16 import encoder_feeds
    from nemo2sherpa.progress import SILENT

    plain = convert(ConvertOptions(source="tiny-tdt-en", output=tmp_path / "plain"), SILENT).output
    options = BlockwiseOptions(bits=8, block_size=32, pointwise_conv=False)
    info = quantize_blockwise(plain / "encoder.onnx", tmp_path / "ours.onnx", options)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(plain / "encoder.onnx")), bits=8, block_size=32,
                                     is_symmetric=True, accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(tmp_path / "ort.onnx"), False)
    count = sum(n.op_type == "MatMulNBits" for n in onnx.load(str(tmp_path / "ort.onnx")).graph.node)
    assert info["quantized"]["MatMul"] == count > 0
    feeds = encoder_feeds(onnx.load(str(plain / "encoder.onnx"), load_external_data=False), 80, 4.0)
    ours = _session(tmp_path / "ours.onnx").run(None, feeds)
    theirs = _session(tmp_path / "ort.onnx").run(None, feeds)
    np.testing.assert_array_equal(ours[0], theirs[0])


@pytest.mark.parametrize("bits", [8, 4])
def test_blockwise_pointwise_convolution_computes_the_convolution_with_its_quantized_weights(tmp_path, bits):
    """A kernel-1 Conv1d becomes Transpose -> MatMulNBits -> bias -> Transpose: with float products
    (accuracy_level 0) its output is the convolution with the dequantized weights, whatever the channel counts
    (K = 40 is not a whole number of blocks)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nemo2sherpa.precision.blockwise import BlockwiseOptions, block_quantize, quantize_blockwise

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((24, 40, 1)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="pointwise", kernel_shape=[1]),
         helper.make_node("Conv", ["y", "d"], ["z"], name="depthwise", kernel_shape=[3], group=24, pads=[1, 1])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40, "T"])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 24, "T"])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(rng.standard_normal((24, 1, 3)).astype(np.float32), "d")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "conv.onnx"))
    info = quantize_blockwise(tmp_path / "conv.onnx", tmp_path / "q.onnx",
                              BlockwiseOptions(bits=bits, block_size=16, accuracy_level=0))
    assert info["quantized"]["Conv (pointwise)"] == 1  # the depthwise one stays float32
    written = onnx.load(str(tmp_path / "q.onnx"))
    assert [n.op_type for n in written.graph.node] == ["Transpose", "MatMulNBits", "Add", "Transpose", "Conv"]
    packed, scales = block_quantize(np.ascontiguousarray(weight[:, :, 0].T), bits, 16)
    if bits == 4:  # two values per byte, low nibble first
        packed = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], packed.shape[1], -1)
    dequantized = ((packed.astype(np.float32) - 2 ** (bits - 1)) * scales[:, :, None]).reshape(24, -1)[:, :40]
    x = rng.standard_normal((1, 40, 50)).astype(np.float32)
    expected = np.einsum("oc,bct->bot", dequantized, x) + bias[None, :, None]
    check = helper.make_model(helper.make_graph(
        written.graph.node[:4], "check", list(written.graph.input),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, "T"])], list(written.graph.initializer)),
        opset_imports=list(written.opset_import))
    onnx.save(check, str(tmp_path / "check.onnx"))
    got = _session(tmp_path / "check.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert float(np.max(np.abs(got - (np.einsum("oc,bct->bot", weight[:, :, 0], x) + bias[None, :, None])))) > 0


@pytest.mark.nemo
def test_a_model_card_says_what_each_variant_is_and_where_it_runs(variants_dir):
    from nemo2sherpa.publish.card import _variant_lines

    lines = {line.split("`")[1]: line for line in _variant_lines(read_manifest(variants_dir)) if line.startswith("- `")}
    assert list(lines) == list(VARIANTS)  # in the catalog's order, fp32 (the reference) not listed as a variant
    assert "MatMulNBits" in lines["int8"] and "CPU and CUDA" in lines["int8"]
    assert "CPU only" in lines["int8-dynamic"] and lines["fp16"].endswith("slower than fp32).")


@pytest.mark.nemo
def test_each_variant_loads_in_sherpa_onnx_and_transcribes_like_fp32(variants_dir, clips):
    from nemo2sherpa.validate.transcripts import corpus_wer

    truth = [c.text for c in clips]
    fp32 = _transcripts(variants_dir, "fp32", clips)
    wer_fp32 = corpus_wer(truth, fp32, normalize=True)
    for precision in VARIANTS:
        texts = _transcripts(variants_dir, precision, clips)
        assert all(t.strip() for t in texts), f"{precision}: blank outputs {texts}"
        delta = corpus_wer(truth, texts, normalize=True) - wer_fp32
        assert delta <= 0.5, f"{precision}: WER {delta:+.2f} against fp32 ({texts})"
        agreement = sum(a == b for a, b in zip(fp32, texts)) / len(clips)
        assert agreement >= 0.9, f"{precision}: only {agreement:.0%} of transcripts equal fp32's"


@pytest.mark.nemo
def test_fp16_keeps_the_length_path_in_float32_where_a_plain_conversion_breaks_it(variants_dir, tmp_path):
    """Over 20.48 s of audio (2048 feature frames) float16 cannot hold the frame count: a plain conversion's
    encoded_lengths and masks go wrong (measured with CUDA's float16 numerics, emulated); ours are exact."""
    import onnx

    from nemo2sherpa.features import probe_features
    from nemo2sherpa.precision.fp16 import convert_graph_fp16, emulate_fp16_graph

    convert_graph_fp16(variants_dir / "encoder.onnx", tmp_path / "naive.onnx", emulate=True, naive=True)
    emulate_fp16_graph(variants_dir / "encoder.fp16.onnx", tmp_path / "ours.onnx")
    features = probe_features(80, 45.0)
    feeds = {"audio_signal": features[np.newaxis], "length": np.array([features.shape[1]], dtype=np.int64)}
    reference, reference_length = _session(variants_dir / "encoder.onnx").run(None, feeds)
    naive, naive_length = _session(tmp_path / "naive.onnx").run(None, feeds)
    ours, ours_length = _session(tmp_path / "ours.onnx").run(None, feeds)
    assert int(ours_length[0]) == int(reference_length[0]) != int(naive_length[0])
    assert float(np.max(np.abs(ours - reference))) < 0.05
    # the emulation really rounds: it is not the float32 graph
    assert float(np.max(np.abs(ours - reference))) > 1e-5
    ops = {n.op_type for n in onnx.load(str(variants_dir / "encoder.fp16.onnx")).graph.node}
    assert "Cast" in ops


def _overflowing_graph(path: Path) -> None:
    """y = (x @ 300) @ 0.001: with x = 300 the middle value, 90000, is beyond float16's 65504."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="second")]
    weights = [numpy_helper.from_array(np.full((4, 4), 75.0, np.float32), "w1"),
               numpy_helper.from_array(np.full((4, 1), 0.001, np.float32), "w2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnxruntime_cpu_hides_float16_overflow_and_the_range_probe_keeps_it_in_float32(tmp_path):
    from nemo2sherpa.precision.fp16 import convert_graph_fp16, emulate_fp16_graph

    _overflowing_graph(tmp_path / "model.onnx")
    feeds = {"x": np.full((1, 4), 300.0, np.float32)}
    expected = float(_session(tmp_path / "model.onnx").run(None, feeds)[0].ravel()[0])  # 90
    info = convert_graph_fp16(tmp_path / "model.onnx", tmp_path / "plain.onnx", probe=None)
    assert info["fp16_nodes"] == 2
    # onnxruntime's CPU provider computes the float16 chain in float32: it looks right
    assert abs(float(_session(tmp_path / "plain.onnx").run(None, feeds)[0].ravel()[0]) - expected) < 1.0
    # with float16 numerics (CUDA's) it overflows
    emulate_fp16_graph(tmp_path / "plain.onnx", tmp_path / "plain.emulated.onnx")
    assert not np.isfinite(_session(tmp_path / "plain.emulated.onnx").run(None, feeds)[0]).all()
    # the range probe sees 90000 and keeps the first product in float32
    info = convert_graph_fp16(tmp_path / "model.onnx", tmp_path / "probed.onnx", probe=feeds)
    assert info["kept_fp32_by_range_probe"] == ["first", "second"] or "first" in info["kept_fp32_by_range_probe"]
    emulate_fp16_graph(tmp_path / "probed.onnx", tmp_path / "probed.emulated.onnx")
    value = float(_session(tmp_path / "probed.emulated.onnx").run(None, feeds)[0].ravel()[0])
    assert abs(value - expected) < 1.0


def test_write_variants_refuses_unknown_precisions(tmp_path):
    from nemo2sherpa.errors import UserError
    from nemo2sherpa.families import TRANSDUCER
    from nemo2sherpa.manifest import Variant
    from nemo2sherpa.precision.variants import write_variants
    from nemo2sherpa.progress import SILENT

    with pytest.raises(UserError, match="bf16"):
        write_variants(tmp_path, TRANSDUCER, Variant(TRANSDUCER.files()), None, ("fp32", "bf16"),
                       SILENT)
    assert write_variants(tmp_path, TRANSDUCER, Variant(TRANSDUCER.files()), None, ("fp32",), SILENT) == {}


# ----------------------------------------------------------------------------------------------------- validate

@pytest.mark.nemo
@pytest.mark.parametrize("precision", VARIANTS)
def test_compare_with_fp32_measures_the_variant(variants_dir, clips, precision):
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.precision_check import compare_with_fp32

    variant, fp32 = open_model_dir(variants_dir, precision), open_model_dir(variants_dir, "fp32")
    _, spec = check_contract(variant)
    check = compare_with_fp32(variant, fp32, clips, None, spec, speed_lengths=(2.0,), repeats=1)
    details = check.to_dict()
    assert check.status == "passed", json.dumps(details, indent=1)[:3000]
    assert details["size_bytes"]["ratio"] < 1.0
    graphs = details["graphs"]["onnxruntime_cpu"]
    assert graphs["blank_only"] == 0 and graphs["token_match_rate"] >= 0.9
    cpu = details["transcripts"]["cpu"]
    assert cpu["blank_only"] == 0 and cpu["wer_delta_abs"] <= 0.5 and cpu["exact_match_vs_fp32"] >= 0.9
    assert details["speed"]["cpu"]["2s"]["speedup"] > 0
    if precision == "fp16":
        assert details["graphs"]["emulated_fp16"]["token_match_rate"] >= 0.99
    elif precision == "int8-dynamic":
        assert "DynamicQuantizeLinear" in details["cuda_placement"].get("predicted_cpu_ops", {})
        assert details["cuda_kernels"] is False
        # the warning names the variant that does run on CUDA kernels
        assert any("CUDA" in w and "or int8" in w for w in details["warnings"]), details["warnings"]
    else:
        assert details["cuda_kernels"] is True and "predicted_cpu_ops" not in details["cuda_placement"]
        assert not any("CUDA kernel" in w for w in details["warnings"]), details["warnings"]


@pytest.mark.nemo
def test_compare_with_fp32_fails_a_variant_that_decodes_nothing(variants_dir, clips, tmp_path):
    """A variant whose encoder output is poisoned (NaN) decodes to <unk> runs or nothing: the check fails."""
    import shutil

    import onnx
    from onnx import helper, numpy_helper

    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.precision_check import compare_with_fp32

    broken = tmp_path / "broken"
    shutil.copytree(variants_dir, broken)
    model = onnx.load(str(broken / "encoder.int8.onnx"))
    output = model.graph.output[0].name
    for node in model.graph.node:
        for index, name in enumerate(node.output):
            if name == output:
                node.output[index] = output + "_before"
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    model.graph.node.append(helper.make_node("Mul", [output + "_before", "zero"], [output]))
    onnx.save(model, str(broken / "encoder.int8.onnx"))
    variant, fp32 = open_model_dir(broken, "int8"), open_model_dir(broken, "fp32")
    _, spec = check_contract(open_model_dir(variants_dir, "fp32"))  # the copy's hashes no longer match
    check = compare_with_fp32(variant, fp32, clips[:4], None, spec, measure_speed=False)
    assert check.status == "failed"
    assert any("nothing" in p or "WER" in p for p in check.problems), check.problems


def test_profile_summary_names_cpu_kernels_under_cuda():
    from nemo2sherpa.validate.precision_check import summarize_profile

    def event(provider, op, dur):
        return {"cat": "Node", "name": f"{op}_kernel_time", "dur": dur, "args": {"provider": provider, "op_name": op}}

    on_gpu = summarize_profile([event("CUDAExecutionProvider", "MatMul", 900),
                                event("CPUExecutionProvider", "Shape", 1)])
    assert on_gpu["falls_back"] is False and on_gpu["cpu_compute_ops"] == {}
    fallback = summarize_profile([event("CUDAExecutionProvider", "MatMul", 100),
                                  event("CPUExecutionProvider", "DynamicQuantizeLinear", 300),
                                  event("CPUExecutionProvider", "ConvInteger", 600)])
    assert fallback["falls_back"] is True
    assert fallback["cpu_compute_ops"] == {"DynamicQuantizeLinear": 1, "ConvInteger": 1}
    assert fallback["cpu_time_share"] == 0.9


def test_small_nodes_onnxruntime_places_on_cpu_are_not_a_fallback():
    """Seen on an H200 (onnxruntime-gpu 1.31.1): fp32 and fp16 encoders run two Neg and two Transpose on CPU, 0.1-0.4%
    of kernel time. That is onnxruntime's own placement, not a variant that belongs on CPU."""
    from nemo2sherpa.validate.precision_check import summarize_profile

    def event(provider, op, dur):
        return {"cat": "Node", "name": f"{op}_kernel_time", "dur": dur, "args": {"provider": provider, "op_name": op}}

    small = summarize_profile([event("CUDAExecutionProvider", "MatMul", 9990), event("CPUExecutionProvider", "Neg", 5),
                               event("CPUExecutionProvider", "Transpose", 5)])
    assert small["cpu_compute_ops"] == {"Neg": 1, "Transpose": 1} and small["falls_back"] is False
    heavy = summarize_profile([event("CUDAExecutionProvider", "MatMul", 700),
                               event("CPUExecutionProvider", "Transpose", 300)])
    assert heavy["falls_back"] is True and heavy["ops_without_cuda_kernel"] == {}
