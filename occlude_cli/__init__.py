"""occlude: occlusion sensitivity for any ONNX image classifier.

Library use::

    from occlude_cli import explain
    result = explain("sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", patch=32)
    result.map          # (224, 224) signed score drops for the top-1 class

The package is layered; imports point one way only (see README, "Development"):
``cli -> batch -> outputs -> explain / validate -> loaders -> core -> errors``.
"""

from ._signals import install_early_sigterm, is_occlude_command

install_early_sigterm()  # first: a SIGTERM during the imports below exits 130 (only in the `occlude` command)
if is_occlude_command():  # the command's imports create ~100k long-lived objects: no cyclic GC passes over
    import gc  # them (5-10% of the start-up); cli.app.main freezes them and turns the collector back on

    gc.disable()

from importlib import import_module  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from ._version import __version__  # noqa: E402

# Public API, loaded on first use (PEP 562) so that `occlude --help` and the CLI's start pay only for what
# a command needs: name -> module that defines it.
_EXPORTS = {
    "OccludeError": "errors",
    "Occlusion": "core.engine",
    "occlusion_sensitivity": "core.engine",
    "score_perturbations": "core.engine",
    "window_grid": "core.engine",
    "refined_occlusion_sensitivity": "core.refine",
    "Explanation": "analyses.explain",
    "ExplainOptions": "analyses.explain",
    "ScaleStudy": "analyses.explain",
    "estimate_run": "analyses.explain",
    "explain": "analyses.explain",
    "explain_scales": "analyses.explain",
    "resolve_preprocessing": "analyses.explain",
    "describe_model": "analyses.explain",
    "Preprocessing": "loaders.images",
    "load_image": "loaders.images",
    "map_on_original": "loaders.images",
    "prepare_image": "loaders.images",
    "Head": "loaders.model",
    "OnnxClassifier": "loaders.model",
    "ScoreKind": "loaders.model",
    "explanation_record": "outputs.records",
    "write_explanation": "outputs.write",
    "compare_maps": "analyses.validate",
    "faithfulness": "analyses.validate",
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
    from .analyses.explain import (  # noqa: F401
        ExplainOptions,
        Explanation,
        ScaleStudy,
        describe_model,
        estimate_run,
        explain,
        explain_scales,
        resolve_preprocessing,
    )
    from .analyses.validate import compare_maps, faithfulness  # noqa: F401
    from .core.engine import Occlusion, occlusion_sensitivity, score_perturbations, window_grid  # noqa: F401
    from .core.refine import refined_occlusion_sensitivity  # noqa: F401
    from .errors import OccludeError  # noqa: F401
    from .loaders.images import Preprocessing, load_image, map_on_original, prepare_image  # noqa: F401
    from .loaders.model import Head, OnnxClassifier, ScoreKind  # noqa: F401
    from .outputs.records import explanation_record  # noqa: F401
    from .outputs.write import write_explanation  # noqa: F401
