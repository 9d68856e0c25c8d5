"""What every command shares: consoles, exit codes, the one-line error printer (naming flags where the library
names parameters: :data:`FLAGS`), and the flags declared once.

Shared flags live in dataclasses, :class:`ModelFlags` (which model and how to feed it), :class:`OcclusionFlags`
(how to occlude), :class:`RenderFlags` (and :mod:`.medicalflags`, :mod:`.taskflags`). Each field carries its Typer
declaration, with the parser that turns its text into the library's typed value (:mod:`occlude_cli.cli.parse`);
:func:`with_flags` adds a group's fields to a command's parameters and hands the command one filled-in dataclass,
whose ``options()`` or ``fields()`` is the library's typed spec. A new shared flag is one field here and
nothing else. This module is Typer only: every check and every computation is in the library.
"""

import copy
import dataclasses
import enum
import functools
import inspect
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Dict, Optional, Sequence, get_args

import typer
from rich.console import Console
from rich.markup import escape

from .._signals import ignore_interrupts, interrupted, raise_interrupt, reset_interrupted
from ..errors import InputsFailed, OccludeError, in_words
from ..text import shown
from . import parse


class ExitCode(enum.IntEnum):
    """Every exit code occlude uses (README, "Exit codes")."""

    OK = 0
    ERROR = 1  # error before any image ran: model, flags, output folder
    USAGE = 2  # command-line usage error: unknown flag, bad choice, missing argument
    IMAGES_FAILED = 3  # at least one image failed (or could not be checked); the others were processed
    CHECK_FAILED = 4  # occlude check: at least one image failed the check
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; finished files are complete, --resume finishes the job


EXIT_CODES_TEXT = (
    "Exit codes: 0 ok, 1 error (model, flags, output folder), 2 usage error, 3 some images failed, "
    "4 a check failed (occlude check, occlude bias thresholds), 130 interrupted."
)

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


def one_line(text) -> str:
    """Outside text (a path, a label, a message holding them) as the terminal shows it: the outside-text rule
    (:func:`occlude_cli.text.shown`): line breaks as \\n, escape sequences and undecodable bytes as \\xNN,
    bidirectional controls as \\uXXXX. One line, and nothing in it can drive the terminal."""
    return shown(text)


def safe(text) -> str:
    """Outside text ready for a rich console: :func:`one_line`, then rich's markup escaped."""
    return escape(shown(text))


# The library's parameter -> the flag that sets it, where the flag is not "--" + the name with dashes: the one
# table that turns a library message into the command line's words.
FLAGS = {
    "output_name": "--output",
    "input_name": "--input",
    "amplitude": "--noise",
    "replacement": "--replace",
    "tensor": "--layer",
    "clean_class": "--expect",
    "other_kind": "--map-kind",
    "scales": "--patch",
    "patches": "--patch",
    "ray": "--ray",
    "out_dir": "OUT_DIR",  # the argument of report and summary
}


def flag(param: str) -> str:
    """The flag that sets the library parameter ``param``."""
    return FLAGS.get(param) or "--" + param.replace("_", "-")


# parameters that errors about one input name (a 4-D NIfTI, a folder of several series): a check, bias or layers
# row keeps only the message, so these are shown as flags in every error line and table
INPUT_PARAMS = ("volume_index", "series_uid")


def in_flags(message: str, params: Sequence[str] = ()) -> str:
    """A library message in the command line's words: each parameter it names becomes its flag."""
    return in_words(message, (*params, *INPUT_PARAMS), flag)


def print_error(message, label: str = "error", params: Sequence[str] = ()) -> None:
    """One red line on stderr: ``message`` (an OccludeError is shown with its parameters as flags)."""
    if isinstance(message, OccludeError):
        message, params = str(message), message.params
    stderr.print(f"[bold red]{label}:[/] {safe(in_flags(str(message), params))}", soft_wrap=_one_line())


def print_json(document, command: bool = True) -> None:
    """A JSON document on stdout (``--json``), strings through the outside-text rule like every JSON file, with
    the versions and the command line every JSON file records (:func:`~occlude_cli.outputs.provenance.stamped`)."""
    from ..outputs.provenance import stamped
    from ..outputs.records import format_json

    sys.stdout.write(format_json(stamped(document, command)) + "\n")


def print_note(message: str, params: Sequence[str] = ()) -> None:
    stderr.print(f"[yellow]note:[/] {safe(in_flags(message, params))}", soft_wrap=_one_line())


