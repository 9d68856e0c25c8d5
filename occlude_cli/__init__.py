"""occlude: occlusion sensitivity for any ONNX image classifier.

Library use::

    from occlude_cli import explain
    result = explain("sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", patch=32)
    result.map          # (224, 224) signed score drops for the top-1 class

The package is layered; imports point one way only (see README, "Development"):
``cli -> batch -> outputs -> explain / validate -> loaders -> core -> errors``.
"""

from ._version import __version__
from .core.engine import Occlusion, occlusion_sensitivity, score_perturbations, window_grid
from .core.refine import refined_occlusion_sensitivity
from .errors import OccludeError
from .explain import (Explanation, ExplainOptions, ScaleStudy, estimate_run, explain, explain_scales,
                      resolve_preprocessing)
from .loaders.images import Preprocessing, load_image, map_on_original, prepare_image
from .loaders.model import Head, OnnxClassifier, ScoreKind
from .outputs.records import explanation_record
from .outputs.write import write_explanation
from .validate import compare_maps, faithfulness

__all__ = [
    "__version__",
    "OccludeError",
    "Occlusion",
    "occlusion_sensitivity",
    "refined_occlusion_sensitivity",
    "score_perturbations",
    "window_grid",
    "Explanation",
    "ExplainOptions",
    "explain",
    "explain_scales",
    "estimate_run",
    "ScaleStudy",
    "compare_maps",
    "faithfulness",
    "resolve_preprocessing",
    "Head",
    "OnnxClassifier",
    "ScoreKind",
    "explanation_record",
    "write_explanation",
    "Preprocessing",
    "load_image",
    "map_on_original",
    "prepare_image",
]
