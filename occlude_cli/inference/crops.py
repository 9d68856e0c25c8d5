"""The geometry of an incremental plan's crops: for every window and every part of the chain, where its crop of
the part's source tensor lies and how large it is, which positions of the part's target the window changed, and
where those go (into the next part's crop, or into the whole last tensor).

Crops come in a few sizes per part (*classes*): a window whose changed positions need a shorter crop along an
axis (near a border, or aligned so that it touches fewer positions of a strided tensor) gets the shorter of two
lengths per axis when that saves work, so a part runs at most four crop shapes, each batched over its windows.
Every length is congruent to the tensor's extent modulo the part's stride and every crop starts on a multiple of
the stride (or ends on the tensor's far border): each layer of the part then sees the crop on the whole tensor's
grid, and its padding falls where it falls on the whole tensor (see :mod:`occlude_cli.inference.incremental`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .exactness import IncrementalUnavailable
from .selfcheck import _slices

# Crop lengths per axis and part at most: two (so at most four crop shapes, four onnxruntime calls, per part and
# batch of windows); the shorter one is used only where it saves at least this share of the part's crop area.
LENGTHS_PER_AXIS = 2
MIN_SAVING = 0.05


@dataclass
class Geometry:
    """Per window and part k: the crop's origin (N, 2) in source positions and its size (N, 2); the part's
    crop class of each window (N,) and the class shapes; the target's changed interval (N, 2, 2: axis,
    [lo, hi)) in target positions. Also the index tuples the per-window copies use (no batch axis), built once
    per set of windows."""

    origins: List[np.ndarray]
    lengths: List[np.ndarray]
    classes: List[np.ndarray]
    shapes: List[List[Tuple[int, int]]]
    changed: List[np.ndarray]
    crops: List[List[tuple]] = field(default_factory=list)  # [k][w]: the crop of T_k (source of segment k)
    occluded: List[Optional[Tuple[tuple, tuple]]] = field(default_factory=list)  # [w]: (in the crop, in the input)
    pastes: List[List[Optional[Tuple[tuple, tuple]]]] = field(default_factory=list)  # [k][w]: (from, to)
    reach: List[np.ndarray] = field(default_factory=list)  # [k]: (N, 2, 2) read extent in segment k's crop output
    covered: Dict[Tuple[int, int], tuple] = field(default_factory=dict)  # (k, class): a checked crop output shape

    @property
    def sizes(self) -> List[Tuple[int, int]]:
        """The largest crop shape of each part."""
        return [tuple(int(v) for v in np.max(lengths, axis=0)) for lengths in self.lengths]  # type: ignore[misc]

    def members(self, k: int, start: int, stop: int) -> List[Tuple[int, Tuple[int, int], List[int]]]:
        """Part k's crop classes among windows [start, stop): (class, crop shape, positions in that range)."""
        ids = self.classes[k][start:stop]
        out = []
        for c, shape in enumerate(self.shapes[k]):
            chosen = np.flatnonzero(ids == c)
            if len(chosen):
                out.append((c, shape, chosen.tolist()))
        return out


