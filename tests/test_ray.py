"""The Ray backend against a real local Ray instance (2 CPUs): the same results as the local run, in input
order, with bounded in-flight work, a killed worker process that loses and duplicates nothing, chunked
scoring of one big input equal to the local engine and to a hand-computed reference, and a clear one-line
error without the extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from occlude_cli import ExplainOptions, OccludeError, explain, resolve_preprocessing, write_explanation
from occlude_cli.core.engine import Occlusion, occlusion_sensitivity, score_windows, window_grid
from occlude_cli.loaders.model import OnnxClassifier

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS
from onnx_models import rectangle_logit, rectangle_model

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
DIGIT_IMAGES = [SAMPLE_IMAGES / f"digit_{d}.png" for d in (0, 3, 7)]


def test_clear_error_without_ray():
    """With ``ray`` unimportable, require_ray() and RayExecutor raise one OccludeError line naming the extra."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from occlude_cli.errors import OccludeError\n"
        "from occlude_cli.executors.ray_backend import RayExecutor, require_ray\n"
        "for call in (require_ray, lambda: RayExecutor({'path': 'm.onnx'}, workers=1)):\n"
        "    try:\n"
        "        call()\n"
        "    except OccludeError as exc:\n"
        "        print('ERR', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = "ERR running on Ray needs the ray extra: pip install 'occlude[ray]'"
    assert done.stdout.splitlines() == [expected, expected]
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"\nRay start-up: {time.perf_counter() - started:.2f} s")
    # The test module's compute functions travel by value: workers cannot import tests/ by name.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="class")
def digits_executor(ray_instance):
    """2 actors x 1 CPU: all of the instance; shared by the tests of TestDigitsPool, freed after them."""
    from occlude_cli.executors.ray_backend import RayExecutor

    executor = RayExecutor({"path": DIGITS, "device": "cpu"}, threads_per_worker=1, max_in_flight=4)
    assert executor.workers == 2 and len(set(executor.actor_pids())) == 2  # default: the instance's 2 CPUs
    yield executor
    executor.shutdown()


@pytest.fixture(scope="module")
def digits():
    model = OnnxClassifier(DIGITS, device="cpu")
    return model, resolve_preprocessing(model)


def _files(folder):
    """Every file's bytes; a run's JSON documents without the command line (a run on Ray was typed with --ray)."""
    found = {}
    for p in sorted(folder.iterdir()):
        data = p.read_bytes()
        document = json.loads(data) if p.suffix == ".json" else None
        if isinstance(document, dict):
            document.pop("command", None)
            data = json.dumps(document, sort_keys=True).encode()
        found[p.name] = data
    return found


def slow_explain(model, path, *, delay, **kwargs):
    """explain() after a pause, reporting the process that computed it (widens the window for the kill)."""
    time.sleep(delay)
    return os.getpid(), explain(model, path, **kwargs)


