"""``harmonia evaluate`` as a library call: :func:`evaluate_models` scores models x explainers on one dataset.

Every option is checked before a model is loaded, every model before the ceiling is
computed; each (model, explainer) pair is one :func:`harmonia.evaluation.evaluate` run in
the results store (a cache hit when repeated, resumed when interrupted). What is shown
goes through a :class:`harmonia.utils.ui.UI` (silent by default).

Example:
    >>> evaluate_models(["efficientnet_lite0"], "sim-clickme", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from harmonia.utils.ui import UI, fmt_number

EVALUATION_COLUMNS = ("model", "explainer", "spearman", "alignment", "dice", "iou", "accuracy", "NaN maps", "cached")


@dataclass
class ModelEvaluation:
    """One (model, explainer) run: the model as named, the explainer's repr, its result."""

    model: str
    explainer: str
    result: Any  # harmonia.evaluation.EvaluationResult


@dataclass
class ModelsEvaluation:
    """What :func:`evaluate_models` ran: one entry per (model, explainer), the ceiling used, the store."""

    runs: list[ModelEvaluation]
    ceiling: Any  # harmonia.evaluation.Ceiling | None
    store: Path


def _cached_cell(res: Any) -> str:
    return "yes" if res.cached else (f"resumed ({res.resumed} stored)" if res.resumed else "no")


def evaluate_models(
    models: Sequence[str],
    data: str | os.PathLike,
    *,
    split: Optional[str] = None,
    explainers: Sequence[str] = ("saliency",),
    targets: str = "label",
    size: Optional[int] = None,
    blur: Optional[float] = None,
    downsample: Optional[int] = None,
    ceiling: str | float | None = "auto",
    arch: Optional[str] = None,
    allow_pickle: bool = False,
    random_init: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    workers: Optional[int] = None,
    device: str = "auto",
    limit: Optional[int] = None,
    store: str | os.PathLike | None = None,
    recompute: bool = False,
    ui: UI = UI(),
) -> ModelsEvaluation:
    """Score every model's maps (one run per explainer) against the dataset's human maps.

    ``models``: names or checkpoint paths for :func:`harmonia.models.load`; ``explainers``:
    specs (``"saliency"``, ``"smoothgrad:n_samples=16"``); ``ceiling``: a positive number,
    ``"auto"`` or ``"none"``; ``workers``: DataLoader processes (None: the device's default);
    ``store``: the results store's path (None: the default store). The other options are
    :func:`harmonia.evaluation.evaluate`'s. Logs a note for SYNTHETIC data and resumed runs,
    then one table of the runs and how alignment was normalised.

    Example:
        >>> res = evaluate_models(["run/ckpt.pt"], "data/sim", explainers=["saliency", "gradcam"])  # doctest: +SKIP
        >>> [r.result.aggregates["spearman"]["mean"] for r in res.runs]  # doctest: +SKIP
    """
    from harmonia.attribution import parse_explainer_spec
    from harmonia.data import open_split
    from harmonia.evaluation import check_classes, evaluate, resolve_ceiling
    from harmonia.evaluation.evaluate import check_targets_mode, parse_ceiling_option
    from harmonia.metrics import MapScorer
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.utils.device import default_num_workers, resolve_device

    explainer_objs = [parse_explainer_spec(e) for e in explainers]  # validate all before loading anything
    check_targets_mode(targets)
    parse_ceiling_option(ceiling)  # a bad value fails before anything is read or loaded
    dev = resolve_device(device)
    scorer = MapScorer(blur_sigma=blur, downsample=downsample)
    dataset = open_split(data, split=split, size=size)
    # Models first: labels they do not have are an error before the ceiling is computed.
    loaded = {name: load(name, pretrained=not random_init, arch=arch, allow_pickle=allow_pickle, seed=seed)
              for name in models}
    for m in loaded.values():
        check_classes(m, dataset, labels_as_targets=targets == "label")
    result_store = ResultStore(store)
    ceil = resolve_ceiling(dataset, ceiling, store=result_store, scorer=scorer)
    if dataset.info.synthetic:
        ui.log(f"[yellow]Note:[/] {data} is a SYNTHETIC dataset ({dataset.info.description or 'simulated data'}).")

    n_workers = default_num_workers(dev) if workers is None else workers
    runs = []
    for name, m in loaded.items():
        for exp in explainer_objs:
            with ui.progress(f"{name} / {exp.name}") as update:
                res = evaluate(m, dataset, exp, scorer, store=result_store, ceiling=ceil, targets=targets,
                               batch_size=batch_size, num_workers=n_workers, device=dev, limit=limit,
                               recompute=recompute, progress=update)
            if res.resumed:
                ui.log(f"{name} / {exp!r}: resumed an interrupted run: {res.resumed} of {len(res.rows)} images "
                       f"were already stored, {len(res.rows) - res.resumed} computed now")
            runs.append(ModelEvaluation(name, repr(exp), res))

    n = len(dataset) if limit is None else min(limit, len(dataset))
    rows = []
    for run in runs:
        a = run.result.aggregates
        rows.append([run.model, run.explainer, fmt_number(a["spearman"]["mean"]), fmt_number(a.get("alignment"), pct=True),
                     fmt_number(a["dice"]["mean"]), fmt_number(a["iou"]["mean"]), fmt_number(a.get("accuracy"), pct=True),
                     str(a["spearman"]["n_nan"]), _cached_cell(run.result)])
    ui.table(f"Alignment on {dataset.info.name} / {dataset.split} ({n} images)", list(EVALUATION_COLUMNS), rows,
             justify=["left" if c in ("model", "explainer") else "right" for c in EVALUATION_COLUMNS])
    if ceil is not None:
        ui.log(f"alignment = mean Spearman / ceiling {ceil.value:.4f} ({ceil.source})")
    ui.log(f"results stored in {result_store.path}  (see `harmonia results list`)")
    return ModelsEvaluation(runs, ceil, Path(result_store.path))
