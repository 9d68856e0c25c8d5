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
            help="What the output is (auto: by its shape).",
        ),
    ] = Task.auto
    mask: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.mask,
            metavar="auto|FILE|x0,y0,x1,y1",
            rich_help_panel=_TASK,
            help="segment: the pixels averaged \\[default: auto].",
        ),
    ] = None
    detect_format: Annotated[
        Optional[DetectFormat],
        typer.Option(
            "--detect-format",
            rich_help_panel=_TASK,
            help="detect: the output's layout.",
        ),
    ] = None
    boxes_output: Annotated[
        Optional[str],
        typer.Option("--boxes-output", rich_help_panel=_TASK, help="detect: the boxes output."),
    ] = None
    scores_output: Annotated[
        Optional[str],
        typer.Option("--scores-output", rich_help_panel=_TASK, help="detect: the scores output."),
    ] = None
    labels_output: Annotated[
        Optional[str],
        typer.Option("--labels-output", rich_help_panel=_TASK, help="detect: the labels output."),
    ] = None
    target_box: Annotated[
        Optional[Parsed],
        typer.Option(
            "--target-box",
            parser=parse.box("--target-box"),
            metavar="x0,y0,x1,y1",
            rich_help_panel=_TASK,
            help="detect: the box explained (with --target).",
        ),
    ] = None
    target_detection: Annotated[
        Optional[int],
        typer.Option(
            "--target-detection",
            rich_help_panel=_TASK,
            help="detect: the K-th detection (0 = best).",
        ),
    ] = None
    conf: Annotated[
        Optional[float],
        typer.Option(rich_help_panel=_TASK, help="detect: least confidence of K \\[default: 0.25]."),
    ] = None
    nms_iou: Annotated[
        Optional[float],
        typer.Option(
            "--nms-iou",
            rich_help_panel=_TASK,
            help="detect: the IoU above which non-maximum suppression drops a box, (0, 1] \\[default: 0.45].",
        ),
    ] = None
    reference: Annotated[
        Optional[Path],
        typer.Option(
            rich_help_panel=_TASK,
            help="embed: the reference image \\[default: the input].",
        ),
    ] = None
    reference_embedding: Annotated[
        Optional[Path],
        typer.Option("--reference-embedding", rich_help_panel=_TASK, help="embed: a reference .npy."),
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
            "nms_iou": self.nms_iou,
            "reference": self.reference,
            "reference_embedding": self.reference_embedding,
        }