def print_warning(message: str, source: Optional[str] = None) -> None:
    """One yellow ``warning:`` line on stderr, naming ``source`` (an input) first when given; ``message`` in
    the command line's words already (:func:`in_flags`: a file name is never rewritten)."""
    where = f"{safe(source)}: " if source else ""
    stderr.print(f"[yellow]warning:[/] {where}{safe(message)}", soft_wrap=_one_line())


def _one_line() -> bool:
    """Messages stay one line each in a log or a pipe (grep finds them whole); on a live terminal they are
    wrapped at word boundaries to its width."""
    return not stderr_is_terminal()


class RunNotes:
    """How a command's maps were computed (``Explanation.notes``: an approximate incremental plan, a plan that
    failed its self-check), each kind shown once per command on stderr, not once per image."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.seen: set = set()

    def show(self, explanation) -> None:
        for key, text in getattr(explanation, "notes", {}).items():
            if key not in self.seen:
                self.seen.add(key)
                if not self.quiet:
                    print_note(text)


def fail(message, code: int = ExitCode.ERROR) -> typer.Exit:
    if code == ExitCode.INTERRUPTED:
        ignore_interrupts()  # one 'interrupted' line: a second Ctrl-C while exiting adds none
    print_error(message)
    return typer.Exit(int(code))


def user_errors(command: Callable) -> Callable:
    """Turn OccludeError into one red line on stderr and exit code 1; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        reset_interrupted()
        previous = signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM stops like Ctrl-C, cleanly
        try:
            return command(*args, **kwargs)
        except InputsFailed as exc:  # every input failed, each told: exit 3 as for a folder run's failed images
            raise fail(exc, ExitCode.IMAGES_FAILED) from None
        except OccludeError as exc:
            if interrupted():  # the interrupt surfaced as another error (an import it landed in)
                raise fail("interrupted", ExitCode.INTERRUPTED) from None
            raise fail(exc) from None
        except KeyboardInterrupt:
            raise fail("interrupted", ExitCode.INTERRUPTED) from None
        finally:
            if signal.getsignal(signal.SIGTERM) is raise_interrupt:  # not when exiting on an interrupt (ignored)
                signal.signal(signal.SIGTERM, previous)

    return wrapper


# The two flags of every command that reads paths, declared once.
Recursive = Annotated[
    bool,
    typer.Option("--recursive", "-r", help="Look into sub-folders of folder arguments.", rich_help_panel="Basics"),
]
NullPaths = Annotated[
    bool, typer.Option("--null", "-0", rich_help_panel="Basics", help="Paths on stdin (-) are NUL-separated.")
]

# ------------------------------------------------------------------------------------- shared flags

from ..core.baselines import BASELINES  # noqa: E402  (after the helpers above; core is cheap to import)
from ..loaders.images import Interpolation, Layout, Resampler, ResizeMode  # noqa: E402
from ..loaders.model import Device, ScoreKind  # noqa: E402
from ..loaders.modelfiles import Preset  # noqa: E402

_SCORE_HELP = (
    "What to explain: auto (the model's probabilities, else softmax of logits, sigmoid of one logit), "
    "softmax, sigmoid, logit (not for Softmax/Sigmoid outputs), raw; prob = auto."
)
# A flag parsed into a value of the library's own type (int, tuple, float, list; see cli.parse): Typer sees Any
Parsed = Any


