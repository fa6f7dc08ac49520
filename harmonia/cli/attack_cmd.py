"""``harmonia attack``: perturbation tolerance and adversarial alignment, into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harmonia.cli.common import reflow, user_errors

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
    from harmonia.cli.ui import cli_ui
    from harmonia.experiments.adversarial import attack_models

    attack_models(model, data, split=split, attack=attack, norm=norm, target=target, grouping=grouping, reducer=reducer,
                  size=size, ceiling=ceiling, arch=arch, allow_pickle=allow_pickle, random_init=random_init, seed=seed,
                  batch_size=batch_size, device=device, limit=limit, figures=figures, store=store, recompute=recompute,
                  ui=cli_ui())


def register(app: typer.Typer) -> None:
    """Add ``harmonia attack`` to ``app``."""
    app.command("attack", help=reflow(ATTACK_HELP))(attack_command)
