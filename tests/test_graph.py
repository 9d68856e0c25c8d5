"""occlude_cli.inference (onnxfile, batching, cuts): the batch rewrite, the external-data safety check, tensor listing
and graph splitting, all checked by running real models with onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path

import graph_models as gm
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from occlude_cli.errors import OccludeError
from occlude_cli.inference import batching, onnxfile, cuts as splits

ROOT = Path(__file__).resolve().parents[1]
EFFICIENTNET = ROOT / "sample_models" / "efficientnet_lite0.onnx"
DIGITS = ROOT / "sample_models" / "digits_cnn.onnx"


def _session(model):
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])


def _batch(n: int, seed: int = 0, shape=(3, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _one_at_a_time(session, name: str, x: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


@pytest.fixture
def fixed_model(tmp_path) -> Path:
    return gm.save(gm.classifier(), tmp_path / "fixed.onnx")


# ---------------------------------------------------------------------------------------------------------
# batch rewrite
# ---------------------------------------------------------------------------------------------------------


def test_rewrite_runs_any_batch_and_matches_one_at_a_time(fixed_model):
    original = _session(fixed_model)
    result = batching.batched_model(fixed_model, reference=original, input_name="image", output_names=["logits"])
    assert result.ok, result.reason
    assert "validated" in result.reason and "image" in result.reason and "\n" not in result.reason
    assert result.session.get_inputs()[0].shape == ["batch", 3, 16, 16]
    assert result.session.get_outputs()[0].shape == ["batch", 5]
    for n in (1, 2, 5, 16):
        x = _batch(n, seed=n)
        (got,) = result.session.run(["logits"], {"image": x})
        np.testing.assert_allclose(got, _one_at_a_time(original, "image", x), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="dimension"):  # the original really is pinned to batch 1
        original.run(["logits"], {"image": _batch(2)})


def test_rewrite_keeps_metadata_doc_weights_nodes_and_unknown_fields(fixed_model):
    original = onnx.load(str(fixed_model))
    result = batching.batched_model(fixed_model)
    assert result.ok, result.reason
    model = result.model
    onnx.checker.check_model(model)
    assert [(p.key, p.value) for p in model.metadata_props] == [(p.key, p.value) for p in original.metadata_props]
    assert model.doc_string == "a fixed-batch test model" and model.producer_name == "test"
    assert model.ir_version == original.ir_version and list(model.opset_import) == list(original.opset_import)
    assert [t.SerializeToString() for t in model.graph.initializer] == [
        t.SerializeToString() for t in original.graph.initializer
    ]
    assert [n.SerializeToString() for n in model.graph.node] == [n.SerializeToString() for n in original.graph.node]
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch" and dim.denotation == "DATA_BATCH"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 16, 16]
    assert len(original.graph.value_info) > 0 and len(model.graph.value_info) == 0  # stale batch-1 hints dropped
    data = model.SerializeToString()
    assert gm.UNKNOWN_MODEL_FIELD in data and gm.UNKNOWN_GRAPH_FIELD in data
    assert result.session.get_modelmeta().custom_metadata_map["note"] == "kept"


def test_rewrite_equals_the_plain_onnx_edit(fixed_model):
    expected = onnx.load(str(fixed_model))
    for vi in list(expected.graph.input) + list(expected.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    del expected.graph.value_info[:]
    assert batching.batched_model(fixed_model).model.SerializeToString() == expected.SerializeToString()


def test_hard_coded_reshape_falls_back_with_one_line(tmp_path):
    path = gm.save(gm.classifier(head="reshape_1k"), tmp_path / "pinned.onnx")
    result = batching.batched_model(path)
    assert not result.ok and result.session is None and result.model is None
    assert result.reason.startswith("the rewritten model fails on a batch of 3")
    assert "\n" not in result.reason


def test_batch_mixing_graph_is_detected(tmp_path):
    path = gm.save(gm.classifier(head="mix"), tmp_path / "mix.onnx")
    result = batching.batched_model(path)
    assert not result.ok
    assert "differs between a batch of 3 and one input at a time" in result.reason


def test_dynamic_model_has_nothing_to_rewrite(tmp_path):
    path = gm.save(gm.classifier(batch="N", extras=False), tmp_path / "dynamic.onnx")
    result = batching.batched_model(path)
    assert not result.ok and "nothing to rewrite" in result.reason


def test_output_without_batch_axis_falls_back(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("ReduceSum", ["x"], ["total"], axes=[0, 1], keepdims=0)],
        "no_batch_axis",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("total", onnx.TensorProto.FLOAT, [])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 12)])
    model.ir_version = 8
    path = gm.save(model, tmp_path / "scalar.onnx")
    result = batching.batched_model(path)
    assert not result.ok and "no batch axis" in result.reason


def test_initializers_listed_as_inputs_are_left_alone(tmp_path):
    """IR 3 models list initializers among the graph inputs; their shapes are not batch shapes."""
    bias = onnx.numpy_helper.from_array(np.array([[0.5, -1.0]], dtype=np.float32), "bias")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "bias"], ["y"])],
        "ir3",
        [
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2]),
            onnx.helper.make_tensor_value_info("bias", onnx.TensorProto.FLOAT, [1, 2]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
        initializer=[bias],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 7)])
    model.ir_version = 3
    path = tmp_path / "ir3.onnx"
    path.write_bytes(model.SerializeToString())
    result = batching.batched_model(path)
    assert result.ok, result.reason
    assert result.model.graph.input[1].type.tensor_type.shape.dim[0].dim_value == 1
    (y,) = result.session.run(["y"], {"x": np.zeros((3, 2), np.float32)})
    np.testing.assert_allclose(y, np.tile([[0.5, -1.0]], (3, 1)))


def test_external_data_model_is_rewritten(tmp_path):
    path = gm.save(gm.classifier(extras=False), tmp_path / "external.onnx", external=True)
    assert (tmp_path / "external.onnx.data").stat().st_size > 0
    assert all(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.load(str(path), load_external_data=False).graph.initializer
    )
    result = batching.batched_model(path)
    assert result.ok, result.reason
    original = _session(path)
    x = _batch(4, seed=9)
    (got,) = result.session.run(["logits"], {"image": x})
    np.testing.assert_allclose(got, _one_at_a_time(original, "image", x), rtol=1e-5, atol=1e-6)


def test_sample_models_pinned_to_batch_one_are_rewritten_back(tmp_path):
    for name in ("digits_cnn.onnx", "efficientnet_lite0.onnx"):
        model = onnx.load(str(ROOT / "sample_models" / name))
        for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and dims[0].dim_param:
                dims[0].dim_value = 1
        path = gm.save(model, tmp_path / name)
        result = batching.batched_model(path)
        assert result.ok, result.reason
        assert result.session.get_inputs()[0].shape[0] == "batch"


def test_not_an_onnx_file_and_missing_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x0a\x05ab")
    with pytest.raises(OccludeError, match=r"cannot load .* as an ONNX model"):
        batching.batched_model(junk)
    with pytest.raises(OccludeError, match="model not found"):
        batching.batched_model(tmp_path / "missing.onnx")
    with pytest.raises(OccludeError, match="samples must be at least 2"):
        batching.batched_model(junk, samples=1)


def test_non_cpu_providers_get_a_fresh_session(fixed_model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    others = [p for p in ort.get_available_providers() if p != "CPUExecutionProvider"][:1]
    providers = [*others, "CPUExecutionProvider"]
    result = batching.batched_model(fixed_model, session_options=options, providers=providers)
    assert result.ok, result.reason
    assert result.session.get_providers()[-1] == "CPUExecutionProvider"


# ---------------------------------------------------------------------------------------------------------
# external data safety
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def external_model(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    return gm.save(gm.classifier(extras=False), folder / "m.onnx", external=True)


def test_valid_external_data_passes(external_model):
    assert isinstance(
        onnxfile.check_external_data(external_model), onnx.ModelProto
    )  # the model as read, weights not loaded
    onnxfile.check_external_data(gm.save(gm.classifier(), external_model.parent / "inline.onnx"))  # no external data


@pytest.mark.parametrize(
    "location, why",
    [
        ("../../etc/passwd", "'..' escapes the model's folder"),
        ("sub/../../m.onnx.data", "'..' escapes the model's folder"),
        ("/proc/self/environ", "absolute locations are refused"),
        ("/etc/passwd", "absolute locations are refused"),
        ("missing.data", "does not exist"),
        ("", "the location is empty"),
    ],
)
def test_hostile_locations_are_refused(external_model, location, why):
    gm.set_location(external_model, location, tensor="fc_w")
    with pytest.raises(OccludeError) as info:
        onnxfile.check_external_data(external_model)
    message = str(info.value)
    assert why in message and "'fc_w'" in message and repr(location) in message and "\n" not in message
    with pytest.raises(OccludeError, match="fc_w"):  # nothing that loads the model gets past the check
        batching.batched_model(external_model)
    with pytest.raises(OccludeError, match="fc_w"):
        splits.split_model(external_model, "relu")


def test_symlink_out_of_the_folder_is_refused(external_model, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = external_model.parent / "m.onnx.data"
    os.replace(data, outside / "secret.bin")
    os.symlink(outside / "secret.bin", data)  # same name, so the location itself looks innocent
    with pytest.raises(OccludeError, match=r"outside the model's folder .*\(a symlink\?\)"):
        onnxfile.check_external_data(external_model)
    # a symlink that stays inside the folder passes this check (onnx.load itself refuses every symlink)
    os.remove(data)
    os.replace(outside / "secret.bin", external_model.parent / "real.bin")
    os.symlink("real.bin", data)
    onnxfile.check_external_data(external_model)


def test_unknown_external_data_keys_are_refused(external_model):
    model = onnx.load(str(external_model), load_external_data=False)
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "__class__", "x"
    external_model.write_bytes(model.SerializeToString())
    with pytest.raises(OccludeError, match="unexpected external-data key\\(s\\) '__class__'"):
        onnxfile.check_external_data(external_model)


def test_byte_range_past_the_end_is_refused(external_model):
    data = external_model.parent / "m.onnx.data"
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size - 4)
    with pytest.raises(OccludeError, match="run past the file's end"):
        onnxfile.check_external_data(external_model)


def test_subgraph_tensors_are_checked(tmp_path):
    path = gm.save(gm.with_if_subgraph(), tmp_path / "if.onnx", external=True)
    onnxfile.check_external_data(path)
    session = _session(path)
    (y,) = session.run(None, {"x": np.ones(4, np.float32), "cond": np.array(True)})
    np.testing.assert_allclose(y, [1, 2, 3, 4])  # the subgraph's weights really were external and load
    gm.set_location(path, "../../etc/passwd", tensor="sub_bias")
    with pytest.raises(OccludeError, match=r"'sub_bias' \(main graph, node If, attribute then_branch\)"):
        onnxfile.check_external_data(path)


# ---------------------------------------------------------------------------------------------------------
# model_tensors
# ---------------------------------------------------------------------------------------------------------


def test_model_tensors_lists_shapes_ops_and_dtypes():
    model = gm.plain_cnn(batch="batch")
    tensors = splits.model_tensors(model)
    names = [t.name for t in tensors]
    assert names == ["scale", *gm.PLAIN_CUTS, "logits"]
    by_name = {t.name: t for t in tensors}
    assert by_name["/block1/Relu_output_0"] == splits.TensorInfo(
        "/block1/Relu_output_0", "Relu", [None, 4, 8, 8], "float32"
    )
    assert by_name["scale"].shape == [] and by_name["scale"].op_type == "Constant"
    concrete = {t.name: t for t in splits.model_tensors(model, {"input": [2, 3, 16, 16]})}
    assert concrete["/block1/Conv_output_0"].shape == [2, 4, 8, 8]
    assert concrete["/head/Flatten_output_0"].shape == [2, 4] and concrete["logits"].shape == [2, 6]
    # the shapes are the ones onnxruntime computes
    outputs = [t for t in names if t != "scale"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs[:-1])
    values = _session(probe).run(outputs, {"input": _batch(2)})
    assert [list(v.shape) for v in values] == [concrete[n].shape for n in outputs]


def test_model_tensors_on_the_sample_model_and_bad_shapes():
    tensors = splits.model_tensors(EFFICIENTNET, {"input": [1, 3, 224, 224]})
    assert len(tensors) == 94 and all(t.dtype == "float32" for t in tensors)
    assert tensors[0].shape == [1, 32, 112, 112] and tensors[-1].shape == [1, 1000]
    with pytest.raises(OccludeError, match="not a graph input"):
        splits.model_tensors(EFFICIENTNET, {"image": [1, 3, 224, 224]})
    with pytest.raises(OccludeError, match="model fixes"):
        splits.model_tensors(EFFICIENTNET, {"input": [1, 3, 200, 224]})


# ---------------------------------------------------------------------------------------------------------
# cut points and splitting
# ---------------------------------------------------------------------------------------------------------


def _bypassable(model: onnx.ModelProto, tensor: str) -> bool:
    """Slow reference: can the outputs be reached from the input without going through ``tensor``?"""
    reach = {vi.name for vi in model.graph.input} - {t.name for t in model.graph.initializer}
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if any(i in reach for i in node.input):
                for out in node.output:
                    if out != tensor and out not in reach:
                        reach.add(out)
                        changed = True
    return any(o.name in reach for o in model.graph.output)


def _reference_cuts(model: onnx.ModelProto):
    inputs = {vi.name for vi in model.graph.input}
    outputs = {vi.name for vi in model.graph.output}
    candidates = [o for n in model.graph.node for o in n.output if o not in outputs and o not in inputs]
    return [t for t in candidates if _depends_on_input(model, t) and not _bypassable(model, t)]


def _depends_on_input(model, tensor):
    reach = {vi.name for vi in model.graph.input} - {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if any(i in reach for i in node.input):
            reach.update(node.output)
    return tensor in reach


@pytest.mark.parametrize("build, expected", [(gm.plain_cnn, gm.PLAIN_CUTS), (gm.residual_cnn, gm.RESIDUAL_CUTS)])
def test_valid_cut_points_match_the_slow_reference(build, expected):
    model = build()
    assert splits.valid_cut_points(model) == expected == _reference_cuts(model)


def test_valid_cut_points_of_the_sample_model_match_the_slow_reference():
    model = onnx.load(str(EFFICIENTNET))
    cuts = splits.valid_cut_points(model)
    assert cuts == _reference_cuts(model)
    assert "add_140" in cuts and "getitem_24" not in cuts  # after a residual Add, not inside the block


@pytest.mark.parametrize("batch", [1, "batch"])
def test_plain_cnn_split_equals_the_whole(batch):
    model = gm.plain_cnn(batch=batch)
    whole = _session(model)
    n = 1 if batch == 1 else 4
    x = _batch(n, seed=2)
    (want,) = whole.run(None, {"input": x})
    for tensor in gm.PLAIN_CUTS:
        split = splits.split_model(model, tensor)
        onnx.checker.check_model(split.prefix)
        onnx.checker.check_model(split.suffix)
        assert [vi.name for vi in split.prefix.graph.output] == [tensor]
        assert [vi.name for vi in split.suffix.graph.input] == [tensor]
        assert split.prefix.ir_version == split.suffix.ir_version == model.ir_version
        prefix, suffix = split.sessions()
        (middle,) = prefix.run(None, {"input": x})
        (got,) = suffix.run(None, {tensor: middle})
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert splits.verify_split(split, whole, x) <= 1e-6


def test_constants_and_shared_initializers_go_to_both_sides():
    split = splits.split_model(gm.plain_cnn(), "/block1/Relu_output_0")
    for part in (split.prefix, split.suffix):
        assert [n.name for n in part.graph.node if n.op_type == "Constant"] == ["/const/scale"]
        assert "shared_w" in {t.name for t in part.graph.initializer}
    assert {t.name for t in split.prefix.graph.initializer} == {"stem_w", "shared_w"}
    assert {t.name for t in split.suffix.graph.initializer} == {"shared_w", "fc_w", "fc_b"}
    assert [n.name for n in split.suffix.graph.node] == [
        "/const/scale",
        "/block2/Conv",
        "/block2/Mul",
        "/head/Pool",
        "/head/Flatten",
        "/head/Gemm",
    ]
    assert split.suffix.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 4


def test_cut_inside_a_residual_block_is_refused_with_alternatives():
    model = gm.residual_cnn()
    with pytest.raises(OccludeError) as info:
        splits.split_model(model, "/layer2/Relu_output_0")
    message = str(info.value)
    assert message == (
        "cannot split the model at '/layer2/Relu_output_0': node /layer2/Add reads /layer1/Relu_output_0 which is "
        "computed before the cut: a skip connection crosses it; nearest valid cut points before it: "
        "/layer1/Conv_output_0, /layer1/Relu_output_0; after it: /layer2/Add_output_0, /layer2/Relu_1_output_0, "
        "/head/Pool_output_0"
    )


def test_cut_after_the_residual_add_is_accepted():
    model = gm.residual_cnn()
    whole = _session(model)
    for tensor in ("/layer2/Add_output_0", "/layer1/Relu_output_0"):
        split = splits.split_model(model, tensor)
        x = np.random.default_rng(4).standard_normal((3, 3, 12, 12)).astype(np.float32)
        assert splits.verify_split(split, whole, x) <= 1e-6


@pytest.mark.parametrize(
    "tensor, why",
    [
        ("/nowhere/Relu_output_0", "no node computes a tensor of that name; valid cut points include: /layer1/Conv"),
        ("w2a", "is an initializer"),
        ("input", "is a graph input"),
        ("logits", "is a graph output"),
    ],
)
def test_bad_cut_names_are_explained(tensor, why):
    with pytest.raises(OccludeError, match=f"cannot split the model at {tensor!r}: .*{why}"):
        splits.split_model(gm.residual_cnn(), tensor)


def test_nhwc_model_splits_at_its_transposes():
    model = gm.nhwc_cnn()
    whole = _session(model)
    cuts = splits.valid_cut_points(model)
    assert cuts == ["nchw", "conv", "relu", "nhwc", "scaled", "nchw2", "pooled", "flat"]
    x = np.random.default_rng(1).random((2, 10, 10, 3)).astype(np.float32)
    for tensor in cuts:
        assert splits.verify_split(splits.split_model(model, tensor), whole, x) <= 1e-6


def test_verify_split_catches_a_wrong_suffix():
    model = gm.plain_cnn()
    split = splits.split_model(model, "/block1/Relu_output_0")
    weights = next(t for t in split.suffix.graph.initializer if t.name == "fc_b")
    weights.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weights) + 1e-3, "fc_b"))
    with pytest.raises(OccludeError, match=r"split at '/block1/Relu_output_0' differs .* output 'logits'"):
        splits.verify_split(split, _session(model))


def test_split_of_an_external_data_model(tmp_path):
    path = gm.save(gm.residual_cnn(), tmp_path / "res.onnx", external=True)
    split = splits.split_model(path, "/layer2/Add_output_0")
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in split.suffix.graph.initializer)
    assert splits.verify_split(split, path) <= 1e-6


def test_split_the_sample_efficientnet_in_the_middle():
    cuts = splits.valid_cut_points(EFFICIENTNET)
    tensor = cuts[len(cuts) // 2]
    split = splits.split_model(EFFICIENTNET, tensor)
    whole = _session(EFFICIENTNET)
    x = np.random.default_rng(0).random((2, 3, 224, 224)).astype(np.float32)
    assert splits.verify_split(split, whole, x, rtol=1e-5, atol=1e-5) <= 1e-5
    kinds = {n.op_type for n in split.suffix.graph.node}
    assert "Gemm" in kinds and len(split.prefix.graph.node) + len(split.suffix.graph.node) >= 94


def test_cut_on_one_of_two_parallel_branches_is_refused():
    model = gm.two_branch_cnn()
    assert splits.valid_cut_points(model) == ["stem", "merged", "pooled", "flat"] == _reference_cuts(model)
    with pytest.raises(OccludeError) as info:
        splits.split_model(model, "branch_a")
    assert str(info.value) == (
        "cannot split the model at 'branch_a': node concat reads branch_b which is computed on a parallel branch "
        "that bypasses the cut; nearest valid cut points before it: stem; after it: merged, pooled, flat"
    )
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert splits.verify_split(splits.split_model(model, "merged"), _session(model), x) <= 1e-6


def test_subgraph_reads_from_the_outer_scope_count_as_crossing_the_cut():
    model = gm.if_reading_outer_scope()
    assert splits.valid_cut_points(model) == ["a"]
    with pytest.raises(OccludeError, match="node if reads a which is computed before the cut"):
        splits.split_model(model, "b")
    split = splits.split_model(model, "a")
    assert [n.name for n in split.suffix.graph.node] == ["cond", "neg", "if"]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert splits.verify_split(split, _session(model), x) == 0.0


def test_ir3_model_splits_with_initializers_listed_as_inputs():
    bias = onnx.numpy_helper.from_array(np.array([[0.5, -1.0]], dtype=np.float32), "bias")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "bias"], ["sum"]), onnx.helper.make_node("Mul", ["sum", "bias"], ["y"])],
        "ir3",
        [
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2]),
            onnx.helper.make_tensor_value_info("bias", onnx.TensorProto.FLOAT, [1, 2]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
        initializer=[bias],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 7)])
    model.ir_version = 3
    split = splits.split_model(model, "sum")
    assert [vi.name for vi in split.prefix.graph.input] == ["x", "bias"]
    assert [vi.name for vi in split.suffix.graph.input] == ["sum", "bias"]
    onnx.checker.check_model(split.prefix)
    onnx.checker.check_model(split.suffix)
    x = np.array([[1.0, 2.0]], np.float32)
    assert split.input_names == ["x"]
    assert splits.verify_split(split, _session(model), {"x": x}) == 0.0
