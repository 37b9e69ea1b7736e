"""Editing an exported graph in place: the small toolkit the encoder rewrites (optimize_*) share.

An OnnxGraph holds the graph without weight data and the weights beside it (lean.py): a name -> array dict,
or the exporter's own files. The editor keeps both consistent: constants it adds go into the dict (written by
write_graph like any captured weight), initializers that end up unused are dropped from the graph and the dict
(their memory is freed when nothing else holds them), and arrays are read from wherever the export left them.
No tensor is ever copied whole unless a rewrite asks for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nemo2sherpa.graphs.graph import OnnxGraph
from nemo2sherpa.graphs.rewriting import all_names, placeholder
from nemo2sherpa.graphs.tensors import external_array

MS_DOMAIN = "com.microsoft"


class NoMatch(Exception):
    """A pattern did not match: the rewrite leaves this spot as it is."""


def require(condition: Any, why: str = "") -> None:
    if not condition:
        raise NoMatch(why)


def is_standard(node: Any) -> bool:
    """An operator of the default ONNX domain (not a contrib one)."""
    return node.domain in ("", "ai.onnx")


def attribute(node: Any, name: str) -> Any:
    """A node attribute's value, or None when the node does not set it."""
    from onnx import helper

    for found in node.attribute:
        if found.name == name:
            return helper.get_attribute_value(found)
    return None


