"""``harmonia data challenge NAME``: write a synthetic challenge dataset; ``harmonia challenge ...``:
train and evaluate models on the challenges (sub-commands add themselves to :data:`challenge_app`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.data_cmd import data_app
from harmonia.cli.main import app

challenge_app = typer.Typer(
    help="Synthetic human-vs-DNN challenges (PathTracker, FeatureTracker, ...): train and evaluate models.",
    no_args_is_help=True,
)
app.add_typer(challenge_app, name="challenge")


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


@data_app.command("challenge", help=reflow(DATA_CHALLENGE_HELP))
@user_errors
def data_challenge_command(
    name: str = typer.Argument(..., help="Challenge name (pathtracker, featuretracker, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (harmonia format)."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of samples (half positive, half negative)."),
    split: str = typer.Option("train", "--split", help="Split name to write (train, val, test, ...)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed and knobs, same samples)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="A knob as key=value (repeatable), e.g. frames=64."),
    problem: Optional[int] = typer.Option(None, "--problem", help="Shorthand for --set problem=N (SVRT)."),
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
