"""occlude_cli.onnx_graph: the protobuf wire-format rewrite that makes fixed-batch-1 models batchable,
checked against the onnx package (which builds and parses the models) and onnxruntime (which runs them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from occlude_cli.loaders import onnx_graph as og

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODELS = ROOT / "sample_models"

# An unknown field (number 1000, wire type LEN): key varint 1000 << 3 | 2 = 8002 = 0xC2 0x3E, then length 5.
UNKNOWN_MODEL_FIELD = b"\xc2\x3e\x05hello"
# Unknown field 999 (key 999 << 3 | 0 = 7992 = 0xB8 0x3E) as a varint with value 300 (0xAC 0x02), for a Dimension.
UNKNOWN_DIM_FIELD = b"\xb8\x3e\xac\x02"
# Unknown field 77 (key 618 = 0xEA 0x04), LEN, for the graph and a ValueInfoProto.
UNKNOWN_GRAPH_FIELD = b"\xea\x04\x03abc"
UNKNOWN_VALUE_INFO_FIELD = b"\xea\x04\x02xy"

OPSET = 17


def _classifier(
    path: Path,
    *,
    head: str = "flatten",
    batch=1,
    classes: int = 5,
    value_info: bool = True,
    extras: bool = True,
    external: bool = False,
) -> Path:
    """A small conv -> relu -> global average pool -> (flatten | reshape) -> gemm classifier, input
    (batch, 3, 16, 16), output (batch, classes).

    ``head``: "flatten" (batchable), "reshape_1k" (Reshape to a hard-coded [1, 4]: fails at batch > 1),
    "mix" (subtracts the mean over the batch axis: runs batched but mixes samples).
    ``extras``: metadata_props, a doc string, a batch denotation and unknown fields at several levels.
    """
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "fc_b"),
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
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 16, 16])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])
    graph = helper.make_graph(nodes, "fixed_batch_classifier", [image], [logits], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="test")
    model.ir_version = 8
    if value_info:
        model = onnx.shape_inference.infer_shapes(model)  # intermediate shapes, batch 1 included
        assert len(model.graph.value_info) > 0
    if extras:
        model.doc_string = "a fixed-batch test model"
        for key, value in (("occlude.labels", '["a", "b", "c", "d", "e"]'), ("note", "kept")):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        dim.denotation = "DATA_BATCH"
        dim.MergeFromString(UNKNOWN_DIM_FIELD)
        model.graph.input[0].MergeFromString(UNKNOWN_VALUE_INFO_FIELD)
        model.graph.MergeFromString(UNKNOWN_GRAPH_FIELD)
        model.MergeFromString(UNKNOWN_MODEL_FIELD)
    onnx.checker.check_model(model)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def _session(model):
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])


def _batch(n: int, seed: int = 0, shape=(3, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.fixture
def fixed_model(tmp_path) -> Path:
    return _classifier(tmp_path / "fixed.onnx")


# ---------------------------------------------------------------------------------------------------------
# wire format
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1])
def test_varint_round_trip(value):
    encoded = og.encode_varint(value)
    assert og.read_varint(encoded, 0) == (value, len(encoded))
    assert og.read_varint(b"\xff" + encoded, 1) == (value, len(encoded) + 1)


def test_negative_varint_is_twos_complement():
    assert og.encode_varint(-1) == b"\xff" * 9 + b"\x01"
    field = og.Field(1, og.VARINT, -1)
    assert onnx.TensorShapeProto.Dimension.FromString(field.encode()).dim_value == -1


def test_malformed_bytes_raise_protobuf_error():
    with pytest.raises(og.ProtobufError):
        og.parse_message(b"\x0a\x05abc")  # length 5, only 3 bytes
    with pytest.raises(og.ProtobufError):
        og.parse_message(b"\x08\x80")  # varint cut short
    with pytest.raises(og.ProtobufError):
        og.parse_message(b"\x0f")  # wire type 7


def test_groups_and_fixed_width_fields_are_kept():
    # field 2 I32, field 3 I64, field 4 group holding field 1 varint 5, field 5 varint.
    message = b"\x15\x01\x02\x03\x04" + b"\x19" + bytes(range(8)) + b"\x23\x08\x05\x24" + b"\x28\x07"
    fields = og.parse_message(message)
    assert [(f.number, f.wire_type) for f in fields] == [(2, 5), (3, 1), (4, 3), (5, 0)]
    assert bytes(fields[2].value) == b"\x08\x05"
    assert og.serialize_message(fields) == message
    assert og.serialize_message(fields, keep_raw=False) == message


def test_non_minimal_encodings_survive_untouched():
    # field 1 varint 1 written with a padded (non-minimal) 3-byte varint: kept as is when unedited.
    message = b"\x08\x81\x80\x00" + b"\x12\x01z"
    fields = og.parse_message(message)
    assert fields[0].value == 1
    assert og.serialize_message(fields) == message
    assert og.serialize_message(fields, keep_raw=False) == b"\x08\x01\x12\x01z"


@pytest.mark.parametrize("name", ["efficientnet_lite0.onnx", "digits_cnn.onnx"])
def test_round_trip_sample_models_byte_for_byte(name):
    data = (SAMPLE_MODELS / name).read_bytes()
    model = og.parse_message(data)
    assert og.serialize_message(model) == data
    assert og.serialize_message(model, keep_raw=False) == data  # re-encoding keys/lengths changes nothing
    graph_field = next(f for f in model if f.number == og.MODEL_GRAPH)
    graph = og.parse_message(graph_field.payload)
    assert og.serialize_message(graph, keep_raw=False) == bytes(graph_field.payload)


def test_deep_round_trip_along_the_rewrite_path(fixed_model):
    """Parse every message the rewrite touches and re-encode it from parsed values: identical bytes."""
    data = fixed_model.read_bytes()

    def check(payload, depth_path):
        fields = og.parse_message(payload)
        assert og.serialize_message(fields, keep_raw=False) == bytes(payload)
        if not depth_path:
            return
        number, rest = depth_path[0], depth_path[1:]
        for f in fields:
            if f.number == number and f.wire_type == og.LEN:
                check(f.payload, rest)

    # model -> graph -> input/output -> type -> tensor_type -> shape -> dim
    for io in (og.GRAPH_INPUT, og.GRAPH_OUTPUT, og.GRAPH_VALUE_INFO):
        check(data, [og.MODEL_GRAPH, io, og.VALUE_INFO_TYPE, og.TYPE_TENSOR, og.TENSOR_TYPE_SHAPE, og.SHAPE_DIM])


# ---------------------------------------------------------------------------------------------------------
# the rewrite
# ---------------------------------------------------------------------------------------------------------


def test_rewrite_parses_and_makes_batch_symbolic(fixed_model):
    original = onnx.load(str(fixed_model))
    result = og.rewrite_batch_dim(fixed_model.read_bytes())
    assert result.inputs == ["image"] and result.outputs == ["logits"]
    assert result.value_info_dropped == len(original.graph.value_info) > 0
    model = onnx.load_from_string(result.model_bytes)
    onnx.checker.check_model(model)
    for vi in (model.graph.input[0], model.graph.output[0]):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].WhichOneof("value") == "dim_param" and dims[0].dim_param == "batch"
        assert [d.dim_value for d in dims[1:]] == [d.dim_value for d in
                                                  next(o for o in list(original.graph.input) + list(original.graph.output)
                                                       if o.name == vi.name).type.tensor_type.shape.dim[1:]]
    assert len(model.graph.value_info) == 0
    assert model.graph.input[0].type.tensor_type.shape.dim[0].denotation == "DATA_BATCH"


def test_rewrite_keeps_metadata_weights_and_unknown_fields(fixed_model):
    data = fixed_model.read_bytes()
    new = og.make_batch_dynamic(data)
    original, model = onnx.load_from_string(data), onnx.load_from_string(new)
    assert [(p.key, p.value) for p in model.metadata_props] == [(p.key, p.value) for p in original.metadata_props]
    assert model.doc_string == original.doc_string and model.producer_name == "test"
    assert [t.SerializeToString() for t in model.graph.initializer] == [
        t.SerializeToString() for t in original.graph.initializer]
    assert [n.SerializeToString() for n in model.graph.node] == [n.SerializeToString() for n in original.graph.node]
    # unknown fields at the model, graph, value-info and dimension levels, byte for byte
    assert model.SerializeToString().endswith(UNKNOWN_MODEL_FIELD)
    assert model.graph.SerializeToString().endswith(UNKNOWN_GRAPH_FIELD)
    assert model.graph.input[0].SerializeToString().endswith(UNKNOWN_VALUE_INFO_FIELD)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].SerializeToString().endswith(UNKNOWN_DIM_FIELD)
    for chunk in (UNKNOWN_MODEL_FIELD, UNKNOWN_GRAPH_FIELD, UNKNOWN_VALUE_INFO_FIELD, UNKNOWN_DIM_FIELD):
        assert chunk in new


def test_rewrite_equals_the_same_edit_made_with_onnx(fixed_model):
    """Byte-level: the rewritten file is exactly what onnx serialises after the same edit of the proto."""
    data = fixed_model.read_bytes()
    expected = onnx.load_from_string(data)
    for vi in list(expected.graph.input) + list(expected.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"  # a oneof: clears dim_value
    del expected.graph.value_info[:]
    assert og.make_batch_dynamic(data) == expected.SerializeToString()


def test_outputs_match_the_original_sample_by_sample(fixed_model):
    original = _session(fixed_model)
    batched = _session(og.make_batch_dynamic(fixed_model.read_bytes()))
    x = _batch(7, seed=1)
    (got,) = batched.run(["logits"], {"image": x})
    want = np.concatenate([original.run(["logits"], {"image": x[i : i + 1]})[0] for i in range(len(x))])
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception):  # the original really is pinned to batch 1
        original.run(["logits"], {"image": x})


def test_nothing_to_rewrite_in_a_dynamic_model(tmp_path):
    path = _classifier(tmp_path / "dynamic.onnx", batch="N", extras=False)
    with pytest.raises(og.RewriteError, match="nothing to rewrite"):
        og.make_batch_dynamic(path.read_bytes())
    data, reason = og.batched_session_bytes(path)
    assert data is None and "nothing to rewrite" in reason


def test_rewrite_of_the_sample_models_made_fixed(tmp_path):
    """The real sample models, pinned to batch 1 with onnx, rewritten back and validated."""
    for name in ("digits_cnn.onnx", "efficientnet_lite0.onnx"):
        model = onnx.load(str(SAMPLE_MODELS / name))
        for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and dims[0].dim_param:
                dims[0].dim_value = 1
        path = tmp_path / name
        onnx.save(model, str(path))
        result = og.batched_model(path)
        assert result.ok, result.reason
        assert "validated" in result.reason
        assert result.session.get_inputs()[0].shape[0] == "batch"


def test_initializers_listed_as_inputs_are_left_alone(tmp_path):
    """IR 3 models list initializers among the graph inputs; their shapes are not batch shapes."""
    bias = numpy_helper.from_array(np.array([[0.5, -1.0]], dtype=np.float32), "bias")  # shape [1, 2]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])], "ir3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    data = model.SerializeToString()
    result = og.rewrite_batch_dim(data)
    assert result.inputs == ["x"] and result.outputs == ["y"]
    rewritten = onnx.load_from_string(result.model_bytes)
    assert rewritten.graph.input[1].type.tensor_type.shape.dim[0].dim_value == 1
    path = tmp_path / "ir3.onnx"
    path.write_bytes(data)
    session, reason = og.batched_session(path)
    assert session is not None, reason
    (y,) = session.run(["y"], {"x": np.zeros((3, 2), np.float32)})
    np.testing.assert_allclose(y, np.tile([[0.5, -1.0]], (3, 1)))


# ---------------------------------------------------------------------------------------------------------
# validation and fallback
# ---------------------------------------------------------------------------------------------------------


def test_validated_session_runs_any_batch(fixed_model):
    original = _session(fixed_model)
    session, reason = og.batched_session(fixed_model, reference=original, output_names=["logits"])
    assert session is not None, reason
    assert "validated" in reason and "image" in reason
    for n in (1, 2, 5, 16):
        x = _batch(n, seed=n)
        (got,) = session.run(["logits"], {"image": x})
        want = np.concatenate([original.run(["logits"], {"image": x[i : i + 1]})[0] for i in range(n)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_validated_bytes_load_elsewhere(fixed_model):
    data, reason = og.batched_session_bytes(fixed_model)
    assert data is not None, reason
    assert data == og.make_batch_dynamic(fixed_model.read_bytes())
    assert _session(data).get_inputs()[0].shape == ["batch", 3, 16, 16]


def test_hard_coded_reshape_falls_back_with_a_reason(tmp_path):
    path = _classifier(tmp_path / "pinned.onnx", head="reshape_1k")
    data = og.make_batch_dynamic(path.read_bytes())  # the declared shapes can be rewritten...
    assert onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session, reason = og.batched_session(path)  # ...but the graph cannot run batched
    assert session is None
    assert reason.startswith("the rewritten model fails on a batch of 3")
    assert "\n" not in reason
    data, reason_bytes = og.batched_session_bytes(path)
    assert data is None and reason_bytes == reason


def test_batch_mixing_graph_falls_back(tmp_path):
    path = _classifier(tmp_path / "mix.onnx", head="mix")
    session, reason = og.batched_session(path)
    assert session is None
    assert "differs between a batch of 3 and one input at a time" in reason


def test_output_without_batch_axis_falls_back(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], axes=[0, 1], keepdims=0)], "no_batch_axis",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    path = tmp_path / "scalar.onnx"
    onnx.save(model, str(path))
    session, reason = og.batched_session(path)
    assert session is None and "no batch axis" in reason


def test_external_data_is_refused(tmp_path):
    path = _classifier(tmp_path / "external.onnx", external=True)
    assert (tmp_path / "external.onnx.data").exists()
    with pytest.raises(og.RewriteError, match="external data"):
        og.make_batch_dynamic(path.read_bytes())
    session, reason = og.batched_session(path)
    assert session is None and "external data" in reason


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x0a\x05ab")
    data, reason = og.batched_session_bytes(path)
    assert data is None and reason.startswith("not rewritten")
    missing = og.batched_session_bytes(tmp_path / "missing.onnx")
    assert missing[0] is None and "cannot read" in missing[1]


def test_non_cpu_providers_get_a_fresh_session(fixed_model):
    """The check always runs on CPU; the returned session has the providers asked for (CPU listed last as a
    fallback works everywhere)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    available = ort.get_available_providers()
    providers = [p for p in available if p != "CPUExecutionProvider"][:1] + ["CPUExecutionProvider"]
    result = og.batched_model(fixed_model, session_options=options, providers=providers)
    assert result.ok, result.reason
    assert result.session.get_providers()[-1] == "CPUExecutionProvider"
