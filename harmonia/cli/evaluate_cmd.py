"""``harmonia evaluate``: alignment of models' maps with human maps, into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harmonia.cli.common import reflow, user_errors

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
    from harmonia.cli.ui import cli_ui
    from harmonia.experiments.evaluation import evaluate_models

    evaluate_models(model, data, split=split, explainers=explainer, targets=targets, size=size, blur=blur,
                    downsample=downsample, ceiling=ceiling, arch=arch, allow_pickle=allow_pickle, random_init=random_init,
                    seed=seed, batch_size=batch_size, workers=workers, device=device, limit=limit, store=store,
                    recompute=recompute, ui=cli_ui())


def register(app: typer.Typer) -> None:
    """Add ``harmonia evaluate`` to ``app``."""
    app.command("evaluate", help=reflow(EVALUATE_HELP))(evaluate_command)
