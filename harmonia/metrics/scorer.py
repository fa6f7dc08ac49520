"""MapScorer: the per-image scores of model maps against human maps, one configurable object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from harmonia.metrics.maps import as_tensor, prepare_maps
from harmonia.metrics.overlap import dice_top, iou_top
from harmonia.metrics.spearman import spearman
from harmonia.metrics.stats import MapStats, map_stats, overlap_from_stats, spearman_from_stats

METRICS: dict[str, Callable[..., torch.Tensor]] = {
    "spearman": lambda a, b, q: spearman(a, b),
    "dice": dice_top,
    "iou": iou_top,
}


@dataclass
class MapScorer:
    """Scores N x H x W model maps against N x H x W human maps, per image.

    Steps: (1) if the maps differ in H x W, the model maps are resized to the human maps'
    size (bilinear, ``align_corners=False``, antialiased when shrinking), since the human
    map is the reference; (2) both go through :func:`prepare_maps` (optional Gaussian blur
    of ``blur_sigma`` pixels, then average-pool ``downsample``); (3) each metric:
    ``"spearman"`` (average-rank ties), ``"dice"`` and ``"iou"`` of the pixels strictly
    above each map's ``q``-quantile. NaN scores (constant maps) are kept as NaN.

    Example:
        >>> scorer = MapScorer()
        >>> scores = scorer(torch.rand(4, 32, 32), torch.rand(4, 64, 64))
        >>> sorted(scores), scores["spearman"].shape
        (['dice', 'iou', 'spearman'], torch.Size([4]))
    """

    metrics: tuple[str, ...] = ("spearman", "dice", "iou")
    blur_sigma: float | None = None
    downsample: int | None = None
    q: float = 0.9

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            self.metrics = (self.metrics,)
        self.metrics = tuple(self.metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"unknown metric(s) {unknown or self.metrics}; valid: {', '.join(METRICS)}")
        if self.blur_sigma is not None and not (self.blur_sigma > 0 and math.isfinite(self.blur_sigma)):
            raise ValueError(f"blur_sigma must be positive and finite or None, got {self.blur_sigma!r}")
        if self.downsample is not None and (not isinstance(self.downsample, int) or self.downsample < 1):
            raise ValueError(f"downsample must be a positive int or None, got {self.downsample!r}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {self.q}")

    def check_map_size(self, height: int, width: int) -> None:
        """Raise :class:`~harmonia.errors.UserError` if ``downsample`` leaves fewer than 2 x 2
        pixels of ``height x width`` maps (nothing left to rank: every score would be NaN).

        Example:
            >>> MapScorer(downsample=100).check_map_size(64, 64)
            Traceback (most recent call last):
            ...
            harmonia.errors.UserError: --downsample 100 leaves 1x1 of the 64x64 maps (nothing to rank); use at most 63
        """
        from harmonia.errors import UserError

        if self.downsample is not None and self.downsample > 1:
            out = (math.ceil(height / self.downsample), math.ceil(width / self.downsample))
            if min(out) < 2:
                raise UserError(f"--downsample {self.downsample} leaves {out[0]}x{out[1]} of the {height}x{width} maps "
                                f"(nothing to rank); use at most {min(height, width) - 1}")

    def _needs(self) -> tuple[bool, float | None]:
        # what map_stats must compute for these metrics: ranks, and the top-mask quantile
        return "spearman" in self.metrics, (self.q if {"dice", "iou"} & set(self.metrics) else None)

    def human_stats(self, human_maps: Any) -> MapStats:
        """Statistics of N x H x W human maps (prepared as :meth:`__call__` prepares them).

        They depend only on the human maps and this scorer's settings, so they can be
        computed once per dataset and passed back as ``human_stats`` for every model.

        Example:
            >>> scorer, human = MapScorer(), torch.rand(2, 16, 16)
            >>> model = torch.rand(2, 16, 16)
            >>> cached = scorer(model, human, human_stats=scorer.human_stats(human))
            >>> all(torch.equal(cached[m], scorer(model, human)[m]) for m in scorer.metrics)
            True
        """
        human = as_tensor(human_maps).detach()
        if human.ndim != 3:
            raise ValueError(f"expected N x H x W maps, got {tuple(human.shape)}")
        ranks, q = self._needs()
        return map_stats(prepare_maps(human, self.blur_sigma, self.downsample), ranks=ranks, q=q)

    def __call__(self, model_maps: Any, human_maps: Any, human_stats: MapStats | None = None) -> dict[str, torch.Tensor]:
        """Scores as ``{metric: tensor of shape (N,)}`` (float64, on the maps' device).

        ``human_stats``: :meth:`human_stats` of ``human_maps`` computed earlier (e.g. cached
        per dataset); the scores are the same, without re-ranking the human maps.
        """
        model = as_tensor(model_maps).detach()
        human = as_tensor(human_maps).detach().to(model.device)
        if model.ndim != 3 or human.ndim != 3:
            raise ValueError(f"expected N x H x W maps, got {tuple(model.shape)} and {tuple(human.shape)}")
        if model.shape[0] != human.shape[0]:
            raise ValueError(f"model and human maps differ in batch size: {model.shape[0]} vs {human.shape[0]}")
        if model.shape[-2:] != human.shape[-2:]:
            size = tuple(human.shape[-2:])
            shrink = size[0] < model.shape[-2] or size[1] < model.shape[-1]
            model = F.interpolate(model.unsqueeze(1), size=size, mode="bilinear", align_corners=False,
                                  antialias=shrink).squeeze(1)
        model = prepare_maps(model, self.blur_sigma, self.downsample)
        ranks, q = self._needs()
        # One sort per map serves Spearman and the top-q masks (see harmonia.metrics.stats).
        ms = map_stats(model, ranks=ranks, q=q)
        hs = self.human_stats(human) if human_stats is None else human_stats.to(model.device)
        if len(hs) != model.shape[0]:
            raise ValueError(f"human_stats has {len(hs)} rows for {model.shape[0]} maps")
        scores: dict[str, torch.Tensor] = {}
        if ranks:
            scores["spearman"] = spearman_from_stats(ms, hs)
        if q is not None:
            scores["dice"], scores["iou"] = overlap_from_stats(ms, hs)
        return {m: scores[m] for m in self.metrics}

    def config(self) -> dict[str, Any]:
        """JSON-able settings (part of results-cache keys): any change here changes scores."""
        return {
            "metrics": list(self.metrics),
            "blur_sigma": self.blur_sigma,
            "blur_padding": "reflect",
            "downsample": self.downsample,
            "q": self.q,
            "resize": "bilinear_antialias",
            "spearman_ties": "average",
        }