@dataclasses.dataclass
class ModelFlags:
    """Which model to load and how an image becomes its input."""

    device: Annotated[
        Device, typer.Option(help="auto (CUDA when onnxruntime offers it), cpu or cuda.", rich_help_panel="Speed")
    ] = Device.auto
    threads: Annotated[
        Optional[int],
        typer.Option(
            help="onnxruntime intra-op threads \\[default: the usable cores: CPU affinity and cgroup quota]; more "
            "than the usable cores is capped unless --force-threads.",
            rich_help_panel="Speed",
        ),
    ] = None
    force_threads: Annotated[
        bool,
        typer.Option(
            "--force-threads", help="Use --threads as given, even above the usable cores.", rich_help_panel="Speed"
        ),
    ] = False
    size: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.size("--size"),
            metavar="SIZE",
            help="Model input size HxW, for models with dynamic height/width.",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    layout: Annotated[
        Optional[Layout],
        typer.Option(help="nchw or nhwc, when the input shape does not tell.", rich_help_panel="Preprocessing"),
    ] = None
    mean: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.numbers("--mean"),
            metavar="VALUES",
            help="Per-channel mean (one value or R,G,B: always RGB order, also for --bgr models), subtracted "
            "after --scale.",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    std: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.numbers("--std"),
            metavar="VALUES",
            help="Per-channel std (one value or R,G,B: always RGB order), divided after the mean.",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    scale: Annotated[
        Optional[float],
        typer.Option(
            help="Pixel (0..255) multiplier: input = (pixel*scale - mean)/std \\[default: 1/255; integer "
            "inputs: 1, and mean 128 for int8].",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    bgr: Annotated[bool, typer.Option("--bgr", help="Feed channels in BGR order.", rich_help_panel="Preprocessing")] = (
        False
    )
    resize: Annotated[
        Optional[ResizeMode],
        typer.Option(
            help="stretch (whole image), center-crop (keep aspect, cut the long side) or letterbox (keep it, pad).",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    resize_short: Annotated[
        Optional[int],
        typer.Option(
            "--resize-short",
            metavar="S",
            rich_help_panel="Preprocessing",
            help="Resize the short side to S pixels, then center-crop the input size: --resize-short 256 on a "
            "224x224 model is torchvision's Resize(256) + CenterCrop(224).",
        ),
    ] = None
    interpolation: Annotated[
        Optional[Interpolation],
        typer.Option(
            rich_help_panel="Preprocessing",
            help="Resize filter (antialiased) \\[default: the model's config, else bilinear].",
        ),
    ] = None
    resampler: Annotated[
        Optional[Resampler],
        typer.Option(
            rich_help_panel="Preprocessing",
            help="Whose resize arithmetic: pil (Pillow on the 8-bit photo, as torchvision, timm and transformers on "
            "PIL images), torch (torchvision's uint8 tensor kernels: read_image, transformers 5's default) or float "
            "\\[default: torch for a preprocessor_config.json, pil with --resize-short or a timm config, else float].",
        ),
    ] = None
    preprocess: Annotated[
        Optional[Preset],
        typer.Option(
            rich_help_panel="Preprocessing",
            help="A preset below the other flags: torchvision (ImageNet mean/std, --resize-short 256, bilinear; "
            "ImageNet class names for 1000 outputs without labels).",
        ),
    ] = None
    labels: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.labels,
            metavar="FILE|imagenet",
            help="Class names, one per line, or imagenet (the 1,000 ImageNet-1k names shipped with occlude); "
            "overrides the model's own.",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    input_name: Annotated[
        Optional[str],
        typer.Option(
            "--input",
            help="The model's image input, by name (the only input occlude feeds: a model needing others is refused).",
            rich_help_panel="Preprocessing",
        ),
    ] = None
    output_name: Annotated[
        Optional[str],
        typer.Option("--output", help="Model output to explain, when it has several.", rich_help_panel="Preprocessing"),
    ] = None
    pad_value: Annotated[
        Optional[float],
        typer.Option(
            "--pad-value",
            rich_help_panel="Preprocessing",
            help="Padding of --resize letterbox, 0..255 \\[default: 114].",
        ),
    ] = None
    max_memory: Annotated[
        Optional[Parsed],
        typer.Option(
            "--max-memory",
            parser=parse.memory,
            metavar="SIZE",
            help="Memory budget, e.g. 2G or 512M \\[default: half the available memory, 256M to 4G]: larger "
            "images and models are refused before anything is allocated, and the batch is shrunk to fit.",
            rich_help_panel="Speed",
        ),
    ] = None

    def options(self):
        """The library's ModelOptions from these flags."""
        from ..analyses.preprocessing import ModelOptions

        return ModelOptions(
            device=self.device.value,
            threads=self.threads,
            force_threads=self.force_threads,
            size=self.size,
            layout=self.layout.value if self.layout else None,
            mean=self.mean,
            std=self.std,
            scale=self.scale,
            bgr=self.bgr,
            resize=self.resize.value if self.resize else None,
            resize_short=self.resize_short,
            interpolation=self.interpolation.value if self.interpolation else None,
            preprocess=self.preprocess.value if self.preprocess else None,
            resampler=self.resampler.value if self.resampler else None,
            labels=self.labels,
            input_name=self.input_name,
            output_name=self.output_name,
            max_memory=self.max_memory,
            pad_value=self.pad_value,
        )


class Incremental(str, enum.Enum):
    """Exact incremental inference for CNNs."""

    auto = "auto"
    on = "on"
    off = "off"


_INCREMENTAL_HELP = (
    "Recompute only what a window changes in a CNN (exact, checked at start-up). auto: where exact and "
    "faster (float32); on: required, approximate allowed for float16/int8 graphs; off: full passes."
)


class Batches(str, enum.Enum):
    """Where occluded batches are built."""

    auto = "auto"
    host = "host"
    device = "device"


_BATCHES_HELP = "Where occluded batches are built (auto: on the GPU with CUDA)."


@dataclasses.dataclass
class OcclusionFlags:
    """How to occlude (all but --patch, whose meaning differs between commands)."""

    stride: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.size("--stride"),
            metavar="SIZE",
            help="Step between windows, N, HxW or DxHxW for 3-D models \\[default: half the patch]. A last window "
            "flush with the border is always added.",
            rich_help_panel="Basics",
        ),
    ] = None
    baseline: Annotated[
        str,
        typer.Option(
            help="What fills the patch: "
            + ", ".join(b for b in BASELINES if b != "V or R,G,B")
            + ", a constant V or R,G,B (pixel units).",
            rich_help_panel="Basics",
        ),
    ] = "zero"
    baseline_image: Annotated[
        Optional[Path],
        typer.Option(
            "--baseline-image",
            metavar="PATH",
            help="Same as --baseline image:PATH (e.g. the clean image).",
            rich_help_panel="Basics",
        ),
    ] = None
    blur_sigma: Annotated[
        Optional[float],
        typer.Option(
            help="Gaussian sigma in pixels for --baseline blur \\[default: patch/2]; the kernel is capped at the "
            "image size.",
            rich_help_panel="Basics",
        ),
    ] = None
    seed: Annotated[int, typer.Option(help="Seed for --baseline noise (0 to 2^63-1).", rich_help_panel="Basics")] = 0
    target: Annotated[
        Optional[str],
        typer.Option(
            help="Class to explain: an index or a label name \\[default: top-1 prediction]. For one-output "
            "(binary) heads: 0 or the positive class's label.",
            rich_help_panel="Basics",
        ),
    ] = None
    score: Annotated[ScoreKind, typer.Option(help=_SCORE_HELP, rich_help_panel="Basics")] = ScoreKind.auto
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size",
            help="Occluded images per forward pass \\[default: automatic, within --max-memory].",
            rich_help_panel="Speed",
        ),
    ] = None
    incremental: Annotated[Incremental, typer.Option(help=_INCREMENTAL_HELP, rich_help_panel="Speed")] = (
        Incremental.auto
    )
    batches: Annotated[Batches, typer.Option(help=_BATCHES_HELP, rich_help_panel="Speed")] = Batches.auto

    def fields(self) -> dict:
        """ExplainOptions fields from these flags (the library checks them)."""
        baseline = self.baseline
        if self.baseline_image is not None:
            if str(baseline).strip().lower() != "zero":
                raise OccludeError("give --baseline-image PATH or --baseline, not both")
            baseline = f"image:{self.baseline_image}"
        return {
            "stride": self.stride,
            "baseline": baseline,
            "target": self.target,
            "score": self.score,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "blur_sigma": self.blur_sigma,
            "incremental": self.incremental.value,
            "batches": self.batches.value,
        }


