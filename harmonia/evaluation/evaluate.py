"""The evaluation: model maps vs human maps, per image, as a :class:`~harmonia.measurements.Measurement`.

Each batch is explained (one forward + backward for gradient saliency, whose logits also
give the predictions), scored against the human maps, and its per-image rows are
committed to the store in one transaction by :func:`harmonia.measurements.run`. A re-run
with the same content (weights, preprocessing, data files, explainer and metric settings,
the measurement's version) is a cache hit; an interrupted run resumes with the images it
had not finished.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from harmonia import __version__
from harmonia.attribution import Explainer, Saliency
from harmonia.errors import HarmoniaWarning, UserError
from harmonia.measurements import Batch, Measurement, Result, dataset_ids, loader_batches, progress_events, run
from harmonia.metrics import CLICKME_CEILING, HUMAN_STATS_CACHE, MapScorer, MapStatsCache, summarize
from harmonia.store import ResultStore, cache_key, dataset_fingerprint, model_key
from harmonia.utils.device import resolve_device

TARGET_MODES = ("label", "predicted")

EvaluationResult = Result  # the evaluation's result is the runner's


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


def _explain_batch(explainer: Explainer, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor | None,
                   ids: list[str]):
    """Maps, logits and the explained classes, with as few passes as the explainer allows
    (``targets=None``: each image's predicted class)."""
    if explainer.uses_ids:
        maps, logits = explainer.explain(model, images, targets, ids=ids)
    else:
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


def model_meta(model: torch.nn.Module, fingerprint: str) -> dict[str, Any]:
    """What run metadata says about a model (a HarmoniaModel or a plain module)."""
    size = getattr(model, "input_size", None)
    return {"model": getattr(model, "name", type(model).__name__), "model_fingerprint": fingerprint,
            "init_seed": getattr(model, "init_seed", None), **({"input_size": list(size)} if size is not None else {})}


def dataset_meta(dataset: Any) -> dict[str, Any]:
    """What run metadata says about a dataset: where, which split, synthetic or not."""
    return {
        "dataset": str(getattr(dataset, "root", type(dataset).__name__)),
        "split": getattr(dataset, "split", None),
        "size": getattr(dataset, "size", None),  # the resize of images and maps (None: native)
        "synthetic": bool(getattr(getattr(dataset, "info", None), "synthetic", False)),
    }


class Alignment(Measurement):
    """Alignment of a model's feature-importance maps with human maps (see :func:`evaluate`).

    Example:
        >>> Alignment().settings()["explainer"]["name"], Alignment.kind
        ('saliency', 'evaluation')
    """

    kind = "evaluation"
    version = "1"

    def __init__(self, explainer: Explainer | None = None, scorer: MapScorer | None = None, *,
                 ceiling: Ceiling | float | None = None, targets: str = "label", limit: int | None = None,
                 device: str | torch.device | None = None, num_workers: int = 0,
                 human_cache: MapStatsCache | bool = True) -> None:
        check_targets_mode(targets)
        self.explainer = explainer or Saliency(reducer="max_abs")
        self.scorer = scorer or MapScorer()
        self.ceiling = Ceiling(float(ceiling), "user") if isinstance(ceiling, (int, float)) else ceiling
        self.targets, self.limit = targets, limit
        self.device, self.num_workers = resolve_device(device), num_workers
        self.human_cache = HUMAN_STATS_CACHE if human_cache is True else (None if human_cache is False else human_cache)

    def check(self, model: Any, data: Any) -> None:
        # Before the run is started in the store, so a bad option leaves nothing behind.
        mismatch = check_classes(model, data, labels_as_targets=self.targets == "label")
        if mismatch:
            warnings.warn(mismatch, HarmoniaWarning, stacklevel=4)  # at the caller of evaluate()
        if (len(data) if self.limit is None else min(self.limit, len(data))):
            _check_map_size(self.scorer, data)

    def settings(self) -> dict[str, Any]:
        return {"explainer": self.explainer.key_config(), "scorer": self.scorer.config(),
                "targets": self.targets, "limit": self.limit}

    def data_key(self, data: Any, store: ResultStore | None) -> Any:
        if store is None:
            return None  # no cached digests without a store: never read every file for a key nobody keeps
        return dataset_fingerprint(data, digest=store.file_digest)

    def items(self, data: Any) -> list[str]:
        return dataset_ids(data, self.limit)

    def meta(self, model: Any, data: Any) -> dict[str, Any]:
        return {**model_meta(model, model_key(model)), **dataset_meta(data), "explainer": self.explainer.config(),
                "scorer": self.scorer.config(), "targets": self.targets, "harmonia_version": __version__}

    def prepare(self, model: Any, data: Any, data_key: Any) -> dict[str, Any]:
        # The human maps' statistics depend on the data content and reading settings and on
        # the scorer's settings, never on the model; without a content key, no cache at all.
        scope = cache_key({"kind": "human_map_stats", "dataset": data_key, "scorer": self.scorer.config()})
        return {"model": model.to(self.device).eval(), "scope": scope,
                "cache": self.human_cache if data_key is not None else None,
                "finish_batch": getattr(data, "finish_batch", None)}

    def batches(self, data: Any, ids: list[str], index: list[int], batch_size: int | None) -> Iterator[Batch]:
        return loader_batches(data, index, batch_size, num_workers=self.num_workers,
                              pin_memory=self.device.type == "cuda", persistent_workers=False)

    def compute(self, ctx: dict[str, Any], batch: Batch) -> list[dict[str, Any]]:
        dev, b = self.device, batch.data
        images = b["image"].to(dev, non_blocking=True)
        human = b["map"].to(dev, non_blocking=True)
        # Readers with uint8 output (ClickMe output="uint8") defer their preprocessing to whole
        # batches: run it on the device, after the 4x cheaper transfer of uint8 pixels.
        if ctx["finish_batch"] is not None:
            done_batch = ctx["finish_batch"]({**b, "image": images, "map": human})
            images, human = done_batch["image"], done_batch["map"]
        labels = torch.as_tensor(b["label"], device=dev)
        self.scorer.check_map_size(*human.shape[-2:])  # maps finished on the device were not checked up front
        maps, logits, used_targets = _explain_batch(self.explainer, ctx["model"], images,
                                                    labels if self.targets == "label" else None, batch.ids)
        cache = ctx["cache"]
        hs = cache.get(ctx["scope"], b["id"], device=dev) if cache is not None else None
        if hs is None:
            hs = self.scorer.human_stats(human)
            if cache is not None:
                cache.put(ctx["scope"], list(b["id"]), hs)
        scores = self.scorer(maps, human, human_stats=hs)
        preds = logits.argmax(1)
        rows = []
        for j, image_id in enumerate(b["id"]):
            row: dict[str, Any] = {
                "image_id": image_id,
                "label": int(labels[j]),
                "target": int(used_targets[j]),
                "pred": int(preds[j]),
                "correct": bool(preds[j] == labels[j]),
            }
            row.update({m: float(v[j]) for m, v in scores.items()})
            rows.append(row)
        return rows

    def aggregate(self, rows: list[dict[str, Any]], data: Any) -> dict[str, Any]:
        return aggregate_rows(rows, tuple(self.scorer.metrics), self.ceiling)

    def headline(self, agg: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"n_images": agg["n_images"], "accuracy": agg.get("accuracy", math.nan)}
        for m in self.scorer.metrics:
            out[f"{m}_mean"] = agg[m]["mean"]
        if "alignment" in agg:
            out["alignment"] = agg["alignment"]
        return out


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
    model: torch.nn.Module,
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
) -> Result:
    """Score ``model``'s feature-importance maps against the dataset's human maps
    (:class:`Alignment` through :func:`harmonia.measurements.run`).

    Args:
        model: a :class:`HarmoniaModel` (images in [0, 1]) or any module keyed by its weights.
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
    measurement = Alignment(explainer, scorer, ceiling=ceiling, targets=targets, limit=limit, device=device,
                            num_workers=num_workers, human_cache=human_cache)
    return run(measurement, model, dataset, store=store, recompute=recompute, on_event=progress_events(progress),
               batch_size=batch_size)


def _check_map_size(scorer: MapScorer, dataset: Any) -> None:
    """The scorer's down-sampling against the dataset's map size, before any work (one item
    read, only when down-sampling; readers that finish maps on the device are checked per batch)."""
    if not scorer.downsample or scorer.downsample == 1 or hasattr(dataset, "finish_batch"):
        return
    size = getattr(dataset, "size", None)
    h, w = size if size is not None else dataset[0]["map"].shape[-2:]
    scorer.check_map_size(int(h), int(w))


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
