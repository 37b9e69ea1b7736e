"""The speech corpus a bundled model that recognises unseen speech learns from, built here, offline, reproducibly.

    python -m nemo2sherpa.testing.corpus --out DIR [--train 8000] [--heldout 200] [--seed 0]

Sentences are drawn from the 2,000 most frequent English words of the `wordfreq` package (the 1,951 purely
alphabetic ones), spoken by espeak-ng in several voices and variants, speeds and pitches, with light white noise.
The held-out sentences share no sentence with the training ones (their words are the same vocabulary: the point is
recognising new word sequences, not new words), so a WER measured on them is a WER on speech the model never heard.

Why synthetic speech: no download, bit-identical on every run of the same espeak-ng build, and every word of the
vocabulary can be guaranteed to occur in training. What it does not give: human voices, accents beyond espeak-ng's
voices, real noise; a model trained on it says nothing about those (its model card has to say so).

Writes DIR/train.jsonl and DIR/heldout.jsonl ({"audio": "audio/<name>.wav", "text": ...} per line, paths relative to
the file, as validate --dataset reads them) and DIR/audio/*.wav (16 kHz, 16-bit mono).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

TOP_WORDS = 2000
#: espeak-ng voices and variants (variant names from espeak-ng's voices/!v directory)
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029")
VARIANTS = ("", "+f2", "+f4", "+m3", "+m5")
SPEEDS_WPM = (130, 150, 170, 190)
PITCHES = (30, 45, 60, 75)
NOISE_SNR_DB = (25.0, 45.0)
WORDS_PER_SENTENCE = (3, 12)
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Rendering:
    """How one sentence is spoken."""

    voice: str
    speed_wpm: int
    pitch: int
    snr_db: float

    def describe(self) -> str:
        return f"{self.voice} {self.speed_wpm} wpm pitch {self.pitch} snr {self.snr_db:.0f} dB"


def vocabulary() -> list[str]:
    """The purely alphabetic words among wordfreq's 2,000 most frequent English ones, most frequent first."""
    from wordfreq import top_n_list

    return [word for word in top_n_list("en", TOP_WORDS) if word.isalpha() and word.isascii()]


def sentences(words: Sequence[str], count: int, rng: random.Random, exclude: Iterable[str] = ()) -> list[str]:
    """`count` distinct word sequences, none in `exclude`. Words are drawn uniformly, not by frequency: every word of
    the vocabulary must be heard often enough to be learned, the rare ones as much as "the"."""
    taken = set(exclude)
    out: list[str] = []
    while len(out) < count:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(*WORDS_PER_SENTENCE)))
        if sentence not in taken:
            taken.add(sentence)
            out.append(sentence)
    return out


def covering_sentences(words: Sequence[str], rng: random.Random) -> list[str]:
    """Sentences that together hold every word once (shuffled, cut into sentence lengths, about 260 for the 1,951
    words): a training set starts with these, so that one of at least that many sentences hears every word."""
    shuffled = list(words)
    rng.shuffle(shuffled)
    out, start = [], 0
    while start < len(shuffled):
        length = rng.randint(*WORDS_PER_SENTENCE)
        out.append(" ".join(shuffled[start:start + length]))
        start += length
    return out


def rendering(rng: random.Random) -> Rendering:
    return Rendering(voice=rng.choice(VOICES) + rng.choice(VARIANTS), speed_wpm=rng.choice(SPEEDS_WPM),
                     pitch=rng.choice(PITCHES), snr_db=rng.uniform(*NOISE_SNR_DB))


def speak(text: str, how: Rendering, seed: int) -> np.ndarray:
    """The sentence as 16 kHz float32 samples, with white noise at the rendering's SNR (seeded: reproducible)."""
    from nemo2sherpa.validate.synth import synthesize, to_pcm16

    audio = synthesize(text, voice=how.voice, speed_wpm=how.speed_wpm, pitch=how.pitch, sample_rate=SAMPLE_RATE)
    power = float(np.mean(audio**2)) or 1e-8
    noise = np.random.default_rng(seed).standard_normal(audio.size).astype(np.float32)
    audio = audio + noise * np.float32(np.sqrt(power / 10 ** (how.snr_db / 10)))
    return to_pcm16(np.clip(audio, -1.0, 1.0))  # what the 16-bit WAV will hold


def build(out: Path, train: int, heldout: int, seed: int = 0, log=print) -> dict[str, int]:
    """Write the corpus (see the module docstring); returns the number of utterances per split."""
    from nemo2sherpa.validate.synth import write_wav

    rng = random.Random(seed)
    words = vocabulary()
    held = sentences(words, heldout, rng)
    covering = covering_sentences(words, rng)
    training = (covering + sentences(words, max(0, train - len(covering)), rng, exclude=held))[:max(train, 0)]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, texts in (("train", training), ("heldout", held)):
        lines = []
        for index, text in enumerate(texts):
            name = f"{split}-{index:05d}"
            how = rendering(rng)
            write_wav(out / "audio" / f"{name}.wav", speak(text, how, seed=rng.randrange(2**32)), SAMPLE_RATE)
            lines.append(json.dumps({"audio": f"audio/{name}.wav", "text": text, "rendering": how.describe()}))
            if (index + 1) % 500 == 0:
                log(f"{split}: {index + 1} of {len(texts)} utterances")
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = len(texts)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo2sherpa.testing.corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = build(args.out, args.train, args.heldout, args.seed)
    print(f"wrote {counts['train']} training and {counts['heldout']} held-out utterances into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
