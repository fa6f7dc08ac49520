"""``harmonia data challenge NAME``: write a synthetic challenge dataset; ``harmonia challenge ...``:
train and evaluate models on the challenges (sub-commands add themselves to :data:`challenge_app`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from harmonia.cli import challenge_probe_cmd, challenge_svrt_cmd
from harmonia.cli.common import console, reflow, user_errors

challenge_app = typer.Typer(
    help="Synthetic human-vs-DNN challenges (PathTracker, FeatureTracker, SVRT, 3D-PC): train, evaluate, probe.",
    no_args_is_help=True,
)


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``["frames=64", "distractors=14"]`` -> ``{"frames": 64, "distractors": 14}``.

    Example:
        >>> parse_sets(["frames=64", "colors=out"])
        {'frames': 64, 'colors': 'out'}
    """
    from harmonia.registry import parse_settings

    out: dict[str, Any] = {}
    for item in sets or []:
        for key, value in parse_settings(item).items():
            if key in out:
                raise ValueError(f"--set {key} given twice")
            out[key] = value
    return out


DATA_CHALLENGE_HELP = """Write a SYNTHETIC challenge dataset (videos or images, labels, per-sample metadata) in harmonia's format.

NAME is a registered challenge (pathtracker, featuretracker, ...; see docs/challenges.md).
Knobs are set with --set key=value (repeatable); an impossible setting is refused with the
reason. Sample i depends only on (--seed, knobs, i): the same command writes the same files
on any machine, and an interrupted write resumes where it stopped.

Examples:

  harmonia data challenge pathtracker --out pt/ --n 2000

  harmonia data challenge pathtracker --out pt-128/ --set frames=128 --set distractors=25 --split test

  harmonia data challenge featuretracker --out ft/ --set shapes=out --set colors=irregular
"""


