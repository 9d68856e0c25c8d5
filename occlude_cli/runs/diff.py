"""``occlude diff`` from Python: did the new model change what it looks at? Two models explain the same inputs
with the same windows, baseline and target (:func:`diff_folder`), or one model is held against the golden maps
of an earlier ``occlude run`` (:func:`diff_golden`); per input both predictions, the similarity of the maps and
their difference, written as STEM.diff.npy / STEM.a.npy / STEM.b.npy / STEM.diff.png and diff.json / diff.csv,
with the release gates of :class:`DiffSettings`.

    from occlude_cli import diff_folder
    result = diff_folder("model.onnx", "model.int8.onnx", ["images/"], "diff/", patch=32, min_rank_corr=0.9)
    result.gates_failed, result.document["summary"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..analyses.diff import MapDiff, diff_maps, golden_mismatch, prediction
from ..analyses.explain import explain
from ..analyses.medical import is_medical_input
from ..analyses.options import ExplainOptions, score_name
from ..analyses.preprocessing import ModelOptions
from ..batch.inputs import StreamedInputs
from ..core.baselines import default_blur_sigma
from ..errors import OccludeError
from ..loaders.images import Preprocessing, load_image, prepare_image
from ..outputs.ci import CiCase, format_number
from ..outputs.diffs import GoldenRun, diff_row, read_diff_maps, write_diff_maps, write_diff_picture, write_diff_summary
from ..outputs.write import check_output_folder
from ..pictures.render import RenderStyle, shared_limit
from ..text import shown
from .ci_cases import checked_targets, write_reports
from .common import Opened, RunNotes, find_inputs, open_checked
from .events import QUIET, RunEvents


@dataclass(frozen=True)
class DiffSettings:
    """The gates of a diff and how its maps are compared. ``min_rank_corr``: an input whose maps' Spearman rank
    correlation is below it fails; ``min_top_iou``: likewise for the IoU of the top ``top_fraction`` pixels;
    ``max_prediction_flips``: the run fails when more inputs than this changed their top-1 prediction. None:
    no such gate."""

    min_rank_corr: Optional[float] = None
    min_top_iou: Optional[float] = None
    max_prediction_flips: Optional[int] = None
    top_fraction: float = 0.1

    def checked(self) -> DiffSettings:
        if self.min_rank_corr is not None and not -1.0 <= float(self.min_rank_corr) <= 1.0:
            raise OccludeError(f"min_rank_corr must be in [-1, 1], got {self.min_rank_corr}", params=("min_rank_corr",))
        if self.min_top_iou is not None and not 0.0 <= float(self.min_top_iou) <= 1.0:
            raise OccludeError(f"min_top_iou must be in [0, 1], got {self.min_top_iou}", params=("min_top_iou",))
        flips = self.max_prediction_flips
        if flips is not None and (isinstance(flips, bool) or int(flips) != flips or flips < 0):
            raise OccludeError(
                f"max_prediction_flips must be a whole number >= 0, got {flips}", params=("max_prediction_flips",)
            )
        if not 0 < float(self.top_fraction) <= 1:
            raise OccludeError(f"top_fraction must be in (0, 1], got {self.top_fraction}", params=("top_fraction",))
        return self

    def describe(self) -> dict:
        return {
            "min_rank_corr": self.min_rank_corr,
            "min_top_iou": self.min_top_iou,
            "max_prediction_flips": self.max_prediction_flips,
            "top_fraction": self.top_fraction,
        }


@dataclass
class DiffRun:
    """What a diff did: diff.json's document (settings, gates, summary, one row per input), the files of the
    run, whether Ctrl-C stopped it."""

    document: dict
    written: List[Path] = field(default_factory=list)
    interrupted: bool = False

    @property
    def rows(self) -> List[dict]:
        return self.document["images"]

    @property
    def failed(self) -> bool:
        """Some input could not be diffed (unreadable, an argument that named nothing)."""
        return any(r["status"] == "error" for r in self.rows)

    @property
    def gates_failed(self) -> bool:
        """A gate failed: an input below a threshold, or too many prediction flips."""
        return not self.document["gates"]["passed"]


# A pair maker: one input -> (MapDiff, the grey model input for its picture)
Pair = Callable[[Any, Any], Tuple[MapDiff, np.ndarray]]


def diff_folder(
    model_a,
    model_b,
    inputs,
    out="occlude-out",
    options: Optional[ExplainOptions] = None,
    settings: Optional[DiffSettings] = None,
    *,
    style: Optional[RenderStyle] = None,
    model_options: Optional[ModelOptions] = None,
    model_options_b: Optional[ModelOptions] = None,
    recursive: bool = False,
    null: bool = False,
    events: RunEvents = QUIET,
    report: bool = False,
    junit=None,
    summary_md=None,
    **overrides,
) -> DiffRun:
    """Explain every input under ``inputs`` with ``model_a`` and ``model_b`` (each with its own preprocessing;
    ``model_options_b`` default ``model_options``) with the same windows, baseline and score, both for the
    target A explains (``options.target``, default A's top-1), and compare the two maps (see the module).
    Each image is decoded once. Keyword ``overrides`` set ExplainOptions or DiffSettings fields. Both models
    must take inputs of one size and have one number of classes (one OccludeError before any input).
    ``report``: also write OUT/index.html with the diff view. ``junit``: also write a JUnit XML file there (one
    test case per input, the flips gate as one more); ``summary_md``: append a markdown job summary to that file
    or those files."""
    options, settings = _split(options, settings, overrides)
    reports = (*checked_targets(junit, summary_md), report)
    style = (style or RenderStyle()).checked()
    opened_a = open_checked(model_a, options, model_options)
    opened_b = open_checked(model_b, options, model_options_b or model_options)
    _check_pair(opened_a, opened_b)
    names = (_model_name(model_a), _model_name(model_b))
    if names[0] == names[1]:
        names = (f"A {names[0]}", f"B {names[1]}")

    def pair(item, notes) -> Tuple[MapDiff, np.ndarray]:
        image = load_image(item.path)  # decoded once, prepared for each model
        a = _explain(opened_a, image, opened_a.options)
        b = _explain(opened_b, image, replace(opened_b.options, target=a.target))
        for explanation in (a, b):
            notes.tell(explanation)
        diff = diff_maps(
            a.map,
            b.map,
            target=a.target,
            target_label=a.label(a.target),
            prediction_a=prediction(a.occlusion.original_scores, a.labels),
            prediction_b=prediction(b.occlusion.original_scores, b.labels),
            top_fraction=settings.top_fraction,
        )
        return diff, _grey(a.image.pixels)

    described = {
        "mode": "models",
        "model_a": opened_a.classifier.describe(),
        "model_b": opened_b.classifier.describe(),
    }
    images, problems = _inputs(inputs, out, recursive, null, events)
    return _diff_all(pair, images, problems, out, opened_a, settings, style, names, described, events, reports)


def diff_golden(
    golden,
    model,
    inputs,
    out="occlude-out",
    options: Optional[ExplainOptions] = None,
    settings: Optional[DiffSettings] = None,
    *,
    style: Optional[RenderStyle] = None,
    model_options: Optional[ModelOptions] = None,
    recursive: bool = False,
    null: bool = False,
    events: RunEvents = QUIET,
    report: bool = False,
    junit=None,
    summary_md=None,
    **overrides,
) -> DiffRun:
    """Hold ``model``'s maps of ``inputs`` against the golden maps of an earlier ``occlude run ... --out
    golden`` (A: the golden map, exact from its JSON record; B: today's, for the golden target), without the
    old model. Refused with one OccludeError, before any input is explained, when the golden run used other
    windows, baseline, score or target rule, or when an input has no golden map (matched by output name).
    ``report``, ``junit`` and ``summary_md``: as for :func:`diff_folder`."""
    options, settings = _split(options, settings, overrides)
    reports = (*checked_targets(junit, summary_md), report)
    style = (style or RenderStyle()).checked()
    run = GoldenRun(golden)
    if Path(out).resolve() == run.folder.resolve() or run.folder.resolve() in Path(out).resolve().parents:
        raise OccludeError(
            f"out {out} is the golden folder or inside it: write the diff elsewhere (the golden run stays as it is)",
            params=("golden", "out"),
        )
    opened = open_checked(model, options, model_options)
    _check_pair(opened, None)
    images, problems = _inputs(inputs, out, recursive, null, events)
    images = [i for i in images if Path(golden).resolve() not in i.path.resolve().parents]
    records = _golden_records(run, images, opened)
    golden_name = f"golden {Path(golden).name}"

    def pair(item, notes) -> Tuple[MapDiff, np.ndarray]:
        record = records[item.key]
        target = int(record["target"]["index"])
        b = _explain(opened, load_image(item.path), replace(opened.options, target=target))
        notes.tell(b)
        diff = diff_maps(
            record["map"],
            b.map,
            target=target,
            target_label=b.label(target),
            prediction_a=_golden_prediction(record, run.target_rule),
            prediction_b=prediction(b.occlusion.original_scores, b.labels),
            top_fraction=settings.top_fraction,
        )
        return diff, _grey(b.image.pixels)

    described = {
        "mode": "golden",
        "golden": {"folder": str(golden), "model": run.model},
        "model_b": opened.classifier.describe(),
    }
    names = (golden_name, _model_name(model))
    return _diff_all(pair, images, problems, out, opened, settings, style, names, described, events, reports)


def _inputs(inputs, out, recursive: bool, null: bool, events: RunEvents) -> Tuple[List, List[Tuple[str, str]]]:
    """The inputs and the arguments that named nothing. ``"-"``: the paths on stdin (``null``: NUL-separated),
    read whole first (the golden records and a shared colour limit need every input before the first map); what
    they name that is no input is told once, with the rows."""
    found, problems = find_inputs(inputs, out, recursive=recursive, events=events, null=null)
    if not isinstance(found, StreamedInputs):
        return found, problems
    found.on_problem = None
    images = list(found)
    if not images and not found.problems:
        raise OccludeError("the paths on stdin named no image")
    return images, list(found.problems)


def _golden_records(run: GoldenRun, images, opened: Opened) -> dict:
    """Every input's golden record (key -> record), each made like today's maps: refused (one OccludeError)
    when one is missing or made with other settings, or holds a map of another size."""
    today = _today(opened)
    records = {}
    for item in images:
        record = run.record(item.key, item.path)
        golden_params = {**(record.get("params") or {}), "target": run.target_rule}
        golden_params["region"] = None if golden_params.get("region") is None else "given"
        mismatch = golden_mismatch(golden_params, today)
        grid = record["map"].shape
        if not mismatch and grid != tuple(opened.preprocessing.size):
            mismatch = (
                f"the golden maps are {'x'.join(map(str, grid))} but today's model takes "
                f"{'x'.join(map(str, opened.preprocessing.size))} inputs"
            )
        if mismatch:
            raise OccludeError(f"{mismatch} ({item.path}); re-run the golden with today's settings")
        records[item.key] = record
    return records


def _split(options, settings, overrides: dict) -> Tuple[ExplainOptions, DiffSettings]:
    """ExplainOptions and DiffSettings, keyword ``overrides`` routed by name, both checked."""
    ours = {f.name for f in fields(DiffSettings)}
    mine = {k: v for k, v in overrides.items() if k in ours}
    options = (options or ExplainOptions()).with_overrides({k: v for k, v in overrides.items() if k not in ours})
    return options.checked(), replace(settings or DiffSettings(), **mine).checked()


def _check_pair(a: Opened, b: Optional[Opened]) -> None:
    """2-D photo models only; two models of one input size and one number of classes."""
    for opened, name in ((a, "model_a"), (b, "model_b")):
        if opened is not None and not isinstance(opened.preprocessing, Preprocessing):
            raise OccludeError("diff compares 2-D image models: this is a 3-D (volume) model", params=(name,))
    if b is None:
        return
    if tuple(a.preprocessing.size) != tuple(b.preprocessing.size):
        size_a, size_b = ("x".join(map(str, o.preprocessing.size)) for o in (a, b))
        raise OccludeError(
            f"the models take inputs of different sizes ({size_a} and {size_b}): their maps cannot be compared "
            "pixel by pixel",
            params=("model_b",),
        )
    classes = (a.classifier.num_classes, b.classifier.num_classes)
    if None not in classes and classes[0] != classes[1]:
        raise OccludeError(f"the models have different numbers of classes ({classes[0]} and {classes[1]})")


def _explain(opened: Opened, image, options: ExplainOptions):
    return explain(opened.classifier, image, options, preprocessing=opened.preprocessing, labels=opened.labels)


def _grey(pixels) -> np.ndarray:
    """What the model saw, as 0..1 grey at model resolution (the pictures' background)."""
    return np.asarray(pixels, dtype=np.float64).mean(axis=-1) / 255.0


def _model_name(model) -> str:
    return Path(str(getattr(model, "path", model))).name


def _today(opened: Opened) -> dict:
    """Today's settings as a golden record's params hold them (plus the target rule)."""
    o = opened.options
    patch = list(opened.patch)
    return {
        "patch": patch,
        "stride": list(opened.stride),
        "region": None if o.region is None else "given",
        "refine": {"step": o.refine_step, "budget": o.refine_budget} if o.refine else None,
        "baseline": o.baseline,
        "blur_sigma": (o.blur_sigma if o.blur_sigma is not None else default_blur_sigma(tuple(patch)))
        if o.baseline == "blur"
        else None,
        "seed": o.seed,
        "score": score_name(o.score),
        "target": None if o.target is None else str(o.target),
    }


def _golden_prediction(record: dict, target_rule: Optional[str]) -> Optional[dict]:
    """The golden run's top-1 prediction from its record: its main target under the top-1 rule, else the best
    of the top-k classes it recorded when that is the top-1 for sure (None when it cannot be known)."""
    from ..text import recover

    entries = [e for e in record.get("top_k") or [] if isinstance(e, dict) and e.get("original") is not None]
    if not entries:
        return None
    best = entries[0] if target_rule is None else max(entries, key=lambda e: e["original"])
    if target_rule is not None and len(entries) < 2:
        return None  # one explicit target recorded: whether it was the top-1 is not known
    return {"index": int(best["index"]), "label": recover(best, "label"), "score": float(best["original"])}


def _diff_all(
    pair: Pair,
    images: Sequence,
    problems: Sequence[Tuple[str, str]],
    out,
    opened: Opened,
    settings: DiffSettings,
    style: RenderStyle,
    names: Tuple[str, str],
    described: dict,
    events: RunEvents,
    reports: Tuple[Any, List[Path], bool] = (None, [], False),
) -> DiffRun:
    """Every input diffed in order (each told to ``events``), the pictures (after all maps with a shared
    colour limit), the gates, diff.json and diff.csv. Ctrl-C stops after the inputs already diffed."""
    if not images and not problems:
        raise OccludeError("no images to diff")
    out = check_output_folder(out)
    rows: List[dict] = []
    notes, interrupted = RunNotes(events), False
    subtitle = _subtitle(opened)
    events.started(len(images))
    try:
        for item in images:
            events.image_started(item)
            row, params = _diff_one(pair, item, out, notes, style, names, subtitle)
            rows.append(row)
            events.image_done(item, row, params)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        events.finished()
    if style.shared and not interrupted:
        _draw_shared(rows, images, out, opened, style, names, subtitle)
    for arg, problem in problems:
        events.problem(problem)
        rows.append({"path": arg, "status": "error", "error": problem})
    seconds = [row.pop("seconds", None) for row in rows]  # diff.json stays byte-identical run after run
    document = {
        **described,
        "settings": {
            "patch": list(opened.patch),
            "stride": list(opened.stride),
            "baseline": opened.options.baseline,
            "score": score_name(opened.options.score),
            "target": opened.options.target,
            **settings.describe(),
            "color_limit": style.color_limit,
        },
        "gates": _gates(rows, settings),
        "summary": _summary(rows),
        "images": rows,
    }
    written = write_diff_summary(document, out)
    written += write_reports(
        diff_cases(rows, document["gates"], seconds),
        "occlude diff",
        reports[0],
        reports[1],
        worse="low",
        settings={k: v for k, v in document["settings"].items() if v is not None},
    )
    if reports[2]:
        from ..outputs.report import build_report

        written.append(build_report(out))
    return DiffRun(document, written, interrupted)


def _subtitle(opened: Opened) -> str:
    o = opened.options
    patch, stride = ("x".join(map(str, v)) for v in (opened.patch, opened.stride))
    return f"occlusion: patch {patch}, stride {stride}, baseline {o.baseline}, score {score_name(o.score)}"


def _diff_one(pair: Pair, item, out: Path, notes: RunNotes, style, names, subtitle) -> Tuple[dict, Sequence[str]]:
    """One input's row (its maps and, unless the colour limit is shared, its picture written), or an error
    row; and the parameters its error names."""
    started = time.perf_counter()
    try:
        if is_medical_input(item.path, None):
            raise OccludeError("diff compares photos (PNG, JPEG, ...): medical inputs are not supported yet")
        diff, grey = pair(item, notes)
        row = diff_row(str(item.path), item.key, diff)
        write_diff_maps(out, item.key, diff)
        if not style.shared:
            write_diff_picture(
                out,
                item.key,
                grey,
                diff.map_a,
                diff.map_b,
                title=_title(row),
                subtitle=subtitle,
                names=names,
                style=style,
            )
        row["seconds"] = round(time.perf_counter() - started, 3)
        return row, ()
    except OccludeError as exc:
        return {"path": str(item.path), "key": item.key, "status": "error", "error": shown(str(exc))}, exc.params


def _title(row: dict) -> str:
    """The picture's title: the target and both predictions, with the rank correlation."""
    target = (
        f"{row['target_label']} (class {row['target_index']})"
        if row["target_label"]
        else f"class {row['target_index']}"
    )
    agrees = {True: "top-1 agrees", False: "top-1 CHANGED", None: "top-1 unknown"}[row["top1_agrees"]]
    rank = "n/a" if row["rank_corr"] is None else f"{row['rank_corr']:.3f}"
    return f"{target}: {agrees}; rank correlation {rank}"


def _draw_shared(rows, images, out: Path, opened: Opened, style: RenderStyle, names, subtitle) -> None:
    """Every picture on one colour limit over every map of the run (read back from STEM.a.npy / .b.npy)."""
    ok = [r for r in rows if r["status"] == "ok"]
    limit = shared_limit((m for r in ok for m in read_diff_maps(out, r)), style)
    fixed = style.with_limit(limit)
    paths = {i.key: i.path for i in images}
    for row in ok:
        map_a, map_b = read_diff_maps(out, row)
        grey = _grey(prepare_image(paths[row["key"]], opened.preprocessing).pixels)
        write_diff_picture(
            out, row["key"], grey, map_a, map_b, title=_title(row), subtitle=subtitle, names=names, style=fixed
        )
        row["color_limit"] = limit


def _gates(rows: List[dict], settings: DiffSettings) -> dict:
    """Each input's failed gates (value and threshold) in its row; the run's verdict with the flips."""
    for row in rows:
        if row["status"] != "ok":
            continue
        failed = []
        for gate, key, threshold in (
            ("min_rank_corr", "rank_corr", settings.min_rank_corr),
            ("min_top_iou", "top_iou", settings.min_top_iou),
        ):
            if threshold is not None and (row[key] is None or row[key] < threshold):
                failed.append({"gate": gate, "value": row[key], "threshold": threshold})
        row["failed_gates"] = failed
        row["gates"] = "fail" if failed else "pass"
    flips = [r["path"] for r in rows if r["status"] == "ok" and r["top1_agrees"] is False]
    too_many = settings.max_prediction_flips is not None and len(flips) > settings.max_prediction_flips
    failing = [r["path"] for r in rows if r.get("gates") == "fail"]
    return {
        **{k: v for k, v in settings.describe().items() if k != "top_fraction"},
        "prediction_flips": len(flips),
        "flipped": flips,
        "failed_images": failing,
        "passed": not failing and not too_many,
    }


def _summary(rows: List[dict]) -> dict:
    """Counts and the mean and smallest of each similarity number over the inputs diffed."""
    ok = [r for r in rows if r["status"] == "ok"]
    summary: dict = {"images": len(rows), "ok": len(ok), "errors": len(rows) - len(ok)}
    for key in ("rank_corr", "rank_corr_abs", "pearson", "top_iou", "ssim", "max_abs_diff"):
        values = [r[key] for r in ok if r[key] is not None]
        summary[key] = {
            "mean": float(np.mean(values)) if values else None,
            "min": float(np.min(values)) if values else None,
            "max": float(np.max(values)) if values else None,
        }
    return summary


def diff_cases(rows: List[dict], gates: dict, seconds: Sequence[Optional[float]] = ()) -> List[CiCase]:
    """diff.json's rows as CI cases: an input whose maps pass every gate passes, one below a threshold is a
    ``failure`` saying the value and the threshold, one that could not be diffed an ``error``; with
    ``max_prediction_flips`` one more case, ``all images``, carries that gate."""
    cases = []
    for index, row in enumerate(rows):
        if row["status"] != "ok":
            cases.append(CiCase(str(row["path"]), "occlude.diff", "error", message=row.get("error") or "failed"))
            continue
        failed = row.get("failed_gates") or []
        message = "; ".join(
            f"{f['gate'][4:]} {'n/a' if f['value'] is None else format_number(f['value'])} < {f['gate']} "
            f"{format_number(f['threshold'])}"
            for f in failed
        )
        details = [
            f"target: {row['target_index']} {shown(row['target_label'] or '')}".rstrip(),
            f"A top-1: {row['a_index']} {shown(row['a_label'] or '')}".rstrip(),
            f"B top-1: {row['b_index']} {shown(row['b_label'] or '')}".rstrip(),
        ]
        for key in ("rank_corr", "rank_corr_abs", "pearson", "top_iou", "ssim", "max_abs_diff"):
            details.append(f"{key}: {'n/a' if row[key] is None else format_number(row[key])}")
        cases.append(
            CiCase(
                str(row["path"]),
                "occlude.diff",
                "failure" if failed else "passed",
                time=seconds[index] if index < len(seconds) else None,
                message=message,
                details="\n".join(details),
                value=row["rank_corr"],
                threshold=gates.get("min_rank_corr"),
                metric="rank correlation",
            )
        )
    limit = gates.get("max_prediction_flips")
    if limit is not None:
        flips = gates["prediction_flips"]
        cases.append(
            CiCase(
                "all images",
                "occlude.diff.gate",
                "failure" if flips > limit else "passed",
                message=f"{flips} image(s) changed their top-1 prediction > max_prediction_flips {limit}"
                if flips > limit
                else "",
                details="\n".join(f"top-1 changed: {shown(p)}" for p in gates["flipped"]),
                # no value: this case is not ranked among the images' rank correlations
            )
        )
    return cases
