"""The ``image:PATH`` baseline (issue 25): another image, prepared exactly like the input, whose windows fill
the input's windows. Read once per file version and preprocessing (a small cache)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Tuple

import numpy as np

from ..errors import OccludeError
from .images import Preprocessing, prepare_image


@functools.lru_cache(maxsize=4)
def _baseline_image(path: str, identity: tuple, preprocessing: Preprocessing) -> Tuple[np.ndarray, str, tuple]:
    from ..inference.facts import file_sha256

    prepared = prepare_image(path, preprocessing)  # first: refuses a folder, a FIFO, a non-image unread
    sha = file_sha256(path)
    prepared.model_input.flags.writeable = False  # shared by every input of a run
    return prepared.model_input, sha, prepared.original_size


def baseline_image(path, preprocessing: Preprocessing) -> Tuple[np.ndarray, dict]:
    """The ``image:PATH`` baseline: the image at ``path`` prepared exactly like an input (:func:`prepare_image`:
    the same resize or crop, colour order, normalisation and type), so that a window of it fills the same window
    of the input; and its record (``path``, ``sha256`` of the file, ``width``, ``height``). Read once per file
    version and preprocessing. OccludeError (naming ``baseline``) when it is not an image."""
    file = Path(path)
    try:
        info = file.stat()
    except OSError:
        raise OccludeError(f"baseline image:{file}: no such file", params=("baseline",)) from None
    try:
        model_input, sha, (width, height) = _baseline_image(
            str(file), (info.st_size, info.st_mtime_ns, info.st_ino), preprocessing
        )
    except OccludeError as exc:
        raise OccludeError(f"baseline image:{file}: {exc}", params=("baseline",)) from None
    return model_input, {"path": str(file), "sha256": sha, "width": int(width), "height": int(height)}