class TestDigitsPool:
    """Tests sharing one pool of 2 digits actors (starting actors costs seconds on a loaded machine)."""

    def test_map_images_gives_the_local_outputs_in_input_order(self, tmp_path, digits_executor, digits):
        """Every output file written from the actors' Explanations is byte-identical to the local one; a bad
        image comes back as the OccludeError local explain() raises; a None path passes through in place."""
        model, preprocessing = digits
        corrupt = tmp_path / "corrupt.png"
        corrupt.write_bytes(DIGIT_IMAGES[0].read_bytes()[:60])
        items = [DIGIT_IMAGES[2], corrupt, None, DIGIT_IMAGES[0], DIGIT_IMAGES[1]]
        options = ExplainOptions(patch=2, stride=1, top_k=2)
        kwargs = dict(options=options, preprocessing=preprocessing, labels=model.labels)
        results = list(digits_executor.map_images(items, kwargs))
        assert [item for item, _ in results] == items
        for n, (item, result) in enumerate(results):
            if item is None:
                assert result is None
                continue
            try:
                local = explain(model, item, options, preprocessing=preprocessing, labels=model.labels)
            except OccludeError as exc:
                assert isinstance(result, OccludeError) and str(result) == str(exc)
                continue
            assert not isinstance(result, BaseException), result
            assert result.targets == local.targets
            np.testing.assert_array_equal(result.occlusion.window_scores, local.occlusion.window_scores)
            write_explanation(result, tmp_path / f"ray{n}", "x", all_classes=True, timing=False)
            write_explanation(local, tmp_path / f"local{n}", "x", all_classes=True, timing=False)
            ray_files, local_files = _files(tmp_path / f"ray{n}"), _files(tmp_path / f"local{n}")
            assert sorted(ray_files) == [
                "x.classes.npy",
                "x.heatmap.png",
                "x.json",
                "x.npy",
                "x.overlay.png",
                "x.top_class.npy",
                "x.topk.npy",
            ]
            assert ray_files == local_files
        assert sum(isinstance(r, OccludeError) for _, r in results) == 1

    def test_back_pressure_bounds_work_in_flight(self, digits_executor, digits):
        """A long lazy iterator is read only max_in_flight items ahead of what has been yielded, and the
        results still come back in input order."""
        model, preprocessing = digits
        pulled = []

        def source():
            for i in range(40):
                pulled.append(i)
                yield (i, DIGIT_IMAGES[i % 3] if i % 5 else None)

        kwargs = dict(options=ExplainOptions(patch=4), preprocessing=preprocessing, labels=model.labels)
        seen = []
        for (i, _), result in digits_executor.map_images(source(), kwargs, path_of=lambda item: item[1]):
            seen.append(i)
            assert len(pulled) - len(seen) <= digits_executor.max_in_flight
            assert (result is None) == (i % 5 == 0)
            if result is not None:
                assert result.target == [0, 3, 7][i % 3]
        assert seen == list(range(40))

    def test_abandoned_map_does_not_leak_into_the_next(self, digits_executor, digits):
        """A map left after two results (as Ctrl-C on the driver leaves it) leaves tasks running; the next map
        on the same executor still gets its own results, each once, in order."""
        model, preprocessing = digits
        kwargs = {"options": ExplainOptions(patch=2), "preprocessing": preprocessing, "labels": model.labels}
        first = digits_executor.map_images([DIGIT_IMAGES[0]] * 8, kwargs)
        assert [next(first)[1].target for _ in range(2)] == [0, 0]
        first.close()
        items = [DIGIT_IMAGES[2], DIGIT_IMAGES[1], DIGIT_IMAGES[2]]
        assert [(item, result.target) for item, result in digits_executor.map_images(items, kwargs)] == [
            (DIGIT_IMAGES[2], 7),
            (DIGIT_IMAGES[1], 3),
            (DIGIT_IMAGES[2], 7),
        ]

    def test_chunked_scoring_uses_the_engine_score_windows_contract(self, digits_executor, digits):
        """On the digits CNN with probabilities, every chunk size (1 window, odd sizes, all in one) gives the
        local engine's scores."""
        model, preprocessing = digits
        from occlude_cli.loaders.images import prepare_image

        sample = prepare_image(DIGIT_IMAGES[1], preprocessing).model_input
        windows = window_grid(sample.shape[1:], (2, 2), (1, 1))
        baseline = np.zeros_like(sample)
        local = score_windows(sample, baseline, windows, model.scorer("prob", False), batch_size=8, spatial_axes=(1, 2))
        for chunk_size in (1, 5, 49, None):
            scores = digits_executor.score_windows(
                sample,
                baseline,
                windows,
                None,
                batch_size=8,
                spatial_axes=(1, 2),
                score_kind="prob",
                chunk_size=chunk_size,
            )
            np.testing.assert_allclose(scores, local, rtol=0, atol=1e-7)

    def test_killed_worker_loses_and_duplicates_nothing(self, digits_executor, digits):
        """SIGKILL one actor's process mid-run: Ray restarts the actor and re-runs its unfinished task, and
        the driver still gets exactly one correct result per image, in order."""
        model, preprocessing = digits
        items = [DIGIT_IMAGES[i % 3] for i in range(12)]
        options = ExplainOptions(patch=2)
        kwargs = dict(options=options, preprocessing=preprocessing, labels=model.labels, delay=0.3)
        expected = {p: explain(model, p, options, preprocessing=preprocessing).map for p in DIGIT_IMAGES}
        executor = digits_executor
        before = set(executor.actor_pids())
        results = []
        for item, result in executor.map_images(items, kwargs, compute=slow_explain):
            results.append((item, result))
            if len(results) == 1:  # both actors are busy with later images now
                victim = min(before)
                os.kill(victim, signal.SIGKILL)
        after = set(executor.actor_pids())
        assert [item for item, _ in results] == items
        pids = [result[0] for _, result in results]
        assert victim not in after and len(after - before) == 1, (before, after)
        assert set(pids[1:]) & (after - before), "the restarted actor did some of the work"
        for item, (_, explanation) in results:
            np.testing.assert_array_equal(explanation.map, expected[item])


