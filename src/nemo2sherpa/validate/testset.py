"""The test set validate uses when given no audio: English sentences spoken by espeak-ng in a few voices, made
locally so validation works offline. Lengths vary (about 2 to 6 s); longer inputs for the speed check are made by
concatenation (see speed.make_bucket_clips).
"""

from __future__ import annotations

from nemo2sherpa.errors import UserError
from nemo2sherpa.validate.audio import Clip

SENTENCES = (
    "please call stella",
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
)
VOICES = (("en-us", 165, 50), ("en-gb", 150, 40), ("en-us+f3", 180, 60))


def synthesized_clips(sample_rate: int = 16000) -> list[Clip]:
    from nemo2sherpa.validate.synth import SynthesisError, synthesize

    clips = []
    try:
        for index, text in enumerate(SENTENCES):
            voice, speed, pitch = VOICES[index % len(VOICES)]
            audio = synthesize(text, voice=voice, speed_wpm=speed, pitch=pitch, sample_rate=sample_rate)
            clips.append(Clip(name=f"synth-{index:02d}-{voice}", audio=audio, sample_rate=sample_rate, text=text))
    except SynthesisError as exc:
        raise UserError(f"no audio given and the built-in test set cannot be synthesized ({exc}); "
                        "pass --audio FILE... or --dataset manifest.jsonl") from None
    return clips
