"""Baseline vs harmonized: train both with the same seed, model and budget, then measure both.

This is the experiment behind ``harmonia demo``, built from the trainer and the
measurement runner. For each seed it trains the demo's small CNN
(:mod:`harmonia.models.small`) twice on a simulated-ClickMe data set with
:func:`harmonia.training.train`: once with ``lambda_harmonization = 0`` (the baseline)
and once with the harmonizer loss. Everything else is identical: initial weights (the
trainer seeds them from the seed), batches, optimiser, schedule, epochs. Each trained
model is then measured (:func:`model_measurements`, each one a keyed run of
:func:`harmonia.measurements.run` in the results store): alignment on ``test`` (in
distribution: the shortcut agrees with the label in 90% of the images),
``test_shortcut_broken`` (it never does) and ``test_no_cue`` (the square codes nothing:
what the model reads from the part alone), with the release's evaluation saliency (max
over channels of ``|d logit_label / d pixel|``), alignment = mean Spearman / the
split-half ceiling computed from the simulated participants
(:func:`harmonia.evaluation.resolve_ceiling`); and adversarial alignment on ``test``.
:mod:`harmonia.report` renders what comes back; it trains and measures nothing.

Example:
    >>> s = ComparisonSettings.quick()
    >>> s.train_config("sim", "runs/h", seed=0, harmonized=True).lambda_harmonization == s.lambda_harmonization
    True
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from harmonia.settings import COMPARISON_SPLITS, ComparisonSettings

SPLITS = COMPARISON_SPLITS
VARIANTS = ("baseline", "harmonized")
# metric key -> label, in the order tables and figures show them
METRICS = {
    "test/accuracy": "accuracy, test",
    "test_shortcut_broken/accuracy": "accuracy, shortcut broken",
    # the part alone: separates "never learned the part" from "learned it, the cue wins"
    "test_no_cue/accuracy": "accuracy, no cue",
    "test/alignment": "alignment, test",
    "test_shortcut_broken/alignment": "alignment, shortcut broken",
    # minimal-norm FMN attacks on the first adv_images images of "test" (issue 5)
    "adversarial/l2_median": "median minimal L2, test",
    "adversarial/alignment": "adversarial alignment, test",
}

Log = Callable[[str], None]


@dataclass
class ModelRun:
    """One trained model and what was measured on it."""

    variant: str
    seed: int
    lambda_harmonization: float
    metrics: dict[str, dict[str, Any]]  # split -> accuracy, spearman, alignment, n_images, n_nan, key, cached
    history: dict[str, Any]
    train_seconds: float
    out_dir: Path
    model: Any = field(default=None, repr=False)  # the trained HarmoniaModel (not serialised)

    def value(self, metric: str) -> float:
        """``"split/name"`` -> the number (NaN when missing)."""
        split, name = metric.split("/")
        v = self.metrics.get(split, {}).get(name)
        return float(v) if v is not None else math.nan


@dataclass
class Comparison:
    """All runs of a comparison plus the context the report needs."""

    settings: ComparisonSettings
    data_dir: Path
    ceilings: dict[str, dict[str, Any]]  # split -> value, source
    runs: list[ModelRun]
    timings: dict[str, float] = field(default_factory=dict)

    def values(self) -> dict[str, dict[str, list[float]]]:
        """variant -> metric -> per-seed values (seed order)."""
        out: dict[str, dict[str, list[float]]] = {v: {m: [] for m in METRICS} for v in VARIANTS}
        for r in sorted(self.runs, key=lambda r: r.seed):
            for m in METRICS:
                out[r.variant][m].append(r.value(m))
        return out

    def verdict(self) -> dict[str, dict[str, Any]]:
        """Per metric: mean difference harmonized - baseline and in how many seeds it is > 0.

        Example:
            >>> Comparison(ComparisonSettings(), Path("."), {}, []).verdict()["test/accuracy"]["n_seeds"]
            0
        """
        vals = self.values()
        out = {}
        for m in METRICS:
            diffs = [h - b for b, h in zip(vals["baseline"][m], vals["harmonized"][m]) if math.isfinite(h - b)]
            out[m] = {
                "mean_diff": statistics.fmean(diffs) if diffs else math.nan,
                "n_better": sum(d > 0 for d in diffs),
                "n_seeds": len(diffs),
            }
        return out

    def summary_json(self) -> dict[str, Any]:
        """JSON-able summary (no models): what ``demo-out/summary.json`` holds."""
        return {
            "synthetic": True,
            "settings": {**asdict(self.settings), "seeds": list(self.settings.seeds)},
            "data_dir": str(self.data_dir),
            "ceilings": self.ceilings,
            "timings_s": self.timings,
            "runs": [
                {"variant": r.variant, "seed": r.seed, "lambda_harmonization": r.lambda_harmonization,
                 "metrics": r.metrics, "train_seconds": r.train_seconds, "out_dir": str(r.out_dir)}
                for r in self.runs
            ],
            "values": self.values(),
            "verdict": self.verdict(),
        }  # fmt: skip


def model_measurements(settings: ComparisonSettings, ceilings: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """What is measured on each trained model: name -> (measurement, split, batch size).

    Alignment (the release's evaluation saliency, max over channels of ``|d logit_label /
    d pixel|``) on every split, and adversarial alignment (FMN, L2, its ``|mean|`` map as
    in 2023) on the first ``adv_images`` images of ``test``; all through
    :func:`harmonia.measurements.run`, so each is a keyed run in the results store.

    Example:
        >>> sorted(model_measurements(ComparisonSettings.quick(), {s: 0.7 for s in SPLITS}))
        ['adversarial', 'test', 'test_no_cue', 'test_shortcut_broken']
    """
    from harmonia.adversarial import AdversarialAlignment
    from harmonia.attacks import FMN
    from harmonia.attribution import Saliency
    from harmonia.evaluation import Alignment

    out: dict[str, Any] = {
        split: (Alignment(Saliency(reducer="max_abs"), ceiling=ceilings[split], targets="label", device=device,
                          num_workers=0), split, 100)
        for split in SPLITS
    }
    out["adversarial"] = (AdversarialAlignment(FMN(steps=settings.adv_steps), reducer="abs_mean", ceiling=ceilings["test"],
                                               limit=settings.adv_images, device=device), "test", 100)
    return out


def _alignment_metrics(res: Any) -> dict[str, Any]:
    a = res.aggregates
    return {
        "accuracy": a.get("accuracy"), "spearman": a["spearman"]["mean"], "alignment": a.get("alignment"),
        "dice": a.get("dice", {}).get("mean"), "iou": a.get("iou", {}).get("mean"),
        "n_images": a["n_images"], "n_nan": a["spearman"].get("n_nan"), "evaluation_key": res.key,
        "cached": res.cached,
    }  # fmt: skip


def _adversarial_metrics(res: Any) -> dict[str, Any]:
    """Tolerance (minimal L2 of an FMN attack) and adversarial alignment (|mean| map, 2023)."""
    a = res.aggregates
    return {
        "l2_median": a.get("l2_median"), "linf_median": a.get("linf_median"), "alignment": a.get("alignment"),
        "spearman": a["spearman"]["mean"], "n_fooled": a.get("n_fooled"), "n_not_fooled": a.get("n_not_fooled"),
        "n_misclassified": a.get("n_misclassified"), "n_images": a["n_images"],
        "gradients_mean": a.get("backwards_mean"), "evaluation_key": res.key, "cached": res.cached,
    }  # fmt: skip


def measure_model(model: Any, datasets: dict[str, Any], store: Any, ceilings: dict[str, Any],
                  settings: ComparisonSettings, device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Run :func:`model_measurements` on one trained model: name -> its numbers (and run key).

    The trainer's final evaluation already stored the alignment runs (same key), so they are
    cache hits; running them here ties the report's numbers to the store.
    """
    from harmonia.measurements import run

    metrics: dict[str, dict[str, Any]] = {}
    for name, (measurement, split, batch_size) in model_measurements(settings, ceilings, device).items():
        res = run(measurement, model, datasets[split], store=store, batch_size=batch_size)
        metrics[name] = _adversarial_metrics(res) if name == "adversarial" else _alignment_metrics(res)
    return metrics