@user_errors
def data_challenge_command(
    name: str = typer.Argument(..., help="Challenge name (pathtracker, featuretracker, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (harmonia format)."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of samples (half positive, half negative)."),
    split: str = typer.Option("train", "--split", help="Split name to write (train, val, test, ...)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed and knobs, same samples)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="A knob as key=value (repeatable), e.g. frames=64.", show_default="the challenge's defaults"),
    problem: Optional[int] = typer.Option(None, "--problem", help="Shorthand for --set problem=N (SVRT).", show_default="none"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a split written with other settings."),
) -> None:
    from harmonia.challenges import create
    from harmonia.challenges.writer import write_challenge
    from harmonia.cli.progress import progress_callback

    knobs = parse_sets(sets)
    if problem is not None:
        if "problem" in knobs:
            raise ValueError("give the problem once: --problem or --set problem=")
        knobs["problem"] = problem
    gen = create(name, seed=seed, **knobs)
    gen.length = max(gen.length, n)  # the generator is unbounded in practice; --n decides
    start = time.perf_counter()
    with progress_callback(f"writing {gen.name} (SYNTHETIC)") as update:
        root = write_challenge(gen, out, n=n, split=split, overwrite=overwrite, progress=update)
    knob_text = ", ".join(f"{k}={v}" for k, v in gen.knobs.items())
    console.print(f"[yellow]SYNTHETIC[/] {gen.name} split {split!r}: {n} samples ({knob_text}; seed {seed}) "
                  f"in {root} ({time.perf_counter() - start:.1f} s)", highlight=False)


TRAIN_HELP = """Train a video model on a SYNTHETIC tracking challenge, drawing samples on the fly.

Defaults follow the published protocol: PathTracker trains on 64 frames, 14 distractors,
speed 1; FeatureTracker in distribution (shapes in, colours in); BCE; the `published` preset
is Adam at lr 3e-4 with batch 180 (InT). --set changes the training condition, --model takes
a video model spec (int, cv_rnn, gru, r3d_18, mc3_18, r2plus1d_18, with settings like
int:channels=8,kernel=5). Writes OUT/last.pt every --checkpoint-every steps (--resume
continues a killed run exactly), OUT/best.pt at the best validation accuracy, OUT/final.pt
(for `harmonia challenge evaluate`), history.json and config.json.

Examples:

  harmonia challenge train pathtracker --model int --out runs/pt-int

  harmonia challenge train pathtracker --model r3d_18 --out runs/pt-r3d --steps 5000 --device cuda

  harmonia challenge train pathtracker --model int:channels=8 --preset cpu --set frames=32 --set distractors=0 --steps 300 --out runs/pt-easy

  harmonia challenge train featuretracker --model cv_rnn --out runs/ft-cvrnn
"""


@user_errors
def challenge_train_command(
    name: str = typer.Argument(..., help="Challenge (pathtracker, featuretracker)."),
    model: str = typer.Option("int", "--model", "-m", help="Video model spec, e.g. int, r3d_18, int:channels=8."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, history, final.pt)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Training-condition knob key=value (repeatable).", show_default="the published training condition"),
    preset: str = typer.Option("published", "--preset", help="Optimiser preset: published (Adam 3e-4, batch 180) or cpu."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimiser steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Batch size.", show_default="the preset's"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate.", show_default="the preset's"),
    n_train: int = typer.Option(20_000, "--n-train", min=1, help="Distinct training samples (the published 20,000)."),
    val_size: int = typer.Option(512, "--val-size", min=1, help="Validation samples (another seed)."),
    eval_every: int = typer.Option(100, "--eval-every", min=1, help="Validate every N steps."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, help="Write last.pt every N steps."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Early stopping: validations without improvement.", show_default="no early stopping"),
    budget_minutes: Optional[float] = typer.Option(
        None, "--budget-minutes", min=0.0, help="Fixed time budget: validate, checkpoint and stop after this long.", show_default="no limit"),
    sync_weight: float = typer.Option(1.0, "--sync-weight", min=0.0, help="Weight of the CV-RNN's synchrony loss."),
    track_weight: float = typer.Option(
        0.0, "--track-weight", min=0.0,
        help="Weight of the target-map loss on every frame's state (int, gru; harmonia's addition, not published)."),
    clip_grad_norm: float = typer.Option(
        0.0, "--clip-grad-norm", min=0.0,
        help="Scale gradients to at most this L2 norm before each step; 0 = off (the papers do not clip)."),
    seed: int = typer.Option(0, "--seed", help="Training seed (validation uses seed + 1)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes generating samples."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
) -> None:
    from harmonia.challenges import create
    from harmonia.challenges.training import ChallengeTrainConfig, train_challenge
    from harmonia.cli.progress import progress_callback

    challenge = create(name).name
    with progress_callback(f"training {model} on {challenge} (SYNTHETIC)") as update:
        cfg = ChallengeTrainConfig(
            out_dir=out, challenge=challenge, knobs=parse_sets(sets), model=model, preset=preset, lr=lr,
            batch_size=batch_size, steps=steps, n_train=n_train, val_size=val_size, eval_every=eval_every,
            checkpoint_every=checkpoint_every, patience=patience, budget_minutes=budget_minutes,
            sync_weight=sync_weight, track_weight=track_weight, clip_grad_norm=clip_grad_norm, seed=seed,
            device=device, num_workers=workers, resume=resume, progress=lambda s, n, info: update(s, n),
        )  # fmt: skip
        result = train_challenge(cfg)
    val = (f"val accuracy {result.val_accuracy:.3f} (best {result.best_val_accuracy:.3f})"
           if result.best_val_accuracy >= 0 else "not validated yet (see --eval-every)")
    console.print(f"[yellow]SYNTHETIC[/] {challenge}: {model} trained {result.steps} steps in {result.seconds:.0f} s; "
                  f"{val}; {out}/final.pt", highlight=False)


EVALUATE_HELP = """Evaluate trained challenge models (final.pt or best.pt files) over the generalisation grid.

PathTracker: frames 32 / 64 / 128 x distractors 0 / 5 / 14 / 25 (speed 1), plus speeds 2 and 4
at 64 frames / 14 distractors. FeatureTracker: shapes none / in / out x colours none / in /
out / irregular. Test videos come from --seed (default 1000; training used 0 and 1). Prints a
table with the reference's human accuracies beside the models' (FeatureTracker: ranges; the
reference has no per-condition PathTracker table), stores per-sample rows in the results
store (re-runs are cache hits, interrupted runs resume) and, with --out, writes grid.csv,
grid.json and the heat map grid.png.

Examples:

  harmonia challenge evaluate pathtracker --model runs/pt-int/final.pt --model runs/pt-r3d/final.pt --out reports/pt

  harmonia challenge evaluate featuretracker --model runs/ft-cvrnn/final.pt --n 1000 --out reports/ft

  harmonia challenge evaluate pathtracker --model runs/pt-easy/final.pt --set frames=32 --set distractors=0
"""


@user_errors
def challenge_evaluate_command(
    name: str = typer.Argument(..., help="Challenge (pathtracker, featuretracker)."),
    models: List[Path] = typer.Option(..., "--model", "-m", help="A trained model file (repeatable)."),
    n: int = typer.Option(256, "--n", min=2, help="Test samples per condition."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Evaluate only this one condition (key=value, repeatable).", show_default="the whole grid"),
    seed: int = typer.Option(1000, "--seed", help="Seed of the test samples."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Evaluation batch size."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for grid.csv, grid.json and grid.png.", show_default="none (table only)"),
    store_path: Optional[Path] = typer.Option(None, "--store", help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
) -> None:
    import json

    from rich.table import Table

    from harmonia.challenges import create
    from harmonia.challenges.evaluation import evaluate_grid, heatmap_figure
    from harmonia.cli.progress import progress_callback
    from harmonia.store import ResultStore
    from harmonia.utils.io import atomic_write_bytes, atomic_write_text, records_csv

    challenge = create(name).name
    knobs = parse_sets(sets)
    conditions = [knobs] if knobs else None
    with ResultStore(store_path) as store, progress_callback(f"evaluating on {challenge} (SYNTHETIC)") as update:
        rows = evaluate_grid([str(m) for m in models], challenge, conditions, n=n, seed=seed, batch_size=batch_size,
                             store=store, device=device, progress=update)
    table = Table(title=f"SYNTHETIC {challenge}: accuracy (n = {n} per condition; 95% interval)")
    table.add_column("condition")
    files = list(dict.fromkeys(r["model_file"] for r in rows))
    for f in files:
        spec = next(r["model_spec"] for r in rows if r["model_file"] == f)
        table.add_column(f"{spec}\n{Path(f).parent.name}", justify="right")
    table.add_column("humans (reference)", justify="right")
    for cond in dict.fromkeys(r["condition"] for r in rows):
        cells = [r for r in rows if r["condition"] == cond]
        mark = " (train)" if any(c["trained_on"] for c in cells) else ""
        human = cells[0]["human_low"]
        table.add_row(cond + mark, *[f"{c['accuracy']:.3f} ± {c['ci95']:.3f}" for c in cells],
                      f"{human:.0%}-{cells[0]['human_high']:.0%}" if human is not None else "n/a")
    console.print(table)
    if challenge == "pathtracker":
        console.print("humans: the reference has no per-condition PathTracker accuracies (only that humans, like InT, "
                      "do not degrade with clutter and length)", highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "grid.csv", records_csv(rows))
        atomic_write_text(out / "grid.json", json.dumps(rows, indent=1) + "\n")
        if conditions is None:
            atomic_write_bytes(out / "grid.png", heatmap_figure(rows, challenge))
        console.print(f"wrote {out}/grid.csv, grid.json" + (", grid.png" if conditions is None else ""), highlight=False)


def register_data(data: typer.Typer) -> None:
    """Add ``harmonia data challenge`` to the ``data`` group."""
    data.command("challenge", help=reflow(DATA_CHALLENGE_HELP))(data_challenge_command)


challenge_app.command("train", help=reflow(TRAIN_HELP))(challenge_train_command)
challenge_app.command("evaluate", help=reflow(EVALUATE_HELP))(challenge_evaluate_command)
for _module in (challenge_probe_cmd, challenge_svrt_cmd):
    _module.register(challenge_app)


def register(app: typer.Typer) -> None:
    """Add the ``harmonia challenge`` group (train, evaluate, probe, svrt-curves) to ``app``."""
    app.add_typer(challenge_app, name="challenge")
