"""The memory budget (``--max-memory``): every large allocation is checked against it *before* it is made.

What is checked, and when:

- **images**: the header is read first (Pillow opens lazily); an image whose decoding would need more than
  the budget (about :data:`BYTES_PER_SAMPLE` bytes per pixel and band: the decoded image, its float32 copy
  and the resize) or that has more than :data:`MAX_PIXELS` pixels (Pillow's decompression-bomb limit) is
  refused without being decoded;
- **medical inputs** (NIfTI, DICOM files and series): the shape and data type come from the header(s) before
  a voxel is read; a volume needing more than the budget (:data:`VOLUME_BYTES_PER_VOXEL` per voxel for
  volumes, :data:`SLICE_BYTES_PER_PIXEL` per pixel for 2-D slices, which are also drawn at full resolution)
  is refused (:func:`check_volume_size`); compressed streams (``.nii.gz``, deflated DICOM) are never
  inflated past what the header promises or the budget;
- **the model input**: a model that declares a huge input (3x100000x100000) is refused from its graph, before
  onnxruntime loads it or anything is fed to it; so is a ``--size`` that would not fit;
- **per image**: the model input, its baseline, the window scores (windows x classes), ``--all-classes`` maps;
- **batch buffers**: the batch is shrunk to fit what is left of the budget rather than failing (the batch
  used is recorded in each JSON's ``params.batch_size``).

Every refusal is one :class:`OccludeError` line naming the limit and its parameter (``max_memory``; the command
line shows its flag, ``--max-memory``).
Numpy and Pillow only.
"""

from __future__ import annotations

import math
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import OccludeError

# Bytes of working memory per pixel and band while an image is decoded and resized: the decoded image
# (1 byte), its float32 copy (4), one float32 channel plane in the resize (4) and the mode conversions.
# Measured: a 6000x4000 RGB photo peaks near 1.2 GB, i.e. 24e6 * 3 * 16.
BYTES_PER_SAMPLE = 16
# Pillow warns of a possible decompression bomb above this many pixels (and refuses above twice as many).
# occlude refuses above it, whatever the budget: 89,478,485 pixels, e.g. 9459x9459.
MAX_PIXELS = 89_478_485
# The default budget: half of the memory available when the run starts, between these bounds.
DEFAULT_MIN = 256 << 20
DEFAULT_MAX = 4 << 30
SMALLEST = 16 << 20  # below this nothing useful runs
PARAM = "max_memory"  # the parameter messages name (the command line shows its flag, --max-memory)


def human(n: float) -> str:
    """Bytes in binary units, 3 significant figures: 1.50 GiB, 512 MiB."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def available_memory() -> Optional[int]:
    """MemAvailable from /proc/meminfo, capped by a cgroup v2/v1 memory limit; None where neither exists."""
    found: Optional[int] = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        found = None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            text = Path(limit_file).read_text().strip()
            if text == "max":
                continue
            room = int(text) - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if room > 0 and room < (1 << 50):
            found = room if found is None else min(found, room)
    return found


def default_budget() -> int:
    """Half of the available memory, at least 256 MiB and at most 4 GiB (4 GiB when it cannot be read)."""
    available = available_memory()
    if available is None:
        return 4 << 30
    return int(min(DEFAULT_MAX, max(DEFAULT_MIN, available // 2)))


_budget: Optional[int] = None


def set_budget(n_bytes: Optional[int]) -> None:
    """Set the process-wide budget (None: back to :func:`default_budget`); ``open_model`` sets it from
    ``ModelOptions.max_memory``."""
    global _budget
    if n_bytes is not None and n_bytes < SMALLEST:
        raise OccludeError(f"max_memory must be at least {human(SMALLEST)}, got {n_bytes} bytes", params=(PARAM,))
    _budget = None if n_bytes is None else int(n_bytes)


def budget() -> int:
    """The budget in force: what :func:`set_budget` set, else :func:`default_budget`."""
    return _budget if _budget is not None else default_budget()


def _limit_text(limit: int) -> str:
    return f"{PARAM} {human(limit)}"


def check_count(count: int, each: int, param: str, what: str, limit: Optional[int] = None) -> None:
    """Refuse ``count`` items of ``each`` bytes (``what`` they are) before they are allocated, when together
    they need more than the budget; the error names ``param`` (the count) and the budget."""
    limit = budget() if limit is None else limit
    need = int(count) * max(1, int(each))
    if need > limit:
        raise OccludeError(
            f"{param} {int(count)} needs about {human(need)} of memory ({what}); the limit is {_limit_text(limit)}",
            params=(param, PARAM),
        )


# ------------------------------------------------------------------------------------------ images


def check_float_image(image, path):
    """Refuse a 32-bit float image (Pillow mode F): its values have no agreed range (0..1, 0..255, sensor
    units) and guessing one would explain a different picture. One error naming the file, with its NaN or
    infinite pixels, else its value range. Returns ``image`` (any other mode)."""
    if image.mode != "F":
        return image
    data = np.asarray(image, dtype=np.float64)
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise OccludeError(f"{path}: a 32-bit float image with {bad} NaN or infinite pixel(s)")
    span = f"{data.min():g}..{data.max():g}" if data.size else "empty"
    raise OccludeError(
        f"{path}: a 32-bit float image (values {span}) has no pixel range occlude can know; save it "
        "as an 8- or 16-bit image scaled as the model expects (0..255 or 0..65535)"
    )


def check_image_size(width: int, height: int, bands: int, name: str, limit: Optional[int] = None) -> None:
    """Refuse an image by its header: more than :data:`MAX_PIXELS` pixels, or more memory to decode and
    resize than the budget. Called before a single pixel is decoded."""
    limit = budget() if limit is None else limit
    pixels = int(width) * int(height)
    need = pixels * max(1, int(bands)) * BYTES_PER_SAMPLE
    if pixels > MAX_PIXELS or need > limit:
        raise OccludeError(
            f"image too large: {name} is {width}x{height} ({pixels / 1e6:.1f} Mpx, about {human(need)} to decode); "
            f"the limits are {MAX_PIXELS / 1e6:.1f} Mpx (Pillow's decompression-bomb limit) and {_limit_text(limit)}",
            params=(PARAM,),
        )


def bomb_message(name: str, exc: BaseException, limit: Optional[int] = None) -> str:
    """One line for Pillow's DecompressionBombError/Warning (raised before our own header check could run)."""
    limit = budget() if limit is None else limit
    numbers = re.findall(r"\d+", str(exc))
    size = f" ({int(numbers[0]) / 1e6:.1f} Mpx)" if numbers else ""
    return (
        f"image too large: {name}{size}; the limits are {MAX_PIXELS / 1e6:.1f} Mpx (Pillow's decompression-bomb "
        f"limit) and {_limit_text(limit)}"
    )


