"""Pick the look-ahead a cache-aware streaming encoder is exported with, and record the streaming shape it gives.

A cache-aware FastConformer may be trained with several attention contexts ([[70, 13], [70, 6], [70, 1], [70, 0]]):
one model, several latencies. An exported encoder runs exactly one of them (the chunk it consumes, the frames it
emits and the caches it keeps all follow from it), so convert picks one: `--lookahead N` (encoder frames), or the
checkpoint's default, the first it lists. NeMo's own `set_default_att_context_size` switches the encoder and
recomputes its streaming config; the shape sherpa-onnx needs is read from that config (families.streaming_step), not
re-derived, so it is what NeMo streams with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.streaming_step import apply_lookahead, streaming_shape


def select_lookahead(model: Any, facts: ModelFacts, lookahead: int | None, source: Path
                     ) -> tuple[ModelFacts, dict[str, Any]]:
    """Switch a cache-aware encoder to the look-ahead asked for (None: its default); the facts with the streaming
    shape and the chosen context, and what the manifest records (look-ahead, chunk and their latency)."""
    architecture = facts.architecture
    if not architecture.is_cache_aware:
        if lookahead is not None:
            raise UserError.about(source, "--lookahead needs a cache-aware streaming checkpoint; this one is offline")
        return facts, {}
    trained = list(architecture.lookaheads or ())
    chosen = trained[0] if lookahead is None else int(lookahead)
    if chosen not in trained:
        raise UserError.about(source, f"--lookahead {chosen}: the model was trained with look-aheads "
                                      f"{', '.join(map(str, trained))} (encoder frames)")
    context = apply_lookahead(model, chosen)
    shape = streaming_shape(model.encoder)
    latency = shape.latency_ms(facts.hop_ms, int(architecture.subsampling_factor or 8))
    facts = dataclasses.replace(facts, streaming=shape, architecture=dataclasses.replace(
        architecture, att_context_size=(int(context[0]), chosen)))
    info = {"lookahead_frames": chosen, "as_trained_default": chosen == trained[0], "trained_lookaheads": trained,
            "att_context_size": [int(context[0]), chosen], **latency,
            "window_frames": shape.window_frames, "chunk_frames": shape.chunk_frames}
    return facts, {"streaming": info}
