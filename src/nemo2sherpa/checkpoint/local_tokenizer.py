"""SentencePiece tokenizers made locally: an exact-size one for --random-weights architectures (no corpus needed),
and one trained from a few lines of text for small test and fixture models.

Both write the files NeMo's BPE tokenizer setup expects in its directory: tokenizer.model, tokenizer.vocab, vocab.txt.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path
from typing import Iterable

_ALPHABET = string.ascii_lowercase + "'"
_WORD_START = "\u2581"  # SentencePiece's visible space


def _write_companions(directory: Path, pieces: list[tuple[str, float]]) -> None:
    (directory / "tokenizer.vocab").write_text("".join(f"{p}\t{s}\n" for p, s in pieces), encoding="utf-8")
    (directory / "vocab.txt").write_text("".join(f"{p}\n" for p, _ in pieces), encoding="utf-8")


def synthetic_tokenizer(vocab_size: int, directory: Path) -> Path:
    """A unigram SentencePiece model with exactly `vocab_size` pieces: <unk>, then letter n-grams with and without
    the word-start mark. It tokenizes any English text; its only job is to give a model its real vocabulary size."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    if vocab_size < 2:
        raise ValueError("vocab_size must be at least 2")
    model = pb.ModelProto()
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM
    trainer.vocab_size = vocab_size
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, -1, -1, -1
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = True
    normalizer.escape_whitespaces = True

    unk = model.pieces.add()
    unk.piece, unk.score, unk.type = "<unk>", 0.0, pb.ModelProto.SentencePiece.UNKNOWN
    listing = [("<unk>", 0.0)]
    for length in itertools.count(1):
        for letters in itertools.product(_ALPHABET, repeat=length):
            for prefix in (_WORD_START, ""):
                if len(model.pieces) == vocab_size:
                    break
                piece = model.pieces.add()
                piece.piece = prefix + "".join(letters)
                piece.score = -float(len(model.pieces))  # prefer earlier (shorter) pieces
                listing.append((piece.piece, piece.score))
        if len(model.pieces) == vocab_size:
            break
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.model"
    path.write_bytes(model.SerializeToString())
    _write_companions(directory, listing)
    return path


def trained_tokenizer(lines: Iterable[str], vocab_size: int, directory: Path, model_type: str = "bpe") -> Path:
    """A SentencePiece model trained on a few lines of text, the way NeMo's tokenizer script makes them."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=True,
        minloglevel=2,
    )
    corpus.unlink()
    processor = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    _write_companions(directory, pieces)
    return directory / "tokenizer.model"
