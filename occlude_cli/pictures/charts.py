"""Pictures of the analysis commands: channel importance bars, channel activation maps over the image, the
bias test's distribution of drops (region vs control), and the stability summary. Returns PNG bytes."""

from __future__ import annotations

import io
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..text import for_plot
from .render import _matplotlib, colorize, peak_slice, score_word, symmetric_limit

REGION_COLOR = "#c0392b"
CONTROL_COLOR = "#7f8c8d"


def _save(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def channel_bars_png(
    channels: np.ndarray,
    mean: np.ndarray,
    spread: np.ndarray,
    *,
    title: str,
    subtitle: str = "",
    top: int = 10,
    score_kind: str = "probability",
) -> bytes:
    """Horizontal bars of the ``top`` most and ``top`` least important channels (mean drop of the target
    score when the channel is replaced), with +-``spread`` (standard deviation over images) as error bars.
    Red bars: replacing the channel lowers the score; blue: raises it."""
    _, plt = _matplotlib()
    order = np.argsort(-np.asarray(mean), kind="stable")
    top = max(1, int(top))
    if len(order) <= 2 * top:
        picked = list(order)
    else:
        picked = list(order[:top]) + [-1] + list(order[-top:])
    labels, values, errors = [], [], []
    for i in picked:
        if i < 0:
            labels.append("...")
            values.append(0.0)
            errors.append(0.0)
        else:
            labels.append(f"ch {int(channels[i])}")
            values.append(float(mean[i]))
            errors.append(float(spread[i]))
    height = 1.2 + 0.26 * len(labels)
    figure, ax = plt.subplots(figsize=(7.5, height), dpi=100)
    try:
        y = np.arange(len(labels))[::-1]
        colors = [REGION_COLOR if v > 0 else "#2471a3" for v in values]
        ax.barh(y, values, xerr=errors, color=colors, ecolor="#555555", capsize=2, height=0.7)
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(
            f"drop of the target {score_word(score_kind)} when the channel is replaced (+- std over images)", fontsize=8
        )
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(for_plot(title) + ("\n" + for_plot(subtitle) if subtitle else ""), fontsize=9, loc="left")
        figure.tight_layout()
        return _save(figure)
    finally:
        plt.close(figure)


def _on_input(original: Image.Image, crop_box, size: Tuple[int, int]) -> np.ndarray:
    """The part of the original the model sees, at model-input size, RGB float 0..1."""
    left, top, right, bottom = crop_box
    region = original.convert("RGB").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR, box=(left, top, right, bottom)
    )
    return np.asarray(region, dtype=np.float64) / 255.0


def activation_maps_png(panels: Sequence[Tuple[Image.Image, tuple, np.ndarray, str]], *, title: str) -> bytes:
    """One panel per (original image, crop box, activation map at model-input size, caption): the image in
    grey with the activation on top (inferno colormap, opacity growing with the activation), each panel scaled
    to its own maximum."""
    matplotlib, plt = _matplotlib()
    count = max(1, len(panels))
    columns = min(4, count)
    rows = int(math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows + 0.4), dpi=100, squeeze=False)
    try:
        cmap = matplotlib.colormaps["inferno"]
        for ax in axes.ravel():
            ax.set_axis_off()
        for ax, (original, crop_box, values, caption) in zip(axes.ravel(), panels):
            values = np.asarray(values, dtype=np.float64)
            rgb = _on_input(original, crop_box, values.shape)
            grey = rgb.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
            positive = np.clip(np.nan_to_num(values), 0.0, None)
            peak = positive.max()
            level = positive / peak if peak > 0 else positive
            color = cmap(level)[..., :3]
            alpha = (0.15 + 0.7 * level)[..., None]
            ax.imshow(grey * (1 - alpha) + color * alpha, interpolation="nearest")
            ax.set_title(for_plot(caption), fontsize=8)
        figure.suptitle(for_plot(title), fontsize=10)
        figure.tight_layout(rect=(0, 0, 1, 0.95))
        return _save(figure)
    finally:
        plt.close(figure)


