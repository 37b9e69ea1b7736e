"""Prepare the encoder before export: what length of audio it will accept, and which attention it runs.

Kept apart from the export itself because both decisions change the graph that tracing records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts


@dataclass(frozen=True)
class AttentionRequest:
    """What the user asked for: keep the checkpoint's attention (None) or switch to local with a context."""

    attention: str | None = None  # "full", "local" or None (as trained)
    context: tuple[int, int] | None = None


@dataclass
class EncoderPrep:
    facts: ModelFacts
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest's export section


def prepare_encoder(model: Any, facts: ModelFacts, request: AttentionRequest, source: Path) -> EncoderPrep:
    attention = facts.architecture.attention or ""
    if request.attention is not None or request.context is not None:
        raise UserError.about(source, "--attention/--context are not supported yet")
    if "local" in attention:
        raise UserError.about(source, f"uses {attention} attention, whose plain export is silently wrong; "
                                      "local-attention export is not supported yet")
    return EncoderPrep(facts=facts, info={})
