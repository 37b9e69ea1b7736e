"""The precision variants nemo2sherpa writes, as data: what each is, the providers it is meant for, and whether every
node it contains has a CUDA kernel in onnxruntime. convert, validate and the cards read this; docs/precision.md
holds the measurements behind each entry (`bench/int8.py` for the int8 choice).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str  # what --precision takes, and the file suffix (encoder.<name>.onnx); fp32 has none
    summary: str
    #: False: onnxruntime's CUDA provider has no kernel for some of its nodes and runs them on CPU, silently
    cuda_kernels: bool
    #: where it is meant to run, for people (model cards)
    runs_on: str
    #: graph_fidelity's encoder tolerance when it runs on this variant (the variant's own agreement is judged on
    #: tokens, by the precision check)
    encoder_tolerance: float = 1e-3


CATALOG: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "the exported float32 graphs: the reference every variant is measured against", True,
              "CPU and CUDA"),
    Precision("int8", "block-wise weight-only int8 (MatMulNBits, blocks of 128): the int8 chosen by measurement",
              True, "CPU and CUDA (every node has a CUDA kernel in onnxruntime 1.22 and later)",
              encoder_tolerance=1.0),
    Precision("int8-dynamic", "dynamic int8 (per-tensor weights, activations quantized at run time): the method of "
              "sherpa-onnx's published int8 files", False,
              "CPU only (some nodes have no CUDA kernel in onnxruntime and would run on the CPU)",
              encoder_tolerance=1.0),
    Precision("fp16", "mixed precision: float16 weights and products, float32 where float16 breaks", True,
              "CUDA (onnxruntime's CPU provider computes float16 in float32, slower than fp32)",
              encoder_tolerance=0.05),
)}
PRECISIONS: tuple[str, ...] = tuple(CATALOG)


def unknown_precisions(names: list[str] | tuple[str, ...]) -> list[str]:
    return [n for n in names if n not in CATALOG]


def cuda_clean_variants() -> list[str]:
    """The variants whose every node has a CUDA kernel, for the advice of a warning."""
    return [p.name for p in CATALOG.values() if p.cuda_kernels and p.name != "fp32"]
