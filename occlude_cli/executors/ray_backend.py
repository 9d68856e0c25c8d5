"""Running occlude on Ray: long-lived actors that each load the ONNX model once, fed through a
``ray.util.ActorPool`` with bounded in-flight work; results come back to the driver, which alone writes.

Two entry points:

* :class:`RayExecutor` ``.map_images(items, compute_kwargs)``: many images, one task per image, results
  yielded **in input order** (so the driver's outputs, summary and exit code are those of the local loop).
* :meth:`RayExecutor.score_windows` / :func:`score_chunks_on_ray`: one huge input, its windows split into
  chunks that the actors score in parallel (each runs the engine's own ``score_windows`` on its chunk with
  its own model); the chunks come back in order, so the engine's aggregation (``Occlusion``) is reused as is.

Faults: actors are created with ``max_restarts=-1`` and ``max_task_retries=task_retries`` (3), so when a
worker process dies (killed, OOM) Ray restarts the actor (which reloads the model) and re-runs the task it
had not finished; the driver sees exactly one result per item. An input whose task kills its worker every
time (a crash in onnxruntime, an image too large for memory) is given up after the retries and comes back as
an OccludeError for that item alone. An image failing for its own reasons is not a
fault: the actor catches the exception and returns it as the item's result (never retried).

Ray is an optional extra: everything that needs it goes through :func:`require_ray`, which raises a one-line
:class:`OccludeError` saying how to install it.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from collections import deque
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

from occlude_cli.errors import OccludeError

RAY_MISSING = "running on Ray needs the ray extra: pip install 'occlude[ray]'"
MODEL_SPEC_KEYS = ("path", "device", "input_name", "output_name", "threads", "io_binding", "batch_rewrite", "task")


def require_ray():
    """The ``ray`` module, or a one-line OccludeError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OccludeError(RAY_MISSING) from None
    return ray


def _occlude_module(name: str):
    """An occlude_cli module by its short name, imported in the worker process when first needed."""
    modules = {
        "engine": "occlude_cli.core.engine",
        "model": "occlude_cli.loaders.model",
        "explain": "occlude_cli.analyses.explain",
    }
    return importlib.import_module(modules[name])


def explain_image(model, path, **kwargs):
    """Default per-image work: ``explain(model, path, **kwargs)`` (kwargs: options, preprocessing, labels)."""
    return _occlude_module("explain").explain(model, path, **kwargs)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (OccludeError does), else a RuntimeError carrying its
    type name and message, so the driver can still record ``Type: message`` for the image."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class _Worker:
    """Body of the Ray actor: one OnnxClassifier per actor process, built once from ``model_spec``."""

    def __init__(self, model_spec: Dict[str, Any]) -> None:
        self.model = _occlude_module("model").OnnxClassifier(**model_spec)
        self.scorers: Dict[Tuple[str, bool], Callable] = {}

    def pid(self) -> int:
        """The actor's process id (tests kill it to check that Ray retries)."""
        return os.getpid()

    def compute(self, index: int, path, compute: Callable, kwargs: Dict[str, Any]) -> Tuple[int, Any]:
        """(index, ``compute(model, path, **kwargs)``). An exception of the image's own is returned, not
        raised, so that Ray does not retry it and the driver records the image as failed."""
        try:
            return index, compute(self.model, path, **kwargs)
        except Exception as exc:  # the image's own failure: a result, not a fault
            return index, _portable(exc)

    def score_chunk(
        self,
        index: int,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        score_kind: str,
        outputs_are_probabilities: bool,
        batch_size: int,
        spatial_axes: Tuple[int, int],
    ) -> Tuple[int, Any]:
        """(index, the engine's ``score_windows`` on one chunk of windows with this actor's model)."""
        try:
            key = (score_kind, bool(outputs_are_probabilities))
            if key not in self.scorers:
                self.scorers[key] = self.model.scorer(score_kind, bool(outputs_are_probabilities))
            engine = _occlude_module("engine")
            return index, engine.score_windows(
                inputs, baseline, windows, self.scorers[key], batch_size=batch_size, spatial_axes=spatial_axes
            )
        except Exception as exc:
            return index, _portable(exc)


