"""The CPU TDT loss against a brute-force sum over every TDT alignment, and its gradients.

The brute force walks the lattice path by path (recursion over (t, u), no dynamic programming), so it shares no
code and no trick with the vectorised forward algorithm it checks.
"""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")

from nemo2sherpa.testing.tdt_loss import tdt_log_likelihood, tdt_loss  # noqa: E402


def brute_force(token_lp, duration_lp, labels, frames, n_labels, durations, blank):
    """log-sum-exp over every complete TDT path of one utterance; -inf when there is none.

    token_lp [T][U+1][V+1] and duration_lp [T][U+1][D] are nested lists of log-probabilities. A path starts at (0, 0);
    a blank of duration d >= 1 goes (t, u) -> (t + d, u), a label of duration d >= 0 goes (t, u) -> (t + d, u + 1);
    every visited state needs t < frames, except the end: a blank landing exactly on (frames, n_labels).
    """
    scores: list[float] = []

    def walk(t: int, u: int, score: float) -> None:
        for i, d in enumerate(durations):
            if d >= 1:
                arc = score + token_lp[t][u][blank] + duration_lp[t][u][i]
                if t + d < frames:
                    walk(t + d, u, arc)
                elif t + d == frames and u == n_labels:
                    scores.append(arc)
            if u < n_labels and t + d < frames:
                walk(t + d, u + 1, score + token_lp[t][u][labels[u]] + duration_lp[t][u][i])

    walk(0, 0, 0.0)
    if not scores:
        return -math.inf
    top = max(scores)
    return top + math.log(sum(math.exp(s - top) for s in scores))


def random_case(rng: random.Random, batch: int, durations, vocab: int, max_frames: int, max_labels: int):
    frames = [rng.randint(1, max_frames) for _ in range(batch)]
    n_labels = [rng.randint(0, max_labels) for _ in range(batch)]
    T, U = max(frames), max(n_labels)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    joint = torch.randn(batch, T, U + 1, vocab + 1 + len(durations), generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, vocab, (batch, U), generator=generator)
    for b in range(batch):  # padding holds arbitrary finite junk, including out-of-vocabulary ids
        labels[b, n_labels[b]:] = -1
        joint[b, frames[b]:] = 1e3 * torch.randn_like(joint[b, frames[b]:])
    return joint, labels, torch.tensor(frames), torch.tensor(n_labels)


def expected(joint, labels, frames, n_labels, durations, sigma=0.0):
    n = len(durations)
    token_lp = torch.log_softmax(joint[..., :-n], dim=-1) - sigma
    duration_lp = torch.log_softmax(joint[..., -n:], dim=-1)
    blank = token_lp.shape[-1] - 1
    return [
        brute_force(token_lp[b].tolist(), duration_lp[b].tolist(), labels[b].tolist(), int(frames[b]),
                    int(n_labels[b]), list(durations), blank)
        for b in range(joint.shape[0])
    ]


def as_float(value) -> float:
    return float(value.item()) if hasattr(value, "item") else float(value)


@pytest.mark.parametrize("durations", [(0, 1, 2, 3, 4), (0, 1, 2), (0, 1), (1, 2, 3), (1,), (0, 2, 3)],
                         ids=lambda d: "d" + "".join(map(str, d)))
def test_matches_brute_force_on_random_batches(durations):
    rng = random.Random(sum(d * 10**i for i, d in enumerate(durations)))
    for _ in range(4):
        joint, labels, frames, n_labels = random_case(rng, batch=3, durations=durations, vocab=3, max_frames=5,
                                                      max_labels=3)
        got = tdt_loss(joint, labels, frames, n_labels, durations, reduction="none")
        want = expected(joint, labels, frames, n_labels, durations)
        for b, target in enumerate(want):
            if target == -math.inf:
                assert as_float(got[b]) > 1e4, "no path exists; the loss must be huge"
            else:
                assert as_float(got[b]) == pytest.approx(-target, rel=1e-9, abs=1e-9)


def test_sigma_is_subtracted_from_every_token_arc():
    rng = random.Random(7)
    durations = (0, 1, 2, 3, 4)
    joint, labels, frames, n_labels = random_case(rng, 2, durations, vocab=4, max_frames=6, max_labels=3)
    got = tdt_loss(joint, labels, frames, n_labels, durations, sigma=0.05, reduction="none")
    want = expected(joint, labels, frames, n_labels, durations, sigma=0.05)
    assert [as_float(v) for v in got] == pytest.approx([-w for w in want], rel=1e-9)


def test_batch_equals_each_utterance_alone():
    rng = random.Random(3)
    durations = (0, 1, 2, 3, 4)
    joint, labels, frames, n_labels = random_case(rng, 4, durations, vocab=5, max_frames=9, max_labels=5)
    batched = tdt_loss(joint, labels, frames, n_labels, durations, reduction="none")
    for b in range(4):
        T, U = int(frames[b]), int(n_labels[b])
        alone = tdt_loss(joint[b:b + 1, :T, :U + 1], labels[b:b + 1, :U], frames[b:b + 1], n_labels[b:b + 1],
                         durations, reduction="none")
        assert as_float(batched[b]) == pytest.approx(as_float(alone[0]), rel=1e-12)


def test_single_path_by_hand():
    """One frame, one label: the only path is the label with duration 0, then a blank with duration 1."""
    durations = (0, 1)
    probs = torch.tensor([[[[0.6, 0.1, 0.3], [0.2, 0.2, 0.6]]]], dtype=torch.float64)  # [1, T=1, U+1=2, V+1=3]
    duration_probs = torch.tensor([[[[0.8, 0.2], [0.1, 0.9]]]], dtype=torch.float64)
    ll = tdt_log_likelihood(probs.log(), duration_probs.log(), torch.tensor([[0]]), torch.tensor([1]),
                            torch.tensor([1]), durations, blank=2)
    assert as_float(ll[0]) == pytest.approx(math.log(0.6 * 0.8 * 0.6 * 0.9))


