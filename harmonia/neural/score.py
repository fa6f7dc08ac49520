"""Layer sweeps: neural predictivity (flat recordings) and the spatial-map benchmark.

Both run one forward pass per batch for all layers (:mod:`harmonia.neural.features`),
fit cross-validated read-outs (:mod:`harmonia.neural.regression`) per layer, and report
every layer plus the best one. Scores are the mean over folds of the median over neurons
of the held-out Pearson r; ceiled scores divide by the recording's ceiling.

Example:
    >>> from harmonia.neural.simulate import GroundTruthNet, simulate_flat
    >>> from harmonia.models.wrapper import HarmoniaModel, Preprocessing
    >>> import torch
    >>> rec = simulate_flat(n_stimuli=40, n_neurons=6, layer="block2", seed=0)
    >>> m = HarmoniaModel(GroundTruthNet(seed=0), "gt", Preprocessing(input_size=(32, 32))).eval()
    >>> res = neural_predictivity(m, rec, folds=4, pool=2, regression="ridge", alpha=1.0)
    >>> res.best.layer
    'block2'
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from harmonia.metrics import downsample, spearman
from harmonia.neural.ceiling import pairwise_neuron_ceiling, split_half_reliability
from harmonia.neural.data import NeuralRecording
from harmonia.neural.features import extract_features, minmax_per_image
from harmonia.neural.reduce import pca_reduce
from harmonia.neural.regression import (
    RidgeCV,
    cross_validated_predictions,
    fold_score,
    kfold,
    leave_one_group_out,
    make_regression,
    pearson_columns,
)
from harmonia.settings import NeuralSettings


@dataclass
class LayerScore:
    """One layer's result. ``per_neuron`` is each neuron's r averaged over folds."""

    layer: str
    score: float
    ceiled: float
    n_features: int
    per_neuron: list[float] = field(repr=False)
    map_spearman: float = math.nan
    map_spearman_down: float = math.nan

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        pn = np.asarray(self.per_neuron, dtype=float)
        d["per_neuron_median"] = float(np.nanmedian(pn)) if np.isfinite(pn).any() else math.nan
        d["per_neuron_mean"] = float(np.nanmean(pn)) if np.isfinite(pn).any() else math.nan
        return d


@dataclass
class SweepResult:
    """All layers of a sweep, the ceiling used and what it is."""

    kind: str
    layers: list[LayerScore]
    ceiling: float
    ceiling_kind: str
    settings: dict[str, Any]
    reliability: float = math.nan  # median split-half (Spearman-Brown) reliability, when there are repeats

    @property
    def best(self) -> LayerScore:
        finite = [l for l in self.layers if math.isfinite(l.score)]
        if not finite:
            raise ValueError("no layer produced a finite score")
        return max(finite, key=lambda l: l.score)


def _ceiled(score: float, ceiling: float) -> float:
    return score / ceiling if math.isfinite(ceiling) and ceiling > 0 else math.nan


def flat_ceiling(rec: NeuralRecording) -> tuple[float, str]:
    """sqrt of the median split-half (Spearman-Brown) reliability, or NaN without repeats.

    The square root is the expected r between a perfect model and the repeat-averaged
    responses, so a perfect model's ceiled score is 1 (dividing by the reliability itself,
    as Brain-Score's consistency ceiling does, lets ceiled scores exceed 1).
    """
    if rec.repeats is None:
        return math.nan, "none (no repeats)"
    rel = split_half_reliability(rec.repeats)
    return float(math.sqrt(max(float(np.nanmedian(rel)), 0.0))), "sqrt(split-half reliability, Spearman-Brown)"


def neural_predictivity(
    model: torch.nn.Module,
    rec: NeuralRecording,
    layers: Sequence[str] | None = None,
    regression: str = NeuralSettings.regression,
    folds: int = NeuralSettings.folds,
    seed: int = NeuralSettings.seed,
    projection: int | None = None,
    pool: int | None = None,
    batch_size: int = NeuralSettings.batch_size,
    ceiling: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    pca: int | None = None,
    pca_images: np.ndarray | torch.Tensor | None = None,
    **reg_kw: Any,
) -> SweepResult:
    """Brain-Score-style predictivity of a flat recording (stimuli x neuroids) for every layer.

    Each layer's features are flattened (after ``pool``), optionally randomly projected
    (``projection``), then optionally reduced to ``pca`` principal components fitted on
    the features of ``pca_images`` (N x 3 x H x W in [0, 1]) or, without them, of the
    recording's stimuli (images only, never responses: :mod:`harmonia.neural.reduce`).
    ``reg_kw``: ``n_components`` (PLS), ``alpha`` or ``alphas`` (ridge; a list picks
    alpha by nested CV on each training fold, :class:`~harmonia.neural.regression.RidgeCV`).
    """
    if rec.kind != "flat":
        raise ValueError(f"{rec.name} is a spatial recording: use spatial_benchmark")
    flat_kw = dict(mode="flat", projection=projection, pool=pool, batch_size=batch_size, seed=seed)
    feats = extract_features(model, torch.from_numpy(rec.images), layers, progress=progress, **flat_kw)
    if pca:
        fit = None
        if pca_images is not None:  # same pooling / fixed projection as the stimuli's features
            fit = extract_features(model, torch.as_tensor(np.asarray(pca_images, dtype=np.float32)), list(feats), **flat_kw)
        feats = pca_reduce(feats, pca, fit)
    Y = torch.from_numpy(rec.responses).double()
    fold_idx = kfold(len(rec.stimulus_ids), folds, seed)
    ceil, ceil_kind = (ceiling, "given") if ceiling is not None else flat_ceiling(rec)
    out = []
    for name, X in feats.items():
        reg = make_regression(regression, **reg_kw)
        pred = cross_validated_predictions(X.double(), Y, fold_idx, reg)
        r = torch.stack([pearson_columns(pred[torch.as_tensor(t)], Y[torch.as_tensor(t)]) for t in fold_idx])
        s = fold_score(r)
        out.append(LayerScore(name, s, _ceiled(s, ceil), X.shape[1], np.nanmean(r.numpy(), 0).tolist()))
    settings = _flat_settings(regression, reg_kw, folds, seed, projection, pool, list(feats), pca, pca_images)
    return SweepResult("flat", out, ceil, ceil_kind, settings, _reliability(rec))


def _flat_settings(regression, reg_kw, folds, seed, projection, pool, layers, pca, pca_images) -> dict[str, Any]:
    return {"benchmark": "predictivity", "regression": regression, **reg_kw, "folds": folds, "seed": seed,
            "projection": projection, "pool": pool, "layers": layers, "pca": pca,
            "pca_fit": None if not pca else ("stimuli" if pca_images is None else f"{len(pca_images)} separate images")}


def _spatial_settings(regression, reg_kw, max_channels, down, layers) -> dict[str, Any]:
    return {"benchmark": "spatial", "regression": regression, **reg_kw, "max_channels": max_channels,
            "down": down, "layers": layers}


def _spatial_ceiling(rec: NeuralRecording) -> tuple[float, str]:
    return pairwise_neuron_ceiling(rec.responses), "pairwise neurons (max r), all channels"


def sweep_header(rec: NeuralRecording, layers: Sequence[str], **kw: Any) -> tuple[float, str, dict[str, Any], float]:
    """(ceiling, ceiling kind, settings, reliability) that :func:`score_recording` with these
    options reports for ``layers``, without extracting a feature (a sweep's layers can then
    be scored in separate calls and assembled).

    Example:
        >>> from harmonia.neural.simulate import simulate_flat
        >>> rec = simulate_flat(n_stimuli=20, n_neurons=3, n_repeats=2, seed=0)
        >>> sweep_header(rec, ["block1"], n_components=3)[2]["layers"]
        ['block1']
    """
    fn = spatial_benchmark if rec.kind == "spatial" else neural_predictivity
    kw = _for_kind(rec, dict(kw))
    args = inspect.signature(fn).bind(None, rec, **kw)
    args.apply_defaults()
    a = args.arguments
    if rec.kind == "spatial":
        settings = _spatial_settings(a["regression"], a["reg_kw"], a["max_channels"], a["down"], list(layers))
        ceil, kind = (a["ceiling"], "given") if a["ceiling"] is not None else _spatial_ceiling(rec)
    else:
        settings = _flat_settings(a["regression"], a["reg_kw"], a["folds"], a["seed"], a["projection"], a["pool"],
                                  list(layers), a["pca"], a["pca_images"])
        ceil, kind = (a["ceiling"], "given") if a["ceiling"] is not None else flat_ceiling(rec)
    return ceil, kind, settings, _reliability(rec)


def spatial_benchmark(
    model: torch.nn.Module,
    rec: NeuralRecording,
    layers: Sequence[str] | None = None,
    regression: str = NeuralSettings.regression,
    max_channels: int | None = NeuralSettings.max_channels,
    batch_size: int = NeuralSettings.batch_size,
    down: int = NeuralSettings.down,
    ceiling: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    **reg_kw: float,
) -> SweepResult:
    """The spatial-map benchmark on a spatial recording (images x neurons x Gy x Gx).

    Per layer: features resized to the grid and min-max scaled per image; samples are
    grid positions; leave-one-image-out read-out; per held-out image, per-neuron Pearson r
    over positions, median over neurons, mean over images. ``map_spearman`` is the mean
    over images of the Spearman r between the neuron-averaged predicted and recorded
    maps (``_down``: both average-pooled by ``down``).
    """
    if rec.kind != "spatial":
        raise ValueError(f"{rec.name} is a flat recording: use neural_predictivity")
    n, k, gy, gx = rec.responses.shape
    feats = extract_features(model, torch.from_numpy(rec.images), layers, mode="grid", grid=(gy, gx),
                             max_channels=max_channels, batch_size=batch_size, progress=progress)
    Y = torch.from_numpy(rec.responses).double().permute(0, 2, 3, 1).reshape(n * gy * gx, k)
    groups = np.repeat(np.arange(n), gy * gx)
    fold_idx = leave_one_group_out(groups)
    ceil, ceil_kind = (ceiling, "given") if ceiling is not None else _spatial_ceiling(rec)
    recorded_map = torch.from_numpy(rec.responses).double().mean(1)  # N x Gy x Gx
    out = []
    for name, f in feats.items():
        X = minmax_per_image(f).double().reshape(n * gy * gx, -1)
        reg = make_regression(regression, **reg_kw)
        if isinstance(reg, RidgeCV):
            reg.block = gy * gx  # inner CV leaves whole images out too: neighbouring positions are not independent
        pred = cross_validated_predictions(X, Y, fold_idx, reg)
        r = torch.stack([pearson_columns(pred[torch.as_tensor(t)], Y[torch.as_tensor(t)]) for t in fold_idx])
        s = fold_score(r)
        pred_map = pred.reshape(n, gy, gx, k).mean(-1)
        ms = spearman(pred_map, recorded_map)
        msd = spearman(downsample(pred_map, down), downsample(recorded_map, down)) if min(gy, gx) >= 2 * down else torch.full((n,), math.nan)
        out.append(LayerScore(name, s, _ceiled(s, ceil), X.shape[1], np.nanmean(r.numpy(), 0).tolist(),
                              _nanmean(ms), _nanmean(msd)))
    settings = _spatial_settings(regression, reg_kw, max_channels, down, list(feats))
    return SweepResult("spatial", out, ceil, ceil_kind, settings, _reliability(rec))


def _reliability(rec: NeuralRecording) -> float:
    if rec.repeats is None:
        return math.nan
    return float(np.nanmedian(split_half_reliability(rec.repeats)))


def _nanmean(t: torch.Tensor) -> float:
    a = t.detach().double().cpu().numpy()
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def score_recording(model: torch.nn.Module, rec: NeuralRecording, **kw: Any) -> SweepResult:
    """Dispatch on the recording's kind (spatial -> maps benchmark, flat -> predictivity)."""
    kw = _for_kind(rec, kw)
    return spatial_benchmark(model, rec, **kw) if rec.kind == "spatial" else neural_predictivity(model, rec, **kw)


def _for_kind(rec: NeuralRecording, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` without the options of the other benchmark (one option set serves both kinds)."""
    other = ("folds", "seed", "projection", "pool", "pca", "pca_images") if rec.kind == "spatial" else ("max_channels", "down")
    return {k: v for k, v in kw.items() if k not in other}
