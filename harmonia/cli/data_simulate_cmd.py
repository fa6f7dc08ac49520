"""``harmonia data simulate``: write the SYNTHETIC simulated-ClickMe benchmark."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.settings import SimulationConfig

SIMULATE_HELP = """Generate the simulated-ClickMe benchmark: SYNTHETIC images and SIMULATED human maps.

Nothing here comes from real people. K classes share one body shape and differ by a
small diagnostic part on it; a class-coded square in a corner is a planted shortcut
that agrees with the label in --shortcut-rate of the train and test images and never
in test_shortcut_broken; in test_no_cue the square is plain grey, so accuracy there
is what a model reads from the part alone. Simulated participants click mostly on the part; their clicks
go through the same click-to-map pipeline as real ClickMe data, so the human ceiling
is computed from per-participant maps (stored for the test splits; --train-subjects
stores them for train too). Per-image ground truth (shortcut class, object and part
boxes) is in SPLIT/meta.csv. Same options and seed give identical files.

Interrupted (even by kill -9)? Run the same command again: it keeps the splits already
written and finishes the rest, with the same files as an uninterrupted run; --overwrite
replaces the half-written dataset instead. --out is locked while it is written.

Examples:

  harmonia data simulate --out data/sim-clickme

  harmonia data simulate --out data/sim-big --n-train 20000 --image-size 128 --seed 1

  harmonia data simulate --out data/sim-easy --part-radius 7 9 --shortcut-rate 0.7
"""


@user_errors
def simulate_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (harmonia format)."),
    n_train: int = typer.Option(SimulationConfig.n_train, "--n-train", min=1, help="Training images."),
    n_test: int = typer.Option(SimulationConfig.n_test, "--n-test", min=1, help="Images in each test split (test, test_shortcut_broken, test_no_cue)."),
    image_size: int = typer.Option(SimulationConfig.image_size, "--image-size", min=32, help="Image side in pixels."),
    classes: int = typer.Option(SimulationConfig.n_classes, "--classes", min=2, help="Number of classes (at most 12)."),
    shortcut_rate: float = typer.Option(
        SimulationConfig.shortcut_rate, "--shortcut-rate", min=0.0, max=1.0, help="Fraction of train/test images whose corner cue shows the label."
    ),
    part_radius: tuple[float, float] = typer.Option(
        SimulationConfig.part_radius, "--part-radius", help="Range of the part's half-size, pixels at 64 px (larger: easier to learn)."
    ),
    subjects: int = typer.Option(SimulationConfig.n_subjects, "--subjects", min=1, help="Simulated participants per image."),
    seed: int = typer.Option(SimulationConfig.seed, "--seed", help="Random seed (same seed, same files)."),
    train_subjects: bool = typer.Option(
        SimulationConfig.train_subjects, "--train-subjects", help="Also store per-participant maps for train (large: S x H x W floats per image)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing harmonia dataset in --out."),
) -> None:
    from harmonia.cli.progress import progress_callback
    from harmonia.humans.simulate import simulate_clickme

    start = time.perf_counter()
    with progress_callback("simulating ClickMe (SYNTHETIC)") as update:
        root = simulate_clickme(
            out, n_train=n_train, n_test=n_test, image_size=image_size, n_classes=classes,
            shortcut_rate=shortcut_rate, n_subjects=subjects, seed=seed, train_subjects=train_subjects,
            part_radius=part_radius, overwrite=overwrite, progress=update,
        )  # fmt: skip
    console.print(
        f"[yellow]SYNTHETIC[/] simulated-ClickMe dataset written to {root} in {time.perf_counter() - start:.1f} s: "
        f"train {n_train}, test / test_shortcut_broken / test_no_cue {n_test} each, {image_size} x {image_size} px, "
        f"{classes} classes, {subjects} simulated participants per image.",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``harmonia data simulate`` to the ``harmonia data`` group."""
    app.command("simulate", help=reflow(SIMULATE_HELP))(simulate_command)
