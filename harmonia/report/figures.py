"""Figures of the demo report, drawn with matplotlib's Agg backend and returned as PNG bytes.

- :func:`maps_figure`: one row per example: image | human map | one column per model's map;
- :func:`curves_figure`: training curves (loss parts per step, accuracy and alignment per
  evaluation) of several runs;
- :func:`metrics_figure`: the final numbers as bars (mean over seeds) with one dot per seed.

Every function builds, renders and closes its figure (no global pyplot state is left
behind), so they are safe to call many times in one process.

Example:
    >>> import torch
    >>> png = maps_figure(torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16),
    ...                   {"model": torch.rand(2, 16, 16)}, captions=["a", "b"])
    >>> png[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from harmonia.viz.overlay import normalize_map

# One colour per model variant, used in every figure so the reader can match them.
COLOURS = {"baseline": "#d95f02", "harmonized": "#1b9e77"}
SPLIT_STYLES = {"test": "-", "test_shortcut_broken": "--", "test_no_cue": ":"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: CI machines and servers have no display
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int = 100) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _colour(name: str, i: int) -> str:
    return COLOURS.get(name, f"C{i}")


def maps_figure(
    images: torch.Tensor,
    human_maps: torch.Tensor,
    model_maps: Mapping[str, torch.Tensor],
    captions: Sequence[str] = (),
    cmap: str = "jet",
    map_title: str = "map",
) -> bytes:
    """Side by side, one row per example: image | human map | each model's map (PNG bytes).

    ``images`` N x 3 x H x W in [0, 1]; maps N x H x W. Each map is scaled to [0, 1] on its
    own (99th percentile clipped, :func:`harmonia.viz.overlay.normalize_map`): only where
    a map puts its weight is compared, not its scale.

    Example:
        >>> len(maps_figure(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), {"m": torch.rand(1, 8, 8)})) > 0
        True
    """
    plt = _pyplot()
    n = images.shape[0]
    columns = ["image", "human map (simulated)", *[f"{k} {map_title}" for k in model_maps]]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.1 * len(columns), 2.1 * n + 0.3), squeeze=False)
    for i in range(n):
        img = images[i].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
        panels = [img, normalize_map(human_maps[i])] + [normalize_map(m[i]) for m in model_maps.values()]
        for j, (ax, data) in enumerate(zip(axes[i], panels)):
            if j == 0:
                ax.imshow(img, interpolation="nearest")
            else:
                ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
        if i < len(captions):
            axes[i][0].set_ylabel(captions[i], fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
    fig.tight_layout()
    return _png(fig)


def curves_figure(runs: Sequence[Mapping[str, Any]]) -> bytes:
    """Training curves of several runs (PNG bytes).

    Each run is a mapping with ``label`` (legend text), ``variant`` (colour) and
    ``history`` (the trainer's ``history.json``: ``steps`` with epoch, ce, harm; ``evals``
    with epoch, split, accuracy, alignment). Panels: cross-entropy, harmonization term
    (unweighted), accuracy and alignment per evaluation (solid: test, dashed:
    test_shortcut_broken).

    Example:
        >>> h = {"steps": [{"epoch": 0.5, "ce": 2.0, "harm": 1.0}],
        ...      "evals": [{"epoch": 1, "split": "test", "accuracy": 0.5, "alignment": 0.3}]}
        >>> curves_figure([{"label": "baseline", "variant": "baseline", "history": h}])[:4]
        b'\\x89PNG'
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    titles = ("cross-entropy (train)", "harmonization term (train, unweighted)", "accuracy", "alignment (spearman / ceiling)")
    for i, run in enumerate(runs):
        colour = _colour(str(run.get("variant", "")), i)
        hist = run["history"]
        steps = hist.get("steps", [])
        x = [s["epoch"] for s in steps]
        axes[0].plot(x, [s["ce"] for s in steps], color=colour, alpha=0.8, label=run["label"])
        axes[1].plot(x, [s["harm"] for s in steps], color=colour, alpha=0.8, label=run["label"])
        for split, style in SPLIT_STYLES.items():
            ev = sorted((e for e in hist.get("evals", []) if e["split"] == split), key=lambda e: e["epoch"])
            for ax, key in ((axes[2], "accuracy"), (axes[3], "alignment")):
                pts = [(e["epoch"], e[key]) for e in ev if e.get(key) is not None and math.isfinite(e[key])]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", ms=3, color=colour, alpha=0.8,
                            label=f"{run['label']}, {split}")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[2].set_ylim(-0.02, 1.02)
    # one legend per kind is enough; the accuracy panel's names both colour and line style
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def metrics_figure(values: Mapping[str, Mapping[str, Sequence[float]]], metric_labels: Mapping[str, str]) -> bytes:
    """Final numbers: one panel per metric, one bar per model (mean over seeds), one dot per seed.

    ``values[variant][metric]`` is the list of per-seed values; ``metric_labels`` orders
    the panels and names them. NaN values are drawn as missing, never as 0.

    Example:
        >>> metrics_figure({"baseline": {"acc": [0.9, 0.8]}}, {"acc": "accuracy"})[:4]
        b'\\x89PNG'
    """
    plt = _pyplot()
    keys = list(metric_labels)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    variants = list(values)
    for ax, key in zip(axes[0], keys):
        for i, var in enumerate(variants):
            vals = np.array([v for v in values[var].get(key, []) if v is not None], dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                ax.bar(i, vals.mean(), color=_colour(var, i), alpha=0.6, width=0.6)
                ax.scatter(np.full(vals.size, i) + np.linspace(-0.12, 0.12, vals.size), vals,
                           color="k", s=12, zorder=3)
                ax.text(i, vals.mean(), f"{vals.mean():.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, fontsize=8)
        ax.set_title(metric_labels[key], fontsize=9)
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def photos_figure(images: torch.Tensor, maps: Sequence[torch.Tensor | np.ndarray], titles: Sequence[str],
                  cmap: str = "jet", alpha: float = 0.5) -> bytes:
    """Photos (top row) and their maps over them (bottom row), small enough to embed (PNG bytes).

    Example:
        >>> photos_figure(torch.rand(2, 3, 8, 8), [np.random.rand(8, 8)] * 2, ["a", "b"])[:4]
        b'\\x89PNG'
    """
    plt = _pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.1), squeeze=False)
    for j in range(n):
        img = images[j].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
        axes[0][j].imshow(img)
        axes[1][j].imshow(img)
        axes[1][j].imshow(normalize_map(maps[j]), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
        axes[0][j].set_title(titles[j] if j < len(titles) else "", fontsize=7)
        for ax in (axes[0][j], axes[1][j]):
            ax.axis("off")
    fig.tight_layout()
    return _png(fig, dpi=60)