class GraphEditor:
    """Producer/consumer maps over one graph, constant lookup, node insertion, and clean-up at the end."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.exported = graph
        self.graph = graph.model.graph
        self._names: set[str] = set()
        self._counter = 0
        self._values: dict[str, np.ndarray] = {}
        self._int_constants: dict[tuple[int, ...], str] = {}
        self.refresh()

    # -- maps ---------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the maps after edits (cheap: one pass over the nodes)."""
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in self.graph.output}
        self._names = all_names(self.exported.model)

    def node_of(self, name: str, op: str | Sequence[str]) -> Any:
        """The node producing `name`, which must be `op` (or one of them)."""
        node = self.producer.get(name)
        ops = (op,) if isinstance(op, str) else tuple(op)
        require(node is not None and node.op_type in ops and is_standard(node), f"{name} is not produced by {op}")
        return node

    def only_consumer(self, name: str, op: str | None = None) -> Any:
        users = self.consumers.get(name, [])
        require(len(users) == 1 and name not in self.outputs, f"{name} has {len(users)} consumers")
        require(op is None or users[0].op_type == op, f"{name} does not feed {op}")
        return users[0]

    # -- constants ----------------------------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is constant (initializer, Constant node, or an Identity of one), else None."""
        if not name:
            return None
        if name in self._values:
            return self._values[name]
        found = self._lookup(name)
        if found is not None and found.size <= 4096:  # cache small values only: weights stay where they are
            self._values[name] = found
        return found

    def _lookup(self, name: str) -> np.ndarray | None:
        from onnx import helper

        if name in self.initializers:
            return self._tensor_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if not is_standard(node):
            return None
        if node.op_type == "Identity":
            return self.value(node.input[0])
        if node.op_type in _FOLDABLE:
            return self._fold(node, name)
        if node.op_type != "Constant":
            return None
        attribute = node.attribute[0]
        if attribute.name == "value":
            return self._tensor_array(attribute.t)
        scalar = helper.get_attribute_value(attribute)
        dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                 "value_ints": np.int64}.get(attribute.name)
        return None if dtype is None else np.array(scalar, dtype=dtype)

    def _fold(self, node, name: str) -> np.ndarray | None:
        """Evaluate a small node whose inputs are all constant (shape arithmetic, pads, masks of constants)."""
        from onnx import helper

        inputs = []
        for input_name in node.input:
            if not input_name:
                inputs.append(None)
                continue
            if input_name in self.initializers and int(np.prod(self.initializers[input_name].dims)) > 4096:
                return None  # never evaluate over weights
            value = self.value(input_name)
            if value is None:
                return None
            inputs.append(value)
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            outputs = _FOLDABLE[node.op_type](inputs, attributes)
        except Exception:  # noqa: BLE001 - an input this evaluator does not handle: not a constant, for our purposes
            return None
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        index = list(node.output).index(name)
        return None if index >= len(outputs) or outputs[index].size > 4096 else outputs[index]

    def _tensor_array(self, tensor) -> np.ndarray:
        """An initializer's or Constant's data: from the weights dict, the exporter's external file, or inline."""
        from onnx import external_data_helper, numpy_helper

        if tensor.name in self.exported.tensors and not tensor.HasField("raw_data"):
            return self.exported.tensors[tensor.name]
        if external_data_helper.uses_external_data(tensor):
            location = external_data_helper.ExternalDataInfo(tensor).location
            with open(self.exported.source.parent / location, "rb") as stream:
                return external_array(tensor, stream)
        return numpy_helper.to_array(tensor)

    def shape_of_initializer(self, name: str) -> tuple[int, ...] | None:
        """The shape of a constant without reading its data (initializers, through Identity nodes)."""
        while name not in self.initializers:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                value = self.value(name)
                return None if value is None else tuple(value.shape)
            name = node.input[0]
        return tuple(self.initializers[name].dims)

    def scalar(self, name: str) -> float | None:
        value = self.value(name)
        if value is None or value.size != 1:
            return None
        return float(value.reshape(()))

    def ints(self, name: str) -> list[int] | None:
        value = self.value(name)
        if value is None or value.dtype.kind not in "iu":
            return None
        return [int(v) for v in value.reshape(-1)]

    # -- building -----------------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        hint = hint.replace("::", "_")
        while True:
            self._counter += 1
            name = f"{hint}__opt{self._counter}"
            if name not in self._names:
                self._names.add(name)
                return name

    def constant(self, array: np.ndarray, hint: str) -> str:
        """A new initializer holding `array` (kept in the weights dict; written like any captured weight)."""
        from onnx import helper

        array = np.asarray(array)
        name = self.fresh(hint)
        self.graph.initializer.append(placeholder(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape))
        tensor = self.graph.initializer[-1]  # protobuf copies on append: keep the graph's own message
        self.exported.tensors[name] = array
        self.initializers[name] = tensor
        if array.size <= 4096:
            self._values[name] = array
        return name

    def int64s(self, *values: int) -> str:
        """A shared int64 vector constant (axes, starts, shapes): one initializer per distinct value."""
        if values not in self._int_constants:
            self._int_constants[values] = self.constant(np.array(values, dtype=np.int64), "int64s")
        return self._int_constants[values]

    def add1(self, op: str, inputs: Iterable[str], hint: str, domain: str = "", **attributes: Any) -> str:
        """Append a node with one output (the graph is sorted again at the end); returns the output's name."""
        from onnx import helper

        output = self.fresh(f"{hint}/{op}_out0")
        node = helper.make_node(op, list(inputs), [output], name=self.fresh(f"{hint}/{op}"), domain=domain or None,
                                **attributes)
        self.graph.node.append(node)
        node = self.graph.node[-1]  # protobuf copies on append: keep the graph's own message
        self.producer[output] = node
        for name in node.input:
            if name:
                self.consumers[name].append(node)
        return output

    def is_zero_pad(self, node: Any) -> bool:
        """A Pad that pads with zeros (constant mode, no value or 0)."""
        return (attribute(node, "mode") or b"constant") in (b"constant", "constant") and \
            (len(node.input) < 3 or not node.input[2] or self.scalar(node.input[2]) == 0.0)

    def has_unit_steps(self, node: Any) -> bool:
        """A Slice without steps, or with steps of 1."""
        return len(node.input) < 5 or not node.input[4] or self.ints(node.input[4]) == [1]

    def set_input(self, node: Any, index: int, name: str) -> None:
        old = node.input[index]
        node.input[index] = name
        self.consumers[name].append(node)
        if old not in node.input:
            self.consumers[old] = [n for n in self.consumers.get(old, []) if n is not node]

    def replace_uses(self, old: str, new: str) -> None:
        """Every reader of `old` reads `new` instead (graph outputs keep their name: an Identity is added)."""
        for node in list(self.consumers.get(old, [])):
            for index, name in enumerate(node.input):
                if name == old:
                    node.input[index] = new
            self.consumers[new].append(node)
        self.consumers[old] = []
        if old in self.outputs:
            from onnx import helper

            producer = self.producer.get(old)
            if producer is not None:
                outputs = list(producer.output)
                producer.output[outputs.index(old)] = self.fresh(old)
            self.graph.node.append(helper.make_node("Identity", [new], [old], name=self.fresh("output_identity")))
            self.producer[old] = self.graph.node[-1]
            self.consumers[new].append(self.graph.node[-1])

    # -- finishing ----------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """Remove what nothing reads, drop unused initializers (and their arrays), sort the nodes topologically.
        The editor's maps are not rebuilt: it is done with the graph."""
        live = self._live_nodes()
        kept = [node for node in self.graph.node if id(node) in live]
        kept = _toposort(kept, {i.name for i in self.graph.input} | {t.name for t in self.graph.initializer})
        del self.graph.node[:]
        self.graph.node.extend(kept)
        used = {name for node in kept for name in node.input if name} | self.outputs
        unused = [t for t in self.graph.initializer if t.name not in used]
        if unused:
            keep = [t for t in self.graph.initializer if t.name in used]
            for tensor in unused:
                self.exported.tensors.pop(tensor.name, None)
            del self.graph.initializer[:]
            self.graph.initializer.extend(keep)
        # shape information recorded by the exporter for intermediate values may no longer be true
        del self.graph.value_info[:]

    def _live_nodes(self) -> set[int]:
        live: set[int] = set()
        stack = list(self.outputs)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self.producer.get(name)
            if node is None or id(node) in live:
                continue
            live.add(id(node))
            stack.extend(n for n in node.input if n)
        return live


