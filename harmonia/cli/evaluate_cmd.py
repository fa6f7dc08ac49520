"""``harmonia evaluate``: alignment of models' maps with human maps, into the store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback

EVALUATE_HELP = """Score models' feature-importance maps against the human maps of a dataset.

For every image: the model's map (gradient saliency by default, |grad| max over
channels as in the harmonizer release), Spearman correlation with the human map,
top-10% Dice and IoU, and whether the prediction is right. Prints mean Spearman,
alignment (mean Spearman / human ceiling), Dice, IoU and accuracy, and stores per-image
rows in the results store. A re-run with the same weights, data, explainer and metrics is
a cache hit; an interrupted run resumes.

Examples:

  harmonia evaluate --model efficientnet_lite0 --data sim-clickme --split test

  harmonia evaluate -m run/ckpt.pt -m timm:resnet18 --random-init --data D \\
      -e saliency -e "smoothgrad:n_samples=16" --blur 2 --downsample 4
"""


def _fmt(x: object, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


@user_errors
def evaluate_command(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model name (efficientnet_lite0, timm:NAME, torchvision:NAME) or checkpoint path. Repeat for several."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory in harmonia's format."),
    split: Optional[str] = typer.Option(None, help="Dataset split.", show_default="the only one, else 'test', else 'val'"),
    explainer: list[str] = typer.Option(["saliency"], "--explainer", "-e", help="Explainer spec, e.g. 'saliency', 'saliency:reducer=abs_mean', 'gradcam'. Repeat for several."),
    targets: str = typer.Option("label", help="Class whose map is taken: 'label' (true class, as the release) or 'predicted'."),
    size: Optional[int] = typer.Option(None, help="Resize images and maps to SIZE x SIZE before scoring.", show_default="native size"),
    blur: Optional[float] = typer.Option(None, help="Gaussian blur sigma (pixels) applied to both maps before scoring.", show_default="no blur"),
    downsample: Optional[int] = typer.Option(None, help="Average-pool both maps by this factor before scoring.", show_default="no pooling"),
    ceiling: str = typer.Option("auto", help="Ceiling to normalise alignment: a positive number, 'auto' (computed from per-subject maps if present, prepared like the scored maps under --size/--blur/--downsample; else 0.65753 of the ClickMe release) or 'none'."),
    arch: Optional[str] = typer.Option(None, help="Architecture of a plain state-dict checkpoint, e.g. 'timm:resnet18'.", show_default="none"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow checkpoints holding pickled objects (runs code from the file: only for files you trust)."),
    random_init: bool = typer.Option(False, "--random-init", help="Do not load pretrained weights (timm/torchvision names)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random weights of --random-init: the same seed gives the same weights (and a cache hit in the store)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    workers: Optional[int] = typer.Option(None, min=0, help="DataLoader worker processes.", show_default="0 on the CPU (forked workers slow the compute there), 4 on a GPU"),
    device: str = typer.Option("auto", help="'auto' (GPU if there is one), 'cpu', 'cuda', 'cuda:1', ..."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N images.", min=1, show_default="all images"),
    store: Optional[Path] = typer.Option(None, help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
    recompute: bool = typer.Option(False, help="Ignore cached results and compute again."),
) -> None:
    from harmonia.attribution import parse_explainer_spec
    from harmonia.data import HarmoniaDataset
    from harmonia.evaluation import check_classes, evaluate, resolve_ceiling
    from harmonia.evaluation.evaluate import check_targets_mode, parse_ceiling_option
    from harmonia.metrics import MapScorer
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.utils.device import default_num_workers, resolve_device

    explainers = [parse_explainer_spec(e) for e in explainer]  # validate all before loading anything
    check_targets_mode(targets)
    parse_ceiling_option(ceiling)  # a bad value fails before anything is read or loaded
    dev = resolve_device(device)
    scorer = MapScorer(blur_sigma=blur, downsample=downsample)
    dataset = HarmoniaDataset(data, split=split, size=size)
    if len(dataset) == 0:
        raise ValueError(f"{data}: split {dataset.split!r} has no images")
    # Models first: labels they do not have are an error before the ceiling is computed.
    models = {name: load(name, pretrained=not random_init, arch=arch, allow_pickle=allow_pickle, seed=seed)
              for name in model}
    for m in models.values():
        check_classes(m, dataset, labels_as_targets=targets == "label")
    result_store = ResultStore(store)
    ceil = resolve_ceiling(dataset, ceiling, store=result_store, scorer=scorer)
    if dataset.info.synthetic:
        console.print(f"[yellow]Note:[/] {data} is a SYNTHETIC dataset ({dataset.info.description or 'simulated data'}).")

    table = Table(title=f"Alignment on {dataset.info.name} / {dataset.split} ({len(dataset) if limit is None else min(limit, len(dataset))} images)")
    for col in ("model", "explainer", "spearman", "alignment", "dice", "iou", "accuracy", "NaN maps", "cached"):
        table.add_column(col, justify="left" if col in ("model", "explainer") else "right")
    n_workers = default_num_workers(dev) if workers is None else workers
    for name, m in models.items():
        for exp in explainers:
            with progress_callback(f"{name} / {exp.name}") as update:
                res = evaluate(m, dataset, exp, scorer, store=result_store, ceiling=ceil, targets=targets,
                               batch_size=batch_size, num_workers=n_workers, device=dev, limit=limit,
                               recompute=recompute, progress=update)
            a = res.aggregates
            if res.resumed:
                console.print(f"{name} / {exp!r}: resumed an interrupted run: {res.resumed} of {len(res.rows)} images "
                              f"were already stored, {len(res.rows) - res.resumed} computed now", highlight=False)
            table.add_row(
                name, repr(exp), _fmt(a["spearman"]["mean"]), _fmt(a.get("alignment"), pct=True),
                _fmt(a["dice"]["mean"]), _fmt(a["iou"]["mean"]), _fmt(a.get("accuracy"), pct=True),
                str(a["spearman"]["n_nan"]), "yes" if res.cached else (f"resumed ({res.resumed} stored)" if res.resumed else "no"),
            )
    console.print(table)
    if ceil is not None:
        console.print(f"alignment = mean Spearman / ceiling {ceil.value:.4f} ({ceil.source})")
    console.print(f"results stored in {result_store.path}  (see `harmonia results list`)")


def register(app: typer.Typer) -> None:
    """Add ``harmonia evaluate`` to ``app``."""
    app.command("evaluate", help=reflow(EVALUATE_HELP))(evaluate_command)
