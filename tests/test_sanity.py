"""The model parameter randomisation test (``occlude sanity``) and ``occlude compare --sanity``.

Ground truth: a probe model whose output ignores one of its layers (its branch is multiplied by zero) keeps its
map bit for bit when that layer is randomised, and changes it when a layer it uses is; a "method" that ignores
the model (an edge map of the input) is caught by ``compare --sanity`` (similarity 1 at every step). The graph
work is checked on hand-built graphs (shared weights, weights behind Constant, Identity and Cast nodes, a MatMul of
two activations, QDQ and QLinearConv graphs, float16 weights, external data) and the sample model's cascade."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

import occlude_cli
from occlude_cli.cli import app
from occlude_cli.errors import OccludeError
from occlude_cli.inference.randomise import Randomiser, randomisable_layers
from occlude_cli.loaders.model import OnnxClassifier

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS
from graph_models import classifier, plain_cnn, save

runner = CliRunner()
EFFNET = SAMPLE_MODELS / "efficientnet_lite0.onnx"


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _model(nodes, inits, path: Path, in_shape=(1, 16, 16), classes=3, input_type=TensorProto.FLOAT) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("input", input_type, ["N", *in_shape])],
        [helper.make_tensor_value_info("logits", input_type, ["N", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weights(rng, name, shape, dtype=np.float32):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(dtype), name)


def ignoring_probe(path: Path) -> Path:
    """logits = Gemm(GAP(Relu(conv_a(x))) + 0 * GAP(conv_b(x))): the output ignores conv_b exactly (its branch
    is multiplied by zero), and uses conv_a and the Gemm."""
    rng = np.random.default_rng(11)
    inits = [
        _weights(rng, "a_w", (4, 1, 3, 3)),
        _weights(rng, "a_b", (4,)),
        _weights(rng, "b_w", (4, 1, 3, 3)),
        _weights(rng, "fc_w", (3, 4)),
        _weights(rng, "fc_b", (3,)),
        numpy_helper.from_array(np.zeros((1, 4), np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "a_w", "a_b"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a_relu"]),
        helper.make_node("GlobalAveragePool", ["a_relu"], ["a_pool"]),
        helper.make_node("Flatten", ["a_pool"], ["a_flat"]),
        helper.make_node("Conv", ["input", "b_w"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["b"], ["b_pool"]),
        helper.make_node("Flatten", ["b_pool"], ["b_flat"]),
        helper.make_node("Mul", ["b_flat", "zero"], ["b_zero"]),
        helper.make_node("Add", ["a_flat", "b_zero"], ["features"]),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], name="head", transB=1),
    ]
    return _model(nodes, inits, path)


@pytest.fixture
def probe(tmp_path) -> Path:
    return ignoring_probe(tmp_path / "probe.onnx")


@pytest.fixture
def picture(tmp_path) -> Path:
    rng = np.random.default_rng(5)
    path = tmp_path / "picture.png"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(path)
    return path


def _steps(document: dict) -> dict:
    return {(s["test"], s["layer"]): s for s in document["steps"]}


def test_randomising_an_ignored_layer_leaves_the_map_unchanged_exactly(probe, picture, tmp_path):
    run = occlude_cli.sanity_image(
        probe, picture, tmp_path / "out", patch=4, stride=2, score="logit", mode="both", incremental="off"
    )
    layers = {layer.name: layer.position for layer in run.result.layers}
    assert layers == {"head": 1, "conv_b": 2, "conv_a": 3}
    original = run.result.explanation.map
    by = {(s.mode, s.position): s for s in run.result.steps}
    ignored = by[("independent", layers["conv_b"])]
    assert np.array_equal(ignored.map, original)  # bit for bit
    assert ignored.similarity["spearman"] == pytest.approx(1.0) and ignored.similarity["ssim"] == pytest.approx(1.0)
    for used in ("head", "conv_a"):
        step = by[("independent", layers[used])]
        assert not np.allclose(step.map, original)
        assert step.similarity["spearman"] < 0.9
    # cascading: step 2 randomises head and conv_b: the same map as step 1 (head alone), to the bit
    assert np.array_equal(by[("cascading", 2)].map, by[("cascading", 1)].map)
    document = json.loads((tmp_path / "out" / "picture.sanity.json").read_text())
    assert document["randomisation"]["batch_norm"].startswith("kept")
    assert _steps(document)[("independent", "conv_b")]["spearman"] == pytest.approx(1.0)


def test_the_same_seed_gives_the_same_files_and_another_seed_other_weights(probe, picture, tmp_path):
    kwargs = dict(patch=4, stride=2, timing=False, score="logit")
    occlude_cli.sanity_image(probe, picture, tmp_path / "a", **kwargs)
    occlude_cli.sanity_image(probe, picture, tmp_path / "b", **kwargs)
    for suffix in ("json", "csv", "png"):
        name = f"picture.sanity.{suffix}"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = occlude_cli.sanity_image(probe, picture, tmp_path / "c", seed=3, **kwargs)
    first = json.loads((tmp_path / "a" / "picture.sanity.json").read_text())
    assert [s["spearman"] for s in first["steps"]] != [s.similarity["spearman"] for s in other.result.steps]


def test_layers_shared_weights_constants_and_pass_through_nodes():
    # plain_cnn: shared_w feeds two convolutions (one parameter: one step with both nodes), a Constant scale
    layers = randomisable_layers(plain_cnn())
    assert [(layer.position, [n for n, _ in layer.nodes]) for layer in layers] == [
        (1, ["/head/Gemm"]),
        (2, ["/block1/Conv", "/block2/Conv"]),
        (3, ["/stem/Conv"]),
    ]
    assert [w.name for w in layers[1].weights] == ["shared_w"]
    assert layers[0].label == "fc_w" and layers[0].parameters == 6 * 4 + 6
    # a weight in a Constant node behind Identity and Cast; a MatMul of two activations is no layer
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float64), "w64")
    nodes = [
        helper.make_node("Constant", [], ["w_const"], name="weights", value=weight),
        helper.make_node("Identity", ["w_const"], ["w_id"]),
        helper.make_node("Cast", ["w_id"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
        helper.make_node("MatMul", ["h", "h_t"], ["gram"], name="attention"),
        helper.make_node("Transpose", ["h"], ["h_t"], perm=[1, 0]),
    ]
    nodes = nodes[:4] + [nodes[5], nodes[4]]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("gram", TensorProto.FLOAT, [2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    found = randomisable_layers(model)
    assert [(layer.name, layer.weights[0].stored_in, layer.weights[0].dtype) for layer in found] == [
        ("dense", "Constant node", "float64")
    ]
    randomiser = Randomiser(model, seed=1)
    randomiser.randomise(1)
    stored = numpy_helper.to_array(model.graph.node[0].attribute[0].t)
    assert stored.dtype == np.float64 and not np.array_equal(stored, numpy_helper.to_array(weight))
    assert np.abs(stored).max() <= 2 * np.std(numpy_helper.to_array(weight)) + 1e-12  # truncated at 2 std
    randomiser.restore(1)
    assert np.array_equal(numpy_helper.to_array(model.graph.node[0].attribute[0].t), numpy_helper.to_array(weight))


def test_quantised_graphs_are_refused_with_one_line(tmp_path, picture):
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.integers(-20, 20, (4, 1, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.05, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
        _weights(rng, "fc_w", (3, 4)),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq"),
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w"], ["logits"], transB=1),
    ]
    qdq = _model(nodes, inits, tmp_path / "qdq.onnx")
    done = runner.invoke(app, ["sanity", str(qdq), str(picture), "-o", str(tmp_path / "o"), "--patch", "4"])
    assert done.exit_code == 1
    assert "quantised" in done.output and "DequantizeLinear" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "o" / "picture.sanity.json").exists()
    qlinear = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="qconv")],
        "q",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 4, 4])],
    )
    with pytest.raises(OccludeError, match="quantised layers \\(QLinearConv 'qconv'\\)"):
        randomisable_layers(helper.make_model(qlinear))


def test_float16_weights_are_randomised_in_float16_and_run(tmp_path, picture):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    model = float16.convert_float_to_float16(classifier(batch="N", extras=False, classes=3), keep_io_types=True)
    source = save(model, tmp_path / "fp16.onnx")
    rgb = tmp_path / "rgb.png"
    Image.open(picture).convert("RGB").save(rgb)
    run = occlude_cli.sanity_image(
        source, rgb, tmp_path / "o", patch=4, stride=4, export_models=tmp_path / "models", score="logit"
    )
    assert not any(step.error for step in run.result.steps)
    exported = onnx.load(str(tmp_path / "models" / "cascading-01.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(source)).graph.initializer}
    assert weights["fc_w"].dtype == np.float16 and not np.array_equal(weights["fc_w"], original["fc_w"])
    assert np.array_equal(weights["conv_w"], original["conv_w"])  # step 1: only the head
    OnnxClassifier(tmp_path / "models" / "cascading-02.onnx")  # loads


def test_external_data_models_export_with_external_data(tmp_path, picture):
    folder = tmp_path / "model"
    folder.mkdir()
    source = save(classifier(batch="N", extras=False, classes=3), folder / "ext.onnx", external=True)
    data_before = (folder / "ext.onnx.data").read_bytes()
    rgb = tmp_path / "rgb.png"
    Image.open(picture).convert("RGB").save(rgb)
    out = tmp_path / "models"
    run = occlude_cli.sanity_image(source, rgb, tmp_path / "o", patch=8, stride=8, export_models=out, mode="both")
    assert not any(step.error for step in run.result.steps)
    assert sorted(p.name for p in out.iterdir()) == [
        "cascading-01.onnx",
        "cascading-01.onnx.data",
        "cascading-02.onnx",
        "cascading-02.onnx.data",
        "independent-01.onnx",
        "independent-01.onnx.data",
        "independent-02.onnx",
        "independent-02.onnx.data",
        "sanity_models.json",
    ]
    assert (folder / "ext.onnx.data").read_bytes() == data_before  # the original is untouched
    assert not list(out.glob(".*"))  # no temporary files left
    manifest = json.loads((out / "sanity_models.json").read_text())
    assert manifest["model"]["sha256"] == OnnxClassifier(source).sha256
    assert [m["file"] for m in manifest["models"]][:2] == ["cascading-01.onnx", "cascading-02.onnx"]


def test_sample_model_cascade_falls_to_near_zero(tmp_path):
    """The trained EfficientNet-Lite0's map against its map with the top k layers randomised (the manual gives
    every layer at patch 16; here 4 steps at patch 32)."""
    out = tmp_path / "out"
    done = occlude("sanity", EFFNET, SAMPLE_IMAGES / "cat.jpg", "--patch", "32", "--steps", "4", "-o", out)
    assert done.exit_code == 0, done.output
    document = json.loads((out / "cat.sanity.json").read_text())
    steps = document["steps"]
    assert [s["position"] for s in steps] == [1, 17, 34, 50] and document["randomisation"]["layers_with_weights"] == 50
    assert steps[0]["weight"] == "_fc.weight" and steps[-1]["weight"] == "_conv_stem.weight"
    rhos = [s["spearman"] for s in steps]
    assert all(abs(r) < 0.35 for r in rhos), rhos
    assert abs(float(np.mean(rhos))) < 0.15 and max(s["top_iou"] for s in steps) < 0.2
    assert document["random_logit"]["index"] != 285
    rows = (out / "cat.sanity.csv").read_text().splitlines()
    assert rows[0].startswith("test,position,layer,weight,op") and len(rows) == 1 + 4 + 1
    picture = np.asarray(Image.open(out / "cat.sanity.png").convert("RGB")).astype(int)
    # the strip: 5 tiles in the cascading row; the original tile is coloured, the picture is not blank
    assert picture.shape[1] >= 5 * 112 and picture.std() > 20
    assert "cascading 1 (1 layer(s) randomised): Spearman" in done.output


def test_compare_sanity_catches_a_method_that_ignores_the_model(probe, picture, tmp_path):
    """Maps of two "methods" on every exported model: occlusion itself (it reproduces occlude sanity's numbers)
    and an edge map of the input, which ignores the model: its similarity is 1 at every step."""
    models = tmp_path / "models"
    run = occlude_cli.sanity_image(
        probe, picture, tmp_path / "s", patch=4, stride=2, score="logit", mode="both", export_models=models
    )
    pixels = np.asarray(Image.open(picture), dtype=np.float64)
    edges = np.hypot(*np.gradient(pixels))
    np.save(tmp_path / "edges.npy", edges)
    np.save(tmp_path / "occlusion.npy", run.result.explanation.map)
    for step in run.result.steps:
        stem = Path(step.model_file).stem
        np.save(models / f"{stem}.npy", edges)
    done = occlude(
        "compare", probe, picture, tmp_path / "edges.npy", "--sanity", models, "--patch", "4", "--stride", "2",
        "--score", "logit", "--fractions", "", "--steps", "4", "-o", tmp_path / "c", "--name", "edges",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    sanity = json.loads((tmp_path / "c" / "picture.compare.json").read_text())["sanity"]
    assert len(sanity["steps"]) == 6 and all(s["status"] == "ok" for s in sanity["steps"])
    assert all(s["spearman"] == pytest.approx(1.0) and s["ssim"] == pytest.approx(1.0) for s in sanity["steps"])
    assert "randomisation test of edges" in done.output
    # occlusion's own maps on the exported models: the numbers occlude sanity reported
    for step in run.result.steps:
        np.save(models / f"{Path(step.model_file).stem}.npy", step.map)
    done = occlude(
        "compare", probe, picture, tmp_path / "occlusion.npy", "--sanity", models, "--patch", "4", "--stride", "2",
        "--score", "logit", "--fractions", "", "--steps", "4", "-o", tmp_path / "d", "--json",
    )  # fmt: skip
    steps = json.loads(done.stdout)["sanity"]["steps"]
    for row, step in zip(steps, run.result.steps):
        assert (row["test"], row["position"]) == (step.mode, step.position)
        assert row["spearman"] == pytest.approx(step.similarity["spearman"], abs=1e-12)
        assert row["ssim"] == pytest.approx(step.similarity["ssim"], abs=1e-12)


def test_compare_sanity_refuses_another_models_folder_and_a_folder_without_maps(probe, picture, tmp_path):
    models = tmp_path / "models"
    occlude_cli.sanity_image(probe, picture, tmp_path / "s", patch=4, export_models=models)
    np.save(tmp_path / "m.npy", np.ones((16, 16)))
    done = runner.invoke(app, ["compare", str(probe), str(picture), str(tmp_path / "m.npy"), "--sanity", str(models)])
    assert done.exit_code == 1 and "no maps in" in done.output
    np.save(models / "cascading-01.npy", np.ones((16, 16)))
    other = ignoring_probe(tmp_path / "other.onnx")
    onnx_model = onnx.load(str(other))
    onnx_model.graph.initializer[0].float_data.append(0.0)  # another file: another sha256
    onnx_model.doc_string = "another"
    onnx.save(onnx_model, str(other))
    done = runner.invoke(app, ["compare", str(other), str(picture), str(tmp_path / "m.npy"), "--sanity", str(models)])
    assert done.exit_code == 1 and "randomised from another model" in done.output
    done = runner.invoke(app, ["compare", str(probe), str(picture), str(tmp_path / "m.npy"), "--sanity", str(tmp_path)])
    assert done.exit_code == 1 and "holds no sanity_models.json" in done.output and "Traceback" not in done.output
    assert "--sanity folder" in done.output and "occlude sanity --export-models" in done.output


@pytest.mark.parametrize(
    "edited",
    ["[1, 2]", '{"kind": "sanity-models", "models": ["a"]}', '{"kind": "sanity-models", "models": "abc"}',
     '{"kind": "sanity-models", "models": [], "model": "x"}', "{not json"],
)  # fmt: skip
def test_compare_sanity_refuses_a_manifest_edited_into_another_shape(probe, picture, tmp_path, edited):
    """A sanity_models.json edited by hand into another shape was an internal error (AttributeError): one
    error line naming --sanity and the file, exit 1."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "sanity_models.json").write_text(edited)
    np.save(tmp_path / "m.npy", np.ones((16, 16)))
    done = runner.invoke(app, ["compare", str(probe), str(picture), str(tmp_path / "m.npy"), "--sanity", str(models)])
    assert done.exit_code == 1 and "Traceback" not in done.output and "internal error" not in done.output
    assert done.output.startswith("error: --sanity folder ") and "sanity_models.json" in done.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layers", "9"], "--layers"),
        (["--layers", "nope"], "no layer with weights is named 'nope'"),
        (["--layers", "1", "--steps", "2"], "give --layers or --steps, not both"),
        (["--steps", "0"], "--steps must be a whole number of at least 1"),
        (["--mode", "sideways"], "sideways"),
        (["--top-fraction", "2"], "--top-fraction"),
    ],
)
def test_bad_flags_are_one_line(probe, picture, tmp_path, flags, message):
    done = runner.invoke(app, ["sanity", str(probe), str(picture), "-o", str(tmp_path / "o"), *flags])
    assert done.exit_code in (1, 2) and message in done.output, done.output
    assert "Traceback" not in done.output
    assert not (tmp_path / "o" / "picture.sanity.json").exists()