# ------------------------------------------------------------------------------------------ medical

# Bytes of working memory per voxel of a medical volume, the file's own samples not counted: the float32 volume
# held for the whole run (4), and at the worst moment 8 more: a percentile copy for display (4) or cubic
# resampling's float64 spline coefficients (8) while the model input is made; or, while STEM.map.nii.gz is
# written, the map interpolated back onto the input's grid (4) and its compressed bytes (at most about 4). The
# file is read in slabs (at most SLAB_BYTES at a time, see loaders.medical); the rest is per voxel of the model
# grid and is counted by plan_memory. Measured: a 256x256x160 int16 .nii.gz run peaks about 13 bytes per voxel
# above the same run on a small volume (316 against 182 MB); a 120x512x512 series about 10.
VOLUME_BYTES_PER_VOXEL = 16
# 2-D slices (DICOM) are also drawn at full resolution, like photos: the windowed display (float64), the
# overlay's colour planes and Pillow's resize (compare BYTES_PER_SAMPLE x 3 bands for an RGB photo). Measured: a
# 3000x3000 int16 CT slice about 34 bytes per pixel.
SLICE_BYTES_PER_PIXEL = 48
# Largest piece of a file's samples converted at once (plus its float copies): the slab of a NIfTI read or a
# DICOM conversion.
SLAB_BYTES = 16 << 20


def volume_need(shape: Sequence[int], itemsize: int = 2) -> int:
    """Bytes a medical input of this array shape is expected to need at its peak (see the constants above):
    per voxel for volumes, per pixel for 2-D slices, plus one slab of the file's samples."""
    voxels = int(math.prod(int(s) for s in shape))
    per = SLICE_BYTES_PER_PIXEL if len(shape) == 2 else VOLUME_BYTES_PER_VOXEL
    return voxels * per + min(voxels * max(1, int(itemsize)), SLAB_BYTES) * 3


def check_volume_size(
    shape: Sequence[int], dtype: str, name: str, *, itemsize: int = 2, limit: Optional[int] = None
) -> None:
    """Refuse a medical input by its header: the array shape and sample type it declares would need more
    than the budget (see :func:`volume_need`). Called before any voxel is read or inflated."""
    limit = budget() if limit is None else limit
    need = volume_need(shape, itemsize)
    if need > limit:
        voxels = int(math.prod(int(s) for s in shape))
        what = "slice" if len(shape) == 2 else "volume"
        raise OccludeError(
            f"{what} too large: {name} is {'x'.join(str(int(s)) for s in shape)} {dtype} "
            f"({voxels / 1e6:.1f} M {'pixels' if what == 'slice' else 'voxels'}, about {human(need)} to read and "
            f"explain); the limit is {_limit_text(limit)}",
            params=(PARAM,),
        )