def crash_on_seven(model, path, **kwargs):
    """explain(), except that an image named digit_7 kills the worker process, as a segfault in onnxruntime
    or the kernel's OOM killer would."""
    if "digit_7" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
    return explain(model, path, **kwargs)


def test_an_input_that_kills_its_worker_every_time_fails_alone(ray_instance, digits):
    """A poison input is retried task_retries times, then recorded as failed; the run goes on, in order."""
    from occlude_cli.executors.ray_backend import RayExecutor

    model, preprocessing = digits
    items = [DIGIT_IMAGES[0], DIGIT_IMAGES[2], DIGIT_IMAGES[1], DIGIT_IMAGES[0], DIGIT_IMAGES[1]]
    kwargs = {"options": ExplainOptions(patch=2), "preprocessing": preprocessing, "labels": model.labels}
    with RayExecutor({"path": DIGITS, "device": "cpu"}, workers=2, task_retries=1) as executor:
        results = list(executor.map_images(items, kwargs, compute=crash_on_seven))
        again = executor.map_images(items[:1] + items[2:], kwargs)  # every actor back in the pool
        assert [r.target for _, r in again] == [0, 3, 0, 3]
    assert [item for item, _ in results] == items
    assert isinstance(results[1][1], OccludeError)
    assert str(results[1][1]).startswith("the Ray worker computing this input died 2 times")
    assert [r.target for i, (_, r) in enumerate(results) if i != 1] == [0, 3, 0, 3]


def _occlusion_from(score_windows_fn, inputs, score, *, patch, stride, baseline, batch_size, axes):
    """What occlusion_sensitivity assembles, with the window scoring function injected."""
    windows = window_grid(inputs.shape[1:], patch, stride)
    original = score(inputs[None])[0].astype(np.float64)
    scores = score_windows_fn(inputs, baseline, windows, score, batch_size=batch_size, spatial_axes=axes)
    return Occlusion(
        windows=windows,
        original_scores=original,
        window_scores=scores,
        size=inputs.shape[1:],
        forward_passes=len(windows) + 1,
    )


