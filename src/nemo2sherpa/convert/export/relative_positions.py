"""Full attention without a length limit: relative positions computed in the graph instead of read from a table.

NeMo's RelPositionalEncoding keeps a table of 2 * max_len - 1 sinusoids (pos_emb_max_len 5000 encoder frames = 400 s
of audio) and slices it by the input length. Exported, the table is a constant and the slice a Slice node: an
input longer than the table fails inside the first attention layer ('/layers.0/self_attn/Add_2'). Raising the
maximum with `set_max_audio_length` only moves the limit and grows the constant (2 * 45,000 x 1024 floats, 369 MB, to
reach one hour with a 1024-wide model).

While torch.onnx traces, `positions_forward` computes the same sinusoids from `arange(T - 1, -T, -1)` in the graph:
no table, no limit but memory. The frequencies (d_model / 2 numbers) are computed by torch exactly as NeMo's
create_pe does and stored as a constant; the products position x frequency are the same float32 multiplications; only
sin/cos come from onnxruntime instead of torch (within a few float32 ulps). Outside the export NeMo's own forward
runs (it extends its table itself when an input is longer).
"""

from __future__ import annotations

import math
import types
from typing import Any

_PATCHED = "_nemo2sherpa_original_forward"
INF_VAL = 10000.0  # NeMo's create_pe uses log(INF_VAL) as the sinusoid base


def relpos_class():
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionalEncoding

    return RelPositionalEncoding


def frequencies(d_model: int):
    """NeMo's div_term: exp(arange(0, d, 2) * -(log(10000) / d)), float32."""
    import torch

    return torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(INF_VAL) / d_model))


def positions_forward(self, x, cache_len=0):
    """RelPositionalEncoding.forward with pos_emb computed for this length: (x scaled, (1, 2T - 1, d_model))."""
    import torch

    if self.xscale:
        x = x * self.xscale
    length = x.shape[1] + cache_len
    positions = torch.arange(length - 1, -length, -1, dtype=torch.float32).unsqueeze(1)  # (2T - 1, 1)
    angles = positions * self._nemo2sherpa_frequencies  # (2T - 1, d/2)
    pos_emb = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(1, -1, self.d_model)
    pos_emb = pos_emb.to(x.dtype)
    if self.dropout_emb:
        pos_emb = self.dropout_emb(pos_emb)
    return self.dropout(x), pos_emb


def _export_only_forward(self, x, cache_len=0):
    import torch

    if torch.onnx.is_in_onnx_export():
        return positions_forward(self, x, cache_len)
    return getattr(self, _PATCHED)(x, cache_len=cache_len)


def masked_conv_forward(self, x, lengths):
    """NeMo's MaskedConvSequential.forward with its time mask broadcast as (batch, 1, time, 1) instead of expanded
    to (batch, channels, time, features): the very same products, without materialising a mask as large as the
    activations before every layer (onnxruntime's Expand allocates it: three full-size tensors live at once in the
    first, largest stage, about 0.37 GB per minute of audio for a 256-channel, 80-mel front end)."""
    import torch
    from nemo.collections.asr.parts.submodules.subsampling import calculate_conv_output_size

    def time_mask(tensor, lengths):
        steps = torch.arange(tensor.shape[2], device=tensor.device)
        return (steps[None, :] < lengths[:, None]).to(tensor.dtype)[:, None, :, None]

    x = x.unsqueeze(1)
    current_lengths = lengths.clone().float()
    mask = time_mask(x, current_lengths.long())
    for layer in self:
        x = layer(x * mask)
        if hasattr(layer, "stride") and layer.stride != (1, 1):
            padding = (layer._left_padding, layer._right_padding) if hasattr(layer, "_left_padding") else layer.padding
            current_lengths = calculate_conv_output_size(current_lengths, layer.kernel_size[0], layer.stride[0],
                                                         padding)
            mask = time_mask(x, current_lengths.long())
    return x * mask, current_lengths.long()


def _export_only_conv_forward(self, x, lengths):
    import torch

    if torch.onnx.is_in_onnx_export():
        return masked_conv_forward(self, x, lengths)
    return getattr(self, _PATCHED)(x, lengths)


def install_front_end(encoder: Any) -> bool:
    """Export the subsampling convolutions with broadcast masks (see masked_conv_forward); False when this NeMo has
    no MaskedConvSequential front end (older releases do not mask there)."""
    try:
        from nemo.collections.asr.parts.submodules.subsampling import MaskedConvSequential
    except ImportError:
        return False
    conv = getattr(getattr(encoder, "pre_encode", None), "conv", None)
    if type(conv) is not MaskedConvSequential:
        return False
    if not hasattr(conv, _PATCHED):
        setattr(conv, _PATCHED, conv.forward)
        conv.forward = types.MethodType(_export_only_conv_forward, conv)
    return True


def install_on_encoder(encoder: Any) -> bool:
    """Compute the encoder's relative positions in the exported graph; False when it has no RelPositionalEncoding
    (local attention's positions are a fixed 2w + 1 table, abs_pos is not handled)."""
    module = getattr(encoder, "pos_enc", None)
    if type(module) is not relpos_class():
        return False
    if not hasattr(module, _PATCHED):
        module._nemo2sherpa_frequencies = frequencies(int(module.d_model))
        setattr(module, _PATCHED, module.forward)
        module.forward = types.MethodType(_export_only_forward, module)
    return True