def test_layers_by_name_and_position_and_the_library_call(probe, picture, tmp_path):
    run = occlude_cli.sanity_image(probe, picture, tmp_path / "o", layers=["b_w", 1], patch=4, stride=4)
    assert [s.position for s in run.result.steps] == [1, 2]
    assert run.document["kind"] == "sanity" and run.models is None
    assert all(s["model_file"] is None for s in run.document["steps"])  # temporary copies, gone
    done = occlude("sanity", probe, picture, "--layers", "conv_a", "--patch", "4", "--json", "-o", tmp_path / "j")
    assert [s["layer"] for s in json.loads(done.stdout)["steps"]] == ["conv_a"]


def test_export_into_an_existing_folder_keeps_what_is_not_its_own(probe, picture, tmp_path):
    """--export-models into a folder that holds other files: they stay; a file named like an exported model that no
    earlier export there lists is never replaced (one error line before any map); a second export replaces the
    first and leaves none of its models behind (sanity_models.json lists exactly the .onnx files there); a
    manifest naming files outside the folder deletes nothing."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    (models / "mine.onnx").write_bytes(probe.read_bytes())
    common = [probe, picture, "--patch", "4", "-o", tmp_path / "o", "--export-models", models, "-q"]
    assert occlude("sanity", *common, "--mode", "both").exit_code == 0
    listed = {m["file"] for m in json.loads((models / "sanity_models.json").read_text())["models"]}
    assert listed == {f"{mode}-0{k}.onnx" for mode in ("cascading", "independent") for k in (1, 2, 3)}
    assert occlude("sanity", *common, "--layers", "1").exit_code == 0
    listed = {m["file"] for m in json.loads((models / "sanity_models.json").read_text())["models"]}
    assert listed == {"cascading-01.onnx"}
    assert sorted(p.name for p in models.iterdir()) == [
        "cascading-01.onnx",
        "mine.onnx",
        "notes.txt",
        "sanity_models.json",
    ]
    # someone's own file under an exported model's name, no manifest listing it: refused, kept
    (models / "sanity_models.json").unlink()
    before = (models / "cascading-01.onnx").read_bytes()
    done = runner.invoke(app, [str(a) for a in ["sanity", *common]])
    assert (
        done.exit_code == 1 and done.stderr.startswith("error: --export-models ") and "cascading-01.onnx" in done.stderr
    )
    assert (models / "cascading-01.onnx").read_bytes() == before
    # a hand-made manifest that lists files outside the folder: nothing outside is touched
    outside = tmp_path / "precious.onnx"
    outside.write_bytes(b"keep")
    (models / "cascading-01.onnx").unlink()
    manifest = {"kind": "sanity-models", "models": [{"file": "../precious.onnx"}, {"file": "/etc/hostname"}]}
    (models / "sanity_models.json").write_text(json.dumps(manifest))
    assert occlude("sanity", *common, "--layers", "1").exit_code == 0
    assert outside.read_bytes() == b"keep" and Path("/etc/hostname").exists()


def test_the_table_title_of_a_model_without_labels(probe, picture, tmp_path):
    done = runner.invoke(app, [str(a) for a in ["sanity", probe, picture, "--patch", "4", "-o", tmp_path / "o"]])
    assert done.exit_code == 0
    assert re.search(r"occlude sanity: class \d+, 3 layers with weights", done.stdout), done.stdout
