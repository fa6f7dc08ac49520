"""Spearman rank correlation of map pairs, batched in torch, with scipy's tie handling.

Ties get the average of the ranks they span (``scipy.stats.rankdata(method="average")``),
which matters here: saliency and click maps have large flat regions (often exact zeros),
so a "first come" ranking would invent an order inside them and bias the correlation.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from harmonia.metrics.maps import as_pair

# Elements (rows x pixels, both sides) ranked per chunk: bounds the temporaries (about 40
# bytes per element, so ~80 MB) whatever the batch size. Measured on CPU, 224 x 224 maps:
# 2**20-2**21 is fastest (buffers small enough to be reused instead of freshly page-faulted).
_CHUNK_ELEMENTS = 1 << 21


def _sort_keys(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or on the CPU an integer view of it that sorts the same and faster.

    For floats whose sign bit is clear (maps are usually >= 0) the IEEE bit pattern read as
    a signed integer orders like the value, and equal values have equal bits; -0.0, negative
    values and negative NaNs set the sign bit, which the check catches. CPU integer sorts
    skip the NaN-aware float comparator (about 1.5x faster on 224 x 224 rows); GPU sorts are
    radix sorts either way, and the check would cost a device sync, so GPUs keep floats.
    """
    if x.device.type != "cpu" or not x.is_contiguous():
        return x
    view = {torch.float32: torch.int32, torch.float64: torch.int64}.get(x.dtype)
    if view is None:
        return x
    keys = x.view(view)
    return keys if bool(keys.min() >= 0) else x


