"""Precision variants beside the float32 reference (precision/catalog.py), written from the float32 graphs already
in the directory, under the names the family's runtime expects (sherpa-onnx: encoder.int8.onnx, ...,
model.fp16.onnx; onnx-asr: encoder-model.int8.onnx, decoder_joint-model.int8.onnx, model.int8.onnx), for each model
family in the directory, external weights (if any) in the file the family names.

- int8 (precision/blockwise.py): block-wise weight-only 8-bit weights in onnxruntime's MatMulNBits, every graph
  streamed tensor by tensor. Chosen by measurement (bench/int8.py): as fast as dynamic int8 on CPU, several times
  closer to float32's transcripts, and every node has a CUDA kernel.
- int8-dynamic (precision/int8.py): dynamic quantization like sherpa-onnx's published int8 models (QUInt8 encoder,
  QInt8 decoder and joiner), the encoder streamed tensor by tensor (one file: about 1 GB for the 1.1B). A CPU
  variant: onnxruntime's CUDA provider has no kernels for DynamicQuantizeLinear/ConvInteger and runs them on the
  CPU.
- fp16 (precision/fp16.py): a mixed-precision graph pass that keeps float32 inputs and outputs, the length path,
  LayerNorm/Softmax and the attention scores in float32, plus whatever a range probe on speech shows too close to
  float16's limit. A CUDA variant: onnxruntime's CPU provider computes float16 graphs in float32, slowly.

See docs/precision.md for the measurements behind each choice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import Family
from nemo2sherpa.manifest import Variant
from nemo2sherpa.precision.catalog import PRECISIONS, unknown_precisions
from nemo2sherpa.progress import Progress


def write_variants(directory: Path, family: Family, fp32: Variant, facts: ModelFacts, precisions: Sequence[str],
                   progress: Progress, record: dict[str, Any] | None = None) -> dict[str, Variant]:
    """Write each requested precision other than fp32 next to the family's fp32 graphs; returns the variants
    written.

    `record`, when given, receives what was done per variant (method, options, seconds) for the manifest."""
    unknown = unknown_precisions(precisions)
    if unknown:
        raise UserError(f"unknown precision(s) {', '.join(unknown)}; use {', '.join(PRECISIONS)}")
    written: dict[str, Variant] = {}
    for precision in dict.fromkeys(p for p in precisions if p != "fp32"):
        started = time.perf_counter()
        with progress.stage(f"write {precision} variant of the {family.title}"):
            names = Variant(family.files(precision))
            try:
                if precision == "int8":
                    info = _write_blockwise(directory, family, fp32, names)
                elif precision == "int8-dynamic":
                    info = _write_int8_dynamic(directory, family, fp32, names)
                else:
                    info = _write_fp16(directory, family, fp32, names, int(facts.architecture.mels or 80))
                _place_external_data(directory, family, names)
            except Exception:
                for name in (*names.files.values(), *(Path(n).with_suffix(".weights").name
                                                      for n in names.files.values()),
                             *(family.external_data_file(n) for n in names.files.values())):
                    (directory / name).unlink(missing_ok=True)
                raise
        written[precision] = names
        if record is not None:
            info["seconds"] = round(time.perf_counter() - started, 2)
            record[precision] = info
    return written


def _write_blockwise(directory: Path, family: Family, fp32: Variant, names: Variant) -> dict[str, Any]:
    """Every graph the same way (the sensitive layers are not among those it quantizes: see precision/blockwise)."""
    from nemo2sherpa.precision.blockwise import INT8_BLOCKWISE, quantize_blockwise

    info: dict[str, Any] = {}
    for role in family.roles:
        info[role.name] = quantize_blockwise(directory / fp32.files[role.name], directory / names.files[role.name],
                                             INT8_BLOCKWISE)
        info[role.name].pop("sha256", None)
    return info


def _write_int8_dynamic(directory: Path, family: Family, fp32: Variant, names: Variant) -> dict[str, Any]:
    """The encoder-holding graph tensor by tensor (QUInt8), the small graphs through quantize_dynamic (QInt8)."""
    from nemo2sherpa.precision.int8 import ENCODER_INT8, SMALL_INT8, quantize_small, quantize_streamed

    info: dict[str, Any] = {}
    for role in family.roles:
        source, target = directory / fp32.files[role.name], directory / names.files[role.name]
        if role.holds_encoder:
            info[role.name] = quantize_streamed(source, target, ENCODER_INT8)
            info[role.name].pop("sha256", None)
        else:
            info[role.name] = quantize_small(source, target, SMALL_INT8)
    return info


def _place_external_data(directory: Path, family: Family, names: Variant) -> None:
    """The writers name external weights '<stem>.weights'; a family whose runtime expects another name gets it."""
    from nemo2sherpa.graphs.writing import place_external_data

    for name in names.files.values():
        place_external_data(directory / name, family.external_data_file(name))


def _write_fp16(directory: Path, family: Family, fp32: Variant, names: Variant, mels: int) -> dict[str, Any]:
    """`mels`: the model's feature size, for the range probe of the encoder (the checkpoint's, whatever metadata the
    layout writes)."""
    import onnx

    from nemo2sherpa.precision.fp16 import convert_graph_fp16

    encoder_path = directory / fp32.files[family.encoder_role.name]
    structure = onnx.load(str(encoder_path), load_external_data=False)
    probe = family.encoder_feeds(structure, mels)
    del structure
    info: dict[str, Any] = {}
    for role in family.roles:
        result = convert_graph_fp16(directory / fp32.files[role.name], directory / names.files[role.name],
                                    probe=probe if role.holds_encoder else None)
        result.pop("sha256", None)
        info[role.name] = result
    return info
