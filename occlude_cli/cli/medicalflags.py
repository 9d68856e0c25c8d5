"""The medical flags (DICOM, NIfTI, series, windows, region tables, de-identification), declared once:
:class:`MedicalInputFlags` for every command that reads scans, :class:`MedicalFlags` for ``occlude run``."""

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import parse

Parsed = Any  # a value cli/parse.py made from the flag's text


@dataclasses.dataclass
class MedicalInputFlags:
    """DICOM / NIfTI inputs: intensity transform (overrides the model's metadata), series, 4-D volume."""

    window: Annotated[
        Optional[str],
        typer.Option(
            help="CT/MR window mapped to 0..1 before the model: lung, mediastinum, bone, brain, WIDTH,LEVEL "
            "(1500,-600), or 'file' (the DICOM file's own).",
            rich_help_panel="Medical",
        ),
    ] = None
    intensity_range: Annotated[
        Optional[Parsed],
        typer.Option(
            "--intensity-range",
            parser=parse.pair("--intensity-range", "two numbers LO,HI such as -1000,400"),
            metavar="LO,HI",
            help="LO,HI: clip real-unit intensities (HU, MR units) to [LO, HI] and scale to 0..1, for models "
            "trained on a fixed range.",
            rich_help_panel="Medical",
        ),
    ] = None
    zscore: Annotated[
        bool,
        typer.Option(
            "--zscore",
            help="Normalise the volume to zero mean, unit standard deviation (statistics from voxels above "
            "--zscore-threshold when given).",
            rich_help_panel="Medical",
        ),
    ] = False
    zscore_threshold: Annotated[
        Optional[float],
        typer.Option(
            "--zscore-threshold",
            help="With --zscore: compute mean and std over voxels > T only (e.g. tissue, not air).",
            rich_help_panel="Medical",
        ),
    ] = None
    series: Annotated[
        bool,
        typer.Option(
            "--series",
            help="Treat each folder argument as ONE DICOM series (a volume), sorted by ImagePositionPatient.",
            rich_help_panel="Medical",
        ),
    ] = False
    volume_index: Annotated[
        Optional[int],
        typer.Option(
            "--volume-index",
            help="Pick volume N of a 4-D NIfTI (time series); 4-D files are refused without it.",
            rich_help_panel="Medical",
        ),
    ] = None
    series_uid: Annotated[
        Optional[str],
        typer.Option(
            "--series-uid",
            metavar="UID",
            help="With --series: the SeriesInstanceUID to read from folders that hold several series.",
            rich_help_panel="Medical",
        ),
    ] = None
    display_window: Annotated[
        Optional[str],
        typer.Option(
            "--display-window",
            metavar="WINDOW",
            help="Window of the pictures only (preset, WIDTH,LEVEL or 'file'); the model keeps its own.",
            rich_help_panel="Medical",
        ),
    ] = None

    def fields(self) -> dict:
        """ExplainOptions fields from these flags (the library checks them)."""
        return {
            "window": self.window,
            "intensity_range": self.intensity_range,
            "zscore": self.zscore,
            "zscore_threshold": self.zscore_threshold,
            "series": self.series,
            "series_uid": self.series_uid,
            "volume_index": self.volume_index,
            "display_window": self.display_window,
        }


REGIONS_OPTION = typer.Option(
    "--regions",
    metavar="LABELMAP",
    help="Label map (NIfTI, DICOM SEG or RT-STRUCT, e.g. an atlas): per region the share of importance, mean drop "
    "and voxels, in the JSON and STEM.regions.csv.",
    rich_help_panel="Medical",
)


DEIDENTIFY_OPTION = typer.Option(
    "--deidentify",
    help="Patient data stays out of every output: inputs named by pseudonyms, UIDs replaced, paths scrubbed.",
    rich_help_panel="Medical",
)


@dataclasses.dataclass
class MedicalFlags(MedicalInputFlags):
    """`occlude run`'s medical flags: the inputs' (MedicalInputFlags) and the NIfTI output."""

    nifti: Annotated[
        bool,
        typer.Option(
            "--nifti/--no-nifti",
            help="Write STEM.map.nii.gz (the map on the input's own voxel grid, with its affine) for DICOM/NIfTI "
            "inputs.",
            rich_help_panel="Medical",
        ),
    ] = True
    regions: Annotated[Optional[Path], REGIONS_OPTION] = None
    dicom_out: Annotated[
        bool,
        typer.Option(
            "--dicom-out",
            help="Also write the map as a DICOM Parametric Map (STEM.pm.dcm) and the picture as a Secondary "
            "Capture (STEM.sc.dcm).",
            rich_help_panel="Medical",
        ),
    ] = False
    deidentify: Annotated[bool, DEIDENTIFY_OPTION] = False
