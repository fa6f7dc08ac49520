"""``harmonia challenge svrt-curves``: SVRT sample-efficiency curves of ResNets with / without attention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from harmonia.cli.common import console, reflow, user_errors

CURVES_HELP = """Train SVRT baselines from scratch at several training-set sizes; write the curves and the taxonomy.

Every (problem, model, size) cell trains a fresh network on the first N samples of the
problem's SYNTHETIC generator (--seed) and tests it on 400 samples it never saw; cells are
cached in the results store, so an interrupted run resumes and a finished one is read back.
Models are specs of the SVRT model registry: resnet (a timm ResNet, random init),
resnet_sa (spatial attention after each stage), resnet_fba (feature-based attention), with
settings arch= (resnet18, resnet50, ...), width= (64 = the standard ResNet) and
downsample= (average-pool the input first; CPU budgets). With --out: curves.csv, curves.json,
curves.png and, with two problems or more, taxonomy.png (problems clustered by their
curves, coloured same-different / spatial).

Examples:

  harmonia challenge svrt-curves --problem 1 --problem 4 --sizes 100,400 --epochs 5 --model resnet:width=16,downsample=2 --out reports/svrt-cpu

  harmonia challenge svrt-curves --all --sizes 500,1000,5000,10000,15000,120000 --model resnet:arch=resnet50 --model resnet_sa:arch=resnet50 --model resnet_fba:arch=resnet50 --device cuda --workers 16 --out reports/svrt
"""


@user_errors
def svrt_curves_command(
    problems: Optional[List[int]] = typer.Option(None, "--problem", "-p", help="SVRT problem 1..23 (repeatable).", show_default="none: give --problem or --all"),
    all_problems: bool = typer.Option(False, "--all", help="All 23 problems."),
    models: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Model spec (repeatable).", show_default="resnet, resnet_sa, resnet_fba at width 16, downsample 2"),
    sizes: str = typer.Option("100,400,1600", "--sizes", help="Training-set sizes, comma-separated."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Epochs per cell."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="Batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    n_test: int = typer.Option(400, "--n-test", min=10, help="Test samples per problem."),
    seed: int = typer.Option(0, "--seed", help="Generator and training seed."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, ..."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes generating the SVRT images (0: this one)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for curves.csv/json/png and taxonomy.png.", show_default="none (table only)"),
    store_path: Optional[Path] = typer.Option(None, "--store", help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
) -> None:
    from harmonia.challenges.svrt import PROBLEMS
    from harmonia.challenges.svrt_baselines import SVRT_MODELS, curves_png, efficiency_curves, taxonomy, taxonomy_png
    from harmonia.cli.progress import progress_callback
    from harmonia.store import ResultStore
    from harmonia.utils.io import atomic_write_bytes, atomic_write_text, records_csv

    chosen = sorted(PROBLEMS) if all_problems else sorted(set(problems or []))
    if not chosen:
        raise ValueError("give --problem N (repeatable) or --all")
    bad = [p for p in chosen if p not in PROBLEMS]
    if bad:
        raise ValueError(f"SVRT problems are 1..23, got {bad}")
    try:
        size_list = sorted({int(s) for s in sizes.split(",") if s.strip()})
    except ValueError:
        raise ValueError(f"--sizes must be integers separated by commas, got {sizes!r}") from None
    if not size_list or min(size_list) < 2:
        raise ValueError("--sizes must be >= 2")
    specs = models or ["resnet:width=16,downsample=2", "resnet_sa:width=16,downsample=2", "resnet_fba:width=16,downsample=2"]
    for s in specs:
        SVRT_MODELS.from_spec(s)  # refuse a bad spec before any training
    with ResultStore(store_path) as store, progress_callback("SVRT curves (SYNTHETIC)") as update:
        rows = efficiency_curves(chosen, specs, size_list, store=store, progress=lambda label, d, t: update(d, t),
                                 n_test=n_test, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                 workers=workers)
    from rich.table import Table

    table = Table(title="SYNTHETIC SVRT: test accuracy by training-set size")
    table.add_column("problem")
    table.add_column("model")
    for n in size_list:
        table.add_column(f"n={n}", justify="right")
    for p in chosen:
        for m in specs:
            accs = {r["n_train"]: r["test_accuracy"] for r in rows if r["problem"] == p and r["model"] == m}
            table.add_row(str(p), m, *[f"{accs[n]:.3f}" for n in size_list])
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "curves.csv", records_csv(rows))
        atomic_write_text(out / "curves.json", json.dumps(rows, indent=1) + "\n")
        atomic_write_bytes(out / "curves.png", curves_png(rows))
        written = ["curves.csv", "curves.json", "curves.png"]
        if len(chosen) >= 2:
            atomic_write_bytes(out / "taxonomy.png", taxonomy_png(rows, specs[0]))
            t = taxonomy(rows, specs[0])
            atomic_write_text(out / "taxonomy.json", json.dumps(t, indent=1) + "\n")
            written += ["taxonomy.png", "taxonomy.json"]
            console.print(f"taxonomy ({specs[0]}): clusters {t['clusters']}; {t['agreement']:.0%} agree with "
                          "same-different / spatial", highlight=False)
        console.print(f"wrote {', '.join(str(out / f) for f in written)}", highlight=False)


def register(challenge: typer.Typer) -> None:
    """Add ``harmonia challenge svrt-curves`` to the ``challenge`` group."""
    challenge.command("svrt-curves", help=reflow(CURVES_HELP))(svrt_curves_command)
