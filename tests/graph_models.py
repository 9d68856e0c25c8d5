"""Small ONNX models built with onnx.helper for the graph tests: classifiers with a fixed batch of 1 (and heads
that can or cannot be batched), a plain CNN, a residual CNN, an NHWC model, and ways to store weights as
external data, hostile locations included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# Unknown fields (parsed and kept by protobuf): number 1000 LEN "hello" on the model, 77 LEN "abc" on the graph.
UNKNOWN_MODEL_FIELD = b"\xc2\x3e\x05hello"
UNKNOWN_GRAPH_FIELD = b"\xea\x04\x03abc"


def _weights(rng, name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)


def _model(nodes, inputs, outputs, initializers, name: str, ir_version: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="test")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path, *, external: bool = False) -> Path:
    """Save, optionally with every tensor in one external file ``<name>.data`` next to the model."""
    if external:
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save(model, str(path))
    return path


def classifier(
    head: str = "flatten", batch=1, classes: int = 5, value_info: bool = True, extras: bool = True
) -> onnx.ModelProto:
    """conv -> relu -> global average pool -> head -> gemm; input (batch, 3, 16, 16), output (batch, classes).

    ``head``: "flatten" (batchable), "reshape_1k" (Reshape to a hard-coded [1, 4]: fails at batch > 1),
    "mix" (subtracts the mean over the batch axis: runs batched but mixes samples).
    ``extras``: a doc string, metadata_props, a batch denotation and unknown protobuf fields.
    """
    rng = np.random.default_rng(3)
    weights = [
        _weights(rng, "conv_w", (4, 3, 3, 3)),
        _weights(rng, "conv_b", (4,)),
        _weights(rng, "fc_w", (classes, 4)),
        _weights(rng, "fc_b", (classes,)),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
    ]
    if head == "flatten":
        nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    elif head == "reshape_1k":
        weights.append(numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "pinned_shape"))
        nodes.append(helper.make_node("Reshape", ["pooled", "pinned_shape"], ["features"]))
    elif head == "mix":
        nodes += [
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("ReduceMean", ["flat"], ["batch_mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["flat", "batch_mean"], ["features"]),
        ]
    else:
        raise ValueError(head)
    nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1))
    model = _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        weights,
        "fixed_batch_classifier",
    )
    if value_info:
        model = onnx.shape_inference.infer_shapes(model)  # intermediate shapes, batch 1 included
        assert len(model.graph.value_info) > 0
    if extras:
        model.doc_string = "a fixed-batch test model"
        for key, value in (("occlude.labels", '["a", "b", "c", "d", "e"]'), ("note", "kept")):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.graph.input[0].type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
        model.graph.MergeFromString(UNKNOWN_GRAPH_FIELD)
        model.MergeFromString(UNKNOWN_MODEL_FIELD)
    onnx.checker.check_model(model)
    return model


def plain_cnn(batch=1) -> onnx.ModelProto:
    """A chain without branches: every computed tensor but the output is a valid cut point.

    A Constant node (``scale``) is read on both sides of any cut between the two Muls, and the initializer
    ``shared_w`` feeds both convolutions, so a split must duplicate the one and copy the other.
    """
    rng = np.random.default_rng(5)
    inits = [
        _weights(rng, "shared_w", (4, 4, 3, 3)),
        _weights(rng, "stem_w", (4, 3, 3, 3)),
        _weights(rng, "fc_w", (6, 4)),
        _weights(rng, "fc_b", (6,)),
    ]
    nodes = [
        helper.make_node(
            "Constant", [], ["scale"], name="/const/scale", value=numpy_helper.from_array(np.array(0.75, np.float32))
        ),
        helper.make_node("Conv", ["input", "stem_w"], ["/stem/Conv_output_0"], name="/stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["/stem/Conv_output_0"], ["/stem/Relu_output_0"], name="/stem/Relu"),
        helper.make_node("Mul", ["/stem/Relu_output_0", "scale"], ["/stem/Mul_output_0"], name="/stem/Mul"),
        helper.make_node(
            "Conv",
            ["/stem/Mul_output_0", "shared_w"],
            ["/block1/Conv_output_0"],
            name="/block1/Conv",
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        ),
        helper.make_node("Relu", ["/block1/Conv_output_0"], ["/block1/Relu_output_0"], name="/block1/Relu"),
        helper.make_node(
            "Conv",
            ["/block1/Relu_output_0", "shared_w"],
            ["/block2/Conv_output_0"],
            name="/block2/Conv",
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Mul", ["/block2/Conv_output_0", "scale"], ["/block2/Mul_output_0"], name="/block2/Mul"),
        helper.make_node("GlobalAveragePool", ["/block2/Mul_output_0"], ["/head/Pool_output_0"], name="/head/Pool"),
        helper.make_node("Flatten", ["/head/Pool_output_0"], ["/head/Flatten_output_0"], name="/head/Flatten"),
        helper.make_node("Gemm", ["/head/Flatten_output_0", "fc_w", "fc_b"], ["logits"], name="/head/Gemm", transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 6])],
        inits,
        "plain_cnn",
    )


PLAIN_CUTS = [
    "/stem/Conv_output_0",
    "/stem/Relu_output_0",
    "/stem/Mul_output_0",
    "/block1/Conv_output_0",
    "/block1/Relu_output_0",
    "/block2/Conv_output_0",
    "/block2/Mul_output_0",
    "/head/Pool_output_0",
    "/head/Flatten_output_0",
]


def residual_cnn(batch="batch") -> onnx.ModelProto:
    """stem -> layer1 -> [layer2: conv, relu, conv] + skip from layer1 -> relu -> pool -> gemm."""
    rng = np.random.default_rng(7)
    inits = [
        _weights(rng, "w1", (4, 3, 3, 3)),
        _weights(rng, "w2a", (4, 4, 3, 3)),
        _weights(rng, "w2b", (4, 4, 3, 3)),
        _weights(rng, "fc_w", (3, 4)),
        _weights(rng, "fc_b", (3,)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["/layer1/Conv_output_0"], name="/layer1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["/layer1/Conv_output_0"], ["/layer1/Relu_output_0"], name="/layer1/Relu"),
        helper.make_node(
            "Conv", ["/layer1/Relu_output_0", "w2a"], ["/layer2/Conv_output_0"], name="/layer2/Conv", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["/layer2/Conv_output_0"], ["/layer2/Relu_output_0"], name="/layer2/Relu"),
        helper.make_node(
            "Conv",
            ["/layer2/Relu_output_0", "w2b"],
            ["/layer2/Conv_1_output_0"],
            name="/layer2/Conv_1",
            pads=[1, 1, 1, 1],
        ),
        helper.make_node(
            "Add", ["/layer2/Conv_1_output_0", "/layer1/Relu_output_0"], ["/layer2/Add_output_0"], name="/layer2/Add"
        ),
        helper.make_node("Relu", ["/layer2/Add_output_0"], ["/layer2/Relu_1_output_0"], name="/layer2/Relu_1"),
        helper.make_node("GlobalAveragePool", ["/layer2/Relu_1_output_0"], ["/head/Pool_output_0"], name="/head/Pool"),
        helper.make_node("Flatten", ["/head/Pool_output_0"], ["/head/Flatten_output_0"], name="/head/Flatten"),
        helper.make_node("Gemm", ["/head/Flatten_output_0", "fc_w", "fc_b"], ["logits"], name="/head/Gemm", transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        inits,
        "residual_cnn",
    )


RESIDUAL_CUTS = [
    "/layer1/Conv_output_0",
    "/layer1/Relu_output_0",
    "/layer2/Add_output_0",
    "/layer2/Relu_1_output_0",
    "/head/Pool_output_0",
    "/head/Flatten_output_0",
]


def nhwc_cnn(batch="N") -> onnx.ModelProto:
    """An NHWC input transposed to NCHW for the convolutions, transposed back for a channel-last Mul, and
    transposed again before pooling (as TensorFlow exports look)."""
    rng = np.random.default_rng(11)
    inits = [
        _weights(rng, "w", (5, 3, 3, 3)),
        _weights(rng, "gain", (5,)),
        _weights(rng, "fc_w", (4, 5)),
        _weights(rng, "fc_b", (4,)),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["conv"], name="conv", pads=[0, 1, 1, 0], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Transpose", ["relu"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Mul", ["nhwc", "gain"], ["scaled"], name="gain_mul"),
        helper.make_node("Transpose", ["scaled"], ["nchw2"], name="to_nchw2", perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["nchw2"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 10, 10, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])],
        inits,
        "nhwc_cnn",
    )


def set_location(path: Path, location: str, tensor: str | None = None) -> None:
    """Point the external-data location of one tensor (default: every external tensor) of the saved model at
    ``location``, without touching the weights file (a crafted model)."""
    model = onnx.load(str(path), load_external_data=False)
    tensors: list[onnx.TensorProto] = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                tensors.extend(attr.g.initializer)
    for t in tensors:
        if t.data_location == TensorProto.EXTERNAL and (tensor is None or t.name == tensor):
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location
    path.write_bytes(model.SerializeToString())


def with_if_subgraph() -> onnx.ModelProto:
    """y = If(cond, then: x + sub_bias, else: x): a subgraph holding its own initializer."""
    bias = numpy_helper.from_array(np.arange(4, dtype=np.float32), "sub_bias")
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["x", "sub_bias"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [4])],
        initializer=[bias],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [4])],
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)
    return _model(
        [node],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [],
        "if_model",
    )


def two_branch_cnn() -> onnx.ModelProto:
    """Two parallel convolutions of the input, concatenated on channels (an Inception-like block)."""
    rng = np.random.default_rng(13)
    inits = [
        _weights(rng, "wa", (2, 3, 3, 3)),
        _weights(rng, "wb", (3, 3, 1, 1)),
        _weights(rng, "fc_w", (2, 5)),
        _weights(rng, "fc_b", (2,)),
    ]
    nodes = [
        helper.make_node("Relu", ["input"], ["stem"], name="stem"),
        helper.make_node("Conv", ["stem", "wa"], ["branch_a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["stem", "wb"], ["branch_b"], name="conv_b"),
        helper.make_node("Concat", ["branch_a", "branch_b"], ["merged"], name="concat", axis=1),
        helper.make_node("GlobalAveragePool", ["merged"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
        "two_branch",
    )


def if_reading_outer_scope() -> onnx.ModelProto:
    """a = Relu(x); b = Neg(a); y = If(true, then: b + a, else: b): the subgraph reads ``a`` from the outer
    scope, a skip connection that only the subgraph shows."""
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["b", "a"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [2, 3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("Constant", [], ["cond"], name="cond", value=numpy_helper.from_array(np.array(True))),
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["a"], ["b"], name="neg"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_graph, else_branch=else_graph),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [],
        "if_outer",
    )
