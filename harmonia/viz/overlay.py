"""Overlay figures: image, feature-importance map, and the map over the image."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch


def normalize_map(m: torch.Tensor | np.ndarray, clip_percentile: float = 99.0) -> np.ndarray:
    """Scale a map to [0, 1] for display, clipping its top (100 - clip_percentile)% outliers.

    A constant map becomes all zeros (nothing to show), never NaN.

    Example:
        >>> float(normalize_map(np.array([[0.0, 1.0], [2.0, 4.0]]), clip_percentile=100).max())
        1.0
    """
    a = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
    lo = a.min()
    hi = np.percentile(a, clip_percentile)
    if not np.isfinite(hi) or hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def signed_limit(m: torch.Tensor | np.ndarray, clip_percentile: float = 99.0) -> float:
    """The symmetric colour limit of a signed map: the ``clip_percentile`` of ``|m|`` (1 if all zero).

    Example:
        >>> signed_limit(np.array([[-2.0, 1.0], [0.5, 0.0]]), clip_percentile=100)
        2.0
    """
    a = np.abs(np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64))
    v = float(np.percentile(a, clip_percentile)) if a.size else 0.0
    return v if np.isfinite(v) and v > 0 else 1.0


#: colour map of signed maps: diverging, white at 0 (red: evidence for the class, blue: against)
SIGNED_CMAP = "RdBu_r"


def overlay_figure(
    image: torch.Tensor,
    fmap: torch.Tensor,
    title: str = "",
    lines: Sequence[str] = (),
    human_map: torch.Tensor | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    signed: bool | None = None,
) -> "matplotlib.figure.Figure":  # noqa: F821
    """The figure :func:`save_overlay` writes: image | map | overlay (| human map).

    An unsigned map is scaled to [0, 1] on ``cmap``. A signed one (``signed=True``, or
    ``None`` and the map has negative values) is drawn on a diverging map centred at 0,
    symmetric limits, with a colour bar, so that evidence against the class is not shown as
    weak evidence for it.

    Example:
        >>> fig = overlay_figure(torch.rand(3, 8, 8), torch.randn(8, 8), signed=True)
        >>> fig.axes[1].images[0].get_cmap().name, fig.axes[1].images[0].norm.vmin == -fig.axes[1].images[0].norm.vmax
        ('RdBu_r', True)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    raw = np.asarray(fmap.detach().cpu() if isinstance(fmap, torch.Tensor) else fmap, dtype=np.float64)
    if signed is None:
        signed = bool((raw < 0).any())
    if signed:
        v = signed_limit(raw)
        m, map_cmap, limits = raw, SIGNED_CMAP, (-v, v)
    else:
        m, map_cmap, limits = normalize_map(raw), cmap, (0, 1)
    panels = [("image", img, None), ("feature importance" + (" (signed)" if signed else ""), m, map_cmap),
              ("overlay", None, None)]
    if human_map is not None:
        panels.append(("human map", normalize_map(human_map), cmap))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6 + 0.22 * len(lines)))
    for ax, (name, data, cm) in zip(axes, panels):
        if name == "overlay":
            ax.imshow(img)
            ax.imshow(m, cmap=map_cmap, alpha=alpha, vmin=limits[0], vmax=limits[1])
        elif data is m:
            shown = ax.imshow(data, cmap=cm, vmin=limits[0], vmax=limits[1])
            if signed:
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.imshow(data, cmap=cm, vmin=0 if cm else None, vmax=1 if cm else None)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    if lines:
        fig.text(0.02, 0.02, "\n".join(lines), fontsize=9, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.03 + 0.045 * len(lines), 1, 1))
    return fig


def save_overlay(
    path: str | os.PathLike,
    image: torch.Tensor,
    fmap: torch.Tensor,
    title: str = "",
    lines: Sequence[str] = (),
    human_map: torch.Tensor | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    signed: bool | None = None,
) -> None:
    """Write a PNG: image | map | overlay (| human map), with a title and text lines below.

    ``image`` is 3 x H x W in [0, 1]; ``fmap`` (and ``human_map``) H x W. Signed maps: see
    :func:`overlay_figure`.
    """
    import matplotlib.pyplot as plt

    from harmonia.utils.io import atomic_write

    fig = overlay_figure(image, fmap, title, lines, human_map, cmap, alpha, signed)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
