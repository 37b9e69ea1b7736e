"""A TDT (Token-and-Duration Transducer) loss, and the plain RNN-T loss, that run on CPU, for training fixtures.

NeMo's TDT losses need CUDA (the numba kernel refuses CPU tensors; the reference TDTLossPytorch calls .cuda() and
loops in Python over batch x frames x labels). This one is vectorised over the batch and the label axis and loops
only over frames, which trains a tiny model in seconds on two cores.

The lattice is NeMo's (Xu et al. 2023, "Efficient Sequence Transduction by Jointly Predicting Tokens and
Durations", arXiv:2304.06795, eq. 7; NeMo's TDTLossPytorch and its numba kernel). For one utterance with T encoder
frames and labels y_1..y_U, alpha(t, u) is the log-probability of having emitted y_1..y_u and standing at frame t:

* alpha(0, 0) = 0;
* a blank at (t, u) with duration d >= 1 moves to (t + d, u), with weight P(blank | t, u) * P(d | t, u);
* the label y_{u+1} at (t, u) with duration d >= 0 moves to (t + d, u + 1), with weight P(y_{u+1} | t, u) * P(d | t, u);
* every state must lie at a frame t < T; the path ends with a blank that lands exactly on frame T from (T - d, U):
  log P(y | x) = logsumexp_{d >= 1} alpha(T - d, U) + log P(blank | T - d, U) + log P(d | T - d, U).
  A label arc that would land on frame T or later belongs to no path, as in NeMo.

P(. | t, u) come from the joint's output [B, T, U + 1, V + 1 + D]: the first V + 1 values (tokens, blank last) and
the last D values (durations) are normalised separately with log_softmax. `sigma` is the logit under-normalisation
of the TDT paper: it is subtracted from every token log-probability (blank included), as NeMo does. NeMo's `omega`
(with that probability, train a step on the plain RNN-T loss instead) is not implemented: the fixture uses omega=0.

The forward algorithm runs frame by frame. The arcs that arrive at frame t from earlier frames (blanks with any
duration >= 1, labels with duration >= 1) only depend on finished frames, so they are gathered for every u at once
and combined with logsumexp. Labels with duration 0 then chain within the frame, from u - 1 to u; with a[u] the
arrivals from earlier frames and c[u] the weight of the duration-0 arc from u - 1 to u, that chain is

    alpha(t, u) = logsumexp_{k <= u} (a[k] + c[k+1] + ... + c[u]) = S[u] + logcumsumexp_k (a[k] - S[k]),

with S the prefix sum of c: one cumsum and one logcumsumexp per frame. Autograd differentiates the whole thing.
"""

from __future__ import annotations

from typing import Sequence

import torch

# A finite stand-in for log(0): with real -inf, logsumexp over only impossible arcs gives NaN gradients.
_IMPOSSIBLE = -1.0e5


