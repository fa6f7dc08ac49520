"""Per-map statistics behind the scores, computed once per map: ranks and top-q masks.

Spearman needs each map's average ranks, Dice/IoU each map's top-q mask; both come from
one sort of the map (the sorted values give the quantile that :func:`quantile_linear`
selects). A map's statistics do not depend on the map it is compared with, so those of
the human maps can be computed once per dataset and reused by every model evaluated on it
(:class:`MapStatsCache`). Scores from statistics equal :func:`spearman`,
:func:`dice_top` and :func:`iou_top` bit for bit: centred ranks are multiples of 1/2, so
their dot products are exact in float64 (for maps up to about 3e5 pixels; beyond, sums
may round differently, well under 1e-12).

Example:
    >>> import torch
    >>> from harmonia.metrics import spearman
    >>> a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    >>> rho = spearman_from_stats(map_stats(a), map_stats(b))
    >>> bool(torch.equal(rho, spearman(a, b)))
    True
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Iterable, Sequence

import torch

from harmonia.metrics.maps import as_tensor
from harmonia.metrics.overlap import _check_q, _lerp_numpy, _quantile_neighbours
from harmonia.metrics.spearman import _CHUNK_ELEMENTS, _flat_ranks


@dataclass
class MapStats:
    """Statistics of N maps (D pixels each) that the scores need.

    ``centred``: N x D average ranks minus their mean (float64; float32 after
    :meth:`compact`, exact for D < 2**23); ``sumsq``: sum of their squares (float64);
    ``has_nan``: rows holding a NaN; ``mask``: N x D top-q masks; ``count``: pixels in each
    mask. Fields a scorer does not need are None.
    """

    has_nan: torch.Tensor
    centred: torch.Tensor | None = None
    sumsq: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    count: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.has_nan.shape[0])

    def _map(self, fn) -> "MapStats":
        return MapStats(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                           for f in fields(self)})

    def to(self, device: torch.device | str) -> "MapStats":
        """The same statistics on ``device``."""
        return self._map(lambda t: t.to(device))

    def row(self, i: int) -> "MapStats":
        """Statistics of map ``i`` alone (copies: it does not keep the batch alive)."""
        return self._map(lambda t: t[i : i + 1].clone())

    def compact(self) -> "MapStats":
        """Centred ranks as float32 when that is exact (half-integers below 2**22): half the memory."""
        c = self.centred
        if c is None or c.dtype != torch.float64 or c.shape[1] >= 2**22:
            return self
        out = self._map(lambda t: t)
        out.centred = c.to(torch.float32)
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for f in fields(self) if (t := getattr(self, f.name)) is not None)

    @staticmethod
    def cat(parts: Sequence["MapStats"]) -> "MapStats":
        """Concatenate the rows of several :class:`MapStats` (same fields)."""
        first = parts[0]
        return MapStats(**{f.name: None if getattr(first, f.name) is None
                           else torch.cat([getattr(p, f.name) for p in parts]) for f in fields(first)})


def _quantile_from_sorted(values: torch.Tensor, q: float) -> torch.Tensor:
    # quantile_linear's formula on the two neighbours read from the sorted rows (the very
    # values kthvalue selects), so the thresholds are identical.
    lo, hi, t = _quantile_neighbours(values.shape[1], q)
    return _lerp_numpy(values[:, lo].to(torch.float64), values[:, hi].to(torch.float64), t)


def map_stats(
    maps: Any, ranks: bool = True, q: float | None = None, chunk_elements: int = _CHUNK_ELEMENTS
) -> MapStats:
    """Ranks (``ranks``) and top-``q`` masks (``q`` not None) of N x H x W or N x D maps.

    One sort per map serves both. Rows are processed in chunks of about
    ``chunk_elements`` pixels to bound the temporaries.

    Example:
        >>> s = map_stats(torch.tensor([[1.0, 3.0, 2.0, 2.0]]), q=0.5)
        >>> s.centred, s.mask
        (tensor([[-1.5000,  1.5000,  0.0000,  0.0000]], dtype=torch.float64), tensor([[False,  True, False, False]]))
    """
    if q is not None:
        _check_q(q)
    maps = as_tensor(maps)
    if maps.ndim == 1:
        maps = maps.unsqueeze(0)
    flat = maps.reshape(maps.shape[0], -1)
    n, d = flat.shape
    if n == 0 or d == 0 or (not ranks and q is None):
        empty = torch.zeros(n, d, device=flat.device)
        return MapStats(
            has_nan=torch.isnan(flat).any(1) if d else torch.zeros(n, dtype=torch.bool, device=flat.device),
            centred=empty.double() if ranks else None,
            sumsq=torch.zeros(n, dtype=torch.float64, device=flat.device) if ranks else None,
            mask=empty.bool() if q is not None else None,
            count=torch.zeros(n, dtype=torch.int64, device=flat.device) if q is not None else None,
        )
    rows = max(1, chunk_elements // d)
    parts = []
    for s in range(0, n, rows):
        x = flat[s : s + rows]
        k = x.shape[0]
        r, has_nan, values = _flat_ranks(x, return_sorted=q is not None)
        part = MapStats(has_nan=has_nan)
        if ranks:
            # Each row's average ranks sum to d(d+1)/2: its mean is known exactly.
            r -= torch.arange(k, device=r.device, dtype=torch.float64).unsqueeze(1) * d + (d + 1) * 0.5
            part.centred = r
            part.sumsq = torch.einsum("nd,nd->n", r, r)
        del r
        if q is not None:
            thr = _quantile_from_sorted(values, q).masked_fill(has_nan, float("nan"))
            part.mask = x > thr.unsqueeze(1)  # float64 comparison (type promotion), as top_mask
            part.count = part.mask.sum(1)
        parts.append(part)
    return parts[0] if len(parts) == 1 else MapStats.cat(parts)


def spearman_from_stats(a: MapStats, b: MapStats) -> torch.Tensor:
    """Spearman of each pair from precomputed ranks; equals :func:`spearman` on the maps.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> spearman_from_stats(map_stats(x), map_stats(-x))
        tensor([-1.], dtype=torch.float64)
    """
    if a.centred is None or b.centred is None:
        raise ValueError("spearman_from_stats needs statistics computed with ranks=True")
    ca, cb = a.centred.to(torch.float64), b.centred.to(device=a.centred.device, dtype=torch.float64)
    if ca.shape != cb.shape:
        raise ValueError(f"spearman_from_stats: shapes differ: {tuple(ca.shape)} vs {tuple(cb.shape)}")
    cov = torch.einsum("nd,nd->n", ca, cb)
    var = a.sumsq * b.sumsq.to(a.sumsq.device)
    r = (cov / torch.sqrt(var)).clamp(-1.0, 1.0)
    # A constant map has every rank equal: zero variance, no correlation (NaN, never 0).
    bad = (var <= 0) | a.has_nan | b.has_nan.to(a.has_nan.device)
    if ca.shape[1] < 2:
        bad = torch.ones_like(bad)
    return torch.where(bad, torch.full_like(r, float("nan")), r)


def overlap_from_stats(a: MapStats, b: MapStats) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dice, IoU) of the top masks from precomputed statistics; equals :func:`overlap_top`.

    Example:
        >>> x = torch.arange(20.0).reshape(1, 20)
        >>> overlap_from_stats(map_stats(x, q=0.9), map_stats(x, q=0.9))
        (tensor([1.], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    if a.mask is None or b.mask is None:
        raise ValueError("overlap_from_stats needs statistics computed with q")
    mb = b.mask.to(a.mask.device)
    inter = (a.mask & mb).sum(1).to(torch.float64)
    na, nb = a.count.to(torch.float64), b.count.to(device=a.mask.device, dtype=torch.float64)
    bad = a.has_nan | b.has_nan.to(a.has_nan.device) | (na == 0) | (nb == 0)
    nan = torch.full_like(inter, float("nan"))
    den_d, den_i = na + nb, na + nb - inter
    dice = torch.where((den_d > 0) & ~bad, 2 * inter / den_d.clamp_min(1), nan)
    iou = torch.where((den_i > 0) & ~bad, inter / den_i.clamp_min(1), nan)
    return dice, iou


class MapStatsCache:
    """Statistics of maps by (scope, id), e.g. a dataset's human maps, kept across evaluations.

    ``scope`` must change whenever the statistics would (data content, map preprocessing,
    scorer settings): :func:`harmonia.evaluation.evaluate` uses a hash of the dataset's
    content fingerprint and the scorer's config. Rows are stored compacted (float32 ranks).
    When ``max_bytes`` is reached, new rows are not stored (rather than evicting old ones):
    a data set larger than the budget then still gets hits on the part that fits, where a
    least-recently-used policy would miss on every row of a repeated scan.

    Example:
        >>> cache = MapStatsCache(max_bytes=1 << 20)
        >>> cache.put("scope", ["a", "b"], map_stats(torch.rand(2, 8, 8), q=0.9))
        >>> len(cache.get("scope", ["b", "a"])), cache.get("other", ["a"]) is None
        (2, True)
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[tuple[str, str], MapStats] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, scope: str, ids: Iterable[str], device: torch.device | str | None = None) -> MapStats | None:
        """The statistics of ``ids`` (in that order) if every one is cached, else None."""
        with self._lock:
            rows = [self._rows.get((scope, str(i))) for i in ids]
        if not rows or any(r is None for r in rows):
            self.misses += 1
            return None
        self.hits += 1
        out = MapStats.cat(rows)  # type: ignore[arg-type]
        return out if device is None else out.to(device)

    def put(self, scope: str, ids: Sequence[str], stats: MapStats) -> None:
        """Store row ``j`` of ``stats`` under ``ids[j]`` (while the budget allows)."""
        if len(ids) != len(stats):
            raise ValueError(f"{len(ids)} ids for {len(stats)} rows of statistics")
        compact = stats.compact()
        with self._lock:
            for j, i in enumerate(ids):
                key = (scope, str(i))
                if key in self._rows:
                    continue
                row = compact.row(j)
                if self.nbytes + row.nbytes > self.max_bytes:
                    return
                self._rows[key] = row
                self.nbytes += row.nbytes

    def clear(self) -> None:
        """Drop everything (e.g. to time a cold evaluation)."""
        with self._lock:
            self._rows.clear()
            self.nbytes = 0
            self.hits = self.misses = 0


#: The process-wide cache :func:`harmonia.evaluation.evaluate` uses for human maps.
HUMAN_STATS_CACHE = MapStatsCache()
