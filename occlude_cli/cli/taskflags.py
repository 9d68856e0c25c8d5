"""The flags of models that are not classifiers (``occlude run --task``), declared once like the other shared
flag groups of :mod:`occlude_cli.cli.common`: one dataclass whose ``fields()`` are ExplainOptions fields."""

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import parse
from .common import Parsed


class Task(str, enum.Enum):
    """What the model's output is."""

    auto = "auto"
    classify = "classify"
    segment = "segment"
    detect = "detect"
    embed = "embed"


class DetectFormat(str, enum.Enum):
    """How a detector lays out its output."""

    yolov8 = "yolov8"
    yolov5 = "yolov5"
    boxes = "boxes"


_TASK = "Task"


@dataclasses.dataclass
class TaskFlags:
    """Segmentation, detection and embedding models (the manual's tasks page)."""

    task: Annotated[
        Task,
        typer.Option(
            rich_help_panel=_TASK,
            help="What the output is: auto (classify for (N, classes), segment for (N, C, h, w)), classify, segment, "
            "detect or embed.",
        ),
    ] = Task.auto
    mask: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.mask,
            metavar="auto|FILE|x0,y0,x1,y1",
            rich_help_panel=_TASK,
            help="segment: where the class's probability is averaged: auto (pixels predicted as --target), a mask "
            "image or a box (original pixels) \\[default: auto].",
        ),
    ] = None
    detect_format: Annotated[
        Optional[DetectFormat],
        typer.Option(
            "--detect-format",
            rich_help_panel=_TASK,
            help="detect: yolov8 (1, 4+classes, N), yolov5 (1, N, 5+classes) or boxes (separate outputs).",
        ),
    ] = None
    boxes_output: Annotated[
        Optional[str],
        typer.Option("--boxes-output", rich_help_panel=_TASK, help="detect boxes: the output of boxes (N, 4)."),
    ] = None
    scores_output: Annotated[
        Optional[str],
        typer.Option("--scores-output", rich_help_panel=_TASK, help="detect boxes: the output of scores (N,)."),
    ] = None
    labels_output: Annotated[
        Optional[str],
        typer.Option("--labels-output", rich_help_panel=_TASK, help="detect boxes: the output of labels (N,)."),
    ] = None
    target_box: Annotated[
        Optional[Parsed],
        typer.Option(
            "--target-box",
            parser=parse.box("--target-box"),
            metavar="x0,y0,x1,y1",
            rich_help_panel=_TASK,
            help="detect: the box to explain (original pixels), with --target for its class.",
        ),
    ] = None
    target_detection: Annotated[
        Optional[int],
        typer.Option(
            "--target-detection",
            rich_help_panel=_TASK,
            help="detect: explain the K-th detection of the image (0 = best) after --conf and NMS \\[default: 0].",
        ),
    ] = None
    conf: Annotated[
        float,
        typer.Option(rich_help_panel=_TASK, help="detect: the confidence a detection of the image needs."),
    ] = 0.25
    reference: Annotated[
        Optional[Path],
        typer.Option(
            rich_help_panel=_TASK,
            help="embed: compare with this image's embedding \\[default: the input's own, unoccluded].",
        ),
    ] = None
    reference_embedding: Annotated[
        Optional[Path],
        typer.Option(
            "--reference-embedding", rich_help_panel=_TASK, help="embed: compare with this embedding (.npy vector)."
        ),
    ] = None

    def fields(self) -> dict:
        """ExplainOptions fields from these flags (the library checks them)."""
        return {
            "task": self.task.value,
            "mask": self.mask,
            "detect_format": self.detect_format.value if self.detect_format else None,
            "boxes_output": self.boxes_output,
            "scores_output": self.scores_output,
            "labels_output": self.labels_output,
            "target_box": self.target_box,
            "target_detection": self.target_detection,
            "conf": self.conf,
            "reference": self.reference,
            "reference_embedding": self.reference_embedding,
        }