def _keys_to_values(sorted_keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Undo :func:`_sort_keys` on sorted keys: the map's values, sorted, in ``dtype``."""
    if sorted_keys.dtype == dtype:
        return sorted_keys
    if dtype == torch.float32:
        return sorted_keys.to(torch.int32).view(torch.float32)  # int64 from the packed sort
    return sorted_keys.view(dtype)


def _sort_rows(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.sort(keys, dim=1)``, faster on the CPU for non-negative int32 keys.

    There each key goes to the high 32 bits of an int64 and its column to the low 32, so
    one values-only sort (numpy's SIMD sort, about 1.7x faster than torch's argsort for
    224 x 224 rows) yields the sorted keys and the order. Ties come out in column order,
    which changes nothing downstream: tied values share their average rank.
    """
    n, d = keys.shape
    if keys.device.type != "cpu" or keys.dtype != torch.int32 or d >= 2**31:
        return torch.sort(keys, dim=1)
    packed = keys.to(torch.int64)
    packed <<= 32  # keys are >= 0 (checked by _sort_keys), so this cannot overflow
    packed |= torch.arange(d, dtype=torch.int64)
    arr = packed.numpy()
    threads = min(torch.get_num_threads(), n)
    if threads > 1 and n * d >= 1 << 18:
        # numpy sorts on one core and releases the GIL: sort row blocks in place, in parallel
        # (2 cores: about 1.8x faster on 16 maps of 224 x 224)
        bounds = np.linspace(0, n, threads + 1).astype(int)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: arr[bounds[i] : bounds[i + 1]].sort(axis=1), range(threads)))
    else:
        arr.sort(axis=1)
    order = packed & 0xFFFFFFFF
    packed >>= 32
    return packed, order


def _flat_ranks(
    x: torch.Tensor, return_sorted: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Average ranks of each row plus ``row * D`` (ranks in the flattened, row-sorted batch),
    which rows hold a NaN, and (``return_sorted``) each row's values sorted ascending.

    The row offset lets every tie group of the batch be numbered by one flat cumsum and
    located by one ``nonzero``, so that later work is per group, not per row; callers
    remove the offset (``rank_average``) or fold it into the centring (``spearman``).
    The sorted values give quantiles for free (top-10% masks share this one sort).
    """
    n, d = x.shape
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # exact widening; keeps ties as they are, and sort is faster in float32
    sorted_x, order = _sort_rows(_sort_keys(x))
    # Sorts put NaNs last, so a row holds a NaN iff its largest element is one.
    has_nan = torch.isnan(x.gather(1, order[:, -1:])).view(n)
    # A new tie group starts at each row's first element and wherever a sorted value
    # differs from its left neighbour.
    new_group = torch.empty(n, d, dtype=torch.bool, device=x.device)
    new_group[:, 0] = True
    torch.ne(sorted_x[:, 1:], sorted_x[:, :-1], out=new_group[:, 1:])
    values = _keys_to_values(sorted_x, x.dtype) if return_sorted else None
    del sorted_x
    flags = new_group.view(-1)
    # 1-based group ids (int32 when they fit: half the memory traffic of int64).
    gid = torch.cumsum(flags, 0, dtype=torch.int32 if n * d < 2**31 else torch.int64)
    starts = torch.nonzero(flags).view(-1)  # flat position of each group's first element
    ends = torch.empty_like(starts)  # one past each group's last element
    ends[:-1] = starts[1:]
    ends[-1] = n * d
    # Positions first..end-1 (0-based) average to (first + end - 1) / 2; +1 for 1-based.
    # Entry 0 is a dummy so the 1-based ids index the table directly.
    group_rank = torch.zeros(starts.numel() + 1, dtype=torch.float64, device=x.device)
    torch.mul((starts + ends + 1).to(torch.float64), 0.5, out=group_rank[1:])
    sorted_rank = torch.index_select(group_rank, 0, gid).view(n, d)
    return torch.empty_like(sorted_rank).scatter_(1, order, sorted_rank), has_nan, values


def rank_average(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..D along each row of an N x D tensor, ties sharing their average rank.

    Same as ``scipy.stats.rankdata(row, method="average")`` for every row, computed for all
    rows at once: one sort, tie groups found by comparing sorted neighbours, numbered by a
    cumsum and sized from their start positions. Returns float64 on ``x``'s device. NaNs
    sort last (scipy would return all-NaN ranks; ``spearman`` turns such pairs into NaN).

    Example:
        >>> rank_average(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))
        tensor([[3.5000, 1.0000, 3.5000, 2.0000]], dtype=torch.float64)
    """
    if x.ndim != 2:
        raise ValueError(f"rank_average expects an N x D tensor, got shape {tuple(x.shape)}")
    n, d = x.shape
    if n == 0 or d == 0:
        return torch.empty(n, d, dtype=torch.float64, device=x.device)
    ranks, _, _ = _flat_ranks(x)
    ranks -= (torch.arange(n, device=x.device, dtype=torch.float64) * d).unsqueeze(1)
    return ranks


def spearman(a: Any, b: Any, chunk_elements: int = _CHUNK_ELEMENTS) -> torch.Tensor:
    """Spearman correlation of each pair ``(a[i], b[i])``, shape (N,), float64.

    ``a`` and ``b`` are N x H x W maps or N x D vectors (trailing dims are flattened; a 1-D
    input is one pair), torch tensors or numpy arrays, any real dtype, any device. Equals
    ``scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic``: average ranks for
    ties, Pearson correlation of the ranks in float64. A pair where either map is constant
    or contains a NaN gives NaN. Rows are processed in chunks of about ``chunk_elements``
    pixels to bound memory.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
        >>> b = torch.tensor([[1.0, 3.0, 2.0, 5.0], [4.0, 3.0, 2.0, 1.0]])
        >>> spearman(a, b)
        tensor([0.8000,    nan], dtype=torch.float64)
    """
    a2, b2 = as_pair(a, b, "spearman")
    n, d = a2.shape
    out = torch.full((n,), float("nan"), dtype=torch.float64, device=a2.device)
    if n == 0 or d < 2:
        return out
    rows = max(1, chunk_elements // (2 * d))
    for s in range(0, n, rows):
        ca, cb = a2[s:s + rows], b2[s:s + rows]
        if ca.dtype != cb.dtype:
            common = torch.promote_types(ca.dtype, cb.dtype)
            ca, cb = ca.to(common), cb.to(common)
        k = ca.shape[0]
        # Pairs interleaved (row 2j = a_j, row 2j+1 = b_j): one sort call for both sides,
        # and each pair's 2 x 2 Gram matrix of centred ranks from one batched matmul.
        ranks, has_nan, _ = _flat_ranks(torch.stack([ca, cb], 1).view(2 * k, d))
        # Average ranks of a row always sum to d(d+1)/2, so each row's mean is known
        # exactly: row j of the flat-ranked batch has mean j*d + (d+1)/2.
        ranks -= torch.arange(2 * k, device=ranks.device, dtype=torch.float64).unsqueeze(1) * d + (d + 1) * 0.5
        pairs = ranks.view(k, 2, d)
        gram = torch.bmm(pairs, pairs.transpose(1, 2))
        var = gram[:, 0, 0] * gram[:, 1, 1]
        r = (gram[:, 0, 1] / torch.sqrt(var)).clamp(-1.0, 1.0)
        # A constant map has every rank equal: zero variance, no correlation (NaN, never 0).
        bad = (var <= 0) | has_nan.view(k, 2).any(1)
        out[s:s + k] = torch.where(bad, torch.full_like(r, float("nan")), r)
    return out
