"""occlude: occlusion sensitivity for any ONNX image classifier.

Library use::

    from occlude_cli import explain, run_folder
    result = explain("sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", patch=32)
    result.map          # (224, 224) signed score drops for the top-1 class
    run_folder("sample_models/digits_cnn.onnx", ["sample_images/"], "maps/", aggregate=True, report=True)

Every command has its library call here (``run_folder``, ``check_folder``, ``compare_image``, ``compare_folder``,
``bias_folder``, ``layers_folder``, ``stability_image``, ``sanity_image``, ``diff_folder``, ``diff_golden``). The
package is layered; imports point one way only (see README, "Development"): ``cli -> runs -> batch -> outputs ->
analyses -> pictures -> loaders -> inference -> core -> errors``.
"""

from ._signals import hold_standard_fds, install_early_signals, is_occlude_command

install_early_signals()  # first: a SIGTERM or Ctrl-C during the imports below exits 130 (only in the `occlude` command)
if is_occlude_command():  # the command's imports create ~100k long-lived objects: no cyclic GC passes over
    hold_standard_fds()  # a closed stdout or stderr (`>&-`) is never given to a file occlude opens
    import gc  # them (5-10% of the start-up); cli.app.main freezes them and turns the collector back on

    gc.disable()

from importlib import import_module  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from ._version import __version__  # noqa: E402

# Public API, loaded on first use (PEP 562) so that `occlude --help` and the CLI's start pay only for what
# a command needs: name -> module that defines it.
_EXPORTS = {
    "OccludeError": "errors",
    "InputsFailed": "errors",
    # the engine (numpy only)
    "Occlusion": "core.engine",
    "occlusion_sensitivity": "core.engine",
    "score_perturbations": "core.engine",
    "window_grid": "core.engine",
    "refined_occlusion_sensitivity": "core.refine",
    # one input
    "ExplainOptions": "analyses.options",
    "ModelOptions": "analyses.preprocessing",
    "open_model": "analyses.preprocessing",
    "resolve_preprocessing": "analyses.preprocessing",
    "Explanation": "analyses.explanation",
    "ScaleStudy": "analyses.explanation",
    "explain": "analyses.explain",
    "explain_scales": "analyses.explain",
    "describe_model": "analyses.explain",
    "estimate_run": "analyses.estimate",
    "baseline_check": "analyses.estimate",
    "compare_maps": "analyses.validate",
    "map_similarity": "core.similarity",
    "concentration": "core.quality",
    "relevance_mass_accuracy": "core.quality",
    "relevance_rank_accuracy": "core.quality",
    "sparseness": "core.quality",
    "complexity": "core.quality",
    "faithfulness": "analyses.validate",
    "Preprocessing": "loaders.images",
    "load_image": "loaders.images",
    "map_on_original": "loaders.images",
    "prepare_image": "loaders.images",
    "Head": "loaders.model",
    "OnnxClassifier": "loaders.model",
    "ScoreKind": "loaders.model",
    "explanation_record": "outputs.records",
    "write_explanation": "outputs.write",
    # CI reports: JUnit XML and the markdown job summary, from any command's items
    "CiCase": "outputs.ci",
    "junit_xml": "outputs.ci",
    "write_junit": "outputs.ci",
    "summary_markdown": "outputs.ci",
    "summary_targets": "outputs.ci",
    "append_summary": "outputs.ci",
    "write_ci_reports": "outputs.ci",
    # every command, from Python
    "discover_inputs": "batch.inputs",
    "RunEvents": "runs.events",
    "RunSettings": "runs.run",
    "run_folder": "runs.run",
    "estimate_folder": "runs.run",
    "baseline_check_folder": "runs.run",
    "RegionSource": "runs.regions",
    "check_folder": "runs.check",
    "CompareSettings": "runs.compare",
    "compare_image": "runs.compare",
    "compare_folder": "runs.compare",
    "bias_folder": "runs.bias",
    "LayerSettings": "runs.layers",
    "layers_folder": "runs.layers",
    "describe_layers": "analyses.layers",
    "stability_image": "runs.stability",
    "sanity_image": "runs.sanity",
    "DiffSettings": "runs.diff",
    "diff_folder": "runs.diff",
    "diff_golden": "runs.diff",
    "diff_similarity": "analyses.diff",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'occlude_cli' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .analyses.diff import diff_similarity  # noqa: F401
    from .analyses.estimate import baseline_check, estimate_run  # noqa: F401
    from .analyses.explain import describe_model, explain, explain_scales  # noqa: F401
    from .analyses.explanation import Explanation, ScaleStudy  # noqa: F401
    from .analyses.layers import describe_layers  # noqa: F401
    from .analyses.options import ExplainOptions  # noqa: F401
    from .analyses.preprocessing import ModelOptions, open_model, resolve_preprocessing  # noqa: F401
    from .analyses.validate import compare_maps, faithfulness  # noqa: F401
    from .batch.inputs import discover_inputs  # noqa: F401
    from .core.engine import Occlusion, occlusion_sensitivity, score_perturbations, window_grid  # noqa: F401
    from .core.quality import (  # noqa: F401
        complexity,
        concentration,
        relevance_mass_accuracy,
        relevance_rank_accuracy,
        sparseness,
    )
    from .core.refine import refined_occlusion_sensitivity  # noqa: F401
    from .core.similarity import map_similarity  # noqa: F401
    from .errors import OccludeError  # noqa: F401
    from .loaders.images import Preprocessing, load_image, map_on_original, prepare_image  # noqa: F401
    from .loaders.model import Head, OnnxClassifier, ScoreKind  # noqa: F401
    from .outputs.ci import (  # noqa: F401
        CiCase,
        append_summary,
        junit_xml,
        summary_markdown,
        summary_targets,
        write_ci_reports,
        write_junit,
    )
    from .outputs.records import explanation_record  # noqa: F401
    from .outputs.write import write_explanation  # noqa: F401
    from .runs.bias import bias_folder  # noqa: F401
    from .runs.check import check_folder  # noqa: F401
    from .runs.compare import CompareSettings, compare_folder, compare_image  # noqa: F401
    from .runs.diff import DiffSettings, diff_folder, diff_golden  # noqa: F401
    from .runs.events import RunEvents  # noqa: F401
    from .runs.layers import LayerSettings, layers_folder  # noqa: F401
    from .runs.regions import RegionSource  # noqa: F401
    from .runs.run import RunSettings, baseline_check_folder, estimate_folder, run_folder  # noqa: F401
    from .runs.sanity import sanity_image  # noqa: F401
    from .runs.stability import stability_image  # noqa: F401
