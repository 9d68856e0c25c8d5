"""The limit of exact incremental inference (issue 35): the dirty region of a window, propagated through the graph,
against hand computations and against what really changes when onnxruntime runs the occluded input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from occlude_cli.core.engine import window_grid
from occlude_cli.inference.limit import dirty_shares, incremental_limit, measure_node_times, run_limit
from occlude_cli.inference.receptive import GraphInfo
from tests.test_incremental import ARCHITECTURES, Net

ROOT = Path(__file__).resolve().parents[1]
EFFNET = ROOT / "sample_models" / "efficientnet_lite0.onnx"
CAT = ROOT / "sample_images" / "cat.jpg"


def linear_chain(path: Path) -> Path:
    """conv k3 s1 p1 -> conv k3 s2 p1 (dilation 1) -> conv k3 s1 p2 dilation 2 -> global pool: no activation, so
    every position a window reaches really changes."""
    net = Net([1, 1, 16, 16])
    x = net.conv("image", 4, 3, 1, pads=[1, 1, 1, 1])
    x = net.conv(x, 4, 3, 2, pads=[1, 1, 1, 1])
    x = net.conv(x, 4, 3, 1, pads=[2, 2, 2, 2], dilation=2)
    net.head(x)
    return net.save(path)


def test_dirty_regions_by_hand(tmp_path):
    path = linear_chain(tmp_path / "l.onnx")
    info = GraphInfo(path, input_shape=[1, 1, 16, 16])
    convs = [n.output[0] for n in info.model.graph.node if n.op_type == "Conv"]
    shares = dirty_shares(info, np.asarray([(4, 4, 2, 2), (0, 0, 1, 1)]))
    # conv1 (k3 s1 p1): rows/cols 3..6 of 16 for the first window, 0..1 for the corner pixel
    assert shares[convs[0]].tolist() == [16 / 256, 4 / 256]
    # conv2 (k3 s2 p1): position j reads 2j-1..2j+1; those meeting 3..6 are j = 1..3, those meeting 0..1 j = 0..1
    assert shares[convs[1]].tolist() == [9 / 64, 4 / 64]
    # conv3 (k3, dilation 2, p2): j reads j-2, j, j+2; meeting 1..3: j = 0..5; meeting 0..1: j = 0..3
    assert shares[convs[2]].tolist() == [36 / 64, 16 / 64]
    # after the global pool everything is dirty
    assert shares["scores"].tolist() == [1.0, 1.0]


def _changed_positions(path: Path, shape, windows, layout="NCHW"):
    """Which positions of every 4-D tensor change when each window is occluded (onnxruntime, all tensors as
    outputs): {tensor: (N, H, W) bool}, and the tensors' spatial axes."""
    model = onnx.load(str(path))
    info = GraphInfo(model, input_shape=shape)
    names = [o for n in model.graph.node for o in n.output if o and len(info.shapes.get(o, ())) == 4]
    model.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(shape[1:]).astype(np.float32)
    axes = (1, 2) if layout == "NCHW" else (0, 1)
    batch = np.repeat(sample[None], len(windows) + 1, axis=0)
    for i, (y, x, h, w) in enumerate(windows.tolist()):
        index = [slice(None)] * 3
        index[axes[0]], index[axes[1]] = slice(y, y + h), slice(x, x + w)
        batch[i + 1][tuple(index)] = rng.standard_normal(batch[i + 1][tuple(index)].shape)
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": batch})))
    return {n: outs[n] for n in names}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_change_lies_inside_the_dirty_region(tmp_path, name):
    """Soundness on graphs with strides, asymmetric and SAME padding, dilation, depthwise groups, pooling with
    ceil_mode, residual additions, reflect padding, channel Concat and NHWC transposes: every position that
    changes in onnxruntime's own run of the occluded input lies inside the propagated dirty region."""
    path = ARCHITECTURES[name](tmp_path / f"{name}.onnx")
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    shape = [1] + [d.dim_value for d in list(dims)[1:]]
    layout = "NHWC" if name == "nhwc" else "NCHW"
    extent = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    windows = window_grid(extent, (5, 4), (3, 3))
    outs = _changed_positions(path, shape, windows, layout)
    info = GraphInfo(path, input_shape=shape)
    from occlude_cli.inference.limit import _walk

    shares, extents = _walk(info, windows, layout)
    checked = 0
    for tensor, values in outs.items():
        if tensor not in extents:
            continue  # dirty everywhere: nothing to check
        spatial = (2, 3) if values.shape[2:] == extents[tensor] else (1, 2)
        changed = np.any(values[1:] != values[:1], axis=tuple(a for a in (1, 2, 3) if a not in spatial))
        counted = changed.reshape(len(windows), -1).sum(axis=1) / changed[0].size
        assert np.all(counted <= shares[tensor] + 1e-12), tensor  # never more positions than the dirty region
        for i in range(len(windows)):
            ys, xs = np.nonzero(changed[i])
            if len(ys):
                assert shares[tensor][i] > 0, tensor
        checked += 1
    assert checked >= 4


