"""The cache-aware step: its shape (read from NeMo's streaming config, written to and read back from a graph's
metadata), how a stream is cut into steps (as NeMo's streaming buffer cuts it, and as sherpa-onnx's online
recognizer does), and the exported step run with onnxruntime, caches carried from step to step."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from nemo2sherpa.facts import StreamingShape

#: metadata keys the online loaders read besides the offline ones, and the ones nemo2sherpa adds to restate the shape
CACHE_KEYS = tuple(f"cache_last_{kind}_dim{i}" for kind in ("channel", "time") for i in (1, 2, 3))
ONLINE_KEYS = ("window_size", "chunk_shift", *CACHE_KEYS)
SHAPE_KEYS = {"lookahead": "lookahead", "left_context": "left_context", "pre_encode_cache_frames": "pre_encode_cache",
              "drop_extra_pre_encoded": "drop_extra_pre_encoded", "output_frames": "output_frames"}


def steady(value: Any) -> int:
    """NeMo states some streaming sizes as [first chunk, later chunks]; a stream's steady state is the second."""
    return int(value[1]) if isinstance(value, (list, tuple)) else int(value)


def streaming_shape(encoder: Any) -> StreamingShape:
    """The exported step's shape from a NeMo encoder's current streaming config."""
    config = encoder.streaming_cfg
    return StreamingShape(
        lookahead=int(encoder.att_context_size[1]),
        left_context=int(config.last_channel_cache_size),
        chunk_frames=steady(config.chunk_size),
        pre_encode_cache_frames=steady(config.pre_encode_cache_size),
        drop_extra_pre_encoded=int(config.drop_extra_pre_encoded),
        output_frames=int(config.valid_out_len),
        conv_cache=int(encoder.conv_context_size[0]),
        layers=len(encoder.layers),
        d_model=int(encoder.d_model),
    )


def apply_lookahead(model: Any, lookahead: int) -> list[int]:
    """Switch a cache-aware NeMo model to the attention context with this look-ahead (its streaming config follows);
    the context."""
    from nemo2sherpa.checkpoint.loading import quiet_nemo

    encoder = model.encoder
    context = next(list(c) for c in encoder.att_context_size_all if int(c[1]) == int(lookahead))
    with quiet_nemo():
        encoder.set_default_att_context_size(context)
    return context


def streaming_metadata(shape: StreamingShape) -> dict[str, str]:
    """What sherpa-onnx's online loaders read about the step (window, shift, cache shapes), and the rest of the
    shape, so that a directory states how it streams without its manifest."""
    values = {
        "window_size": shape.window_frames, "chunk_shift": shape.chunk_frames,
        "cache_last_channel_dim1": shape.layers, "cache_last_channel_dim2": shape.left_context,
        "cache_last_channel_dim3": shape.d_model,
        "cache_last_time_dim1": shape.layers, "cache_last_time_dim2": shape.d_model,
        "cache_last_time_dim3": shape.conv_cache,
        **{key: getattr(shape, field) for field, key in SHAPE_KEYS.items()},
    }
    return {key: str(value) for key, value in values.items()}


def shape_from_metadata(metadata: Mapping[str, str]) -> StreamingShape:
    """The step's shape as a directory's metadata states it (KeyError/ValueError when it does not)."""
    get = lambda key: int(metadata[key])  # noqa: E731
    return StreamingShape(lookahead=get("lookahead"), left_context=get("cache_last_channel_dim2"),
                          chunk_frames=get("chunk_shift"),
                          pre_encode_cache_frames=get("window_size") - get("chunk_shift"),
                          drop_extra_pre_encoded=get("drop_extra_pre_encoded"), output_frames=get("output_frames"),
                          conv_cache=get("cache_last_time_dim3"), layers=get("cache_last_channel_dim1"),
                          d_model=get("cache_last_channel_dim3"))


