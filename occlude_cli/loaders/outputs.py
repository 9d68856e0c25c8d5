"""What a model's output is (``task``): class scores, per-pixel class maps, detections or an embedding; read from
its declared shape where it can be (``auto``), and the classes it declares."""

from __future__ import annotations

from typing import Optional

from ..errors import OccludeError

TASKS = ("auto", "classify", "segment", "detect", "embed")


def output_task(task: str, shape: list, name: str) -> str:
    """The task a model's output serves: ``task`` as given, or for ``auto`` read from the declared shape: class
    scores ((N, classes), trailing axes of 1) or per-pixel class maps ((N, C, h, w)); anything else is asked for.
    ``classify`` refuses an output that is not class scores."""
    classes_only = len(shape) <= 2 or all(d == 1 for d in shape[2:])
    if task == "auto" and not classes_only:
        if len(shape) == 4:
            return "segment"  # its size against the input's is checked at the first image
        raise OccludeError(
            f"output {name!r} has shape {shape}: task auto cannot tell what it holds (classes are (batch, classes), "
            "segmentation maps (batch, C, h, w)): choose task classify, segment, detect or embed",
            params=("task",),
        )
    if task in ("auto", "classify") and not classes_only:
        raise OccludeError(
            f"output {name!r} has shape {shape}: occlude needs a classifier output (batch, classes), "
            "(batch, classes, 1, 1), (batch, 1) or (batch,) to classify (occlude run's task segment, detect or "
            "embed explains other models)",
        )
    return "classify" if task == "auto" else task


# output element types that hold class indices or decisions (an ArgMax, a threshold), never scores
NOT_SCORES = ("tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(uint64)", "tensor(uint32)", "tensor(bool)")


def check_scores_type(task: str, element_type: str, name: str) -> None:
    """Refuse a classifier output whose element type holds class indices or yes/no decisions: no map can
    be measured on them (an ArgMax head's index was read as one logit). Quantised scores (uint8, int8) pass."""
    if task == "classify" and element_type in NOT_SCORES:
        raise OccludeError(
            f"output {name!r} holds {element_type[7:-1]} values (class indices or decisions, e.g. after an ArgMax), "
            "not scores: occlude explains class scores; choose another output with output_name, or export the "
            "model without its ArgMax",
            params=("output_name",),
        )


def declared_classes(task: str, shape: list) -> Optional[int]:
    """The classes an output declares: its axis 1 for class scores and segmentations (None when dynamic);
    1 for a (batch,) output; None for detections and embeddings (the task reads them)."""
    if task not in ("classify", "segment"):
        return None
    if len(shape) <= 1:
        return 1
    return shape[1] if isinstance(shape[1], int) and shape[1] > 0 else None


_DECLARED = ("probabilities", "softmax", "sigmoid", "multilabel", "multi-label", "independent", "logits", "logit")


def check_declared_output(declared) -> Optional[str]:
    """The metadata's ``output`` (what the model's output is), lower case; refused unless one of the known
    kinds, when the model is opened (before any image)."""
    if declared is None or declared == "":
        return None
    if not isinstance(declared, str) or declared.lower() not in _DECLARED:
        raise OccludeError(f"model metadata output {declared!r} is not one of logits, probabilities, sigmoid")
    return declared.lower()
