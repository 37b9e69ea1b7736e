"""The corpus builder for a model that recognises unseen speech: its vocabulary is wordfreq's 1,951 alphabetic words
among the top 2,000, a large enough training set hears every word, held-out sentences are never trained on, and the
same seed writes the same audio."""

from __future__ import annotations

import json
import random

import pytest

from nemo2sherpa.validate.synth import espeak_available

pytest.importorskip("wordfreq", reason="wordfreq is not installed (the test extra)")

from nemo2sherpa.testing import corpus  # noqa: E402


def test_the_vocabulary_is_the_alphabetic_top_2000():
    words = corpus.vocabulary()
    assert len(words) == 1951 and len(set(words)) == len(words)
    assert words[:3] == ["the", "to", "and"] and all(w.isalpha() for w in words)


def test_training_hears_every_word_and_never_a_held_out_sentence():
    words = corpus.vocabulary()
    rng = random.Random(0)
    held = corpus.sentences(words, 200, rng)
    covering = corpus.covering_sentences(words, rng)
    training = covering + corpus.sentences(words, 1000, rng, exclude=held)
    assert {w for s in covering for w in s.split()} == set(words)
    assert not set(held) & set(training)
    lengths = [len(s.split()) for s in held]
    assert min(lengths) >= corpus.WORDS_PER_SENTENCE[0] and max(lengths) <= corpus.WORDS_PER_SENTENCE[1]


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed: the corpus is its speech")
def test_the_same_seed_writes_the_same_corpus(tmp_path):
    first = corpus.build(tmp_path / "a", train=3, heldout=2, seed=7, log=lambda _: None)
    corpus.build(tmp_path / "b", train=3, heldout=2, seed=7, log=lambda _: None)
    assert first == {"train": 3, "heldout": 2}
    for split in ("train", "heldout"):
        lines = [json.loads(line) for line in (tmp_path / "a" / f"{split}.jsonl").read_text().splitlines()]
        assert len(lines) == first[split]
        for line in lines:
            a, b = (tmp_path / side / line["audio"] for side in ("a", "b"))
            assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 16000
    texts = [json.loads(line)["text"] for line in (tmp_path / "a" / "heldout.jsonl").read_text().splitlines()]
    assert all(set(t.split()) <= set(corpus.vocabulary()) for t in texts)
