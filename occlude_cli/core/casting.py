"""Type conversion into a model's input: computation in float, then one explicit, range-checked cast.

numpy converts silently: ``np.asarray(300.0).astype(np.int8)`` wraps around, ``np.clip`` then ``astype``
saturates, and ``np.float16(70000.0)`` is ``inf``. Every conversion of computed values into a model's input
type goes through :func:`cast_checked`, which rounds to the nearest integer for integer types and refuses a
value the type cannot hold with one :class:`~occlude_cli.errors.OccludeError` that says how many values were
out of range, by how much, and what the type holds. Numpy only.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import OccludeError


def type_range(dtype) -> Tuple[float, float]:
    """The smallest and largest finite value ``dtype`` (an integer or float numpy type) can hold."""
    kind = np.dtype(dtype)
    if kind.kind in "iu":
        info = np.iinfo(kind)
        return float(info.min), float(info.max)
    if kind.kind == "f":
        limit = float(np.finfo(kind).max)
        return -limit, limit
    raise OccludeError(f"unsupported input type {kind}: occlude converts into integer and float types only")


def round_for(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` (float) as they will be stored in ``dtype``: rounded half to even for integer types
    (numpy's ``rint``, as ONNX QuantizeLinear rounds), unchanged for float types."""
    values = np.asarray(values, dtype=np.float64)
    return np.rint(values) if np.dtype(dtype).kind in "iu" else values


def out_of_range(values: np.ndarray, dtype) -> np.ndarray:
    """Bool mask of the values (float) that ``dtype`` cannot hold after rounding (NaN counts as out of range
    for integer types; float types keep NaN as NaN, but a finite value that would overflow to inf is out)."""
    lo, hi = type_range(dtype)
    rounded = round_for(values, dtype)
    if np.dtype(dtype).kind in "iu":
        return ~((rounded >= lo) & (rounded <= hi))
    finite = np.isfinite(rounded)
    return finite & ((rounded < lo) | (rounded > hi))


def describe_range(dtype) -> str:
    """'int8 holds -128..127' / 'float16 holds +-65504'."""
    lo, hi = type_range(dtype)
    name = np.dtype(dtype).name
    if np.dtype(dtype).kind in "iu":
        return f"{name} holds {lo:.0f}..{hi:.0f}"
    return f"{name} holds +-{hi:.6g}"


def cast_checked(values, dtype, what: str = "the model input") -> np.ndarray:
    """``values`` converted into ``dtype`` (C-contiguous): rounded for integer types, and refused with one
    OccludeError when any value does not fit (``what`` names the array in the message). Never clips."""
    target = np.dtype(dtype)
    array = np.asarray(values)
    if array.dtype == target:
        return np.ascontiguousarray(array)
    floats = np.asarray(array, dtype=np.float64)
    bad = out_of_range(floats, target)
    if bad.any():
        shown = floats[bad]
        finite = shown[np.isfinite(shown)]
        span = f"; they span {finite.min():.6g}..{finite.max():.6g}" if finite.size else ""
        raise OccludeError(
            f"{what}: {int(bad.sum())} of {floats.size} values ({100.0 * bad.sum() / floats.size:.3g}%) do not fit "
            f"its type, {describe_range(target)}{span}; they would be clipped, so nothing was run "
            "(check the preprocessing: scale, mean, std, the input's quantization, the baseline)"
        )
    return np.ascontiguousarray(round_for(floats, target).astype(target))
