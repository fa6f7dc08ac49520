"""Overlap of the most important pixels: top-10% masks, Dice and IoU, as in the release.

Each map keeps the pixels strictly above its own q-quantile (numpy's default "linear"
percentile). A constant map keeps nothing: it has no "most important pixels", so any
pair with an empty mask has no overlap score (NaN, counted by the aggregates), like the
Spearman of a constant map, rather than a misleading 0.
"""

from __future__ import annotations

from typing import Any

import torch

from harmonia.metrics.maps import as_pair, as_tensor


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")


def quantile_linear(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-quantile of an N x D tensor, float64, as ``numpy.quantile(row, q)`` ("linear").

    Written out rather than using ``torch.quantile`` (which refuses inputs over 2**24
    elements) and with numpy's two-sided interpolation, so that thresholds equal numpy's bit
    for bit and strict ``>`` comparisons keep the same pixels.

    Example:
        >>> quantile_linear(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]), 0.9)
        tensor([4.6000], dtype=torch.float64)
    """
    _check_q(q)
    n, d = x.shape
    if d == 0:
        return torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    xf = x.to(torch.float64)
    lo, hi, t = _quantile_neighbours(d, q)
    # Selection (kthvalue) of the two neighbours, not a full sort: O(D) per row.
    a = torch.kthvalue(xf, lo + 1, dim=1).values
    b = a if hi == lo else torch.kthvalue(xf, hi + 1, dim=1).values
    out = _lerp_numpy(a, b, t)
    return out.masked_fill(torch.isnan(xf).any(1), float("nan"))  # as numpy: a NaN row has a NaN quantile


def _quantile_neighbours(d: int, q: float) -> tuple[int, int, float]:
    """0-based positions of the two sorted values around the linear q-quantile of D values,
    and the interpolation weight between them (numpy's "linear" method).

    Example:
        >>> _quantile_neighbours(5, 0.9)
        (3, 4, 0.6000000000000001)
    """
    pos = q * (d - 1)
    lo = int(pos // 1)
    return lo, min(lo + 1, d - 1), pos - lo


def _lerp_numpy(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """numpy's lerp: from the lower neighbour below t = 0.5, from the upper one above
    (the same rounding as ``numpy.quantile``, so thresholds agree bit for bit)."""
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def top_mask(maps: Any, q: float = 0.9) -> torch.Tensor:
    """Boolean mask of the pixels strictly above each map's q-quantile; same shape as ``maps``.

    ``maps`` is N x H x W or N x D (a 1-D input is one map). A map with a NaN keeps nothing.

    Example:
        >>> top_mask(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]]))
        tensor([[False, False, False, False, False, False, False, False, False,  True]])
    """
    maps = as_tensor(maps)
    flat = maps.reshape(maps.shape[0], -1) if maps.ndim > 1 else maps.reshape(1, -1)
    thr = quantile_linear(flat, q)
    mask = flat.to(torch.float64) > thr.unsqueeze(1)
    return mask.reshape(maps.shape)


def _intersection_sizes(a: Any, b: Any, q: float, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    a2, b2 = as_pair(a, b, name)
    ma, mb = top_mask(a2, q), top_mask(b2, q)
    inter = (ma & mb).sum(1).to(torch.float64)
    bad = torch.isnan(a2).any(1) | torch.isnan(b2).any(1) | ~ma.any(1) | ~mb.any(1)
    return inter, ma.sum(1).to(torch.float64), mb.sum(1).to(torch.float64), bad


def _safe_ratio(num: torch.Tensor, den: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    nan = torch.full_like(num, float("nan"))
    return torch.where((den > 0) & ~bad, num / den.clamp_min(1), nan)


def overlap_top(a: Any, b: Any, q: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dice, IoU) of the top masks from one computation of the masks (what scorers use).

    Example:
        >>> a = torch.arange(20.0).reshape(1, 20)
        >>> overlap_top(a, a)
        (tensor([1.], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    inter, na, nb, bad = _intersection_sizes(a, b, q, "overlap_top")
    return _safe_ratio(2 * inter, na + nb, bad), _safe_ratio(inter, na + nb - inter, bad)


def dice_top(a: Any, b: Any, q: float = 0.9) -> torch.Tensor:
    """Dice 2|A and B| / (|A| + |B|) of the top masks of each pair, shape (N,), float64.

    NaN when either mask is empty (e.g. a constant map) or a map has a NaN.

    Example:
        >>> a = torch.arange(20.0).reshape(1, 20)
        >>> dice_top(a, a), dice_top(a, -a)
        (tensor([1.], dtype=torch.float64), tensor([0.], dtype=torch.float64))
    """
    inter, na, nb, bad = _intersection_sizes(a, b, q, "dice_top")
    return _safe_ratio(2 * inter, na + nb, bad)


def iou_top(a: Any, b: Any, q: float = 0.9) -> torch.Tensor:
    """Intersection over union |A and B| / |A or B| of the top masks, shape (N,), float64.

    NaN when either mask is empty (e.g. a constant map) or a map has a NaN.

    Example:
        >>> a = torch.arange(20.0).reshape(1, 20)
        >>> iou_top(a, a)
        tensor([1.], dtype=torch.float64)
    """
    inter, na, nb, bad = _intersection_sizes(a, b, q, "iou_top")
    return _safe_ratio(inter, na + nb - inter, bad)
