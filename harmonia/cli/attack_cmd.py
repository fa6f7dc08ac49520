"""``harmonia attack``: perturbation tolerance and adversarial alignment, into the store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback

ATTACK_HELP = """Minimal adversarial perturbations and how well they line up with human maps.

For every image the model classifies correctly, a minimal-norm attack (FMN by
default, as in the 2025 revision; --attack ddn or pgd_bisection_2023) finds the smallest L2
perturbation (in [0, 1] pixel space; --norm linf: the smallest Linf one, with the Linf FMN)
that changes the decision: its norm is the perturbation tolerance. Both norms (L2 and Linf)
of each perturbation are reported whatever the attack. The Spearman correlation of the
perturbation's map (|mean over channels|, 2023; or |max|, 2025: --reducer abs_max) with the
human map is the adversarial alignment (divided by the ceiling unless --ceiling none).
Misclassified and not-fooled images are counted, never given a norm. Per-image rows go to
the store.

The decision attacked: by default any other class (untargeted). --target makes it
targeted: a class index, 'least-likely' (each clean image's least likely class) or
'column:NAME' (an integer column NAME added to the split's index.csv); images whose label is
the target are skipped. --grouping animate-inanimate attacks the 2025 two-way task instead
(ImageNet classes 0-397 vs 398-999, max logit within each group; the attack flips the group).

Examples:

  harmonia attack --model efficientnet_lite0 --data sim-clickme --limit 64

  harmonia attack -m timm:resnet18 --data D --attack "ddn:steps=500" --reducer abs_max

  harmonia attack -m M --data D --attack pgd_bisection_2023 --ceiling none --figures figs/

  harmonia attack -m efficientnet_lite0 -d D --grouping animate-inanimate --reducer abs_max

  harmonia attack -m M -d D --norm linf --target least-likely

  harmonia attack -m M -d D --target 3

  harmonia attack -m M -d D --target column:goal
"""

def _fmt(x: object, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


@user_errors
def attack_command(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model name or checkpoint path. Repeat for several."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory in harmonia's format."),
    split: Optional[str] = typer.Option(None, help="Dataset split.", show_default="the only one, else 'test', else 'val'"),
    attack: str = typer.Option("fmn", "--attack", "-a", help="Attack spec: fmn (default, as the 2025 protocol), ddn, pgd_bisection_2023, optionally with options, e.g. 'fmn:steps=1000'."),
    norm: Optional[str] = typer.Option(None, help="Norm to minimise: l2 (fmn, ddn, pgd_bisection_2023) or linf (fmn -> fmn_linf).", show_default="the attack's"),
    target: Optional[str] = typer.Option(None, help="Targeted attack: a class index, 'least-likely' or 'column:NAME' (a column of the split's index.csv).", show_default="untargeted"),
    grouping: Optional[str] = typer.Option(None, help="Attack a grouped decision: 'animate-inanimate' (2025: ImageNet classes 0-397 vs 398-999).", show_default="none (the model's own classes)"),
    reducer: str = typer.Option("abs_mean", help="Perturbation map: abs_mean (|mean| over channels, 2023) or abs_max (|max|, 2025)."),
    size: Optional[int] = typer.Option(None, help="Resize images and maps to SIZE x SIZE (the 2023 protocol: 224).", show_default="native size"),
    ceiling: str = typer.Option("auto", help="Ceiling to normalise alignment: a number, 'auto' or 'none'."),
    arch: Optional[str] = typer.Option(None, help="Architecture of a plain state-dict checkpoint.", show_default="none"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow checkpoints holding pickled objects (trusted files only)."),
    random_init: bool = typer.Option(False, "--random-init", help="Do not load pretrained weights."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random weights of --random-init: the same seed gives the same weights (and a cache hit in the store)."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", help="'auto' (GPU if there is one), 'cpu', 'cuda', ..."),
    limit: Optional[int] = typer.Option(None, help="Attack only the first N images.", min=1, show_default="all images"),
    figures: Optional[Path] = typer.Option(None, help="Write image / human map / perturbation map figures of fooled images here.", show_default="none (no figures)"),
    store: Optional[Path] = typer.Option(None, help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
    recompute: bool = typer.Option(False, help="Ignore cached results and compute again."),
) -> None:
    import torch

    from harmonia.adversarial import FooledFigures, adversarial_alignment, perturbation_map
    from harmonia.adversarial.alignment import check_target, parse_target
    from harmonia.attacks import minimal_norm_attack
    from harmonia.data import HarmoniaDataset
    from harmonia.evaluation import parse_ceiling_option, resolve_ceiling
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.utils.device import resolve_device
    from harmonia.utils.io import unique_labels

    dev = resolve_device(device)
    parse_ceiling_option(ceiling)  # a bad value fails before anything is read or loaded
    if target is not None and grouping is not None:
        raise ValueError("--target and --grouping exclude each other (a two-way decision has one other group)")
    atk = minimal_norm_attack(attack, norm)
    if grouping is not None:
        from harmonia.adversarial import resolve_grouping

        resolve_grouping(grouping)  # validate before loading anything
    perturbation_map(torch.zeros(1, 3, 1, 1), reducer)  # validate the reducer before loading anything
    dataset = HarmoniaDataset(data, split=split, size=size)
    if len(dataset) == 0:
        raise ValueError(f"{data}: split {dataset.split!r} has no images")
    tgt = parse_target(target, dataset)
    # Figures are named per model (two runs' final.pt must not share names) and checked before any work.
    labels = dict(zip(dict.fromkeys(model), unique_labels(dict.fromkeys(model))))
    if figures is not None:
        ids = [r.id for r in dataset.records[: len(dataset) if limit is None else limit]]
        fooled_figures = FooledFigures(figures, inputs=[p for r in dataset.records for p in (r.image, r.map)])
        fooled_figures.check(labels.values(), ids)
    # Models first: a target they do not have is an error before the ceiling is computed.
    models = {name: load(name, pretrained=not random_init, arch=arch, allow_pickle=allow_pickle, seed=seed)
              for name in model}
    for m in models.values():
        check_target(tgt, m.num_classes)
    result_store = ResultStore(store)
    ceil = resolve_ceiling(dataset, ceiling, store=result_store)
    if dataset.info.synthetic:
        console.print(f"[yellow]Note:[/] {data} is a SYNTHETIC dataset ({dataset.info.description or 'simulated data'}).")

    n = len(dataset) if limit is None else min(limit, len(dataset))
    task = "untargeted" if tgt is None and grouping is None else (f"grouping {grouping}" if grouping else
                                                                 f"target {target}")
    table = Table(title=f"Adversarial alignment on {dataset.info.name} / {dataset.split} ({n} images), {atk!r}, {task}")
    cols = ("model", "fooled", "misclassified", "not fooled", *(("skipped",) if tgt is not None else ()),
            "median L2", "median Linf", "spearman", "alignment", "fwd / img", "bwd / img", "cached")
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in models.items():
        on_batch = fooled_figures.writer(labels[name], name, reducer) if figures is not None else None
        with progress_callback(f"{name} / {atk.name}") as update:
            res = adversarial_alignment(m, dataset, atk, reducer=reducer, store=result_store, ceiling=ceil,
                                        batch_size=batch_size, device=dev, limit=limit,
                                        recompute=recompute, progress=update, on_batch=on_batch,
                                        target=tgt, grouping=grouping)
        a = res.aggregates
        table.add_row(name, str(a["n_fooled"]), str(a["n_misclassified"]), str(a["n_not_fooled"]),
                      *((str(a.get("n_skipped", 0)),) if tgt is not None else ()),
                      _fmt(a.get("l2_median")), _fmt(a.get("linf_median")), _fmt(a["spearman"]["mean"]),
                      _fmt(a.get("alignment"), pct=True), f"{a['forwards_mean']:.1f}", f"{a['backwards_mean']:.1f}",
                      "yes" if res.cached else "no")
    console.print(table)
    which = "Linf" if atk.name == "fmn_linf" else "L2"
    console.print(f"tolerance = minimal {which} norm of the perturbation in [0, 1] pixel space (median over fooled images); "
                  f"not-fooled images resisted the budget {atk.budget()}")
    if tgt is not None:
        console.print("skipped = images whose label is the target (not attacked)")
    if grouping is not None:
        console.print(f"labels and decisions are groups ({grouping}); misclassified = wrong group")
    if ceil is not None:
        console.print(f"alignment = mean Spearman (perturbation map, {reducer}) / ceiling {ceil.value:.4f} ({ceil.source})")
    console.print(f"results stored in {result_store.path}  (see `harmonia results list`)")


def register(app: typer.Typer) -> None:
    """Add ``harmonia attack`` to ``app``."""
    app.command("attack", help=reflow(ATTACK_HELP))(attack_command)