def _toposort(nodes: list[Any], available: set[str]) -> list[Any]:
    """Kahn's algorithm, keeping the given order wherever the dependencies allow it."""
    import heapq

    producer_index = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            producer_index[name] = index
    waiting = [0] * len(nodes)
    dependants: dict[int, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        needs = {producer_index[n] for n in node.input if n and n not in available and n in producer_index}
        waiting[index] = len(needs)
        for need in needs:
            dependants[need].append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(nodes[index])
        for dependant in dependants[index]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                heapq.heappush(ready, dependant)
    if len(ordered) != len(nodes):
        raise RuntimeError("the edited graph has a cycle")
    return ordered


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(a.dtype)
    return (a / b).astype(a.dtype)


def _slice(inputs: list, attributes: dict) -> np.ndarray:
    data, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else np.arange(len(starts))
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else np.ones(len(starts), dtype=np.int64)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        start, end, step = int(start), int(end), int(step)
        size = data.shape[int(axis)]
        end = max(min(end, size), -size - 1) if step < 0 else min(end, size)
        index[int(axis)] = slice(start, None if (step < 0 and end < -size) else end, step)
    return data[tuple(index)]


def _tensor_fill(attributes: dict) -> np.ndarray:
    from onnx import numpy_helper

    value = attributes.get("value")
    return np.zeros(1, dtype=np.float32) if value is None else numpy_helper.to_array(value).reshape(-1)


def _cast(inputs: list, attributes: dict) -> np.ndarray:
    from onnx import helper

    return inputs[0].astype(helper.tensor_dtype_to_np_dtype(attributes["to"]))


def _reshape(inputs: list, attributes: dict) -> np.ndarray:
    data, shape = inputs[0], [int(v) for v in inputs[1]]
    if not attributes.get("allowzero", 0):
        shape = [data.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return data.reshape(shape)


def _axes(inputs: list, attributes: dict) -> list[int] | None:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(v) for v in inputs[1]]
    return attributes.get("axes")


def _unsqueeze(inputs: list, attributes: dict) -> np.ndarray:
    out = inputs[0]
    rank = out.ndim + len(_axes(inputs, attributes))
    for axis in sorted(a % rank for a in _axes(inputs, attributes)):
        out = np.expand_dims(out, axis)
    return out


def _squeeze(inputs: list, attributes: dict) -> np.ndarray:
    axes = _axes(inputs, attributes)
    return np.squeeze(inputs[0], axis=None if axes is None else tuple(axes))


_FOLDABLE = {
    "Cast": _cast,
    "Reshape": _reshape,
    "Slice": _slice,
    "Transpose": lambda i, a: np.transpose(i[0], a.get("perm")),
    "Concat": lambda i, a: np.concatenate(i, axis=a["axis"]),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "ConstantOfShape": lambda i, a: np.full([int(v) for v in i[0]], _tensor_fill(a)[0]),
    "Gather": lambda i, a: np.take(i[0], i[1], axis=a.get("axis", 0)),
    "Add": lambda i, a: (i[0] + i[1]).astype(i[0].dtype),
    "Sub": lambda i, a: (i[0] - i[1]).astype(i[0].dtype),
    "Mul": lambda i, a: (i[0] * i[1]).astype(i[0].dtype),
    "Div": lambda i, a: _int_div(i[0], i[1]),
    "Neg": lambda i, a: -i[0],
    "Equal": lambda i, a: np.equal(i[0], i[1]),
    "Less": lambda i, a: np.less(i[0], i[1]),
    "Greater": lambda i, a: np.greater(i[0], i[1]),
    "Not": lambda i, a: np.logical_not(i[0]),
    "And": lambda i, a: np.logical_and(i[0], i[1]),
    "Where": lambda i, a: np.where(i[0], i[1], i[2]),
    "Shape": lambda i, a: np.array(i[0].shape, dtype=np.int64),
    "Range": lambda i, a: np.arange(i[0], i[1], i[2]).astype(i[0].dtype),
    "Expand": lambda i, a: i[0] * np.ones([int(v) for v in i[1]], dtype=i[0].dtype),
}