def model_spec_of(model) -> Dict[str, Any]:
    """A model_spec (OnnxClassifier keyword arguments) for a loaded model, for actors to rebuild it from.

    Only what the model object records is recovered (path, input and output names, and the device as cpu
    or cuda); pass ``threads`` and ``device`` explicitly when they matter."""
    return {
        "path": str(model.path),
        "device": "cuda" if getattr(model, "provider", "") == "CUDAExecutionProvider" else "cpu",
        "input_name": model.input.name,
        "output_name": model.output.name,
        "task": getattr(model, "task", "classify"),
    }


def default_workers(resources: Dict[str, float], threads_per_worker: int, gpus_per_worker: float) -> int:
    """As many actors as the cluster's resources hold: GPUs // gpus_per_worker when actors take GPUs, else
    CPUs // threads_per_worker (at least 1)."""
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // threads_per_worker))


class RayExecutor:
    """A pool of long-lived Ray actors, each holding one onnxruntime session built from ``model_spec``.

    ``address``: None starts a new local Ray instance on this machine (or joins ``RAY_ADDRESS`` when that
    environment variable is set, as ``ray.init`` does); ``"auto"`` joins the cluster started with
    ``ray start``; ``"ray://host:10001"`` connects through Ray Client. When Ray is already initialised (a
    test, a notebook) that instance is used and left running on :meth:`shutdown`.

    ``workers`` actors (default: as many as the cluster holds, see :func:`default_workers`), each reserving
    ``threads_per_worker`` CPUs (its onnxruntime intra-op threads) and ``gpus_per_worker`` GPUs (fractions
    allowed: 0.5 puts two actors on one GPU; with a GPU the model spec's device "auto" picks CUDA). At most
    ``max_in_flight`` items are submitted and not yet yielded (default: twice the workers), so an iterator
    of a million images never holds more than that. ``quiet`` keeps Ray's start-up lines (a token
    authentication warning, "Started a local Ray instance") off stderr; stdout is never written.
    """

    def __init__(
        self,
        model_spec: Dict[str, Any],
        *,
        address: Optional[str] = None,
        workers: Optional[int] = None,
        threads_per_worker: int = 1,
        gpus_per_worker: float = 0.0,
        max_in_flight: Optional[int] = None,
        runtime_env: Optional[dict] = None,
        start_timeout: float = 300.0,
        task_retries: int = 3,
        quiet: bool = False,
    ) -> None:
        ray = require_ray()
        unknown = set(model_spec) - set(MODEL_SPEC_KEYS)
        if unknown or "path" not in model_spec:
            allowed = ", ".join(MODEL_SPEC_KEYS)
            raise OccludeError(f"model_spec needs 'path' and only {allowed}; got {sorted(model_spec)}")
        if workers is not None and int(workers) < 1:
            raise OccludeError(f"workers must be at least 1, got {workers}")
        if int(threads_per_worker) < 1:
            raise OccludeError(f"threads_per_worker must be at least 1, got {threads_per_worker}")
        if not 0 <= float(gpus_per_worker):
            raise OccludeError(f"gpus_per_worker must be 0 or more, got {gpus_per_worker}")
        if int(task_retries) < 0:
            raise OccludeError(f"task_retries must be 0 or more, got {task_retries}")
        if max_in_flight is not None and int(max_in_flight) < 1:
            raise OccludeError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.ray = ray
        self.task_retries = int(task_retries)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env=runtime_env,
                    ignore_reinit_error=True,
                    logging_level=logging.ERROR if quiet else logging.INFO,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise OccludeError(f"cannot start or reach Ray at {address or 'a local instance'}: {exc}") from None
        self.workers = (
            int(workers)
            if workers is not None
            else default_workers(ray.cluster_resources(), int(threads_per_worker), float(gpus_per_worker))
        )
        self.max_in_flight = 2 * self.workers if max_in_flight is None else int(max_in_flight)
        spec = dict(model_spec)
        if not spec.get("threads"):  # never onnxruntime's default (all cores) in an actor given a share of them
            spec["threads"] = int(threads_per_worker)
        if float(gpus_per_worker) == 0 and spec.get("device", "auto") == "auto":
            spec["device"] = "cpu"  # an actor without a GPU share must not grab a GPU it sees
        actor_class = ray.remote(_Worker).options(
            num_cpus=int(threads_per_worker),
            num_gpus=float(gpus_per_worker),
            max_restarts=-1,
            max_task_retries=int(task_retries),
        )
        self.actors = [actor_class.remote(spec) for _ in range(self.workers)]
        # Fail here, with the model's own message, when the actors cannot load the model, and with the
        # cluster's resources when they cannot be placed (Ray would otherwise wait for them forever).
        try:
            ray.get([actor.pid.remote() for actor in self.actors], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            have = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            self.shutdown()
            raise OccludeError(
                f"Ray could not start {self.workers} workers with {threads_per_worker} CPUs and {gpus_per_worker} "
                f"GPUs each within {start_timeout:g} s; the cluster has {have}"
            ) from None
        except ray.exceptions.RayActorError as exc:
            self.shutdown()
            cause = getattr(exc, "cause", None) or exc
            text = str(cause).strip().splitlines()
            reason = text[-1] if text else type(cause).__name__
            raise OccludeError(f"Ray workers could not load the model: {reason}") from None

    # ---------------------------------------------------------------- many images

    def map_images(
        self,
        items: Iterable[Any],
        compute_kwargs: Dict[str, Any],
        *,
        compute: Callable = explain_image,
        path_of: Callable[[Any], Any] = lambda item: getattr(item, "path", item),
    ) -> Iterator[Tuple[Any, Any]]:
        """Yield ``(item, result)`` for every item, **in input order**.

        ``result`` is ``compute(model, path_of(item), **compute_kwargs)`` computed on an actor (default: the
        :class:`Explanation` of ``explain``), or the exception the image raised there. Items whose
        ``path_of`` is None are passed through with result None, in their place, without a task: the driver
        can stream its resume-skipped images through the same loop. ``compute`` must be importable by the
        workers (a module-level function); ``compute_kwargs`` is put in the object store once.
        """
        kwargs_ref = self.ray.put(dict(compute_kwargs))

        def submit(actor, index, path):
            return actor.compute.remote(index, path, compute, kwargs_ref)

        return self._ordered(((item, path_of(item)) for item in items), submit)

    # ---------------------------------------------------------------- one huge input

    def score_windows(
        self,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        score: Any = None,
        *,
        batch_size: int = 32,
        spatial_axes: Tuple[int, int] = (-2, -1),
        progress: Optional[Callable[[int, int], None]] = None,
        score_kind: str = "prob",
        outputs_are_probabilities: bool = False,
        chunk_size: Optional[int] = None,
    ) -> np.ndarray:
        """The engine's ``score_windows`` contract, the work done by the actors: (N, classes) float64.

        ``score`` is accepted for signature compatibility and not called: each actor scores with its own
        model, through ``model.scorer(score_kind, outputs_are_probabilities)`` (what explain() builds).
        The input and baseline go to the object store once; windows travel in chunks of ``chunk_size``
        (default: enough for about 4 chunks per actor, a multiple of ``batch_size``), and the chunks'
        scores are assembled in window order, so the result equals the local one to float tolerance.
        """
        ray = self.ray
        windows = np.asarray(windows, dtype=np.int64)
        total = len(windows)
        if total == 0:
            raise OccludeError("no windows to occlude")
        if chunk_size is None:
            per_chunk = -(-total // (4 * self.workers))
            chunk_size = max(batch_size, -(-per_chunk // batch_size) * batch_size)
        if chunk_size < 1:
            raise OccludeError(f"chunk_size must be at least 1, got {chunk_size}")
        inputs_ref, baseline_ref = ray.put(np.asarray(inputs)), ray.put(np.asarray(baseline))
        axes = tuple(int(a) for a in spatial_axes)

        def submit(actor, index, chunk):
            return actor.score_chunk.remote(
                index, inputs_ref, baseline_ref, chunk, score_kind, outputs_are_probabilities, batch_size, axes
            )

        chunks = ((start, windows[start : start + chunk_size]) for start in range(0, total, chunk_size))
        result: Optional[np.ndarray] = None
        for start, scores in self._ordered(chunks, submit):
            if isinstance(scores, BaseException):
                raise scores
            if result is None:
                result = np.empty((total, scores.shape[1]), dtype=np.float64)
            result[start : start + len(scores)] = scores
            if progress is not None:
                progress(min(start + len(scores), total), total)
        return result  # type: ignore[return-value]

    # ---------------------------------------------------------------- plumbing

    def _ordered(self, pairs: Iterable[Tuple[Any, Any]], submit) -> Iterator[Tuple[Any, Any]]:
        """Run ``submit(actor, index, payload)`` through the pool for every (item, payload), payload None passing
        through, and yield (item, result) in input order.

        Results are taken as they complete (``get_next_unordered``: an actor that finished is given new work
        at once, even while an earlier, slower item is still running) and held in a reorder buffer. At most
        ``max_in_flight`` items are submitted and not yet yielded: the input iterator is read lazily.
        """
        ray = self.ray
        pool = ray.util.ActorPool(self.actors)  # one per call: an abandoned call's results never leak in
        pending: deque = deque()  # items in input order, not yet yielded: [index, item, done, result]
        by_index: Dict[int, list] = {}
        refs: Dict[int, Any] = {}  # index -> ObjectRef of the submitted task, to find a task that failed

        def run(actor, value):
            refs[value[0]] = submit(actor, *value)
            return refs[value[0]]

        source = iter(pairs)
        next_index = 0
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.max_in_flight:
                try:
                    item, payload = next(source)
                except StopIteration:
                    exhausted = True
                    break
                entry = [next_index, item, payload is None, None]
                pending.append(entry)
                if payload is not None:
                    by_index[next_index] = entry
                    pool.submit(run, (next_index, payload))
                next_index += 1
            while pending and pending[0][2]:
                _, item, _, result = pending.popleft()
                yield item, result
            if not pending:
                if exhausted:
                    return
                continue  # only pass-through items so far: read more
            try:
                index, result = pool.get_next_unordered()  # the actor's methods return (index, value)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.ObjectLostError):
                self._mark_failed(by_index, refs)
                for actor in self.actors:  # the pool drops an actor it saw die; Ray restarts it: take it back
                    try:
                        pool.push(actor)
                    except ValueError:  # still in the pool
                        pass
                continue
            refs.pop(index, None)
            entry = by_index.pop(index)
            entry[2], entry[3] = True, result

    def _mark_failed(self, by_index: Dict[int, list], refs: Dict[int, Any]) -> None:
        """After the pool raised for a task (its worker process died more than ``task_retries`` times, e.g.
        an image that crashes onnxruntime or exhausts memory): record every finished task that raises as
        that item's result, an OccludeError. The pool does not say which task it was, so the unfinished
        items' tasks are checked; a finished one that succeeded is left for the pool to return."""
        ray = self.ray
        candidates = [i for i in by_index if i in refs]
        ready, _ = ray.wait([refs[i] for i in candidates], num_returns=len(candidates), timeout=0)
        ready_ids = {ref.hex() for ref in ready}
        for index in candidates:
            if refs[index].hex() not in ready_ids:
                continue
            try:
                ray.get(refs[index], timeout=0)
            except Exception as exc:  # the failed task: its error becomes the item's result
                entry = by_index.pop(index)
                refs.pop(index)
                entry[2] = True
                entry[3] = OccludeError(
                    f"the Ray worker computing this input died {self.task_retries + 1} times "
                    f"({type(exc).__name__}): the input may crash the model or exhaust the worker's memory"
                )

    def actor_pids(self) -> Sequence[int]:
        """Process ids of the actors (for tests and diagnostics)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def shutdown(self) -> None:
        """Kill the actors; stop Ray if this executor started it."""
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def score_chunks_on_ray(
    executor: RayExecutor,
    score_kind: str = "prob",
    outputs_are_probabilities: bool = False,
    chunk_size: Optional[int] = None,
) -> Callable[..., np.ndarray]:
    """A function with the signature of ``engine.score_windows`` whose work is done by ``executor``'s actors,
    scoring with ``model.scorer(score_kind, outputs_are_probabilities)`` (the ``score`` it is passed is not
    called). ``functools.partial(score_chunks_on_ray, executor)`` is a factory ``(score_kind, is_prob) ->
    score_windows`` that explain() can call once it knows the model's output kind."""

    def score_windows(inputs, baseline, windows, score=None, *, batch_size=32, spatial_axes=(-2, -1), progress=None):
        return executor.score_windows(
            inputs,
            baseline,
            windows,
            score,
            batch_size=batch_size,
            spatial_axes=spatial_axes,
            progress=progress,
            score_kind=score_kind,
            outputs_are_probabilities=outputs_are_probabilities,
            chunk_size=chunk_size,
        )

    return score_windows
