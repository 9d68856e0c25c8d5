"""``occlude sanity`` from Python (:func:`sanity_image`): the model parameter randomisation test and the
random-logit test of one input (see :mod:`occlude_cli.analyses.sanity`), written to STEM.sanity.json, .csv and
.png; with ``export_models`` the randomised ONNX models and ``sanity_models.json`` too, so that any other method can
be run on them and judged by ``occlude compare --sanity``."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import onnx

from ..analyses.options import ExplainOptions
from ..analyses.preprocessing import ModelOptions
from ..analyses.sanity import (
    DEFAULT_TOP_FRACTION,
    ModelStore,
    SanityResult,
    SanityStep,
    check_mode,
    model_path,
    sanity,
)
from ..errors import OccludeError
from ..inference.facts import model_facts
from ..outputs.names import stem_of
from ..outputs.sanity_write import (
    earlier_export,
    model_file_name,
    models_manifest,
    remove_earlier_models,
    remove_model,
    sanity_document,
    write_model,
    write_models_manifest,
    write_sanity,
)
from ..outputs.write import check_output_folder
from .common import open_checked


@dataclass
class SanityRun:
    """What :func:`sanity_image` measured and wrote (``stem``: the files' name; ``models``: the export folder)."""

    result: SanityResult
    stem: str
    written: List[Path]
    timing: bool
    models: Optional[Path] = None

    @property
    def document(self) -> dict:
        """STEM.sanity.json's document."""
        return sanity_document(self.result, self.timing)


class _Store(ModelStore):
    """Randomised models in a folder: the export folder (kept), or a temporary one (each deleted after its step)."""

    def __init__(self, folder: Path, keep: bool, external: bool) -> None:
        self.folder, self.keeps, self.external = folder, keep, external

    def put(self, mode: str, position: int, model: onnx.ModelProto) -> Path:
        return write_model(self.folder / model_file_name(mode, position), model, self.external)

    def done(self, path: Path) -> None:
        if not self.keeps:
            remove_model(path)


def sanity_image(
    model,
    image: Union[str, Path],
    out: Union[str, Path] = "occlude-out",
    options: Optional[ExplainOptions] = None,
    *,
    mode: str = "cascading",
    layers: Optional[Sequence[Union[int, str]]] = None,
    steps: Optional[int] = None,
    top_fraction: float = DEFAULT_TOP_FRACTION,
    export_models: Optional[Union[str, Path]] = None,
    timing: bool = True,
    model_options: Optional[ModelOptions] = None,
    on_step: Optional[Callable[[SanityStep, int], None]] = None,
    **overrides,
) -> SanityRun:
    """The randomisation tests of ``image``: ``mode`` cascading (default), independent or both; ``layers`` (positions
    from the output, 1 = the last layer with weights, or names) or ``steps`` (that many layers spread evenly) choose
    where a map is made (default: at every layer with weights, one map each); the random weights and the random
    class are seeded by ``options.seed``. ``export_models``: a folder for the randomised models (one ONNX file per
    step) and their manifest. ``on_step(step, total)``: called as each step finishes. Every option is checked, and
    the graph read, before the first map."""
    check_mode(mode)
    opened = open_checked(model, (options or ExplainOptions()).with_overrides(overrides), model_options)
    out = check_output_folder(out)
    source = model_path(opened.classifier)
    external = model_facts(source).external_data
    if export_models is not None:
        folder = check_output_folder(export_models, "export_models")
        if folder.resolve() == source.parent.resolve():
            raise OccludeError(
                "export_models must not be the model's own folder (its files would sit among the randomised copies)",
                params=("export_models",),
            )
        earlier = earlier_export(folder)
        result = _run(opened, image, _Store(folder, True, external), mode, layers, steps, top_fraction, on_step)
        write_models_manifest(folder, models_manifest(result, opened.classifier.describe(), folder))
        kept = [Path(s.model_file).name for s in result.steps if s.model_file]
        remove_earlier_models(folder, earlier, kept + [f"{name}.data" for name in kept])
    else:
        scratch = Path(tempfile.mkdtemp(prefix="occlude-sanity-"))
        try:
            result = _run(opened, image, _Store(scratch, False, external), mode, layers, steps, top_fraction, on_step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for step in result.steps:
            step.model_file = None  # a temporary copy, gone
    stem = stem_of(image)
    written = write_sanity(out, stem, result, timing=timing)
    return SanityRun(result, stem, written, timing, Path(export_models) if export_models is not None else None)


def _run(opened, image, store, mode, layers, steps, top_fraction, on_step) -> SanityResult:
    return sanity(
        opened.classifier,
        image,
        opened.options,
        store,
        preprocessing=opened.preprocessing,
        labels=opened.labels,
        mode=mode,
        layers=layers,
        steps=steps,
        top_fraction=top_fraction,
        on_step=on_step,
    )