def test_chunked_scoring_of_one_big_input_equals_local_and_hand_computed(tmp_path, ray_instance):
    """A 192x256 input at patch 8 / stride 4 (2,961 windows) scored in chunks by 2 actors: the same window
    scores and map as the local engine, and the map a slow obvious loop computes from the model's formula."""
    from occlude_cli.executors.ray_backend import RayExecutor, score_chunks_on_ray

    size, rect = (192, 256), (40, 60, 130, 170)
    path = rectangle_model(tmp_path / "rect.onnx", size=size, rect=rect)
    model = OnnxClassifier(path, device="cpu")
    rng = np.random.default_rng(3)
    inputs = rng.random((1, *size), dtype=np.float32)
    baseline = np.full_like(inputs, 0.25)
    patch, stride = (8, 8), (4, 4)
    score = model.scorer("logit", False)
    local = occlusion_sensitivity(inputs, score, patch=patch, stride=stride, baseline=baseline, batch_size=64)
    ticks = []
    with RayExecutor({"path": str(path), "device": "cpu"}, workers=2, threads_per_worker=1) as executor:
        chunked = score_chunks_on_ray(executor, score_kind="logit", outputs_are_probabilities=False, chunk_size=200)
        on_ray = _occlusion_from(
            lambda *a, **k: chunked(*a, progress=lambda d, t: ticks.append((d, t)), **k),
            inputs,
            score,
            patch=patch,
            stride=stride,
            baseline=baseline,
            batch_size=64,
            axes=(1, 2),
        )
    assert len(local.windows) == 47 * 63
    np.testing.assert_array_equal(on_ray.windows, local.windows)
    np.testing.assert_allclose(on_ray.window_scores, local.window_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(on_ray.attributions([0, 2]), local.attributions([0, 2]), rtol=0, atol=1e-6)
    assert ticks[-1] == (len(local.windows), len(local.windows)) and len(ticks) == 15  # ceil(2961 / 200) chunks
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)
    # slow obvious reference: each window's drop for class 0, then the mean over covering windows per pixel
    original = rectangle_logit(inputs, rect)
    total, count = np.zeros(size), np.zeros(size)
    for y, x, h, w in local.windows.tolist()[::7]:  # every 7th window, checked against the Ray scores
        occluded = inputs.copy()
        occluded[:, y : y + h, x : x + w] = 0.25
        index = int(np.flatnonzero((local.windows[:, 0] == y) & (local.windows[:, 1] == x))[0])
        assert abs(on_ray.window_scores[index, 0] - rectangle_logit(occluded, rect)) < 1e-5
    for (y, x, h, w), drop in zip(local.windows.tolist(), original - on_ray.window_scores[:, 0], strict=True):
        total[y : y + h, x : x + w] += drop
        count[y : y + h, x : x + w] += 1
    np.testing.assert_allclose(on_ray.attribution(0), total / count, rtol=0, atol=1e-5)


def test_bad_model_and_bad_parameters_are_one_line_errors(ray_instance, tmp_path):
    from occlude_cli.executors.ray_backend import RayExecutor

    with pytest.raises(OccludeError, match="workers must be at least 1"):
        RayExecutor({"path": DIGITS}, workers=0)
    with pytest.raises(OccludeError, match="model_spec needs 'path'"):
        RayExecutor({"model": DIGITS}, workers=1)
    with pytest.raises(OccludeError, match="Ray workers could not load the model: .*model not found"):
        RayExecutor({"path": str(tmp_path / "missing.onnx"), "device": "cpu"}, workers=1)
    with pytest.raises(OccludeError, match=r"could not start 3 workers with 1 CPUs .* the cluster has \{'CPU': 2.0"):
        RayExecutor({"path": DIGITS, "device": "cpu"}, workers=3, start_timeout=3)


# ------------------------------------------------------------------------------ occlude run --ray (the CLI)


