"""Local (sliding-window) attention that exports to ONNX faithfully for every input length.

NeMo's RelPositionMultiHeadAttentionLongformer (self_attention_model "rel_pos_local_attn") is right in PyTorch and
wrong once exported with the TorchScript-based torch.onnx exporter, at every length including the traced one.
torch.jit.trace of the same module reproduces PyTorch exactly at the traced shape; the ONNX graph does not, for
three reasons (each reproduced on the module alone, see docs/long-audio.md):

1. Writes through views are dropped: `mask_invalid_locations` fills the first and last w rows of the band with -inf
   by `masked_fill_` on slices (views) of the score matrix. In the exported graph those -inf are missing, so the
   zero-padded keys beyond both ends of the sequence get attention weight.
2. `as_strided` (the overlapping chunks of `_chunk_overlap` and `sliding_chunks_matmul_pv`) exports as a Gather
   over the tensor flattened in logical order, with indices computed from the tensor's memory strides. The query
   reaching `_chunk_overlap` is a transposed view (forward_qkv), whose memory strides are not its logical ones:
   wrong values even at the traced shape.
3. Those Gather indices are constants computed for the traced length: at any other length they pick the wrong
   elements, or fall out of bounds on shorter inputs (onnxruntime: "indices element out of data bounds").

`banded_forward` below computes the same function with none of those constructs: chunks of `w` queries against
windows of `3w` keys built by padding, reshaping and concatenating (no strides), the band of `2w + 1` scores taken
out of each chunk with a pad-and-reshape skew, every mask applied out of place, and every length read from the
tensors while tracing so that the arithmetic on it stays in the graph. It is installed on the modules only while
torch.onnx traces them (`torch.onnx.is_in_onnx_export()`); otherwise NeMo's own forward runs, so everything
computed in PyTorch (the probes that check the written graph, NeMo references) is NeMo's, not ours.

Masked scores: NeMo gives out-of-range keys -inf, padded keys and keys outside [left, right] -10000 (plus -10000
per extra reason). Both weigh exactly 0 after the softmax in float32; here the same values are produced, except
that keys in the padding NeMo adds up to a multiple of 2w (this pads to a multiple of w) are -inf instead of
-10000: also exactly 0.
"""

from __future__ import annotations

import types
from typing import Any

INF_VAL = 10000.0  # NeMo's masking value (nemo.collections.asr.parts.submodules.multi_head_attention.INF_VAL)
_PATCHED = "_nemo2sherpa_original_forward"


def longformer_class():
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionMultiHeadAttentionLongformer

    return RelPositionMultiHeadAttentionLongformer


def _band(x, w: int):
    """(..., n, w, 3w) -> (..., n, w, 2w + 1) with out[..., r, c] = x[..., r, r + c]."""
    import torch.nn.functional as F

    lead = x.shape[:-2]
    flat = x.reshape(*lead, w * 3 * w)
    flat = F.pad(flat, (0, w))  # w * (3w + 1)
    return flat.reshape(*lead, w, 3 * w + 1)[..., : 2 * w + 1]


def _unband(x, w: int):
    """(..., n, w, 2w + 1) -> (..., n, w, 3w) with out[..., r, r + c] = x[..., r, c], zero elsewhere."""
    import torch.nn.functional as F

    lead = x.shape[:-2]
    padded = F.pad(x, (0, w + 1))  # (..., w, 3w + 2)
    flat = padded.reshape(*lead, w * (3 * w + 2))[..., : w * (3 * w + 1)]
    return flat.reshape(*lead, w, 3 * w + 1)[..., : 3 * w]


