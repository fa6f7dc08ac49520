"""Showing visualizations: percentile-clipped images, transparency-weighted RGBA, a grid.

Display (the MACO releases' convention): the image is clipped at its [1, 99] percentiles and
rescaled; the alpha channel is the transparency clipped at its 80th percentile and divided by
its maximum, so the 20 % of pixels where the objective is most driven are fully opaque.

Example:
    >>> import torch
    >>> rgba(torch.rand(3, 8, 8), torch.rand(8, 8)).shape
    (8, 8, 4)
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from harmonia.utils.io import atomic_write_bytes


def display_image(image: torch.Tensor, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """3 x H x W -> H x W x 3 float in [0, 1], clipped at its [low, high] percentiles."""
    x = image.detach().float().cpu().permute(1, 2, 0).numpy()
    lo, hi = np.percentile(x, [low, high])
    return np.clip((x - lo) / max(hi - lo, 1e-8), 0, 1)


def alpha_map(transparency: torch.Tensor | np.ndarray, percentile: float = 80.0) -> np.ndarray:
    """H x W accumulated |gradient| -> alpha in [0, 1] (clipped at ``percentile``, / max)."""
    t = np.asarray(transparency.detach().cpu() if isinstance(transparency, torch.Tensor) else transparency, np.float64)
    t = np.minimum(t, np.percentile(t, percentile))
    top = t.max()
    return t / top if top > 0 else np.zeros_like(t)


def rgba(image: torch.Tensor, transparency: torch.Tensor | np.ndarray) -> np.ndarray:
    """The visualization with its transparency as alpha: H x W x 4 uint8."""
    rgb = display_image(image)
    a = alpha_map(transparency)[..., None]
    return (np.concatenate([rgb, a], -1) * 255).round().astype(np.uint8)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """3 x H x W in [0, 1] -> H x W x 3 uint8 (no display clipping: the optimised pixels)."""
    return (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an H x W x 3|4 uint8 array as a PNG, atomically."""
    atomic_write_bytes(path, png_bytes(array))


def _over_checkerboard(a: np.ndarray, cell: int = 8) -> np.ndarray:
    h, w = a.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    board = np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, 235, 200).astype(np.float64)
    alpha = a[..., 3:4] / 255.0
    return (a[..., :3] * alpha + board * (1 - alpha)).round().astype(np.uint8)


def grid(images: torch.Tensor, transparency: torch.Tensor, titles: Sequence[str], tile: int = 192) -> np.ndarray:
    """Two rows (visualization; transparency-weighted over a checkerboard), one column per image."""
    k = images.shape[0]
    pad, head = 4, 16
    out = Image.new("RGB", (k * (tile + pad) + pad, 2 * (tile + pad) + pad + head), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i in range(k):
        x0 = pad + i * (tile + pad)
        draw.text((x0, 2), titles[i][: tile // 6], fill=(0, 0, 0))
        top = Image.fromarray((display_image(images[i]) * 255).round().astype(np.uint8)).resize((tile, tile), Image.BICUBIC)
        low = Image.fromarray(_over_checkerboard(rgba(images[i], transparency[i]))).resize((tile, tile), Image.BICUBIC)
        out.paste(top, (x0, head + pad))
        out.paste(low, (x0, head + 2 * pad + tile))
    return np.asarray(out)