def test_reductions():
    rng = random.Random(11)
    durations = (0, 1, 2)
    joint, labels, frames, n_labels = random_case(rng, 3, durations, vocab=3, max_frames=4, max_labels=2)
    n_labels = n_labels.clamp(min=1)
    labels = labels.clamp(min=0)
    each = tdt_loss(joint, labels, frames, n_labels, durations, reduction="none")
    assert as_float(tdt_loss(joint, labels, frames, n_labels, durations, reduction="sum")) == pytest.approx(
        as_float(each.sum()))
    assert as_float(tdt_loss(joint, labels, frames, n_labels, durations)) == pytest.approx(as_float(each.mean()))
    assert as_float(tdt_loss(joint, labels, frames, n_labels, durations, reduction="mean")) == pytest.approx(
        as_float((each / n_labels).mean()))
    with pytest.raises(ValueError):
        tdt_loss(joint, labels, frames, n_labels, durations, reduction="bogus")


def test_gradients_are_exact():
    rng = random.Random(5)
    durations = (0, 1, 2)
    joint, labels, frames, n_labels = random_case(rng, 2, durations, vocab=3, max_frames=4, max_labels=2)
    joint = (joint.clamp(-5, 5)).detach().requires_grad_(True)  # moderate values: finite differences stay exact

    def loss(j):
        return tdt_loss(j, labels, frames, n_labels, durations, sigma=0.02, reduction="sum")

    assert torch.autograd.gradcheck(loss, (joint,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_is_finite_and_ignores_padding():
    rng = random.Random(9)
    durations = (0, 1, 2, 3, 4)
    joint, labels, frames, n_labels = random_case(rng, 3, durations, vocab=4, max_frames=7, max_labels=4)
    joint = joint.float().requires_grad_(True)
    tdt_loss(joint, labels, frames, n_labels, durations).backward()
    grad = joint.grad
    assert torch.isfinite(grad).all()
    for b in range(3):
        assert grad[b, int(frames[b]):].abs().sum().item() == 0.0  # frames past the end
        assert grad[b, :, int(n_labels[b]) + 1:].abs().sum().item() == 0.0  # states past the last label


def test_rejects_inconsistent_inputs():
    joint = torch.zeros(1, 3, 2, 4 + 3)
    labels = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError):
        tdt_loss(joint, labels, torch.tensor([4]), torch.tensor([1]), (0, 1, 2))  # more frames than given
    with pytest.raises(ValueError):
        tdt_loss(joint, labels, torch.tensor([3]), torch.tensor([2]), (0, 1, 2))  # more labels than given
    with pytest.raises(ValueError):
        tdt_loss(joint, labels, torch.tensor([3]), torch.tensor([1]), (0,) * 3)  # no duration >= 1


@pytest.mark.nemo
def test_agrees_with_nemo_reference_implementation(monkeypatch):
    """NeMo's own pure-PyTorch TDT loss, with its hard-coded .cuda() calls made no-ops so it runs on CPU."""
    pytest.importorskip("nemo.collections.asr.losses.rnnt_pytorch")
    from nemo.collections.asr.losses.rnnt_pytorch import TDTLossPytorch

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    rng = random.Random(13)
    durations = (0, 1, 2, 3, 4)
    joint, labels, frames, n_labels = random_case(rng, 2, durations, vocab=4, max_frames=6, max_labels=3)
    joint = joint.clamp(-5, 5).float()
    labels = labels.clamp(min=0)
    reference = TDTLossPytorch(blank=4, durations=list(durations), reduction="none", sigma=0.02)
    want = reference(acts=joint, labels=labels, act_lens=frames, label_lens=n_labels)
    got = tdt_loss(joint, labels, frames, n_labels, durations, sigma=0.02, reduction="none")
    assert got.tolist() == pytest.approx(want.tolist(), rel=1e-4)


def test_rnnt_loss_equals_nemos_rnnt_loss_and_its_gradients():
    """The plain RNN-T loss (the streaming fixture's) against NeMo's own (its numba kernel's CPU path), values and
    gradients, on a ragged batch."""
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo.collections.asr.losses.rnnt import RNNTLoss

    from nemo2sherpa.testing.tdt_loss import rnnt_loss

    torch.manual_seed(0)
    batch, frames, labels, vocab = 3, 12, 5, 7
    joint = torch.randn(batch, frames, labels + 1, vocab + 1, dtype=torch.float64)
    targets = torch.randint(0, vocab, (batch, labels))
    frame_lengths, label_lengths = torch.tensor([12, 9, 7]), torch.tensor([5, 3, 4])
    ours_in = joint.clone().requires_grad_()
    ours = rnnt_loss(ours_in, targets, frame_lengths, label_lengths, reduction="none")
    nemo_in = joint.clone().float().requires_grad_()
    nemo = RNNTLoss(num_classes=vocab, reduction=None)(log_probs=nemo_in, targets=targets,
                                                       input_lengths=frame_lengths, target_lengths=label_lengths)
    assert torch.allclose(ours.float(), nemo, atol=1e-4), (ours, nemo)
    ours.sum().backward()
    nemo.sum().backward()
    # NeMo's kernel takes the gradient with respect to the log-softmax of its input; both normalise the same way
    assert torch.allclose(ours_in.grad.float(), nemo_in.grad, atol=1e-4)