def tdt_log_likelihood(
    token_logprobs: torch.Tensor,
    duration_logprobs: torch.Tensor,
    labels: torch.Tensor,
    frame_lengths: torch.Tensor,
    label_lengths: torch.Tensor,
    durations: Sequence[int],
    blank: int,
) -> torch.Tensor:
    """log P(labels | input) summed over every TDT alignment, per utterance: a [B] tensor.

    token_logprobs: [B, T, U + 1, V + 1] normalised token log-probabilities (sigma already subtracted, if any).
    duration_logprobs: [B, T, U + 1, D] normalised duration log-probabilities, D = len(durations).
    labels: [B, U] label ids (anything past label_lengths[b] is padding and ignored).
    frame_lengths: [B] valid frames per utterance (<= T); label_lengths: [B] valid labels (<= U).
    durations: the durations the duration outputs stand for, e.g. (0, 1, 2, 3, 4); 0 is allowed for labels only.
    blank: index of the blank among the V + 1 token outputs (NeMo: the last, V).

    Padding (frames >= frame_lengths[b], labels > label_lengths[b]) never reaches a valid path, but its values
    must be finite: NaN or inf there would still poison the gradient through the masked arithmetic.
    """
    if token_logprobs.dim() != 4 or duration_logprobs.dim() != 4:
        raise ValueError("token_logprobs and duration_logprobs must be [B, T, U + 1, ...]")
    batch, frames, states, _ = token_logprobs.shape
    if duration_logprobs.shape[:3] != token_logprobs.shape[:3]:
        raise ValueError(f"shape mismatch: tokens {tuple(token_logprobs.shape)}, "
                         f"durations {tuple(duration_logprobs.shape)}")
    durations = [int(d) for d in durations]
    if duration_logprobs.shape[3] != len(durations):
        raise ValueError(f"{duration_logprobs.shape[3]} duration outputs for {len(durations)} durations")
    if any(d < 0 for d in durations) or len(set(durations)) != len(durations):
        raise ValueError(f"durations must be distinct and >= 0: {durations}")
    if not any(d > 0 for d in durations):
        raise ValueError("at least one duration must be >= 1, or no path can ever end")
    if labels.shape != (batch, states - 1):
        raise ValueError(f"labels must be [B, U] = [{batch}, {states - 1}], got {tuple(labels.shape)}")
    device = token_logprobs.device
    frame_lengths = frame_lengths.to(device=device, dtype=torch.long)
    label_lengths = label_lengths.to(device=device, dtype=torch.long)
    if bool((frame_lengths < 1).any()) or bool((frame_lengths > frames).any()):
        raise ValueError(f"frame_lengths must lie in [1, {frames}]")
    if bool((label_lengths < 0).any()) or bool((label_lengths > states - 1).any()):
        raise ValueError(f"label_lengths must lie in [0, {states - 1}]")

    # Arc weights from every state (t, u); label arcs go from u to u + 1, so they exist for u < U only.
    blank_lp = token_logprobs[..., blank]  # [B, T, U+1]
    index = labels.to(device=device, dtype=torch.long).clamp(0, token_logprobs.shape[-1] - 1)
    index = index[:, None, :, None].expand(batch, frames, states - 1, 1)
    label_lp = torch.gather(token_logprobs[:, :, :-1, :], 3, index).squeeze(3)  # [B, T, U]

    start = token_logprobs.new_full((batch, states), _IMPOSSIBLE)
    start[:, 0] = 0.0
    floor = token_logprobs.new_full((batch, states), _IMPOSSIBLE)

    zero_index = durations.index(0) if 0 in durations else None
    last_state = label_lengths[:, None]  # u = U_b, per utterance
    alphas: list[torch.Tensor] = []  # alphas[t]: [B, U+1]
    final = token_logprobs.new_full((batch,), _IMPOSSIBLE)
    for t in range(frames + 1):
        # The path's end: a blank that lands exactly on frame T_b at u = U_b (blank arcs only, never labels).
        ends_here = frame_lengths == t
        if bool(ends_here.any()):
            final = torch.where(ends_here, _blank_arrivals(alphas, t, durations, blank_lp, duration_logprobs,
                                                           floor, last_state), final)
        if t == frames:
            break
        # Arrivals at frame t from frames t - d, d >= 1 (blank and label arcs alike), for every u at once.
        candidates = [start if t == 0 else floor]
        for i, d in enumerate(durations):
            if d < 1 or t - d < 0:
                continue
            source = alphas[t - d]
            candidates.append(source + blank_lp[:, t - d] + duration_logprobs[:, t - d, :, i])
            moved = source[:, :-1] + label_lp[:, t - d] + duration_logprobs[:, t - d, :-1, i]
            candidates.append(torch.cat([floor[:, :1], moved], dim=1))
        arrived = torch.logsumexp(torch.stack(candidates), dim=0)
        if zero_index is None:
            alphas.append(arrived)
            continue
        # Duration-0 labels chain inside frame t: alpha[u] = S[u] + logcumsumexp_k(arrived[k] - S[k]).
        step = label_lp[:, t] + duration_logprobs[:, t, :-1, zero_index]  # [B, U]: weight of u -> u + 1
        prefix = torch.cat([step.new_zeros(batch, 1), torch.cumsum(step, dim=1)], dim=1)  # [B, U+1]
        alphas.append(prefix + torch.logcumsumexp(arrived - prefix, dim=1))
    return final


def _blank_arrivals(
    alphas: list[torch.Tensor],
    t: int,
    durations: list[int],
    blank_lp: torch.Tensor,
    duration_logprobs: torch.Tensor,
    floor: torch.Tensor,
    last_state: torch.Tensor,
) -> torch.Tensor:
    """logsumexp over d >= 1 of alpha(t - d, U_b) + blank + duration d: the ways to end on frame t, per utterance."""
    terms = [floor[:, 0]]
    for i, d in enumerate(durations):
        if d < 1 or t - d < 0:
            continue
        arc = alphas[t - d] + blank_lp[:, t - d] + duration_logprobs[:, t - d, :, i]
        terms.append(torch.gather(arc, 1, last_state).squeeze(1))
    return torch.logsumexp(torch.stack(terms), dim=0)


