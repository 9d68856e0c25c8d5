"""`occlude sanity`: does the explanation explain the model? The model parameter randomisation test and the
random-logit test (Typer only; the work is in :mod:`occlude_cli.runs.sanity`).

Exit codes: 0 ok (a step whose randomised model could not be explained is reported, with a warning); 1 error
before the first map (model, flags, a quantised graph, output folder).
"""

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..text import shortened
from . import parse
from .common import (
    ModelFlags,
    OcclusionFlags,
    Parsed,
    json_option,
    out_option,
    print_json,
    quiet_option,
    safe,
    stderr,
    stdout,
    user_errors,
    with_flags,
)
from .medicalflags import MedicalInputFlags

SANITY_EXAMPLES = """
occlude sanity model.onnx img.png --patch 32 --steps 6
occlude sanity model.onnx img.png --mode both --score logit  # cascading and independent
occlude sanity model.onnx img.png --layers 1-3,node_Conv_12 --seed 7
occlude sanity model.onnx img.png --steps 8 --export-models randomised/  # for another method
occlude compare model.onnx img.png gradcam.npy --sanity randomised/  # ... judged the same way
"""

SANITY_NOTES = """
Layers with weights are the Conv, Gemm and MatMul nodes with a constant weight, numbered from the output (1 = the
last). Cascading randomises layers 1..k at step k; independent randomises layer k alone. Weights and biases become
normal draws truncated at 2 standard deviations, with each tensor's own standard deviation, seeded by --seed, in the
tensor's own type; batch-norm statistics are kept; quantised graphs are refused. Each step's map explains the
original target and is compared with the original map: Spearman of the map and of |map|, SSIM (maps scaled to a
largest |value| of 1), top-10% IoU. The random-logit test compares a random other class's map (no extra passes).

Writes OUT/STEM.sanity.json, STEM.sanity.csv (one row per step) and STEM.sanity.png (the original map, then one map
per randomised layer); --export-models DIR also DIR/cascading-01.onnx, ... and DIR/sanity_models.json.
"""


class Mode(str, enum.Enum):
    """Which randomisation test (see occlude_cli.analyses.sanity)."""

    cascading = "cascading"
    independent = "independent"
    both = "both"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, medical=MedicalInputFlags)
def sanity(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx).")],
    image: Annotated[Path, typer.Argument(help="The image to explain (a photo; a DICOM slice or volume works too).")],
    out: Annotated[Path, out_option()] = Path("occlude-out"),
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            help="cascading (layers 1..k randomised at step k), independent (layer k alone) or both.",
            rich_help_panel="Basics",
        ),
    ] = Mode.cascading,
    layers: Annotated[
        Optional[Parsed],
        typer.Option(
            "--layers",
            parser=parse.layers("--layers"),
            metavar="LIST",
            help="Layers to make a map at: positions from the output (1-3,7) or node / weight names \\[default: all].",
            rich_help_panel="Basics",
        ),
    ] = None,
    steps: Annotated[
        Optional[int],
        typer.Option(
            "--steps",
            help="Make a map at this many layers spread evenly from the last to the first (not with --layers).",
            rich_help_panel="Speed",
        ),
    ] = None,
    patch: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.size("--patch"),
            metavar="SIZE",
            help="Occluding patch, N or HxW \\[default: 1/14 of the input side]; one map per step costs its windows.",
            rich_help_panel="Basics",
        ),
    ] = None,
    top_fraction: Annotated[
        float,
        typer.Option(
            "--top-fraction", help="Share of pixels whose overlap (IoU) is reported.", rich_help_panel="Basics"
        ),
    ] = 0.1,
    export_models: Annotated[
        Optional[Path],
        typer.Option(
            "--export-models",
            metavar="DIR",
            help="Also write each randomised model (DIR/cascading-01.onnx, ...) and DIR/sanity_models.json, to run "
            "another method on them (occlude compare --sanity DIR).",
            rich_help_panel="Output",
        ),
    ] = None,
    timing: Annotated[
        bool, typer.Option("--timing/--no-timing", help="Record timings in the JSON.", rich_help_panel="Output")
    ] = True,
    json_out: Annotated[bool, json_option("STEM.sanity.json")] = False,
    quiet: Annotated[bool, quiet_option("Print nothing but errors.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Sanity test: does the map change when the model's weights are randomised, layer by layer (Adebayo et al.)?"""
    from ..analyses.options import ExplainOptions
    from ..runs.sanity import sanity_image

    def on_step(step, total: int) -> None:
        if quiet or json_out:
            return
        if step.error is not None:
            stderr.print(f"[yellow]warning:[/] {step.mode} step {step.position}: {safe(step.error)}")
        else:
            stderr.print(
                f"{step.mode} {step.position} ({len(step.randomised)} layer(s) randomised): "
                f"Spearman {_fmt(step.similarity.get('spearman'))}"
            )

    run = sanity_image(
        model,
        image,
        out,
        ExplainOptions(patch=patch, **occlusion.fields(), **medical.fields()),
        mode=mode.value,
        layers=layers,
        steps=steps,
        top_fraction=top_fraction,
        export_models=export_models,
        timing=timing,
        model_options=model_flags.options(),
        on_step=on_step,
    )
    if json_out:
        print_json(run.document)
    elif not quiet:
        _print_sanity(run.document)
        for path in run.written:
            stdout.print(f"wrote {safe(str(path))}")
        if run.models is not None:
            stdout.print(f"wrote {len(run.result.steps)} randomised model(s) to {safe(str(run.models))}")


def _print_sanity(document: dict) -> None:
    target = document["target"]
    table = Table(
        title=safe(
            f"occlude sanity: class {target['index']}{' ' + shortened(target['label']) if target['label'] else ''}, "
            f"{document['randomisation']['layers_with_weights']} layers with weights"
        ),
        title_justify="left",
    )
    for name in ("test", "layer", "weight", "Spearman", "Spearman |map|", "SSIM", "SSIM |map|", "top IoU"):
        table.add_column(name, justify="right" if name not in ("test", "weight") else "left")
    rows = list(document["steps"])
    if document["random_logit"] is not None:
        logit = document["random_logit"]
        rows.append({**logit, "test": "random logit", "position": "", "weight": f"class {logit['index']}"})
    for row in rows:
        table.add_row(
            row["test"],
            str(row["position"]),
            safe(row.get("weight") or ""),
            *(
                _fmt(row.get(k)) if row.get("error") is None else "failed"
                for k in ("spearman", "spearman_abs", "ssim", "ssim_abs", "top_iou")
            ),
        )
    stdout.print(table)
