"""Transcribe audio with a model directory through sherpa-onnx itself: the quickest way to hear what an export
does, and the demo's last step (a sentence typed by the user, spoken by espeak-ng, read back by the export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Transcript:
    name: str
    seconds: float
    text: str


def transcribe(directory: Path, audio: Sequence[Path] = (), say: Sequence[str] = (), provider: str = "cpu",
               threads: int = 2, variant: str | None = None) -> list[Transcript]:
    """sherpa-onnx's text for each audio file and each sentence in `say` (spoken by espeak-ng, en-us)."""
    from nemo2sherpa.validate.audio import Clip, clips_from_files
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer
    from nemo2sherpa.validate.sherpa_runner import transcribe as run
    from nemo2sherpa.validate.synth import synthesize

    model = open_model_dir(directory, variant=variant)
    contract, spec = check_contract(model)
    if spec is None:
        from nemo2sherpa.errors import UserError

        raise UserError.about(directory, f"not a model directory sherpa-onnx can load: {contract.problems[0]}")
    rate = model.manifest.model.sample_rate if model.manifest else 16000
    clips = clips_from_files(audio, rate)
    clips += [Clip(name=f"said: {text}", audio=synthesize(text, sample_rate=rate), sample_rate=rate) for text in say]
    recognizer = make_recognizer(model, provider=provider, threads=threads, sample_rate=rate,
                                 feature_dim=spec.feat_dim)
    return [Transcript(c.name, c.seconds, run(recognizer, c.audio, rate).text) for c in clips]
