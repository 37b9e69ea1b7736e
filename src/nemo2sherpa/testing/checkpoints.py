"""Small NeMo checkpoints built locally from a config: the test suite's models, no network needed.

Random weights: such a model emits arbitrary tokens, which is what graph-level comparisons need (every branch of the
decoder is exercised), but its text means nothing.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from nemo2sherpa.facts import Architecture

SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "we also need a small plastic snake and a big toy frog",
    "hello world this is a test of the conversion",
)

TINY = Architecture(
    model_class="EncDecRNNTBPEModel",
    encoder_layers=1,
    d_model=32,
    attention_heads=2,
    ff_expansion_factor=2,
    conv_kernel_size=9,
    subsampling_factor=8,
    subsampling_conv_channels=16,
    attention="rel_pos",
    att_context_size=(-1, -1),
    xscaling=False,
    use_bias=True,
    pos_emb_max_len=5000,
    mels=80,
    vocab_size=40,
    durations=(0, 1, 2, 3, 4),
    pred_hidden=24,
    pred_rnn_layers=1,
    joint_hidden=24,
)


def variant(**changes: Any) -> Architecture:
    return dataclasses.replace(TINY, **changes)


def build_checkpoint(path: Path, architecture: Architecture = TINY, seed: int = 0) -> Path:
    """Train a SentencePiece tokenizer on a few sentences, build the model from its config, save it as .nemo."""
    import torch

    from nemo2sherpa.checkpoint.architecture_config import nemo_model_config
    from nemo2sherpa.checkpoint.loading import instantiate
    from nemo2sherpa.checkpoint.local_tokenizer import trained_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = Path(scratch) / "tokenizer"
        trained_tokenizer(SENTENCES, int(architecture.vocab_size or 0), tokenizer_dir)
        config = nemo_model_config(architecture, str(tokenizer_dir))
        torch.manual_seed(seed)
        model = instantiate(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_to(str(path))
    return path


def rewrite_member(source: Path, target: Path, name: str, transform: Callable[[bytes], bytes | None]) -> Path:
    """Copy a .nemo archive, passing one member's bytes through `transform` (None drops the member)."""
    with tarfile.open(source, "r:*") as src, tarfile.open(target, "w:") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None
            if info.name.lstrip("./") == name:
                data = transform(data or b"")
                if data is None:
                    continue
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def rewrite_config(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """Copy a .nemo archive with its model_config.yaml edited in place by `edit`."""

    def transform(data: bytes) -> bytes:
        config = yaml.safe_load(data.decode("utf-8"))
        edit(config)
        return yaml.safe_dump(config, sort_keys=False).encode("utf-8")

    return rewrite_member(source, target, "model_config.yaml", transform)
