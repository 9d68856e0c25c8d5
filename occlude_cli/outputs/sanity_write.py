"""Files of the sanity test: STEM.sanity.json, STEM.sanity.csv and STEM.sanity.png (the strip of maps), and the
randomised ONNX models of ``--export-models`` with their manifest (``sanity_models.json``). Every file is written
atomically through :mod:`occlude_cli.outputs.write`."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

import onnx

from ..analyses.explanation import SCHEMA_VERSION
from ..analyses.sanity import SanityResult, SanityStep
from ..core.similarity import SIMILARITY_KEYS
from ..errors import OccludeError
from ..pictures.render import model_grey
from ..pictures.strip import rho_text, strip_png
from .records import json_number
from .write import atomic_write_bytes, atomic_write_json, csv_bytes

STEP_FIELDS = [
    "test",
    "position",
    "layer",
    "weight",
    "op",
    "randomised",
    "target_score",
    "predicted",
    *SIMILARITY_KEYS,
    "model_file",
    "error",
]
MODELS_MANIFEST = "sanity_models.json"
RANDOM_VALUES = "truncated normal: mean 0, the tensor's own standard deviation, cut at 2 standard deviations"
BATCH_NORM = "kept: batch-normalisation scale, bias and running statistics stay as trained"


def _similarity(values: dict) -> dict:
    return {k: json_number(values.get(k)) for k in SIMILARITY_KEYS}


def _step_row(result: SanityResult, step: SanityStep) -> dict:
    layer = result.layers[step.position - 1]
    e = result.explanation
    return {
        "test": step.mode,
        "position": step.position,
        "layer": layer.name,
        "weight": layer.label,
        "op": layer.nodes[-1][1],
        "randomised": len(step.randomised),
        "target_score": json_number(step.target_score),
        "predicted": step.predicted,
        "predicted_label": e.label(step.predicted) if step.predicted is not None else None,
        **_similarity(step.similarity),
        "model_file": step.model_file,
        "error": step.error,
    }


def sanity_document(result: SanityResult, timing: bool = True) -> dict:
    """STEM.sanity.json: the original explanation's header and parameters, how the weights were randomised, the
    model's layers, one entry per step, the random-logit test and the summary."""
    e = result.explanation
    document = e.header()
    logit = result.random_logit
    summary = {
        mode: {
            k: ({"last": json_number(v["last"]), "mean": json_number(v["mean"])} if isinstance(v, dict) else v)
            for k, v in numbers.items()
        }
        for mode, numbers in result.summary().items()
    }
    document.update(
        {
            "kind": "sanity",
            "params": e.params,
            "randomisation": {
                "seed": result.seed,
                "values": RANDOM_VALUES,
                "batch_norm": BATCH_NORM,
                "layers_with_weights": len(result.layers),
                "top_fraction": result.top_fraction,
            },
            "summary": summary,
            "steps": [_step_row(result, s) for s in result.steps],
            "random_logit": None
            if logit is None
            else {"index": logit.index, "label": logit.label, **_similarity(logit.similarity)},
            "layers": [layer.describe() for layer in result.layers],
        }
    )
    if timing:
        document["timing"] = {k: float(v) for k, v in e.timing.items()}
    return document


def sanity_picture(result: SanityResult) -> bytes:
    """The strip: per test, the original map then each step's map, captioned with the layer and its rho."""
    e = result.explanation
    rows = []
    for mode in ("cascading", "independent"):
        steps = result.steps_of(mode)
        if not steps:
            continue
        tiles = [(e.map, "original", "")]
        for step in steps:
            caption = f"{step.position}: {result.layers[step.position - 1].label}"
            values = step.map if step.map is not None else e.map * float("nan")
            tiles.append(
                (values, caption, rho_text(step.similarity.get("spearman")) if step.error is None else "failed")
            )
        rows.append((f"{mode} randomisation (layer 1 = the last layer with weights)", tiles))
    if result.random_logit is not None:
        logit = result.random_logit
        name = f"class {logit.index}" + (f" {logit.label}" if logit.label else "")
        rows.append(
            ("random logit", [(e.map, "target", ""), (logit.map, name, rho_text(logit.similarity["spearman"]))])
        )
    label = e.label(e.target)
    title = f"sanity test: {label + ' ' if label else ''}(class {e.target}), {len(result.layers)} layers with weights"
    subtitle = "each map on its own colour scale; rho: Spearman correlation with the original map"
    return strip_png(model_grey(e), rows, title, subtitle)


def write_sanity(out: Path, stem: str, result: SanityResult, timing: bool = True) -> List[Path]:
    """STEM.sanity.json, STEM.sanity.csv (one row per step, then the random-logit test) and STEM.sanity.png."""
    out = Path(out)
    rows = [_step_row(result, s) for s in result.steps]
    if result.random_logit is not None:
        logit = result.random_logit
        rows.append(
            {"test": "random-logit", "predicted": logit.index, "layer": logit.label, **_similarity(logit.similarity)}
        )
    return [
        atomic_write_json(out / f"{stem}.sanity.json", sanity_document(result, timing)),
        atomic_write_bytes(out / f"{stem}.sanity.csv", csv_bytes(STEP_FIELDS, rows)),
        atomic_write_bytes(out / f"{stem}.sanity.png", sanity_picture(result)),
    ]