def bias_png(
    region_drops: Sequence[float],
    control_drops: Sequence[float],
    overall: dict,
    *,
    title: str,
    score_kind: str = "probability",
) -> bytes:
    """Histogram of the per-image drops with the suspected region occluded (red) and with same-size regions at
    random places (grey), the means as vertical lines, and the flip rates with their bootstrap CIs."""
    _, plt = _matplotlib()
    region = np.asarray(list(region_drops), dtype=np.float64)
    control = np.asarray(list(control_drops), dtype=np.float64)
    figure, ax = plt.subplots(figsize=(8, 4.6), dpi=100)
    try:
        both = np.concatenate([region, control]) if control.size else region
        lo, hi = float(np.min(both)), float(np.max(both))
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 31)
        if control.size:
            ax.hist(
                control,
                bins=bins,
                color=CONTROL_COLOR,
                alpha=0.6,
                density=True,
                label=f"control: random places ({control.size} drops)",
            )
        ax.hist(
            region,
            bins=bins,
            color=REGION_COLOR,
            alpha=0.6,
            density=True,
            label=f"suspected region ({region.size} images)",
        )
        ax.axvline(float(region.mean()), color=REGION_COLOR, linewidth=2)
        if control.size:
            ax.axvline(float(control.mean()), color=CONTROL_COLOR, linewidth=2, linestyle="--")
        ci = overall.get("mean_drop_ci") or [None, None]
        fci = overall.get("flip_rate_ci") or [None, None]
        text = (
            f"region: mean drop {_fmt(overall['mean_drop'])} (95% CI {_fmt(ci[0])}..{_fmt(ci[1])}), "
            f"median {_fmt(overall['median_drop'])}, flip rate {_fmt(overall['flip_rate'], 2)} "
            f"(CI {_fmt(fci[0], 2)}..{_fmt(fci[1], 2)})\n"
            f"control: mean drop {_fmt(overall.get('control_mean_drop'))}, "
            f"flip rate {_fmt(overall.get('control_flip_rate'), 2)}"
        )
        ax.set_title(for_plot(title) + "\n" + text, fontsize=8, loc="left")
        ax.set_xlabel(f"drop of the target {score_word(score_kind)} (original - occluded)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center")
        figure.tight_layout()
        return _save(figure)
    finally:
        plt.close(figure)


def stability_png(
    grey: np.ndarray,
    clean_map: np.ndarray,
    noisy_maps: np.ndarray,
    spearman: Sequence[float],
    top_iou: Sequence[float],
    *,
    title: str,
    shown: int = 3,
) -> bytes:
    """The clean map and the first ``shown`` noisy maps over the model input (``grey``: 0..1, see
    render.model_grey), all on the clean map's colour scale, and the per-trial Spearman correlation and
    top-10% IoU as dots. Volumes ((D, H, W) maps): the axial slice through the clean map's peak."""
    _, plt = _matplotlib()
    grey = np.asarray(grey, dtype=np.float64)
    noisy_maps = np.asarray(noisy_maps)
    where = ""
    if clean_map.ndim == 3:
        z = peak_slice(clean_map)
        grey, clean_map, noisy_maps, where = grey[z], clean_map[z], noisy_maps[:, z], f" (axial slice {z})"
    count = min(int(shown), len(noisy_maps))
    figure, axes = plt.subplots(
        1, count + 2, figsize=(3.0 * (count + 2), 3.6), dpi=100, gridspec_kw={"width_ratios": [1] * (count + 1) + [1.3]}
    )
    try:
        limit = symmetric_limit(clean_map)
        maps: List[Tuple[np.ndarray, str]] = [(clean_map, "clean" + where)]
        maps += [(noisy_maps[k], f"noisy copy {k + 1}: rho {_fmt(spearman[k], 2)}") for k in range(count)]
        for ax, (values, caption) in zip(axes, maps):
            alpha = np.rint(255 * (0.25 + 0.7 * np.clip(np.abs(np.nan_to_num(values)) / limit, 0, 1))).astype(np.uint8)
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.imshow(colorize(values, limit, alpha), interpolation="nearest")
            ax.set_title(caption, fontsize=8)
            ax.set_axis_off()
        ax = axes[-1]
        trials = np.arange(1, len(spearman) + 1)
        ax.plot(trials, spearman, "o", color="#c0392b", label="Spearman rho")
        ax.plot(trials, top_iou, "s", color="#2471a3", label="top-10% IoU")
        ax.set_ylim(min(0.0, float(np.nanmin(np.r_[spearman, top_iou, 0.0]))) - 0.05, 1.05)
        ax.set_xlabel("noisy copy", fontsize=8)
        ax.set_title("agreement with the clean map", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        figure.suptitle(for_plot(title), fontsize=9)
        figure.tight_layout(rect=(0, 0, 1, 0.93))
        return _save(figure)
    finally:
        plt.close(figure)


def upsampled_title(label: Optional[str], target: int, kind: str, score: float) -> str:
    name = f"{label} (class {target})" if label else f"class {target}"
    return f"{name}: {score_word(kind)} {score:.4f}"
