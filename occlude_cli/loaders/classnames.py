"""Class names: a label file read (:func:`read_labels`), a target given as an index or a name resolved against
them (:func:`resolve_target`), and the near misses suggested when a name is none of them."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import OccludeError


def read_labels(path) -> List[str]:
    """Class names from a text file, one per line (blank lines kept as empty names would shift indices, so
    only trailing blank lines are dropped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OccludeError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OccludeError(f"cannot read labels file {path}: {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise OccludeError(f"labels file is empty: {path}")
    return lines


def label_suggestions(text: str, labels: Sequence[str]) -> str:
    """'; did you mean: A, B' for the labels closest to ``text`` (substring matches, then near misses), or ''."""
    lowered = [label.lower() for label in labels]
    want = text.lower()
    close = [labels[i] for i, label in enumerate(lowered) if want in label][:5]
    if len(close) < 5:
        near = difflib.get_close_matches(want, lowered, n=5, cutoff=0.6)
        close += [labels[lowered.index(n)] for n in near if labels[lowered.index(n)] not in close][: 5 - len(close)]
    return f"; did you mean: {', '.join(close)}" if close else ""


def resolve_target(target, labels: Optional[Sequence[str]], num_classes: int) -> int:
    """A --target given as an index or a label name -> class index."""
    text = str(target).strip()
    try:
        index = int(text)
    except ValueError:
        if not labels:
            raise OccludeError(
                f"target {text!r} is a name but the model has no labels (give labels or an index)", params=("labels",)
            ) from None
        lowered = [label.lower() for label in labels]
        matches = [i for i, label in enumerate(lowered) if label == text.lower()]
        if len(matches) > 1:
            classes = ", ".join(str(i) for i in matches[:-1]) + f" and {matches[-1]}"
            message = f"ambiguous label {text!r}: classes {classes}; use the index"
            raise OccludeError(message, params=("target",)) from None
        if matches:
            return matches[0]
        hint = label_suggestions(text, labels)
        raise OccludeError(f"target {text!r} is none of the model's labels{hint}", params=("target",)) from None
    if not 0 <= index < num_classes:
        raise OccludeError(
            f"target {index} is out of range: the model has {num_classes} classes (0..{num_classes - 1})",
            params=("target",),
        )
    return index