def tdt_loss(
    joint: torch.Tensor,
    labels: torch.Tensor,
    frame_lengths: torch.Tensor,
    label_lengths: torch.Tensor,
    durations: Sequence[int],
    blank: int | None = None,
    sigma: float = 0.0,
    reduction: str = "mean_batch",
) -> torch.Tensor:
    """The TDT loss on raw joint output [B, T, U + 1, V + 1 + D], normalised as NeMo's TDT loss does.

    blank: index of the blank token; default V (the last token output), NeMo's convention.
    reduction: "none" ([B] negative log-likelihoods), "sum", "mean_batch" (their mean, NeMo's default),
    or "mean" (each divided by its label count, then averaged; NeMo's "mean").
    """
    n_durations = len(durations)
    if joint.shape[-1] <= n_durations + 1:
        raise ValueError(f"joint output of width {joint.shape[-1]} cannot hold tokens, blank and "
                         f"{n_durations} durations")
    token_logprobs = torch.log_softmax(joint[..., :-n_durations], dim=-1) - float(sigma)
    duration_logprobs = torch.log_softmax(joint[..., -n_durations:], dim=-1)
    if blank is None:
        blank = token_logprobs.shape[-1] - 1
    losses = -tdt_log_likelihood(token_logprobs, duration_logprobs, labels, frame_lengths, label_lengths,
                                 durations, blank)
    return _reduce(losses, label_lengths, reduction)


def rnnt_loss(
    joint: torch.Tensor,
    labels: torch.Tensor,
    frame_lengths: torch.Tensor,
    label_lengths: torch.Tensor,
    blank: int | None = None,
    reduction: str = "mean_batch",
) -> torch.Tensor:
    """The plain RNN-T loss on joint output [B, T, U + 1, V + 1] (raw or log-softmaxed: normalised here again).

    The same lattice with one duration for each arc kind: a blank moves one frame on, a label stays on its frame
    (the chain inside a frame is the duration-0 chain of the TDT loss). NeMo's numba RNN-T kernel has a CPU path, but
    on the streaming fixture's batch it takes about 2.7 s a step on two cores; this takes a fraction of that, which
    is what lets the fixture train in minutes."""
    token_logprobs = torch.log_softmax(joint, dim=-1)
    batch, frames, states, _ = token_logprobs.shape
    blank = token_logprobs.shape[-1] - 1 if blank is None else blank
    frame_lengths = frame_lengths.to(dtype=torch.long)
    last_state = label_lengths.to(dtype=torch.long)[:, None]
    blank_lp = token_logprobs[..., blank]  # [B, T, U+1]
    index = labels.to(dtype=torch.long).clamp(0, token_logprobs.shape[-1] - 1)
    index = index[:, None, :, None].expand(batch, frames, states - 1, 1)
    label_lp = torch.gather(token_logprobs[:, :, :-1, :], 3, index).squeeze(3)  # [B, T, U]
    arrived = token_logprobs.new_full((batch, states), _IMPOSSIBLE)
    arrived[:, 0] = 0.0
    final = token_logprobs.new_full((batch,), _IMPOSSIBLE)
    for t in range(frames):
        prefix = torch.cat([label_lp.new_zeros(batch, 1), torch.cumsum(label_lp[:, t], dim=1)], dim=1)
        alpha = prefix + torch.logcumsumexp(arrived - prefix, dim=1)  # labels chained inside frame t
        leaving = alpha + blank_lp[:, t]  # a blank from frame t to t + 1
        final = torch.where(frame_lengths == t + 1, torch.gather(leaving, 1, last_state).squeeze(1), final)
        arrived = leaving
    return _reduce(-final, label_lengths, reduction)


def _reduce(losses: torch.Tensor, label_lengths: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean_batch":
        return losses.mean()
    if reduction == "mean":
        return (losses / label_lengths.to(losses).clamp(min=1)).mean()
    raise ValueError(f"unknown reduction {reduction!r}")
