"""``harmonia attack`` as a library call: :func:`attack_models` runs one minimal-norm attack on several models.

Every option (attack, norm, target, grouping, reducer, figures folder) is checked before a
model is loaded, every model before the ceiling is computed; each model is one
:func:`harmonia.adversarial.adversarial_alignment` run in the results store. What is shown
goes through a :class:`harmonia.utils.ui.UI` (silent by default).

Example:
    >>> attack_models(["efficientnet_lite0"], "sim-clickme", limit=64)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from harmonia.utils.ui import UI, fmt_number


@dataclass
class ModelAttack:
    """One model's run: the model as named and its :class:`harmonia.adversarial.AdversarialResult`."""

    model: str
    result: Any


@dataclass
class ModelsAttack:
    """What :func:`attack_models` ran: the attack, one entry per model, the ceiling used, the store."""

    attack: Any  # harmonia.attacks.MinimalNormAttack
    runs: list[ModelAttack]
    ceiling: Any  # harmonia.evaluation.Ceiling | None
    store: Path


def attack_models(
    models: Sequence[str],
    data: str | os.PathLike,
    *,
    split: Optional[str] = None,
    attack: str = "fmn",
    norm: Optional[str] = None,
    target: Optional[str] = None,
    grouping: Optional[str] = None,
    reducer: str = "abs_mean",
    size: Optional[int] = None,
    ceiling: str | float | None = "auto",
    arch: Optional[str] = None,
    allow_pickle: bool = False,
    random_init: bool = False,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "auto",
    limit: Optional[int] = None,
    figures: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    recompute: bool = False,
    ui: UI = UI(),
) -> ModelsAttack:
    """Attack every model on the dataset: perturbation tolerance and adversarial alignment.

    ``attack``: a spec (``"fmn"``, ``"ddn:steps=500"``, ``"pgd_bisection_2023"``) and ``norm``
    (``"l2"`` / ``"linf"``) for :func:`harmonia.attacks.minimal_norm_attack`; ``target``: None
    (untargeted), a class index, ``"least-likely"`` or ``"column:NAME"``; ``grouping``:
    ``"animate-inanimate"`` or None; ``figures``: a folder for figures of fooled images (named
    per model). The other options are :func:`harmonia.adversarial.adversarial_alignment`'s.
    Logs a note for SYNTHETIC data, then one table of the runs and how to read it.

    Example:
        >>> res = attack_models(["run/ckpt.pt"], "data/sim", attack="fmn:steps=100", limit=16)  # doctest: +SKIP
        >>> res.runs[0].result.aggregates["l2_median"]  # doctest: +SKIP
    """
    import torch

    from harmonia.adversarial import FooledFigures, adversarial_alignment, perturbation_map
    from harmonia.adversarial.alignment import check_target, parse_target
    from harmonia.attacks import minimal_norm_attack
    from harmonia.data import open_split
    from harmonia.errors import UserError
    from harmonia.evaluation import parse_ceiling_option, resolve_ceiling
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.utils.device import resolve_device
    from harmonia.utils.io import unique_labels

    dev = resolve_device(device)
    parse_ceiling_option(ceiling)  # a bad value fails before anything is read or loaded
    if target is not None and grouping is not None:
        raise UserError("--target and --grouping exclude each other (a two-way decision has one other group)")
    atk = minimal_norm_attack(attack, norm)
    if grouping is not None:
        from harmonia.adversarial import resolve_grouping

        resolve_grouping(grouping)  # validate before loading anything
    perturbation_map(torch.zeros(1, 3, 1, 1), reducer)  # validate the reducer before loading anything
    dataset = open_split(data, split=split, size=size)
    tgt = parse_target(target, dataset)
    # Figures are named per model (two runs' final.pt must not share names) and checked before any work.
    labels = dict(zip(dict.fromkeys(models), unique_labels(dict.fromkeys(models))))
    fooled_figures = None
    if figures is not None:
        ids = [r.id for r in dataset.records[: len(dataset) if limit is None else limit]]
        fooled_figures = FooledFigures(figures, inputs=[p for r in dataset.records for p in (r.image, r.map)])
        fooled_figures.check(labels.values(), ids)
    # Models first: a target they do not have is an error before the ceiling is computed.
    loaded = {name: load(name, pretrained=not random_init, arch=arch, allow_pickle=allow_pickle, seed=seed)
              for name in models}
    for m in loaded.values():
        check_target(tgt, m.num_classes)
    result_store = ResultStore(store)
    ceil = resolve_ceiling(dataset, ceiling, store=result_store)
    if dataset.info.synthetic:
        ui.log(f"[yellow]Note:[/] {data} is a SYNTHETIC dataset ({dataset.info.description or 'simulated data'}).")

    runs = []
    for name, m in loaded.items():
        on_batch = fooled_figures.writer(labels[name], name, reducer) if fooled_figures is not None else None
        with ui.progress(f"{name} / {atk.name}") as update:
            res = adversarial_alignment(m, dataset, atk, reducer=reducer, store=result_store, ceiling=ceil,
                                        batch_size=batch_size, device=dev, limit=limit,
                                        recompute=recompute, progress=update, on_batch=on_batch,
                                        target=tgt, grouping=grouping)
        runs.append(ModelAttack(name, res))

    n = len(dataset) if limit is None else min(limit, len(dataset))
    task = "untargeted" if tgt is None and grouping is None else (f"grouping {grouping}" if grouping else
                                                                 f"target {target}")
    cols = ["model", "fooled", "misclassified", "not fooled", *(("skipped",) if tgt is not None else ()),
            "median L2", "median Linf", "spearman", "alignment", "fwd / img", "bwd / img", "cached"]
    rows = []
    for run in runs:
        a = run.result.aggregates
        rows.append([run.model, str(a["n_fooled"]), str(a["n_misclassified"]), str(a["n_not_fooled"]),
                     *((str(a.get("n_skipped", 0)),) if tgt is not None else ()),
                     fmt_number(a.get("l2_median")), fmt_number(a.get("linf_median")), fmt_number(a["spearman"]["mean"]),
                     fmt_number(a.get("alignment"), pct=True), f"{a['forwards_mean']:.1f}", f"{a['backwards_mean']:.1f}",
                     "yes" if run.result.cached else "no"])
    ui.table(f"Adversarial alignment on {dataset.info.name} / {dataset.split} ({n} images), {atk!r}, {task}", cols, rows,
             justify=["left" if c == "model" else "right" for c in cols])
    which = "Linf" if atk.name == "fmn_linf" else "L2"
    ui.log(f"tolerance = minimal {which} norm of the perturbation in [0, 1] pixel space (median over fooled images); "
           f"not-fooled images resisted the budget {atk.budget()}")
    if tgt is not None:
        ui.log("skipped = images whose label is the target (not attacked)")
    if grouping is not None:
        ui.log(f"labels and decisions are groups ({grouping}); misclassified = wrong group")
    if ceil is not None:
        ui.log(f"alignment = mean Spearman (perturbation map, {reducer}) / ceiling {ceil.value:.4f} ({ceil.source})")
    ui.log(f"results stored in {result_store.path}  (see `harmonia results list`)")
    return ModelsAttack(atk, runs, ceil, Path(result_store.path))
