"""Precision variants beside the float32 reference (int8, fp16)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.manifest import Variant
from nemo2sherpa.progress import Progress

PRECISIONS = ("fp32", "int8", "fp16")


def write_variants(directory: Path, fp32: Variant, facts: ModelFacts, precisions: Sequence[str],
                   progress: Progress) -> dict[str, Variant]:
    """Write each requested precision other than fp32 next to the fp32 graphs; returns the variants written."""
    extra = [p for p in precisions if p != "fp32"]
    if extra:
        raise UserError(f"precision(s) {', '.join(extra)} are not supported yet")
    return {}
