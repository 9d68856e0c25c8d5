"""The model parameter randomisation test's graph work (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
2018): which layers of an ONNX graph carry learned weights, and the same graph with some of them replaced by random
values, seeded (the ``onnx`` library; no onnxruntime here).

**Layers.** A layer is a Conv, Gemm or MatMul node of the main graph whose weight operand (Conv ``W``, one operand
of Gemm or MatMul) is a constant: an initializer, or a ``Constant`` node's tensor, reached directly or through
operators that only move values (Identity, Cast, Transpose, Reshape, Squeeze, Unsqueeze, Flatten). Its bias (Conv
``B``, Gemm ``C``) is randomised with it. A tensor shared by several layers is one parameter: those layers form one
step (every node is listed), placed at the position of its last node. Layers are numbered from the output: 1 is the
last layer with weights. Batch-normalisation nodes (scale, bias, running statistics) are left as they are, as in the
paper, which re-initialised the trainable variables of each block and left the moving statistics alone; exported
models mostly fold batch norm into the convolution weights, which are randomised.

**Random values.** Each weight tensor becomes draws from a normal distribution truncated at two standard deviations
(TensorFlow's ``truncated_normal``, the initializer of the paper's models), with mean 0 and the tensor's own
standard deviation, so activations keep their scale; drawn in float64 from ``numpy.random.default_rng((seed,
position))`` and stored in the tensor's own type (float16 weights stay float16). A layer gets the same values in the
cascading and in the independent test. Quantised graphs (integer weights behind DequantizeLinear, QLinearConv,
ConvInteger and the like) and weights of other types are refused with one line: their float weights do not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from occlude_cli.errors import OccludeError

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
# operators whose first input reaches their output with its values unchanged (a weight may sit behind them)
_MOVES_VALUES = ("Identity", "Cast", "CastLike", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
_QUANTISED_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QGemm",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "MatMulNBits",
    "QAttention",
)
_FLOATS: Dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
}
TRUNCATION = 2.0  # standard deviations


@dataclass(frozen=True)
class Weight:
    """One constant tensor of a layer: where it is stored (``initializer`` NAME or the ``Constant`` node NAME's
    ``value``), its role (``weight`` or ``bias``), type and shape."""

    key: str  # "initializer:NAME" or "constant:OUTPUT" (unique in the graph)
    name: str
    stored_in: str  # "initializer" or "Constant node"
    role: str
    dtype: str
    shape: Tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class Layer:
    """A step of the test: the nodes whose weights are randomised together and those weights. ``position`` 1 is
    the layer nearest the output; ``also_used_by``: other nodes reading one of these tensors (they change too)."""

    position: int
    nodes: List[Tuple[str, str]]  # (node name, op type), graph order
    weights: List[Weight]
    also_used_by: List[str] = field(default_factory=list)
    last_index: int = 0  # the graph index of its last node (ordering only)

    @property
    def name(self) -> str:
        """The layer's name: its last node's (every node of a shared-weight step in :attr:`nodes`)."""
        return self.nodes[-1][0]

    @property
    def label(self) -> str:
        """A readable name: the (first) weight tensor's, which exporters name after the module (``_fc.weight``)."""
        return next((w.name for w in self.weights if w.role == "weight"), self.name)

    @property
    def parameters(self) -> int:
        return sum(w.size for w in self.weights)

    def describe(self) -> dict:
        return {
            "position": self.position,
            "name": self.name,
            "label": self.label,
            "op": self.nodes[-1][1],
            "nodes": [{"name": n, "op": op} for n, op in self.nodes],
            "weights": [
                {"name": w.name, "stored_in": w.stored_in, "role": w.role, "dtype": w.dtype, "shape": list(w.shape)}
                for w in self.weights
            ],
            "parameters": self.parameters,
            "also_used_by": list(self.also_used_by),
        }


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