def nemo_chunks(features: np.ndarray, shape: StreamingShape, subsampling: int) -> Iterator[tuple[np.ndarray, int]]:
    """features [C, T] cut as NeMo's CacheAwareStreamingAudioBuffer cuts them with pad_and_drop_preencoded: each
    chunk is chunk_frames new frames after pre_encode_cache_frames earlier ones (zeros before the start), the last
    one shorter; a tail shorter than one encoder frame is not decoded (a first chunk of one frame is: causal
    subsampling gives it an output). Yields (window, valid length)."""
    total = features.shape[1]
    pre = shape.pre_encode_cache_frames
    padded = np.concatenate([np.zeros((features.shape[0], pre), dtype=np.float32), features], axis=1)
    start = 0
    while start < total:
        new = min(shape.chunk_frames, total - start)
        if new < (1 if start == 0 else subsampling):  # causal subsampling: one frame already gives an output
            return
        yield padded[:, start: start + pre + new], pre + new
        start += shape.chunk_frames


def runtime_windows(features: np.ndarray, shape: StreamingShape) -> Iterator[tuple[np.ndarray, int]]:
    """features [C, T] cut as sherpa-onnx's online recognizer cuts them: window_frames frames from frame 0, then
    every chunk_frames frames on, each while a later frame exists (its is_ready rule); no zeros before the start."""
    start = 0
    while start + shape.window_frames < features.shape[1]:
        yield features[:, start: start + shape.window_frames], shape.window_frames
        start += shape.chunk_frames


def tail_seconds(shape: StreamingShape, hop_seconds: float = 0.01) -> float:
    """Silence after the audio that lets sherpa-onnx decode the stream's last window (a window is decoded once a frame
    after it has arrived)."""
    return (shape.window_frames + shape.chunk_frames) * hop_seconds + 0.05


def initial_caches(shape: StreamingShape) -> list[np.ndarray]:
    """A stream's first caches, as sherpa-onnx starts them: zeros, none of the left context filled."""
    return [np.zeros((1, shape.layers, shape.left_context, shape.d_model), dtype=np.float32),
            np.zeros((1, shape.layers, shape.d_model, shape.conv_cache), dtype=np.float32),
            np.zeros((1,), dtype=np.int64)]


class StreamingEncoder:
    """The exported encoder-holding graph run step by step with its caches, as sherpa-onnx runs it."""

    def __init__(self, session: Any, shape: StreamingShape, subsampling: int, time_last: bool = True) -> None:
        """session: the graph's onnxruntime session (the graph decoder's own: a 0.6B encoder is not loaded twice);
        time_last: the graph gives [1, D, t] (an encoder); False: [1, t, V] (a CTC model's log-probabilities)."""
        self.session = session
        self.time_last = time_last
        self.names = [i.name for i in self.session.get_inputs()]
        self.shape = shape
        self.subsampling = subsampling

    def step(self, window: np.ndarray, length: int, caches: list[np.ndarray]
             ) -> tuple[np.ndarray, int, list[np.ndarray]]:
        """One chunk: window [C, frames] -> (output [D, t], valid frames, next caches)."""
        feed = {self.names[0]: window[np.newaxis].astype(np.float32),
                self.names[1]: np.array([length], dtype=np.int64),
                **dict(zip(self.names[2:], caches))}
        out, out_len, *next_caches = self.session.run(None, feed)
        return (out[0] if self.time_last else out[0].T), int(np.asarray(out_len).reshape(-1)[0]), next_caches

    def stream(self, features: np.ndarray, like_runtime: bool = False) -> tuple[np.ndarray, int]:
        """features [C, T] streamed chunk by chunk, cut as NeMo's streaming buffer cuts them (or, like_runtime, as
        sherpa-onnx does); the outputs joined [D, T'] and their count."""
        caches = initial_caches(self.shape)
        outputs = []
        windows = runtime_windows(features, self.shape) if like_runtime else \
            nemo_chunks(features, self.shape, self.subsampling)
        for window, length in windows:
            out, valid, caches = self.step(window, length, caches)
            outputs.append(out[:, :valid])
        if not outputs:
            return np.zeros((0, 0), dtype=np.float32), 0
        joined = np.concatenate(outputs, axis=1)
        return joined, joined.shape[1]