def run_comparison(
    settings: ComparisonSettings,
    data_dir: str | Path,
    out_dir: str | Path,
    store: Any,
    log: Log = lambda s: None,
    on_step: Callable[[str, dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> Comparison:
    """Train and evaluate baseline and harmonized models for every seed of ``settings``.

    ``data_dir`` is a simulated-ClickMe data set; runs go to ``out_dir/seedS/VARIANT``
    (an existing finished run there is replaced: the demo always trains afresh).
    ``on_step(label, info)`` is the trainer's callback (progress bars).

    Example:
        >>> cmp = run_comparison(ComparisonSettings.quick(), "sim", "runs", store)  # doctest: +SKIP
        >>> cmp.verdict()["test_shortcut_broken/accuracy"]  # doctest: +SKIP
    """
    import shutil

    from harmonia.data import HarmoniaDataset
    from harmonia.evaluation import resolve_ceiling
    from harmonia.models.small import build_small_cnn
    from harmonia.training import train

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    t0 = time.perf_counter()
    probe = HarmoniaDataset(data_dir, "train")
    size = tuple(probe[0]["image"].shape[-2:])
    n_classes = len(probe.info.classes or []) or max(probe.labels) + 1
    # Opened exactly as the trainer opens its evaluation sets (same content key), so the
    # trainer finds these ceilings and final evaluations in the store instead of redoing them.
    datasets = {s: HarmoniaDataset(data_dir, s, size=size) for s in SPLITS}
    ceilings = {s: resolve_ceiling(datasets[s], "auto", store=store) for s in SPLITS}
    timings = {"ceilings": time.perf_counter() - t0}
    runs: list[ModelRun] = []
    for seed in settings.seeds:
        for variant in VARIANTS:
            run_dir = out_dir / f"seed{seed}" / variant
            if run_dir.exists():
                shutil.rmtree(run_dir)  # only ever the demo's own run folders
            cfg = settings.train_config(data_dir, run_dir, seed=seed, harmonized=variant == "harmonized", device=device)
            torch.manual_seed(seed)  # the trainer reseeds before building; this is belt and braces
            model = build_small_cnn(num_classes=n_classes, width=settings.width, input_size=size)
            log(f"training {variant} (seed {seed}, lambda {cfg.lambda_harmonization:g}, {settings.epochs} epochs)")
            label = f"{variant} seed {seed}"
            callbacks = [lambda ev, info, label=label: on_step(label, {"event": ev, **info})] if on_step else []
            t = time.perf_counter()
            result = train(cfg, store=store, callbacks=callbacks, model=model)
            timings[f"train {label}"] = time.perf_counter() - t
            metrics = measure_model(model, datasets, store, ceilings, settings, device)
            runs.append(ModelRun(variant, seed, cfg.lambda_harmonization, metrics, result.history,
                                 float(result.seconds), Path(cfg.out_dir), model))
            r = runs[-1]
            log(f"{label}: " + "  ".join(f"{METRICS[m]} {r.value(m):.3f}" for m in METRICS))
    return Comparison(settings, data_dir, {s: {"value": c.value, "source": c.source} for s, c in ceilings.items()},
                      runs, timings)


def _example_batch(comparison: Comparison, split: str) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """The first ``settings.n_examples`` items of ``split``: (n, images, human maps, labels, class names)."""
    from harmonia.data import HarmoniaDataset

    ds = HarmoniaDataset(comparison.data_dir, split)
    n = min(comparison.settings.n_examples, len(ds))
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    human = torch.stack([it["map"] for it in items])
    labels = torch.tensor([it["label"] for it in items])
    classes = ds.info.classes or [str(i) for i in range(int(labels.max()) + 1)]
    return n, images, human, labels, classes


def example_maps(comparison: Comparison, split: str = "test_shortcut_broken", seed: int | None = None) -> dict[str, Any]:
    """Images, human maps, each variant's maps and captions for the side-by-side figure.

    The first ``settings.n_examples`` images of ``split`` (a fixed choice, not picked by
    outcome); maps are the evaluation's saliency (max over channels of |gradient| of the
    labelled class) of the models of ``seed`` (default: the first seed).
    """
    from harmonia.attribution import Saliency
    from harmonia.humans.simulate import load_meta

    seed = comparison.settings.seeds[0] if seed is None else seed
    n, images, human, labels, classes = _example_batch(comparison, split)
    meta = load_meta(comparison.data_dir, split)
    maps: dict[str, torch.Tensor] = {}
    preds: dict[str, torch.Tensor] = {}
    for r in comparison.runs:
        if r.seed != seed or r.model is None:
            continue
        model = r.model.eval()
        dev = model.device
        maps[r.variant] = Saliency(reducer="max_abs")(model, images.to(dev), labels.to(dev)).detach().cpu()
        with torch.no_grad():
            preds[r.variant] = model(images.to(dev)).argmax(1).cpu()
    captions = []
    for i in range(n):
        parts = [f"{classes[int(labels[i])]}", f"cue: {classes[int(meta['shortcut_class'][i])]}"]
        for v, p in preds.items():
            parts.append(f"{v[:4]}: {classes[int(p[i])]}{'' if int(p[i]) == int(labels[i]) else ' (wrong)'}")
        captions.append("\n".join(parts))
    return {"images": images, "human": human, "maps": maps, "captions": captions, "split": split, "seed": seed}


def example_perturbations(comparison: Comparison, split: str = "test", seed: int | None = None) -> dict[str, Any]:
    """Like :func:`example_maps`, with each model's minimal FMN perturbation map (|mean| over channels).

    The first ``settings.n_examples`` images of ``split``; an image the model misclassifies or
    that the attack does not fool within its budget gets an empty map, and its caption says so.
    """
    from harmonia.adversarial import perturbation_map
    from harmonia.attacks import FMN

    seed = comparison.settings.seeds[0] if seed is None else seed
    n, images, human, labels, classes = _example_batch(comparison, split)
    maps: dict[str, torch.Tensor] = {}
    notes: dict[str, list[str]] = {}
    for r in comparison.runs:
        if r.seed != seed or r.model is None:
            continue
        model = r.model.eval()
        dev = model.device
        res = FMN(steps=comparison.settings.adv_steps)(model, images.to(dev), labels.to(dev))
        delta = (res.adv.detach().cpu() - images) * res.success.cpu()[:, None, None, None]
        maps[r.variant] = perturbation_map(delta, "abs_mean")
        notes[r.variant] = [
            f"L2 {float(res.l2[i]):.2f}" if bool(res.success[i]) else
            ("misclassified" if bool(res.misclassified[i]) else "not fooled")
            for i in range(n)
        ]
    captions = ["\n".join([classes[int(labels[i])], *(f"{v[:4]}: {notes[v][i]}" for v in maps)]) for i in range(n)]
    return {"images": images, "human": human, "maps": maps, "captions": captions, "split": split, "seed": seed}