class _Graph:
    """The main graph's producers, consumers and stored constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers: Dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producer: Dict[str, Tuple[int, onnx.NodeProto]] = {}
        self.consumers: Dict[str, List[int]] = {}
        for index, node in enumerate(self.nodes):
            for name in node.output:
                self.producer[name] = (index, node)
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(index)

    def constant(self, name: str, user: str) -> Optional[Tuple[str, str, onnx.TensorProto, List[str]]]:
        """The stored tensor behind the value ``name`` (key, where it is stored, the tensor, the value names
        on the way), or None when it is computed from the input (not a weight)."""
        path = [name]
        while True:
            if name in self.initializers:
                return f"initializer:{name}", "initializer", self.initializers[name], path
            if name not in self.producer:
                return None  # a graph input: fed at run time
            _, node = self.producer[name]
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is None:
                    raise OccludeError(
                        f"the weight of {user} is a Constant node without a tensor value ({node.name or name}): "
                        "it cannot be randomised"
                    )
                return f"constant:{name}", "Constant node", value.t, path
            if node.op_type == "DequantizeLinear":
                raise OccludeError(
                    f"the weight of {user} is quantised (DequantizeLinear {node.name or name!r}): randomising "
                    "quantised weights is not supported; run the test on the float model"
                )
            if node.op_type not in _MOVES_VALUES or not node.input:
                return None
            name = node.input[0]
            path.append(name)


_OPERANDS = {"Conv": ((1, "weight"), (2, "bias")), "Gemm": ((0, "weight"), (1, "weight"), (2, "bias"))}


def _layer_weights(graph: _Graph, index: int, node: onnx.NodeProto) -> List[Tuple[str, Weight, onnx.TensorProto, list]]:
    """The constant operands of one Conv/Gemm/MatMul node, or [] when it has no constant weight operand."""
    user = f"{node.op_type} {_node_name(node, index)!r}"
    found = []
    for position, role in _OPERANDS.get(node.op_type, ((0, "weight"), (1, "weight"))):
        if position >= len(node.input) or not node.input[position]:
            continue
        hit = graph.constant(node.input[position], user)
        if hit is None:
            continue
        key, stored_in, tensor, path = hit
        if tensor.data_type not in _FLOATS:
            kind = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
            raise OccludeError(
                f"the {role} of {user} is {kind}: only float16, float32 and float64 weights can be randomised "
                "(a quantised model: run the test on the float model)"
            )
        weight = Weight(
            key, tensor.name or key.split(":", 1)[1], stored_in, role, _FLOATS[tensor.data_type], tuple(tensor.dims)
        )
        found.append((key, weight, tensor, path))
    if not any(w.role == "weight" for _, w, _, _ in found):
        return []  # MatMul of two activations (attention), or a bias alone: no learned weight
    return found


def randomisable_layers(model: onnx.ModelProto) -> List[Layer]:
    """The layers with weights of ``model``'s main graph, nearest the output first (see the module's docstring).
    Refuses quantised graphs and weights of other than float types (one OccludeError); [] when there are none."""
    graph = _Graph(model)
    for index, node in enumerate(graph.nodes):
        if node.op_type in _QUANTISED_OPS:
            raise OccludeError(
                f"the model has quantised layers ({node.op_type} {_node_name(node, index)!r}): randomising quantised "
                "weights is not supported; run the test on the float model"
            )
    parent: Dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    owner: Dict[str, int] = {}  # weight key -> first node index using it
    members: Dict[int, list] = {}
    for index, node in enumerate(graph.nodes):
        if node.op_type not in WEIGHT_OPS:
            continue
        found = _layer_weights(graph, index, node)
        if not found:
            continue
        members[index] = found
        parent[index] = index
        for key, *_ in found:
            if key in owner:
                parent[root(index)] = root(owner[key])
            else:
                owner[key] = index
    groups: Dict[int, List[int]] = {}
    for index in members:
        groups.setdefault(root(index), []).append(index)
    layers = []
    for indices in groups.values():
        indices.sort()
        weights: Dict[str, Weight] = {}
        values_on_the_way: set = set()
        for i in indices:
            for key, weight, _, path in members[i]:
                weights.setdefault(key, weight)
                values_on_the_way.update(path)
        own = set(indices)
        others = sorted(
            {
                _node_name(graph.nodes[j], j)
                for name in values_on_the_way
                for j in graph.consumers.get(name, [])
                if j not in own and graph.nodes[j].op_type not in _MOVES_VALUES
            }
        )
        nodes = [(_node_name(graph.nodes[i], i), graph.nodes[i].op_type) for i in indices]
        layers.append(Layer(0, nodes, sorted(weights.values(), key=lambda w: w.key), others, indices[-1]))
    layers.sort(key=lambda layer: -layer.last_index)
    for position, layer in enumerate(layers, start=1):
        layer.position = position
    return layers


def truncated_normal(rng: np.random.Generator, shape: Sequence[int], std: float) -> np.ndarray:
    """Normal draws with mean 0 and standard deviation ``std`` before truncation, redrawn until every value lies
    within :data:`TRUNCATION` standard deviations (float64)."""
    z = rng.standard_normal(size=tuple(shape))
    bad = np.abs(z) > TRUNCATION
    while bad.any():
        z[bad] = rng.standard_normal(size=int(np.count_nonzero(bad)))
        bad = np.abs(z) > TRUNCATION
    return z * std


class Randomiser:
    """One ONNX model and its layers, randomised in place, step by step. ``model`` is kept and changed: take its
    bytes (or save it) after each step. The random values depend only on ``seed`` and the layer's position."""

    def __init__(self, model: onnx.ModelProto, seed: int = 0) -> None:
        self.model = model
        self.seed = int(seed)
        self.layers = randomisable_layers(model)
        if not self.layers:
            raise OccludeError(
                "the model has no layer with weights to randomise (no Conv, Gemm or MatMul with a constant weight)"
            )
        self._tensors = self._stored_tensors()
        self._original = {key: numpy_helper.to_array(t).copy() for key, t in self._tensors.items()}
        self._random: Dict[int, Dict[str, np.ndarray]] = {}
        self.randomised: set = set()  # positions randomised now

    def _stored_tensors(self) -> Dict[str, onnx.TensorProto]:
        wanted = {w.key for layer in self.layers for w in layer.weights}
        out: Dict[str, onnx.TensorProto] = {}
        for tensor in self.model.graph.initializer:
            if f"initializer:{tensor.name}" in wanted:
                out[f"initializer:{tensor.name}"] = tensor
        for node in self.model.graph.node:
            if node.op_type == "Constant" and node.output and f"constant:{node.output[0]}" in wanted:
                out[f"constant:{node.output[0]}"] = next(a for a in node.attribute if a.name == "value").t
        return out

    def layer(self, position: int) -> Layer:
        if not 1 <= position <= len(self.layers):
            raise OccludeError(f"layer {position} does not exist: the model has {len(self.layers)} layers with weights")
        return self.layers[position - 1]

    def random_values(self, position: int) -> Dict[str, np.ndarray]:
        """The random values of layer ``position`` (tensor key -> array in the tensor's type)."""
        if position not in self._random:
            rng = np.random.default_rng((self.seed, position))
            values = {}
            for weight in self.layer(position).weights:
                original = self._original[weight.key].astype(np.float64)
                std = float(np.std(original)) if original.size else 0.0
                values[weight.key] = truncated_normal(rng, original.shape, std).astype(self._original[weight.key].dtype)
            self._random[position] = values
        return self._random[position]

    def _store(self, key: str, values: np.ndarray) -> None:
        tensor = self._tensors[key]
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))

    def randomise(self, position: int) -> None:
        for key, values in self.random_values(position).items():
            self._store(key, values)
        self.randomised.add(position)

    def restore(self, position: int) -> None:
        for weight in self.layer(position).weights:
            self._store(weight.key, self._original[weight.key])
        self.randomised.discard(position)

    def restore_all(self) -> None:
        for position in sorted(self.randomised):
            self.restore(position)

    def cascading(self, positions: Sequence[int]) -> Iterator[Tuple[int, List[int]]]:
        """Randomise layers 1, 2, ... (from the output) cumulatively; yield at each of ``positions`` (in
        increasing order) the position and every layer randomised so far, the model holding them."""
        self.restore_all()
        done = 0
        for position in sorted(positions):
            for k in range(done + 1, position + 1):
                self.randomise(k)
            done = position
            yield position, list(range(1, position + 1))
        self.restore_all()

    def independent(self, positions: Sequence[int]) -> Iterator[Tuple[int, List[int]]]:
        """Randomise each of ``positions`` alone; yield the position and ``[position]``, the model holding it."""
        self.restore_all()
        for position in positions:
            self.randomise(position)
            yield position, [position]
            self.restore(position)
