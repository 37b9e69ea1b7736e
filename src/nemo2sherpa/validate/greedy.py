"""Greedy transducer decoding over the exported graphs with onnxruntime: the graph-level reference.

Fed with NeMo's own features it must reproduce NeMo's token ids exactly; it isolates the export from the front-end
difference between NeMo and sherpa-onnx. It follows NeMo's greedy rules (up to `max_symbols` tokens per frame; TDT:
the duration head's argmax is the frame skip, a blank never skips less than one frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]
    frames: list[int]  # the encoder frame each token was emitted on


def make_session(path: Path, provider: str = "cpu", threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


class GraphTransducer:
    """encoder/decoder/joiner sessions plus the few facts greedy decoding needs."""

    def __init__(
        self,
        encoder: Path,
        decoder: Path,
        joiner: Path,
        vocab_size: int,
        durations: Sequence[int] = (),
        pred_rnn_layers: int = 1,
        pred_hidden: int = 640,
        provider: str = "cpu",
        threads: int = 1,
    ) -> None:
        self.encoder = make_session(encoder, provider, threads)
        self.decoder = make_session(decoder, provider, threads)
        self.joiner = make_session(joiner, provider, threads)
        self.vocab_size = int(vocab_size)
        self.blank = self.vocab_size
        self.durations = list(durations)
        self.state_shape = (int(pred_rnn_layers), 1, int(pred_hidden))
        self._decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        self._joiner_inputs = [i.name for i in self.joiner.get_inputs()]
        self._encoder_inputs = [i.name for i in self.encoder.get_inputs()]

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """features [mels, T] -> encoder output [D, T'] and its valid length."""
        batch = features[np.newaxis].astype(np.float32)
        length = np.array([features.shape[1]], dtype=np.int64)
        out, out_len = self.encoder.run(None, {self._encoder_inputs[0]: batch, self._encoder_inputs[1]: length})
        return out[0], int(np.asarray(out_len).reshape(-1)[0])

    def step(self, token: int, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {
            self._decoder_inputs[0]: np.array([[token]], dtype=np.int32),
            self._decoder_inputs[1]: np.array([1], dtype=np.int32),
        }
        for name, state in zip(self._decoder_inputs[2:], states):
            feed[name] = state
        outputs = self.decoder.run(None, feed)
        return outputs[0], list(outputs[2:])

    def joint_logits(self, frame: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        feed = {self._joiner_inputs[0]: frame[np.newaxis, :, np.newaxis], self._joiner_inputs[1]: decoder_out}
        return self.joiner.run(None, feed)[0].reshape(-1)

    def greedy(self, encoded: np.ndarray, length: int, max_symbols: int | None = 10) -> Hypothesis:
        states = [np.zeros(self.state_shape, dtype=np.float32) for _ in range(2)]
        decoder_out, next_states = self.step(self.blank, states)
        tokens: list[int] = []
        frames: list[int] = []
        t = 0
        emitted_here = 0
        limit = max_symbols if max_symbols is not None else 1 << 30
        while t < length:
            logits = self.joint_logits(encoded[:, t], decoder_out)
            token = int(np.argmax(logits[: self.vocab_size + 1]))
            if self.durations:
                skip = self.durations[int(np.argmax(logits[self.vocab_size + 1:]))]
            else:
                skip = 1 if token == self.blank else 0
            if token != self.blank:
                tokens.append(token)
                frames.append(t)
                emitted_here += 1
                states = next_states
                decoder_out, next_states = self.step(token, states)
            if token == self.blank and skip == 0:
                skip = 1
            if skip == 0 and emitted_here >= limit:
                skip = 1
            if skip:
                t += skip
                emitted_here = 0
        return Hypothesis(tokens=tokens, frames=frames)

    def decode_features(self, features: np.ndarray, max_symbols: int | None = 10) -> Hypothesis:
        encoded, length = self.encode(features)
        return self.greedy(encoded, length, max_symbols)