def _windows(x, w: int, value: float):
    """(b, h, T', d) with T' a multiple of w -> (b, h, T'/w, 3w, d): for chunk i, rows i*w - w .. i*w + 2w - 1
    (out-of-range rows hold `value`)."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(x, (0, 0, w, w), value=value)
    chunks = padded.reshape(x.shape[0], x.shape[1], -1, w, x.shape[3])  # (b, h, n + 2, w, d)
    return torch.cat([chunks[:, :, :-2], chunks[:, :, 1:-1], chunks[:, :, 2:]], dim=3)


def banded_forward(self, query, key, value, pad_mask, pos_emb, cache=None):
    """NeMo's RelPositionMultiHeadAttentionLongformer.forward (no global tokens, no cache), export-friendly."""
    import torch
    import torch.nn.functional as F

    left, right = int(self.att_context_size[0]), int(self.att_context_size[1])
    w = max(left, right)
    heads, head_dim = int(self.h), int(self.d_k)

    q, k, v = self.forward_qkv(query, key, value)  # (b, h, T, d)
    batch, length = q.shape[0], q.shape[2]
    pad_len = (w - length % w) % w
    q = F.pad(q, (0, 0, 0, pad_len))
    k = F.pad(k, (0, 0, 0, pad_len))
    v = F.pad(v, (0, 0, 0, pad_len))
    mask = F.pad(pad_mask, (0, pad_len), value=True)  # (b, T'), True = padding

    q_with_bias_u = q + self.pos_bias_u.unsqueeze(1)
    q_with_bias_v = q + self.pos_bias_v.unsqueeze(1)

    # content scores q.k over the band: (b, h, T', 2w + 1), column c <-> key t + c - w
    chunk_q = q_with_bias_u.reshape(batch, heads, -1, w, head_dim)  # (b, h, n, w, d)
    chunk_scores = torch.matmul(chunk_q, _windows(k, w, 0.0).transpose(-1, -2))  # (b, h, n, w, 3w)
    matrix_ac = _band(chunk_scores, w).reshape(batch, heads, -1, 2 * w + 1)

    # position scores: NeMo adds bd[:left] to columns [:left] and bd[left:] to the last right + 1 columns
    p = self.linear_pos(pos_emb).view(pos_emb.shape[0], -1, heads, head_dim).transpose(1, 2)
    matrix_bd = torch.matmul(q_with_bias_v, p.transpose(-2, -1))  # (b, h, T', left + right + 1)
    tail = F.pad(matrix_bd[..., left:], (2 * w - left - right, 0)) if 2 * w - left - right else matrix_bd[..., left:]
    matrix_bd = torch.cat([matrix_bd[..., :left], tail], dim=-1) if left else tail
    scores = (matrix_ac + matrix_bd) / self.s_d_k

    start_pos, end_pos = w - left, w + right
    if start_pos > 0 or end_pos < 2 * w:
        columns = torch.arange(2 * w + 1)
        outside = (columns < start_pos) | (columns > end_pos)
        scores = scores.masked_fill(outside, -INF_VAL)

    # padded keys -10000, keys beyond the (padded) sequence -inf, as NeMo's d_mask
    key_mask = torch.zeros_like(mask, dtype=scores.dtype).masked_fill(mask, -INF_VAL)  # (b, T')
    key_windows = _windows(key_mask[:, None, :, None], w, float("-inf"))  # (b, 1, n, 3w, 1)
    key_windows = key_windows.transpose(-1, -2).expand(-1, -1, -1, w, -1)  # (b, 1, n, w, 3w)
    scores = scores + _band(key_windows, w).reshape(batch, 1, -1, 2 * w + 1)

    query_mask = mask[:, None, :, None]
    attn = torch.softmax(scores, dim=-1).masked_fill(query_mask, 0.0)
    p_attn = self.dropout(attn)

    chunk_attn = _unband(p_attn.reshape(batch, heads, -1, w, 2 * w + 1), w)  # (b, h, n, w, 3w)
    out = torch.matmul(chunk_attn, _windows(v, w, 0.0))  # (b, h, n, w, d)
    out = out.reshape(batch, heads, -1, head_dim).transpose(1, 2).reshape(batch, -1, heads * head_dim)
    return self.linear_out(out[:, :length])


def _export_only_forward(self, query, key, value, pad_mask, pos_emb, cache=None):
    import torch

    if cache is None and torch.onnx.is_in_onnx_export():
        return banded_forward(self, query, key, value, pad_mask, pos_emb)
    return getattr(self, _PATCHED)(query=query, key=key, value=value, pad_mask=pad_mask, pos_emb=pos_emb, cache=cache)


def context_problem(left: int, right: int) -> str | None:
    """What is wrong with a local-attention window of `left`, `right` frames, or None.

    The one rule for a window asked for on the command line and one read from a checkpoint: NeMo's Longformer
    attention fails in PyTorch when the wider side is 0 or 1 frames (its chunks of 2w are then empty), so such a
    window can be neither trained nor checked against NeMo.
    """
    if min(left, right) < 0 or max(left, right) < 2:
        return (f"context {left},{right}: both must be >= 0 and one at least 2 "
                "(NeMo's local attention does not run with a window of 0 or 1)")
    return None


def unsupported_reason(module: Any) -> str | None:
    """Why a local-attention module cannot be exported this way, or None."""
    if int(getattr(module, "global_tokens", 0) or 0) > 0:
        return "local attention with global tokens is not supported"
    left, right = (int(c) for c in module.att_context_size[:2])
    return context_problem(left, right)


def install_export_forward(module: Any) -> Any:
    """Make `module` (a Longformer attention) export as banded_forward; PyTorch calls keep NeMo's forward."""
    if not hasattr(module, _PATCHED):
        setattr(module, _PATCHED, module.forward)
        module.forward = types.MethodType(_export_only_forward, module)
    return module


def install_on_encoder(encoder: Any) -> int:
    """Install the export forward on every local-attention module of a ConformerEncoder; returns how many."""
    cls = longformer_class()
    modules = [m for m in encoder.modules() if isinstance(m, cls)]
    for module in modules:
        install_export_forward(module)
    return len(modules)
