"""occlude: occlusion sensitivity for any ONNX image classifier.

Library use::

    from occlude_cli import explain, occlusion_sensitivity
    result = explain("sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", patch=32)
    result.map          # (224, 224) signed score drops for the top-1 class
"""

__version__ = "0.1.0"

from .engine import Occlusion, occlusion_sensitivity, refined_occlusion_sensitivity, window_grid  # noqa: E402
from .errors import OccludeError  # noqa: E402
from .explain import (Explanation, ExplainOptions, ScaleStudy, estimate_run, explain, explain_scales,  # noqa: E402
                      resolve_preprocessing)
from .model import OnnxClassifier  # noqa: E402
from .outputs import explanation_record, write_explanation  # noqa: E402
from .preprocess import Preprocessing, load_image, prepare_image  # noqa: E402
from .validate import compare_maps, faithfulness  # noqa: E402

__all__ = [
    "__version__",
    "OccludeError",
    "Occlusion",
    "occlusion_sensitivity",
    "refined_occlusion_sensitivity",
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
    "OnnxClassifier",
    "explanation_record",
    "write_explanation",
    "Preprocessing",
    "load_image",
    "prepare_image",
]
