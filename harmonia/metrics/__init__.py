"""Batched torch metrics on map pairs, map preparation, ceiling normalisation, NaN-aware aggregates.

Example:
    >>> import torch
    >>> from harmonia.metrics import MapScorer, summarize, normalize, CLICKME_CEILING
    >>> scores = MapScorer()(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    >>> summarize(scores["spearman"]).n
    3
"""

from harmonia.metrics.aggregate import CLICKME_CEILING, Summary, normalize, summarize
from harmonia.metrics.maps import downsample, gaussian_blur, gaussian_kernel2d, prepare_maps
from harmonia.metrics.overlap import dice_top, iou_top, overlap_top, quantile_linear, top_mask
from harmonia.metrics.scorer import METRICS, MapScorer
from harmonia.metrics.spearman import rank_average, spearman
from harmonia.metrics.stats import (
    HUMAN_STATS_CACHE,
    MapStats,
    MapStatsCache,
    map_stats,
    overlap_from_stats,
    spearman_from_stats,
)

__all__ = [
    "CLICKME_CEILING",
    "HUMAN_STATS_CACHE",
    "METRICS",
    "MapScorer",
    "MapStats",
    "MapStatsCache",
    "Summary",
    "dice_top",
    "downsample",
    "gaussian_blur",
    "gaussian_kernel2d",
    "iou_top",
    "map_stats",
    "overlap_from_stats",
    "overlap_top",
    "normalize",
    "prepare_maps",
    "quantile_linear",
    "rank_average",
    "spearman",
    "spearman_from_stats",
    "summarize",
    "top_mask",
]
