"""``harmonia ceiling``: human split-half ceiling and cross-image floor of a dataset."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback
from harmonia.settings import CeilingSettings

CEILING_HELP = """Human ceiling (split-half) and floor (cross-image) of a dataset with per-subject maps.

For every image, K times: shuffle its subjects, split them in two halves, bootstrap
each half to ceil(n/2) maps, average, blur both (the blur recorded with the data, e.g.
disk 21 for `harmonia data clicks` output) and score one half against the other. The
ceiling is the mean over repeats and images; the floor pairs a half with a half of a
random other image. Per-image rows and the summary go to the results store; a re-run with
the same data and settings is a cache hit, an interrupted run resumes. `harmonia evaluate
--ceiling auto` uses this value for datasets with per-subject maps (released ClickMe
maps have none: 0.65753 is used for them).

Examples:

  harmonia ceiling --data data/clickme2

  harmonia ceiling --data data/sim --split test --metric dice --repeats 20 --seed 1
"""


def _fmt(x: float | None) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


@user_errors
def ceiling_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory in harmonia's format, with per-subject maps."),
    split: Optional[str] = typer.Option(None, help="Split.", show_default="the only one, else 'test', else 'val'"),
    metric: str = typer.Option(CeilingSettings.metric, help="'spearman', 'dice' (top-10% Dice) or 'iou' (top-10% IoU)."),
    repeats: int = typer.Option(CeilingSettings.repeats, min=1, help="Split-half repeats per image (K)."),
    seed: int = typer.Option(CeilingSettings.seed, min=0, help="Random seed (results are deterministic given the seed)."),
    blur: Optional[str] = typer.Option(None, help="'disk', 'gaussian' or 'none'.", show_default="as recorded with the data, else disk"),
    blur_size: Optional[int] = typer.Option(None, min=1, help="Kernel size in px.", show_default="recorded, else 21 at 256 px scaled"),
    sigma: Optional[float] = typer.Option(None, help="Gaussian sigma.", show_default="sqrt(size)"),
    crop: Optional[int] = typer.Option(None, min=1, help="Centre-crop both halves to CROP x CROP after blurring.", show_default="no crop"),
    chunk_size: int = typer.Option(CeilingSettings.chunk_size, min=2, help="Images per batch (the floor's other image comes from the same random batch)."),
    device: str = typer.Option("auto", help="'auto' (GPU if there is one), 'cpu', 'cuda', ..."),
    store: Optional[Path] = typer.Option(None, help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
    recompute: bool = typer.Option(False, help="Ignore a cached result and compute again."),
) -> None:
    from harmonia.data import HarmoniaDataset
    from harmonia.humans.ceiling import run_ceiling
    from harmonia.store import ResultStore
    from harmonia.utils.device import resolve_device

    dev = resolve_device(device)
    ds = HarmoniaDataset(data, split=split)
    if len(ds) == 0:
        raise ValueError(f"{data}: split {ds.split!r} has no images")
    if not ds.has_subjects:
        raise ValueError(f"{data}/{ds.split}: no per-subject maps (subjects/ID.npy); a ceiling needs them "
                         "(for the released ClickMe maps use the published 0.65753)")
    if ds.info.synthetic:
        console.print(f"[yellow]Note:[/] {data} is a SYNTHETIC dataset ({ds.info.description or 'simulated data'}).")
    result_store = ResultStore(store)
    with progress_callback("ceiling") as update:
        run = run_ceiling(ds, result_store, metric=metric, repeats=repeats, blur=blur, blur_size=blur_size, sigma=sigma,
                          crop=crop, seed=seed, chunk_size=chunk_size, device=dev,
                          recompute=recompute, progress=update)
    res = run.result
    s = res.settings
    console.print(f"{ds.info.name} / {ds.split}: {len(res.per_image)} images, metric {s['metric']}, "
                  f"K={s['repeats']}, blur {s['blur']} {s['blur_size'] or 'auto'}, seed {s['seed']}"
                  + (" (cached)" if run.cached else ""), highlight=False)
    for label, summ in (("ceiling", res.ceiling), ("floor", res.floor)):
        console.print(f"  {label:8s} {_fmt(summ.mean)} +/- {_fmt(summ.sem)} (sem)   std {_fmt(summ.std)}   "
                      f"n={summ.n}  NaN={summ.n_nan}", highlight=False)
    console.print(f"stored as run {run.key[:12]} in {result_store.path}")


def register(app: typer.Typer) -> None:
    """Add ``harmonia ceiling`` to ``app``."""
    app.command("ceiling", help=reflow(CEILING_HELP))(ceiling_command)