def _run_cli(*args, env=None):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "occlude_cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def test_run_with_ray_gives_the_local_outputs_byte_for_byte(tmp_path, ray_instance):
    """The real CLI on a folder with a broken image, once locally and once on the (already running) local Ray
    instance: the same files, byte for byte, the same summary and the same exit code."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    address = ray_instance.get_runtime_context().gcs_address
    local = _run_cli("run", DIGITS, folder, "--out", tmp_path / "local", "--no-timing", "-q")
    on_ray = _run_cli(
        "run", DIGITS, folder, "--out", tmp_path / "ray", "--no-timing", "-q", "--ray", address, "--workers", "2"
    )
    assert local.returncode == on_ray.returncode == 3, (local.stderr, on_ray.stderr)
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["counts"] == {"ok": 3, "failed": 1, "skipped": 0, "pending": 0}


def test_run_with_ray_without_the_extra_is_one_line(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None; from occlude_cli.cli.app import main; "
        f"sys.argv = ['occlude', 'run', {str(DIGITS)!r}, {str(SAMPLE_IMAGES / 'digit_0.png')!r}, '--out', "
        f"{str(tmp_path / 'o')!r}, '--ray']; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: running on Ray needs the ray extra: pip install 'occlude[ray]'"
    ]


def test_one_image_on_ray_is_scored_in_window_chunks_with_the_local_map(tmp_path, ray_instance):
    address = ray_instance.get_runtime_context().gcs_address
    image = SAMPLE_IMAGES / "digit_7.png"
    local = _run_cli(
        "run",
        DIGITS,
        image,
        "--out",
        tmp_path / "local",
        "--no-timing",
        "-q",
        "--patch",
        "2",
        "--stride",
        "1",
        "--all-classes",
    )
    on_ray = _run_cli(
        "run",
        DIGITS,
        image,
        "--out",
        tmp_path / "ray",
        "--no-timing",
        "-q",
        "--patch",
        "2",
        "--stride",
        "1",
        "--all-classes",
        "--ray",
        address,
        "--workers",
        "2",
    )
    assert local.returncode == on_ray.returncode == 0, (local.stderr, on_ray.stderr)
    for name in ("digit_7.npy", "digit_7.classes.npy"):
        np.testing.assert_allclose(
            np.load(tmp_path / "ray" / name), np.load(tmp_path / "local" / name), rtol=1e-6, atol=1e-7
        )
    record = json.loads((tmp_path / "ray" / "digit_7.json").read_text())
    assert record["map_info"]["windows"] == 49
    assert record["params"]["parallel_scoring"] == {"backend": "RayExecutor", "workers": 2}


def test_ctrl_c_on_a_ray_run_leaves_complete_files_and_resume_finishes(tmp_path, ray_instance):
    """SIGINT to the driver of `occlude run --ray` once the first image is written: exit 130, only complete
    files; `--resume` (without Ray) finishes, and the folder equals an uninterrupted local run's."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(30):  # enough that the run cannot finish before the signal arrives
        (folder / f"d{i:02d}.png").write_bytes((SAMPLE_IMAGES / f"digit_{(0, 3, 7)[i % 3]}.png").read_bytes())
    address = ray_instance.get_runtime_context().gcs_address
    out = tmp_path / "out"
    args = [
        DIGITS,
        folder,
        "--out",
        out,
        "--no-timing",
        "--patch",
        "1",
        "--stride",
        "1",
        "--all-classes",
        "--top-k",
        "3",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "occlude_cli", "run", *map(str, args), "--ray", address, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stderr.readline()
    while line and not line.startswith("status=ok "):
        line = process.stderr.readline()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert not list(out.glob(".*.tmp"))
    for record in out.glob("d*.json"):
        json.loads(record.read_text())  # every JSON there is complete
    resumed = _run_cli("run", *args, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    full = _run_cli("run", *args[:3], tmp_path / "full", *args[4:], "-q")
    assert full.returncode == 0
    run_level = ("summary", "manifest")  # their rows say skipped where the other run says ok
    assert {k: v for k, v in _files(out).items() if not k.startswith(run_level)} == {
        k: v for k, v in _files(tmp_path / "full").items() if not k.startswith(run_level)
    }


def test_a_segmentation_run_on_ray_gives_the_local_outputs(tmp_path, ray_instance):
    """Issue 28: a task's images run on Ray workers (each rebuilds the model for its task) with the local
    bytes; a single image of a task runs on one worker (window chunks serve classifier outputs)."""
    model = SAMPLE_MODELS / "segment_probe.onnx"
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    address = ray_instance.get_runtime_context().gcs_address
    args = ("run", model, folder, "--task", "segment", "--target", "warm", "--patch", "16", "--no-timing", "-q")
    local = _run_cli(*args, "--out", tmp_path / "local")
    on_ray = _run_cli(*args, "--out", tmp_path / "ray", "--ray", address, "--workers", "2")
    assert local.returncode == on_ray.returncode == 0, (local.stderr, on_ray.stderr)
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
    one = _run_cli(*args[:2], folder / "cat.jpg", *args[3:], "--out", tmp_path / "one", "--ray", address)
    assert one.returncode == 0, one.stderr  # one image of a task: on one worker, not in window chunks
    assert (tmp_path / "one" / "cat.npy").read_bytes() == (tmp_path / "local" / "cat.npy").read_bytes()
