"""The model a config describes must fit the weights that come with it: a lower bound of its parameters, counted
from the config before NeMo builds anything, against the bytes (or tensors) of model_weights.ckpt, so that a config
with ten million layers is refused instead of building modules until the machine runs out of memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nemo2sherpa.checkpoint.archive import WEIGHTS_NAME
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import Architecture, ModelFacts

#: Checkpoints store 4 (fp32) or 2 (fp16, bf16) bytes per parameter. A lower bound of the parameters a config builds
#: may not exceed one per byte of model_weights.ckpt: four times what fp32 weights hold, twice what fp16 ones do.
PARAMETERS_PER_WEIGHT_BYTE = 1
#: The encoder's relative positional table ((2 * pos_emb_max_len - 1) x d_model floats) is built, not loaded: it may
#: take this much memory, or as much as the weights, whichever is more.
POSITION_TABLE_BYTES = 1 << 30


def check_model_size(config: Mapping[str, Any], facts: ModelFacts, weights_bytes: int, source: Path,
                     tensor_elements: int | None = None) -> None:
    """Refuse, before NeMo builds anything, a config that would build far more than its weights can fill.

    NeMo allocates every parameter the config describes before a single weight is loaded: ten million encoder layers
    in a 1 MB checkpoint build modules until the OOM killer fires. The archive's member size bounds the weights
    without unpickling anything; `tensor_elements`, the numbers in the tensors once they were read (tensors only,
    weights_only=True), bounds them exactly."""
    floor = parameter_floor(config, facts)
    described = f"model_config.yaml describes a model of at least {floor:,} parameters ({_mib(4 * floor)} as float32)"
    if floor > PARAMETERS_PER_WEIGHT_BYTE * weights_bytes:
        raise UserError.about(source, f"its weights do not fit its config: {described} but {WEIGHTS_NAME} holds only "
                                      f"{weights_bytes:,} bytes; refusing to build it")
    if tensor_elements is not None and floor > tensor_elements:
        raise UserError.about(source, f"its weights do not fit its config: {described} but the tensors in "
                                      f"{WEIGHTS_NAME} hold only {tensor_elements:,} numbers; refusing to build it")
    table = 4 * positional_table(facts)
    if table > max(POSITION_TABLE_BYTES, weights_bytes):
        raise UserError.about(source, f"encoder.pos_emb_max_len {facts.architecture.pos_emb_max_len} makes a "
                                      f"positional table of {_mib(table)}, more than {_mib(POSITION_TABLE_BYTES)} and "
                                      f"more than {WEIGHTS_NAME} ({weights_bytes:,} bytes); refusing to build it")


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.0f} MiB"


def parameter_floor(config: Mapping[str, Any], facts: ModelFacts) -> int:
    """A lower bound of the parameters and saved buffers NeMo creates for the config: the mel filterbank and window,
    per encoder layer the attention projections, both feed-forward blocks and the depthwise convolution, the
    subsampling's output projection, the prediction network, the joint and the CTC head. Biases, norms and anything
    smaller are left out, so a genuine checkpoint always holds more."""
    arch = facts.architecture
    d, vocab = _count(arch.d_model), _count(arch.vocab_size) + 1
    layer = (4 * _count(arch.ff_expansion_factor) + 4) * d * d + d * _count(arch.conv_kernel_size)
    total = _frontend_floor(facts) + _count(arch.encoder_layers) * layer + _subsampling_floor(config, arch)
    if facts.decoder_kind != "ctc" or arch.pred_hidden:
        hidden, joint = _count(arch.pred_hidden), _count(arch.joint_hidden)
        total += vocab * hidden + 8 * hidden * hidden * _count(arch.pred_rnn_layers)
        total += (d + hidden + vocab + len(arch.durations or ())) * joint
    if arch.has_ctc_head:
        total += d * vocab
    return total


def _frontend_floor(facts: ModelFacts) -> int:
    """The filterbank (mels x (n_fft / 2 + 1)) and the window: buffers NeMo saves with the weights."""
    window = _count(_number(facts.frontend.get("window_size")) * facts.sample_rate)
    n_fft = _count(_number(facts.frontend.get("n_fft"))) or (1 << max(0, (window - 1).bit_length()))
    return _count(facts.architecture.mels) * (n_fft // 2 + 1) + window


def _subsampling_floor(config: Mapping[str, Any], arch: Architecture) -> int:
    """(dw_)striding subsampling: the projection of channels x remaining mel bins to d_model, and one channels x
    channels convolution per halving after the first."""
    encoder = config.get("encoder") if isinstance(config.get("encoder"), Mapping) else {}
    if str(encoder.get("subsampling", "striding")) not in ("dw_striding", "striding"):
        return 0
    channels, factor = _count(arch.subsampling_conv_channels), max(1, _count(arch.subsampling_factor))
    halvings = max(0, factor.bit_length() - 1)
    return channels * (_count(arch.mels) // factor) * _count(arch.d_model) + channels * channels * max(0, halvings - 1)


def positional_table(facts: ModelFacts) -> int:
    """Floats in the encoder's positional table (relative attention: 2 x pos_emb_max_len - 1 rows of d_model)."""
    arch = facts.architecture
    return max(0, 2 * _count(arch.pos_emb_max_len) - 1) * _count(arch.d_model)


_HUGE = 10**30  # what an infinite setting counts as: refused, never slipped through as 0


def _count(value: Any) -> int:
    """A non-negative whole number for the estimate: an infinite one counts as huge, anything that is not a number as
    0 (NeMo refuses that itself)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if value != value or value <= 0:
        return 0
    return _HUGE if value == float("inf") else int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        return float(value)
    except OverflowError:  # an integer beyond floats
        return float("inf")
