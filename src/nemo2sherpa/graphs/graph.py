"""The one in-memory form of an ONNX graph in nemo2sherpa: the graph without its weight data, and where each
weight's bytes are. The exporter's output, a pass's rewrite and a precision variant are all this, and all are
written by graphs.writing.write_graph, so every file nemo2sherpa writes goes through one writer.

Why the weights are kept apart from the protobuf: a graph over 2 GB cannot hold them (protobuf's limit), and copying
a 4 GB encoder's weights into protobuf and out again doubled conversion memory and time (see convert/export/lean.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class OnnxGraph:
    """`model` (an onnx.ModelProto loaded without external data) whose initializers' data are in `tensors` (numpy
    arrays, or LazyTensors computed when the writer reaches them) or, for the rest, in the files beside `source`
    (the exporter's own external-data files; None when every tensor is inline or in `tensors`)."""

    model: Any
    source: Path | None = None
    tensors: dict[str, Any] = field(default_factory=dict)


class LazyTensor:
    """A tensor computed when the writer reaches it. `nbytes` is known without computing (write_graph sizes first),
    and numpy sees the data through __array__."""

    def __init__(self, nbytes: int, compute: Callable[[], np.ndarray]) -> None:
        self.nbytes = int(nbytes)
        self._compute = compute

    def __array__(self, dtype=None, copy=None):
        array = np.asarray(self._compute())
        return array if dtype is None else array.astype(dtype)
