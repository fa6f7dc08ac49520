"""The evaluation loop: model maps vs human maps, per image, into the results store.

One pass over the dataset: each batch is explained (one forward + backward for gradient
saliency, whose logits also give the predictions), scored against the human maps, and its
per-image rows are committed to the store in one transaction. A re-run with the same
content (weights, preprocessing, data files, explainer, metrics, harmonia version) is a
cache hit; an interrupted run resumes with the images it had not finished.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Subset

from harmonia import __version__
from harmonia.attribution import Explainer, Saliency
from harmonia.errors import HarmoniaWarning, UserError
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

    def __post_init__(self) -> None:
        # Alignment is a score divided by the ceiling: 0 divides by zero, a negative one flips the sign.
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0):
            what = "--ceiling" if self.source == "user" else f"the ceiling ({self.source})"
            raise UserError(f"{what} must be a positive number, got {self.value!r}; use 'none' for raw scores")


@dataclass
class EvaluationResult:
    key: str
    cached: bool
    rows: list[dict[str, Any]]
    aggregates: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    resumed: int = 0  # images an interrupted run had already stored (0: computed from the start)


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


def _class_key(name: Any) -> str:
    # "great_white_shark", "Great white shark, white shark" -> "great white shark"
    return " ".join(str(name).split(",")[0].replace("_", " ").replace("-", " ").lower().split())


def check_classes(model: Any, dataset: Any, labels_as_targets: bool = True) -> str | None:
    """Whether ``model``'s classes are the dataset's labels: None if they are (or nothing tells).

    Labels beyond the model's outputs raise :class:`~harmonia.errors.UserError` when they
    are used as class indices (``labels_as_targets``: the map of class 7 of a 3-class model
    does not exist). Otherwise a mismatch of class names (or of class counts, when the model
    has no names) returns the reason, which :func:`evaluate` issues as a
    :class:`~harmonia.errors.HarmoniaWarning`: the run still works, but its accuracy compares
    unrelated classes (e.g. an ImageNet model on the 8-class simulated data scores ~0%).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> ds = NS(info=NS(classes=["square", "disk"]), labels=[0, 1])
        >>> check_classes(NS(name="m", class_names=["square", "disk"], num_classes=2), ds) is None
        True
        >>> check_classes(NS(name="m", class_names=["tench", "goldfish", "shark"], num_classes=3), ds)[:40]
        "model m's 3 classes ('tench', 'goldfish'"
    """
    n_model = getattr(model, "num_classes", None)
    model_names = getattr(model, "class_names", None)
    names = getattr(getattr(dataset, "info", None), "classes", None)
    labels = getattr(dataset, "labels", None)
    labels = list(labels) if isinstance(labels, (list, tuple)) else None  # readers without a label list: untold
    name = getattr(model, "name", type(model).__name__)
    root = getattr(dataset, "root", "the dataset")
    if n_model and labels:
        top = max(labels)
        if top >= n_model:
            message = (f"{root}: label {top} is beyond model {name}'s {n_model} classes (0..{n_model - 1}): "
                       "the dataset's labels are not this model's classes")
            if labels_as_targets:
                raise UserError(message + "; use a model trained on these classes, or --targets predicted")
            return message
    if not names:
        return None

    def shown(seq: Any) -> str:
        seq = list(seq)
        return ", ".join(repr(str(s)) for s in seq[:2]) + (", ..." if len(seq) > 2 else "")

    effect = ("accuracy (expect ~0%) and the maps of the label's class compare unrelated classes" if labels_as_targets
              else "accuracy compares unrelated classes (expect ~0%)")
    if model_names:
        if len(names) <= len(model_names) and all(_class_key(a) == _class_key(b) for a, b in zip(names, model_names)):
            return None
        return (f"model {name}'s {len(model_names)} classes ({shown(model_names)}) are not the {len(names)} classes of "
                f"{root} ({shown(names)}): {effect}")
    if n_model and n_model != len(names):
        return (f"model {name} has {n_model} outputs but {root} has {len(names)} classes ({shown(names)}): "
                f"its labels are probably not this model's classes; {effect}")
    return None


def check_targets_mode(targets: str) -> None:
    """Raise :class:`~harmonia.errors.UserError` unless ``targets`` is "label" or "predicted".

    Example:
        >>> check_targets_mode("label")
    """
    if targets not in TARGET_MODES:
        raise UserError(f"targets must be one of {TARGET_MODES}, got {targets!r}")


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
    check_targets_mode(targets)
    explainer = explainer or Saliency(reducer="max_abs")
    scorer = scorer or MapScorer()
    if isinstance(ceiling, (int, float)):
        ceiling = Ceiling(float(ceiling), "user")
    dev = resolve_device(device)
    model = model.to(dev).eval()

    n_total = len(dataset) if limit is None else min(limit, len(dataset))
    # Checked before the run is started in the store, so a bad option leaves nothing behind.
    mismatch = check_classes(model, dataset, labels_as_targets=targets == "label")
    if mismatch:
        warnings.warn(mismatch, HarmoniaWarning, stacklevel=2)
    if n_total:
        _check_map_size(scorer, dataset)
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
    finished = resumed = n_total - len(todo)
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
        scorer.check_map_size(*human.shape[-2:])  # maps finished on the device were not checked up front
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
    return EvaluationResult(key, False, rows, agg, meta, resumed=resumed)


def _check_map_size(scorer: MapScorer, dataset: Any) -> None:
    """The scorer's down-sampling against the dataset's map size, before any work (one item
    read, only when down-sampling; readers that finish maps on the device are checked per batch)."""
    if not scorer.downsample or scorer.downsample == 1 or hasattr(dataset, "finish_batch"):
        return
    size = getattr(dataset, "size", None)
    h, w = size if size is not None else dataset[0]["map"].shape[-2:]
    scorer.check_map_size(int(h), int(w))


def _dataset_ids(dataset: Any, n: int) -> list[str]:
    if hasattr(dataset, "ids"):
        return list(dataset.ids)[:n]
    return [str(dataset[i]["id"]) for i in range(n)]


def parse_ceiling_option(value: str | float | None) -> Ceiling | str | None:
    """A ceiling option checked without data: None for "none", "auto", or a user :class:`Ceiling`.

    Example:
        >>> parse_ceiling_option("0.5"), parse_ceiling_option("auto"), parse_ceiling_option("none")
        (Ceiling(value=0.5, source='user'), 'auto', None)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--ceiling must be a number, 'auto' or 'none', got {value!r}") from None
    return Ceiling(number, "user")


