"""Prepare the encoder before export: what length of audio it will accept, and which attention it runs.

Kept apart from the export itself because both decisions change the graph that tracing records.

- Full attention (rel_pos): the exported graph computes its relative positions itself (relative_positions.py), so it
  accepts any length; memory grows with the square of the length (docs/long-audio.md has the figures per recipe).
- Local attention (rel_pos_local_attn, as trained or asked for with --attention local --context L,R): the modules
  export through a banded formulation that is faithful at every length (local_attention.py); memory grows
  linearly with the length.
- Both: the subsampling front end's time masks are exported broadcast instead of expanded to the size of its
  activations (relative_positions.py), which dominates memory on long inputs once attention no longer does.

Whatever is exported, the probes that check the written graphs are computed by NeMo's own modules: the export
formulations are active only while torch.onnx traces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo2sherpa.convert.export.local_attention import context_problem
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts

FULL, LOCAL = "rel_pos", "rel_pos_local_attn"
DEFAULT_LOCAL_CONTEXT = (128, 128)  # NeMo's suggestion for long-form audio with Parakeet models (about 10 s each way)
LONG_PROBE_MAX_PARAMETERS = 30_000_000  # a probe beyond the old 400 s limit costs seconds on a small model only


@dataclass(frozen=True)
class AttentionRequest:
    """What the user asked for: keep the checkpoint's attention (None) or switch to local with a context."""

    attention: str | None = None  # "full", "local" or None (as trained)
    context: tuple[int, int] | None = None
    lookahead: int | None = None  # a cache-aware encoder's look-ahead in encoder frames (None: its default)


@dataclass
class EncoderPrep:
    facts: ModelFacts
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest's export section
    probe_frames: tuple[int, ...] = ()  # extra encoder probe lengths (feature frames) this attention needs checked


def feature_frames_for(encoder_frames: int, subsampling: int) -> int:
    """Feature frames that the x`subsampling` front end turns into exactly `encoder_frames` (not a multiple of it)."""
    return max(1, subsampling * encoder_frames - 3)


def target_attention(trained: str, trained_context: tuple[int, int], request: AttentionRequest,
                     source: Path) -> tuple[str, tuple[int, int]]:
    """(self_attention_model, att_context_size) to export, or a one-line refusal."""
    if request.attention not in (None, "full", "local"):
        raise UserError(f"unknown attention {request.attention!r}; use full or local")
    if request.attention is None and request.context is None:
        return trained, trained_context
    if trained not in (FULL, LOCAL):
        raise UserError.about(source, f"uses {trained} attention; --attention/--context need a checkpoint with "
                                      f"relative-position attention ({FULL} or {LOCAL})")
    if request.attention == "full":
        if request.context is not None:
            raise UserError("--context sets the window of --attention local; full attention has none")
        return FULL, (trained_context if trained == FULL else (-1, -1))
    if request.attention is None and trained != LOCAL:
        raise UserError.about(source, "has full attention; --context needs --attention local")
    context = request.context or (trained_context if trained == LOCAL else DEFAULT_LOCAL_CONTEXT)
    left, right = (int(c) for c in context)
    problem = context_problem(left, right)
    if problem:
        raise UserError(f"--{problem}") if request.context else UserError.about(source, f"was trained with a {problem}")
    return LOCAL, (left, right)


def prepare_encoder(model: Any, facts: ModelFacts, request: AttentionRequest, source: Path) -> EncoderPrep:
    from nemo2sherpa.convert.export.lookahead import select_lookahead

    if facts.architecture.is_cache_aware and (request.attention or request.context):
        raise UserError.about(source, "is a cache-aware streaming model: its chunked attention is what it streams "
                                      "with; choose its latency with --lookahead instead of --attention/--context")
    facts, streaming = select_lookahead(model, facts, request.lookahead, source)
    architecture = facts.architecture
    trained = architecture.attention or FULL
    trained_context = tuple(architecture.att_context_size or (-1, -1))
    target, context = target_attention(trained, trained_context, request, source)  # type: ignore[arg-type]
    changed = (target, tuple(context)) != (trained, trained_context)
    if changed:
        _change_attention(model, target, context)

    from nemo2sherpa.convert.export import relative_positions as long_audio

    encoder = model.encoder
    subsampling = int(architecture.subsampling_factor or 8)
    seconds_per_frame = facts.encoder_frame_seconds
    attention: dict[str, Any] = {
        "kind": "local" if target == LOCAL else "full",
        "self_attention_model": target,
        "context": list(context) if target == LOCAL or min(context) >= 0 else None,
        "as_trained": not changed,
        **({"style": architecture.att_context_style} if architecture.is_cache_aware else {}),
    }
    if changed:
        attention["trained"] = {"self_attention_model": trained, "context": list(trained_context)}
    probe_frames: tuple[int, ...] = ()
    max_audio_seconds: float | None = None

    if target == LOCAL:
        from nemo2sherpa.convert.export import local_attention

        modules = [m for m in encoder.modules() if isinstance(m, local_attention.longformer_class())]
        if not modules:
            raise UserError.about(source, f"says {LOCAL} but its encoder has no local-attention layers")
        for module in modules:
            reason = local_attention.unsupported_reason(module)
            if reason:
                raise UserError.about(source, reason)
        local_attention.install_on_encoder(encoder)
        window = max(context)
        attention.update(memory_growth="linear", window_frames=2 * window + 1,
                         window_seconds=round((2 * window + 1) * seconds_per_frame, 3),
                         export_forward="banded sliding-window attention (nemo2sherpa.convert.export.local_attention)")
        # Lengths that cross chunk boundaries and are no multiple of the window, shorter and longer than the trace.
        probe_frames = tuple(feature_frames_for(t, subsampling) for t in (3 * window - 1, 7 * window + 1))
    elif target == FULL:
        if not long_audio.install_on_encoder(encoder):
            raise UserError.about(source, f"says {FULL} but its encoder has no relative positional encoding")
        attention.update(memory_growth="quadratic",
                         export_forward="relative positions computed in the graph "
                                        "(nemo2sherpa.convert.export.relative_positions)")
        limit = int(architecture.pos_emb_max_len or 5000)
        if (facts.parameters or 0) <= LONG_PROBE_MAX_PARAMETERS:
            long_probe = feature_frames_for(limit + 37, subsampling)
            encoder.set_max_audio_length(long_probe)  # NeMo's table, for the PyTorch side of the probe only
            probe_frames = (long_probe,)
    else:  # abs_pos: exported as NeMo builds it, its position table is the limit
        attention.update(memory_growth="quadratic", export_forward="NeMo's")
        max_audio_seconds = round(int(architecture.pos_emb_max_len or 5000) * seconds_per_frame, 2)

    facts = dataclasses.replace(facts, architecture=dataclasses.replace(
        architecture, attention=target, att_context_size=tuple(context)))
    info = {"attention": attention, "max_audio_seconds": max_audio_seconds,
            "encoder_frame_seconds": seconds_per_frame, **streaming}
    if long_audio.install_front_end(encoder):
        info["front_end"] = ("subsampling time masks broadcast, not expanded "
                             "(nemo2sherpa.convert.export.relative_positions)")
    return EncoderPrep(facts=facts, info=info, probe_frames=probe_frames)


def _change_attention(model: Any, target: str, context: tuple[int, int]) -> None:
    from nemo2sherpa.checkpoint.loading import quiet_nemo

    with quiet_nemo():
        model.change_attention_model(self_attention_model=target, att_context_size=list(context))
    model.eval()  # NeMo builds the new attention and position modules in training mode (dropout on)