def with_flags(
    *, hidden: Collection[str] = (), helps: Optional[Dict[str, str]] = None, **groups: type
) -> Callable[[Callable], Callable]:
    """Add the fields of each dataclass in ``groups`` (name -> class) to a command's parameters; the command
    receives one instance per group under that name. Typer sees one flag per field. ``hidden``: fields whose
    flags the command refuses with a reason of its own (``layers --seed``): parsed, not listed in --help.
    ``helps``: field -> the command's own help text for that flag (``layers --stride``: in feature cells)."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name not in groups]
        added = []
        for cls in groups.values():
            for f in dataclasses.fields(cls):
                annotation = _shown_flag(f.type, f.name in hidden, (helps or {}).get(f.name))
                added.append(
                    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=annotation)
                )

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            for name, cls in groups.items():
                kwargs[name] = cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
            return command(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            p.name: p.annotation for p in own + added if p.annotation is not inspect.Parameter.empty
        }
        del wrapper.__wrapped__  # Typer must read the new signature, not the command's own
        return wrapper

    return decorate


def _shown_flag(annotation, hidden: bool, help_text: Optional[str]):
    """``Annotated[T, typer.Option(...)]`` as a command shows it: with a copy of its option that --help leaves
    out (``hidden``) or describes by ``help_text``; the shared annotation itself when neither is asked."""
    if not hidden and help_text is None:
        return annotation
    kind, *extras = get_args(annotation)
    shown_extras = []
    for extra in extras:
        if isinstance(extra, typer.models.OptionInfo):
            extra = copy.copy(extra)
            extra.hidden = hidden
            extra.help = extra.help if help_text is None else help_text
        shown_extras.append(extra)
    return Annotated[tuple([kind, *shown_extras])]


def out_option(help_text: str = "Output folder.") -> Any:
    """The --out/-o option of every command that writes files: ``Annotated[Path, out_option(...)]``."""
    return typer.Option("--out", "-o", metavar="DIR", help=help_text, rich_help_panel="Basics")


def json_option(document: str) -> Any:
    """The --json option: ``document`` printed on stdout, and nothing else there (machine output only)."""
    return typer.Option("--json", help=f"Print {document} on stdout (nothing else).", rich_help_panel="Basics")


def quiet_option(help_text: str) -> Any:
    """The --quiet/-q option: ``help_text`` says what the command still prints."""
    return typer.Option("--quiet", "-q", help=help_text, rich_help_panel="Basics")


def stderr_is_terminal() -> bool:
    """Whether stderr may be drawn on live (bars, spinners): see :func:`occlude_cli.cli.screen.is_live`."""
    from .screen import is_live

    return is_live(stderr)


class Sign(str, enum.Enum):
    """Which values of the map a picture shows."""

    all = "all"
    positive = "positive"
    negative = "negative"


class Photo(str, enum.Enum):
    """How the photo under the map is shown."""

    gray = "gray"
    color = "color"


@dataclasses.dataclass
class CiFlags:
    """What CI systems read: a JUnit XML file and a markdown job summary (the manual's CI page)."""

    junit: Annotated[
        Optional[Path],
        typer.Option(
            "--junit",
            metavar="FILE",
            rich_help_panel="Output",
            help="Also write a JUnit XML report (CI test view).",
        ),
    ] = None
    summary_md: Annotated[
        Optional[Path],
        typer.Option(
            "--summary-md",
            metavar="FILE",
            rich_help_panel="Output",
            help="Markdown job summary (and $GITHUB_STEP_SUMMARY).",
        ),
    ] = None

    def fields(self) -> dict:
        """The library's keywords: ``junit`` and ``summary_md`` (this flag's file and $GITHUB_STEP_SUMMARY)."""
        from ..outputs.ci import summary_targets

        return {"junit": self.junit, "summary_md": summary_targets(self.summary_md)}


@dataclasses.dataclass
class RenderFlags:
    """How maps are drawn (PNG only: the JSON and .npy never change with these)."""

    cmap: Annotated[
        str,
        typer.Option(
            help="Matplotlib colormap of the map (diverging ones keep zero neutral): RdBu_r, coolwarm, bwr, "
            "seismic, PiYG, ...",
            rich_help_panel="Output",
        ),
    ] = "RdBu_r"
    alpha: Annotated[
        float,
        typer.Option(
            help="Opacity of the map layer at the colour limit, 0..1 (opacity grows from 0 with |value|).",
            rich_help_panel="Output",
        ),
    ] = 0.8
    clip_percentile: Annotated[
        Optional[float],
        typer.Option(
            "--clip-percentile",
            help="Colour limit at this percentile of |value| (e.g. 99), so a few outliers do not wash out the "
            "rest \\[default: the maximum].",
            rich_help_panel="Output",
        ),
    ] = None
    sign: Annotated[
        Sign,
        typer.Option(
            help="Show all values, or only the positive (supporting) or negative (opposing) ones.",
            rich_help_panel="Output",
        ),
    ] = Sign.all
    photo: Annotated[
        Photo,
        typer.Option(
            help="The photo under the map: gray (desaturated, contrast compressed: the map stays readable on red "
            "and dark photos) or color.",
            rich_help_panel="Output",
        ),
    ] = Photo.gray
    color_limit: Annotated[
        Optional[Parsed],
        typer.Option(
            "--color-limit",
            parser=parse.color_limit,
            metavar="V|shared",
            rich_help_panel="Output",
            help="One colour limit for every picture: V, or shared (the largest |value| of the run's maps).",
        ),
    ] = None
    panels: Annotated[
        bool,
        typer.Option(
            "--panels",
            help="Also write STEM.panels.png: original | heatmap | overlay side by side.",
            rich_help_panel="Output",
        ),
    ] = False

    def style(self):
        """The library's RenderStyle from these flags (the library checks it)."""
        from ..pictures.render import RenderStyle

        return RenderStyle(
            cmap=self.cmap,
            alpha=float(self.alpha),
            clip_percentile=self.clip_percentile,
            sign=self.sign.value,
            photo=self.photo.value,
            color_limit=self.color_limit,
        )