def _lengths(need0: np.ndarray, need1: np.ndarray, stride: int, extent: int) -> np.ndarray:
    """Each window's shortest crop length: from its need0 rounded down to the stride to need1, lengthened to be
    congruent to the extent modulo the stride, at most the extent (and at least one stride)."""
    base = (need0 // stride) * stride
    length = np.maximum(need1 - base, 1)
    length = length + (extent % stride - length) % stride
    return np.minimum(length, extent)


def choose_lengths(lengths: np.ndarray) -> np.ndarray:
    """The crop length each window gets along one axis: the longest, or for the windows that fit, the one
    shorter length (of theirs) that saves the most in all, when it saves at least MIN_SAVING."""
    longest = int(np.max(lengths)) if len(lengths) else 1
    chosen = np.full(len(lengths), longest, dtype=np.int64)
    if LENGTHS_PER_AXIS < 2 or len(lengths) == 0:
        return chosen
    best, best_saving = None, MIN_SAVING * longest * len(lengths)
    for value in np.unique(lengths)[:-1].tolist():
        saving = (longest - value) * int(np.count_nonzero(lengths <= value))
        if saving > best_saving:
            best, best_saving = value, saving
    if best is not None:
        chosen[lengths <= best] = best
    return chosen


def crop_plan(
    fields: Sequence[Tuple[int, int, int]], lo: np.ndarray, hi: np.ndarray, n_src: Sequence[int], n_dst: Sequence[int]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One part's crops for windows whose changed source positions are [lo, hi) per axis ((N, 2) each):
    (origins, lengths, changed target lo, changed target hi). ``fields``: (stride, offset, size) per axis of the
    target's receptive field relative to the source."""
    j0 = np.empty_like(lo)
    j1 = np.empty_like(lo)
    origins = np.empty_like(lo)
    lengths = np.empty_like(lo)
    for a, (s, off, size) in enumerate(fields):
        j0[:, a] = np.maximum(0, -((off + size - 1 - lo[:, a]) // s))
        j1[:, a] = np.minimum(n_dst[a], (hi[:, a] - 1 - off) // s + 1)
        empty = (j1[:, a] <= j0[:, a]) | (hi[:, a] <= lo[:, a])
        j1[:, a] = np.where(empty, j0[:, a], j1[:, a])
        need0 = np.clip(j0[:, a] * s + off, 0, n_src[a])
        need1 = np.where(empty, need0, np.clip((j1[:, a] - 1) * s + off + size, 0, n_src[a]))
        lengths[:, a] = choose_lengths(_lengths(need0, need1, s, int(n_src[a])))
        origins[:, a] = np.minimum((need0 // s) * s, n_src[a] - lengths[:, a])
    return origins, lengths, j0, j1


def window_geometry(segments, input_extent: Tuple[int, int], windows: np.ndarray) -> Geometry:
    """The crops of every window (y, x, h, w in input pixels) through the chain of ``segments``."""
    lo = np.stack([windows[:, 0], windows[:, 1]], axis=1)
    hi = lo + np.stack([windows[:, 2], windows[:, 3]], axis=1)
    extent = np.asarray(input_extent)
    lo, hi = np.clip(lo, 0, extent), np.clip(hi, 0, extent)
    origins, lengths, classes, shapes, changed = [], [], [], [], []
    for segment in segments:
        fields = [(r.stride, r.offset, r.size) for r in segment.rf]
        origin, length, j0, j1 = crop_plan(fields, lo, hi, segment.source_extent, segment.target_extent)
        kinds, ids = np.unique(length, axis=0, return_inverse=True)
        origins.append(origin)
        lengths.append(length)
        classes.append(np.asarray(ids).reshape(-1))
        shapes.append([(int(a), int(b)) for a, b in kinds.tolist()])
        changed.append(np.stack([j0, j1], axis=2))
        lo, hi = j0, j1
    geo = Geometry(origins, lengths, classes, shapes, changed)
    _prepare(geo, segments, input_extent, windows)
    return geo


def _prepare(geo: Geometry, segments, extent: Tuple[int, int], windows: np.ndarray) -> None:
    """The index tuples of every window's copies, as Python ints once per set of windows (per-window numpy
    scalars and index building cost more than the copies themselves on small crops)."""
    k_last = len(segments) - 1
    for k, segment in enumerate(segments):
        axes = (segment.source_axes[0] - 1, segment.source_axes[1] - 1)
        geo.crops.append(
            [
                _slices(axes, oy, oy + cy, ox, ox + cx)
                for (oy, ox), (cy, cx) in zip(geo.origins[k].tolist(), geo.lengths[k].tolist())
            ]
        )
        if k == 0:
            for (oy, ox), (cy, cx), (y, x, h, w) in zip(
                geo.origins[0].tolist(), geo.lengths[0].tolist(), windows.tolist()
            ):
                y0, y1 = max(y, oy, 0), min(y + h, oy + cy, extent[0])
                x0, x1 = max(x, ox, 0), min(x + w, ox + cx, extent[1])
                geo.occluded.append(
                    (_slices(axes, y0 - oy, y1 - oy, x0 - ox, x1 - ox), _slices(axes, y0, y1, x0, x1))
                    if y1 > y0 and x1 > x0
                    else None
                )
        # where the changed positions of T_{k+1} sit in segment k's crop output, and where they go: the crop
        # of the next segment's source, or the whole last tensor
        sy, sx = segment.rf[0].stride, segment.rf[1].stride
        start = geo.origins[k] // np.asarray([sy, sx])  # the crop's origin in target positions
        lo, hi = geo.changed[k][:, :, 0], geo.changed[k][:, :, 1]
        dest = geo.origins[k + 1] if k < k_last else np.zeros_like(lo)
        nonempty = np.all(hi > lo, axis=1)
        reach = np.stack([lo - start, hi - start], axis=2)  # (N, axis, [lo, hi)) in the crop output
        reach[~nonempty] = 0
        geo.reach.append(reach)
        room = geo.lengths[k + 1] if k < k_last else np.asarray(segment.target_extent)[None]
        if np.any(nonempty[:, None] & ((lo - dest < 0) | (hi - dest > room))):  # numpy would cut the slice
            where = f"the crop of {segments[k + 1].source!r}" if k < k_last else "the whole tensor"
            raise IncrementalUnavailable(f"{where} does not hold the positions of {segment.target!r} a window changed")
        t_axes = (segment.target_axes[0] - 1, segment.target_axes[1] - 1)
        pastes: List[Optional[Tuple[tuple, tuple]]] = []
        for ok, (ry, rx), (l0, l1), (h0, h1), (dy, dx) in zip(
            nonempty.tolist(), reach.tolist(), lo.tolist(), hi.tolist(), dest.tolist()
        ):
            pastes.append(
                (_slices(t_axes, ry[0], ry[1], rx[0], rx[1]), _slices(t_axes, l0 - dy, h0 - dy, l1 - dx, h1 - dx))
                if ok
                else None
            )
        geo.pastes.append(pastes)