def check_stream_size(size: int, name: str, what: str, limit: Optional[int] = None) -> None:
    """Refuse to inflate (or skip through) more than the budget of a compressed stream: ``size`` bytes so far."""
    limit = budget() if limit is None else limit
    if size > limit:
        raise OccludeError(
            f"{what} too large: {name} inflates to more than {human(size)} (a decompression bomb?); the limit is "
            f"{_limit_text(limit)}",
            params=(PARAM,),
        )


# ------------------------------------------------------------------------------------------ models


def declared_input_bytes(model_path) -> Tuple[str, list, int]:
    """The largest graph input (not an initializer) of an ONNX file as (name, shape, bytes), with dynamic
    dimensions counted as 1. Reads the graph only (no external weights, no onnxruntime), or the cache."""
    from ..inference.facts import model_facts

    return model_facts(model_path).largest_input


def check_model_file(model_path, limit: Optional[int] = None) -> None:
    """Refuse, from the graph alone, a model whose one-sample input does not fit the budget (checked before
    onnxruntime loads the model: a fixed-batch model is run once at load time to validate its batch rewrite)."""
    limit = budget() if limit is None else limit
    try:
        mode = Path(model_path).stat().st_mode
    except OSError:
        return  # missing: the model loader says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise OccludeError(f"model is not a regular file (a FIFO or a device), not opened: {model_path}")
    if stat.S_ISDIR(mode):
        return
    name, shape, size = declared_input_bytes(model_path)
    if size * 4 > limit:  # the input, its baseline, one occluded copy and the float64 preprocessing
        raise OccludeError(
            f"model input {name!r} declares shape {shape} ({human(size)} per image, about {human(size * 4)} to "
            f"explain one image): above the memory limit {_limit_text(limit)}",
            params=(PARAM,),
        )


@dataclass(frozen=True)
class MemoryPlan:
    """What one image of a run needs, and the batch that fits the rest of the budget."""

    per_image: int  # bytes held for one image besides the batch buffer
    sample: int  # bytes of one model input
    batch_size: int  # the batch to use (<= the one asked for)
    requested: int  # the batch asked for (or the default)
    limit: int

    @property
    def shrunk(self) -> bool:
        return self.batch_size < self.requested

    def note(self) -> Optional[str]:
        if not self.shrunk:
            return None
        return (
            f"batch size lowered from {self.requested} to {self.batch_size} to stay within "
            f"{_limit_text(self.limit)} ({human(self.sample)} per occluded copy)"
        )


def plan_memory(
    size: Sequence[int],
    channels: int,
    itemsize: int,
    *,
    windows: int,
    classes: Optional[int],
    requested_batch: int,
    all_classes: bool = False,
    targets: int = 1,
    limit: Optional[int] = None,
) -> MemoryPlan:
    """Check one image's working set against the budget and fit the batch into what is left.

    Counted: the model input and its baseline (model dtype), the resized pixels (float32) and the float64
    normalisation temporaries, the window scores (windows x classes float64, twice: scores and drops), the
    maps kept (targets, or every class with ``all_classes``, float64 then float32), and the class-chunked
    aggregation (at most 256 MiB, see core.engine). The batch buffer and its outputs are then fitted into
    the rest; a refusal names the limit and the flag."""
    limit = budget() if limit is None else limit
    pixels = int(math.prod(int(s) for s in size))  # pixels, or voxels of a volume
    sample = pixels * channels * itemsize
    classes = max(1, int(classes or 1))
    maps = (classes if all_classes else max(1, targets)) * pixels * 12
    aggregation = min(256 << 20, int(math.prod(int(s) + 1 for s in size)) * 8 * min(classes, 64))
    per_image = 2 * sample + pixels * channels * (4 + 8 + 8) + 2 * windows * classes * 8 + maps + aggregation
    per_row = sample + classes * 8 * 2  # one occluded copy, its raw and transformed outputs
    room = limit - per_image
    if room < per_row:
        parts = (
            f"input {human(sample)}, window scores {human(2 * windows * classes * 8)}"
            + (f", every class's map {human(maps)}" if all_classes else "")
            + f", at least one occluded copy {human(per_row)}"
        )
        raise OccludeError(
            f"one image needs about {human(per_image + per_row)} ({parts}): above the memory limit "
            f"{_limit_text(limit)}; raise it, or use a larger stride, fewer classes, or no all_classes",
            params=(PARAM, "stride", "all_classes"),
        )
    fits = max(1, int(room // per_row))
    return MemoryPlan(
        per_image=per_image,
        sample=sample,
        batch_size=min(requested_batch, fits),
        requested=requested_batch,
        limit=limit,
    )