def test_without_activations_the_dirty_region_is_exactly_what_changes(tmp_path):
    path = linear_chain(tmp_path / "l.onnx")
    windows = window_grid((16, 16), (3, 2), (2, 1))
    outs = _changed_positions(path, [1, 1, 16, 16], windows)
    info = GraphInfo(path, input_shape=[1, 1, 16, 16])
    shares = dirty_shares(info, windows)
    for tensor, values in outs.items():
        changed = np.any(values[1:] != values[:1], axis=1)  # (N, H, W)
        np.testing.assert_allclose(changed.reshape(len(windows), -1).mean(axis=1), shares[tensor], err_msg=tensor)


def test_the_sample_models_limit_is_the_issues():
    """Issue 35 computed the dirty share of EfficientNet-Lite0's multiply-adds as 58%, 56% and 55% (limits
    1.71x, 1.78x, 1.83x) at 32/16, 16/8 and 8/4, with 0.9% of the 112x112 stage, 2% of the 56x56 and 99.8% of
    the 7x7 dirty at 16/8."""
    info = GraphInfo(EFFNET, input_shape=[1, 3, 224, 224])
    got = {}
    for patch, stride in ((32, 16), (16, 8), (8, 4)):
        limit = incremental_limit(info, window_grid((224, 224), (patch, patch), (stride, stride)))
        got[patch] = limit
        assert limit.weights == "cost model"
        assert limit.speedup > limit.speedup_macs > 1.0  # the high-resolution stages are memory-bound
    assert [round(got[p].macs_share, 2) for p in (32, 16, 8)] == [0.59, 0.56, 0.55]
    assert [round(got[p].speedup_macs, 2) for p in (32, 16, 8)] == [1.71, 1.77, 1.83]
    stages = {s.extent: s.dirty_share for s in got[16].stages}
    assert round(stages[(112, 112)], 3) == 0.009 and round(stages[(56, 56)], 2) == 0.02
    assert stages[(7, 7)] > 0.998 and stages[None] == 1.0
    assert abs(sum(s.time_share for s in got[16].stages) - 1.0) < 1e-9


def test_measured_weights(tmp_path):
    path = ARCHITECTURES["residual"](tmp_path / "r.onnx")
    info = GraphInfo(path, input_shape=[1, 3, 32, 32])
    times = measure_node_times(info.model, [1, 3, 32, 32], batch=2, runs=2)
    assert times and all(seconds >= 0 for _, seconds, _ in times)
    windows = window_grid((32, 32), (8, 8), (4, 4))
    measured = incremental_limit(info, windows, node_times=times)
    estimated = incremental_limit(info, windows)
    assert measured.weights == "measured" and estimated.weights == "cost model"
    assert 0 < measured.time_share <= 1 and measured.macs_share == estimated.macs_share
    assert abs(sum(s.time_share for s in measured.stages) - 1.0) < 1e-9


def test_the_limit_is_cached_and_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("OCCLUDE_CACHE_DIR", str(tmp_path / "cache"))
    windows = window_grid((224, 224), (32, 32), (16, 16))
    first = run_limit(EFFNET, [1, 3, 224, 224], windows, model_sha256="a" * 64)
    assert list((tmp_path / "cache" / "limit").iterdir())
    again = run_limit(EFFNET, [1, 3, 224, 224], windows, model_sha256="a" * 64)
    assert json.dumps(first) == json.dumps(again)
    assert round(first["speedup_macs"], 2) == 1.71 and first["time_weights"] == "cost model"


def test_dry_run_prints_the_limit_and_the_record_holds_it(tmp_path):
    from typer.testing import CliRunner

    from occlude_cli.cli import app

    dry = CliRunner().invoke(app, ["run", str(EFFNET), str(CAT), "--dry-run", "--patch", "16", "--stride", "8"])
    assert dry.exit_code == 0, dry.output
    line = [x for x in dry.output.splitlines() if x.startswith("limit of exact incremental inference")]
    assert len(line) == 1 and "1.77x by multiply-adds" in line[0] and "by time (weights: cost model)" in line[0]
    off = CliRunner().invoke(app, ["run", str(EFFNET), str(CAT), "--dry-run", "--incremental", "off"])
    assert "limit of exact" not in off.output
    out = tmp_path / "o"
    done = CliRunner().invoke(
        app, ["run", str(EFFNET), str(CAT), "--patch", "32", "--stride", "16", "-q", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    record = json.loads((out / "cat.json").read_text())["params"]["incremental"]
    assert record["used"] and round(record["limit"]["speedup_macs"], 2) == 1.71
    assert record["limit"]["speedup_time"] > record["estimated_speedup"] > 1.3
