"""The evaluation loop: model maps vs human maps, per image, into the results store.

One pass over the dataset: each batch is explained (one forward + backward for gradient
saliency, whose logits also give the predictions), scored against the human maps, and its
per-image rows are committed to the store in one transaction. A re-run with the same
content (weights, preprocessing, data files, explainer, metrics, harmonia version) is a
cache hit; an interrupted run resumes with the images it had not finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Subset

from harmonia import __version__
from harmonia.attribution import Explainer, Saliency
from harmonia.metrics import CLICKME_CEILING, HUMAN_STATS_CACHE, MapScorer, MapStatsCache, summarize
from harmonia.models.wrapper import HarmoniaModel
from harmonia.store import ResultStore, cache_key, dataset_fingerprint
from harmonia.utils.device import resolve_device

TARGET_MODES = ("label", "predicted")


@dataclass
class Ceiling:
    """The value alignment is normalised by, and where it came from."""

    value: float
    source: str  # "computed (split-half, ...)", "dataset metadata", "ClickMe release constant", "user"


@dataclass
class EvaluationResult:
    key: str
    cached: bool
    rows: list[dict[str, Any]]
    aggregates: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def _explain_batch(explainer: Explainer, model: HarmoniaModel, images: torch.Tensor, targets: torch.Tensor | None):
    """Maps, logits and the explained classes, with as few passes as the explainer allows
    (``targets=None``: each image's predicted class)."""
    maps, logits = explainer.explain(model, images, targets)
    if logits is None:
        with torch.no_grad():
            logits = model(images)
    return maps, logits, targets if targets is not None else logits.argmax(1)


def aggregate_rows(rows: list[dict[str, Any]], metrics: tuple[str, ...], ceiling: Ceiling | None) -> dict[str, Any]:
    """Summaries of each metric (NaNs counted, never zeroed), accuracy and normalised alignment."""
    agg: dict[str, Any] = {"n_images": len(rows)}
    for m in metrics:
        agg[m] = summarize(torch.tensor([float(r[m]) for r in rows], dtype=torch.float64)).to_dict()
    if rows and "correct" in rows[0]:
        agg["accuracy"] = sum(bool(r["correct"]) for r in rows) / len(rows)
    if ceiling is not None and "spearman" in metrics:
        mean = agg["spearman"]["mean"]
        agg["ceiling"] = {"value": ceiling.value, "source": ceiling.source}
        agg["alignment"] = mean / ceiling.value if mean is not None and math.isfinite(mean) else math.nan
    return agg


def evaluate(
    model: HarmoniaModel,
    dataset: torch.utils.data.Dataset,
    explainer: Explainer | None = None,
    scorer: MapScorer | None = None,
    *,
    store: ResultStore | None = None,
    ceiling: Ceiling | float | None = None,
    targets: str = "label",
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    limit: int | None = None,
    recompute: bool = False,
    progress: Callable[[int, int], None] | None = None,
    human_cache: MapStatsCache | bool = True,
) -> EvaluationResult:
    """Score ``model``'s feature-importance maps against the dataset's human maps.

    Args:
        model: a :class:`HarmoniaModel` (images in [0, 1]).
        dataset: map-style dataset yielding dicts with ``image``, ``map``, ``label``, ``id``
            (e.g. :class:`harmonia.data.HarmoniaDataset`); it must have ``files()`` for the
            content key when a store is used.
        explainer: defaults to ``Saliency(reducer="max_abs")``, the release's evaluation map.
        scorer: defaults to ``MapScorer()`` (Spearman, top-10% Dice and IoU).
        store: results store; None computes without caching.
        ceiling: normalising ceiling (``Ceiling`` or a float); None reports raw scores only.
        targets: "label" (gradient of the true class, as the release) or "predicted".
        limit: evaluate only the first ``limit`` images (part of the cache key).
        recompute: ignore a cached complete run and compute again.
        progress: called as ``progress(done, total)`` after each batch.
        human_cache: where the human maps' ranks and top masks are kept between
            evaluations (they do not depend on the model): True for the process-wide
            :data:`harmonia.metrics.HUMAN_STATS_CACHE`, a :class:`MapStatsCache`, or False.
            Used only with a store, whose content fingerprint of the dataset (files and
            reading settings, e.g. the map preprocessing) keys the cache with the scorer's
            settings, so changed data or preprocessing never reuse stale statistics.

    Example:
        >>> from harmonia.data import HarmoniaDataset  # doctest: +SKIP
        >>> res = evaluate(load("efficientnet_lite0"), HarmoniaDataset("data/sim", "test"))  # doctest: +SKIP
        >>> res.aggregates["spearman"]["mean"]  # doctest: +SKIP
    """
    if targets not in TARGET_MODES:
        raise ValueError(f"targets must be one of {TARGET_MODES}, got {targets!r}")
    explainer = explainer or Saliency(reducer="max_abs")
    scorer = scorer or MapScorer()
    if isinstance(ceiling, (int, float)):
        ceiling = Ceiling(float(ceiling), "user")
    dev = resolve_device(device)
    model = model.to(dev).eval()

    n_total = len(dataset) if limit is None else min(limit, len(dataset))
    settings = {
        "kind": "evaluation",
        "model": model.fingerprint(),
        "dataset": dataset_fingerprint(dataset, digest=store.file_digest if store else None) if store else None,
        "explainer": explainer.config(),
        "scorer": scorer.config(),
        "targets": targets,
        "limit": limit,
    }
    key = cache_key(settings)
    cache = HUMAN_STATS_CACHE if human_cache is True else (None if human_cache is False else human_cache)
    # Scope of the human statistics: what they depend on (data content and reading settings,
    # scorer settings), nothing about the model.
    scope = cache_key({"kind": "human_map_stats", "dataset": settings["dataset"], "scorer": settings["scorer"]})
    if settings["dataset"] is None:
        cache = None  # no content fingerprint without a store: never risk stale statistics
    meta = {
        "model": model.name,
        "model_fingerprint": settings["model"],
        "init_seed": getattr(model, "init_seed", None),
        "input_size": list(model.input_size),
        "dataset": str(getattr(dataset, "root", type(dataset).__name__)),
        "split": getattr(dataset, "split", None),
        "size": getattr(dataset, "size", None),  # the resize of images and maps (None: native)
        "synthetic": bool(getattr(getattr(dataset, "info", None), "synthetic", False)),
        "explainer": explainer.config(),
        "scorer": scorer.config(),
        "targets": targets,
        "harmonia_version": __version__,
    }

    if store is not None:
        run = store.get_run(key)
        if run is not None and recompute:
            store.delete_run(key)
            run = None
        if run is not None and run.status == "complete":
            rows = store.rows(key)
            agg = aggregate_rows(rows, tuple(scorer.metrics), ceiling)
            store.finish_run(key, agg)  # the ceiling may have changed; rows have not
            return EvaluationResult(key, True, rows, agg, run.meta)
        store.start_run(key, kind="evaluation", meta=meta)
        done = store.done_ids(key)
    else:
        done = set()

    ids = _dataset_ids(dataset, n_total)
    todo = [i for i in range(n_total) if ids[i] not in done]
    rows: list[dict[str, Any]] = []
    loader = DataLoader(
        Subset(dataset, todo),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )
    finished = n_total - len(todo)
    if progress:
        progress(finished, n_total)
    # Readers with uint8 output (ClickMe output="uint8") defer their preprocessing to whole
    # batches: run it on the device, after the 4x cheaper transfer of uint8 pixels.
    finish_batch = getattr(dataset, "finish_batch", None)
    for batch in loader:
        images = batch["image"].to(dev, non_blocking=True)
        human = batch["map"].to(dev, non_blocking=True)
        if finish_batch is not None:
            done_batch = finish_batch({**batch, "image": images, "map": human})
            images, human = done_batch["image"], done_batch["map"]
        labels = torch.as_tensor(batch["label"], device=dev)
        maps, logits, used_targets = _explain_batch(explainer, model, images, labels if targets == "label" else None)
        hs = cache.get(scope, batch["id"], device=dev) if cache is not None else None
        if hs is None:
            hs = scorer.human_stats(human)
            if cache is not None:
                cache.put(scope, list(batch["id"]), hs)
        scores = scorer(maps, human, human_stats=hs)
        preds = logits.argmax(1)
        batch_rows = []
        for j, image_id in enumerate(batch["id"]):
            row: dict[str, Any] = {
                "image_id": image_id,
                "label": int(labels[j]),
                "target": int(used_targets[j]),
                "pred": int(preds[j]),
                "correct": bool(preds[j] == labels[j]),
            }
            row.update({m: float(v[j]) for m, v in scores.items()})
            batch_rows.append(row)
        if store is not None:
            store.add_rows(key, batch_rows)
        rows.extend(batch_rows)
        finished += len(batch_rows)
        if progress:
            progress(finished, n_total)

    if store is not None:
        rows = store.rows(key)
    agg = aggregate_rows(rows, tuple(scorer.metrics), ceiling)
    if store is not None:
        store.finish_run(key, agg)
    return EvaluationResult(key, False, rows, agg, meta)


def _dataset_ids(dataset: Any, n: int) -> list[str]:
    if hasattr(dataset, "ids"):
        return list(dataset.ids)[:n]
    return [str(dataset[i]["id"]) for i in range(n)]


def resolve_ceiling(dataset: Any, value: str | float | None, store: ResultStore | None = None) -> Ceiling | None:
    """The ceiling to normalise by: a number, or "auto" (computed from per-subject maps when
    the dataset has them, else one recorded in the dataset metadata, else the ClickMe
    release constant 0.65753), or "none"."""
    if value is None or value == "none":
        return None
    if value != "auto":
        try:
            return Ceiling(float(value), "user")
        except ValueError:
            raise ValueError(f"--ceiling must be a number, 'auto' or 'none', got {value!r}") from None
    if getattr(dataset, "has_subjects", False):
        from harmonia.humans.ceiling import ceiling_for

        computed = ceiling_for(dataset, store=store)
        if computed is not None:
            return Ceiling(float(computed), "computed split-half ceiling of this dataset's subjects")
    info = getattr(dataset, "info", None)
    recorded = getattr(info, "extra", {}).get("ceiling") if info is not None else None
    if recorded is not None:
        return Ceiling(float(recorded), "dataset metadata")
    return Ceiling(CLICKME_CEILING, "ClickMe release constant")