def model_file_name(mode: str, position: int) -> str:
    """The exported model of a step: ``cascading-03.onnx`` (layers 1-3 randomised), ``independent-03.onnx``."""
    return f"{mode}-{position:02d}.onnx"


def write_model(path: Path, model: onnx.ModelProto, external: bool = False) -> Path:
    """One ONNX model, atomically; ``external``: its tensors in ``NAME.data`` beside it (as the model it came
    from kept them; needed above 2 GiB). ``model`` is not changed."""
    path = Path(path)
    if not external:
        try:
            data = model.SerializeToString()
        except ValueError:  # protobuf refuses messages over 2 GiB
            return write_model(path, model, external=True)
        return atomic_write_bytes(path, data)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving with external data rewrites the tensors it moves out
    try:
        scratch = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OccludeError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        location = f"{path.name}.data"
        onnx.save_model(
            copy, os.path.join(scratch, path.name), save_as_external_data=True, location=location, size_threshold=0
        )
        if os.path.exists(os.path.join(scratch, location)):
            os.replace(os.path.join(scratch, location), path.parent / location)
        os.replace(os.path.join(scratch, path.name), path)
    except OSError as exc:
        raise OccludeError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def remove_model(path: Path) -> None:
    """A temporary randomised model and its external data, gone."""
    for each in (Path(path), Path(f"{path}.data")):
        try:
            each.unlink()
        except OSError:
            pass


def models_manifest(result: SanityResult, model: dict, folder: Path) -> dict:
    """sanity_models.json: the model the copies came from (path, sha256), how they were randomised, and per
    exported file its test, layer and the layers randomised in it: what ``occlude compare --sanity`` reads."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "sanity-models",
        "model": {"path": model.get("path"), "sha256": model.get("sha256")},
        "seed": result.seed,
        "values": RANDOM_VALUES,
        "batch_norm": BATCH_NORM,
        "models": [
            {
                "file": Path(s.model_file).name if s.model_file else None,
                "test": s.mode,
                "position": s.position,
                "layer": result.layers[s.position - 1].name,
                "weight": result.layers[s.position - 1].label,
                "randomised": [result.layers[p - 1].name for p in s.randomised],
            }
            for s in result.steps
        ],
        "layers": [layer.describe() for layer in result.layers],
    }


# the names an export gives its models (and their external data): what an export folder may hold of its own
_EXPORTED = re.compile(r"^(?:cascading|independent)-\d{2,}\.onnx(?:\.data)?$")


def earlier_export(folder: Path) -> List[str]:
    """The model files (and their ``.data``) of an earlier export in ``folder``, as its sanity_models.json lists
    them (only names an export gives, inside the folder). Refuses (one OccludeError, before any map) a folder that
    holds a file named like an exported model which no such manifest lists: someone's own file, never replaced."""
    listed: set = set()
    try:
        document = json.loads((Path(folder) / MODELS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = None
    entries = document.get("models") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(name, str) and _EXPORTED.match(name):
            listed.update((name, f"{name}.data"))
    try:
        present = sorted(os.listdir(folder))
    except OSError:
        return []
    strays = [name for name in present if _EXPORTED.match(name) and name not in listed]
    if strays:
        more = f" (and {len(strays) - 1} more)" if len(strays) > 1 else ""
        raise OccludeError(
            f"export_models {folder} holds {strays[0]}{more}, which no sanity_models.json there lists: not replacing "
            "it; name a new or empty folder",
            params=("export_models",),
        )
    return sorted(name for name in listed if name in present)


def remove_earlier_models(folder: Path, earlier: List[str], kept: List[str]) -> None:
    """The files of an earlier export (:func:`earlier_export`) that this export did not write again (``kept``:
    the names it wrote, their ``.data`` included), gone: the folder then holds exactly the models its new
    sanity_models.json lists."""
    for name in earlier:
        if name not in kept:
            try:
                (Path(folder) / name).unlink()
            except OSError:
                pass


def write_models_manifest(folder: Path, document: dict) -> Path:
    return atomic_write_json(Path(folder) / MODELS_MANIFEST, document)


def read_models_manifest(folder: Path) -> Optional[dict]:
    """A folder's sanity_models.json as written by :func:`write_models_manifest` (None when there is none); one
    edited into another shape (not an object, ``models`` not a list of objects, ``model`` not an object) or
    not a regular file is an OccludeError naming ``sanity``."""
    from ..text import restore
    from .write import read_json

    path = Path(folder) / MODELS_MANIFEST
    if not path.exists():
        return None
    try:
        document = restore(read_json(path))
    except (OSError, ValueError) as exc:
        raise OccludeError(
            f"sanity folder {folder}: cannot read its {MODELS_MANIFEST}: {exc}", params=("sanity",)
        ) from None
    models = document.get("models") if isinstance(document, dict) else None
    if (
        not isinstance(models, list)
        or not all(isinstance(entry, dict) for entry in models)
        or not isinstance(document.get("model", {}), dict)
    ):
        raise OccludeError(
            f"sanity folder {folder}: its {MODELS_MANIFEST} was not written by occlude sanity --export-models "
            "(edited by hand?)",
            params=("sanity",),
        )
    return document