def resolve_ceiling(dataset: Any, value: str | float | None, store: ResultStore | None = None,
                    scorer: MapScorer | None = None) -> Ceiling | None:
    """The ceiling to normalise by: a number, or "auto" (computed from per-subject maps when
    the dataset has them, else one recorded in the dataset metadata, else the ClickMe
    release constant 0.65753), or "none".

    A computed ceiling sees the maps as they are scored: both halves are resized to the
    dataset's ``size`` and go through the ``scorer``'s blur and down-sampling, so alignment
    under ``--blur``/``--downsample``/``--size`` divides by a ceiling of equally prepared
    maps. A recorded or constant ceiling cannot be recomputed; its source then says so.
    """
    parsed = parse_ceiling_option(value)
    if parsed != "auto":
        return parsed  # type: ignore[return-value]
    if scorer is not None and len(dataset):
        _check_map_size(scorer, dataset)  # before a ceiling of unusable maps is computed
    from harmonia.humans.ceiling import MapPreparation

    prep = MapPreparation.of(dataset, scorer)
    if getattr(dataset, "has_subjects", False):
        from harmonia.humans.ceiling import ceiling_for

        computed = ceiling_for(dataset, store=store, prepare=prep)
        if computed is not None:
            how = f", maps prepared as scored: {prep.describe()}" if prep else ""
            return Ceiling(float(computed), f"computed split-half ceiling of this dataset's subjects{how}")
    caveat = f"; not recomputed for {prep.describe()}" if prep else ""
    info = getattr(dataset, "info", None)
    recorded = getattr(info, "extra", {}).get("ceiling") if info is not None else None
    if recorded is not None:
        return Ceiling(float(recorded), f"dataset metadata{caveat}")
    return Ceiling(CLICKME_CEILING, f"ClickMe release constant{caveat}")
