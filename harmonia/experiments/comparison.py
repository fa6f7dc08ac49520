"""Baseline vs harmonized as a study: train both with the same seed, model and budget, then measure both.

This is the experiment behind ``harmonia demo``. :func:`comparison_study` declares it as a
study (the shipped preset ``demo``, :mod:`harmonia.studies.presets`); the study runner
(:func:`harmonia.studies.run_study`) does the work, resumably: for each seed it trains the
demo's small CNN (:mod:`harmonia.models.small`) twice on a simulated-ClickMe data set, once
with every human-map term at 0 (the baseline) and once with the harmonizer loss. Everything
else is identical: initial weights (the model and the trainer are seeded from the seed),
batches, optimiser, schedule, epochs. Each trained model is then measured, each one a keyed
run of :func:`harmonia.measurements.run` in the study's store: alignment on ``test`` (in
distribution: the shortcut agrees with the label in 90% of the images),
``test_shortcut_broken`` (it never does) and ``test_no_cue`` (the square codes nothing:
what the model reads from the part alone), with the release's evaluation saliency (max
over channels of ``|d logit_label / d pixel|``), alignment = mean Spearman / the
split-half ceiling computed from the simulated participants; and adversarial alignment on
``test``. :func:`comparison_from_study` reads back what the study stored as a
:class:`Comparison`; :mod:`harmonia.report` renders it and measures nothing.

Example:
    >>> doc = comparison_study(ComparisonSettings.quick())
    >>> doc["models"][0]["train"]["settings"]["lambda_masked"] == ComparisonSettings.quick().lambda_masked
    True
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harmonia.settings import COMPARISON_SPLITS, ComparisonSettings, LossOptions
from harmonia.training.trainer import HISTORY_FILE as HISTORY

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


def comparison_study(settings: ComparisonSettings, data_path: str = "sim-clickme", device: str = "cpu") -> dict[str, Any]:
    """The comparison as a study document (the TOML file's tables): what ``harmonia demo`` runs.

    With the default settings it is the shipped preset ``demo``
    (``harmonia/resources/studies/demo.toml``, which explains every entry; a test keeps the
    two equal). One small CNN with a training stage of both variants per seed: the study's
    ``baseline`` is the same run with every human-map term at 0. Measured on ``test``,
    ``test_shortcut_broken`` and ``test_no_cue``: alignment (its rows hold accuracy too);
    adversarial alignment on the first ``adv_images`` images of ``test``.

    Example:
        >>> doc = comparison_study(ComparisonSettings.quick(seeds=(0, 1)))
        >>> doc["study"]["seeds"], doc["models"][0]["train"]["epochs"], [d["split"] for d in doc["data"]]
        ([0, 1], 2, ['test', 'test_shortcut_broken', 'test_no_cue'])
    """
    s = settings
    simulate = {"n_train": s.n_train, "n_test": s.n_test, "n_subjects": s.n_subjects, "seed": s.sim_seed,
                "shortcut_rate": s.shortcut_rate, "part_radius": list(s.part_radius)}
    train = {
        "batch_size": s.batch_size, "lr": s.lr, "weight_decay": s.weight_decay, "label_smoothing": s.label_smoothing,
        "reducer": s.reducer, "score": s.score, "lambda_harmonization": s.lambda_harmonization,
        "lambda_outside": s.lambda_outside, "lambda_masked": s.lambda_masked,
        "augment": False, "warmup_epochs": 0.5, "checkpoint_every_epochs": 0,
        "eval_splits": list(SPLITS), "eval_every": 1, "eval_limit": s.curve_eval_limit, "eval_batch_size": 100,
    }  # fmt: skip
    # one [[data]] entry per test split of the same folder: sim, sim_shortcut_broken, sim_no_cue
    return {
        "study": {"name": "demo", "description": DESCRIPTION, "seeds": list(s.seeds), "device": device, "batch_size": 100},
        "models": [{"name": "small_cnn", "label": "cnn", "kwargs": {"width": s.width},
                    "train": {"data": "sim", "split": "train", "epochs": s.epochs, "preset": "adamw", "settings": train}}],
        "data": [{"name": "sim" + split[len("test"):], "path": data_path, "split": split, "size": 64, "simulate": simulate} for split in SPLITS],
        "measurements": [
            {"name": "alignment", "kind": "alignment", "explainer": "saliency:reducer=max_abs", "ceiling": "auto",
             "targets": "label"},
            {"name": "adversarial", "kind": "adversarial", "attack": f"fmn:steps={s.adv_steps}", "reducer": "abs_mean",
             "ceiling": "auto", "limit": s.adv_images, "data": ["sim"]},
        ],
    }  # fmt: skip


DESCRIPTION = ("harmonia demo: a small CNN trained with and without the harmonizer on SYNTHETIC simulated-ClickMe "
               "data (same seed, data order and budget), measured for accuracy, alignment and adversarial alignment.")


def _alignment_metrics(a: dict[str, Any], key: str) -> dict[str, Any]:
    return {
        "accuracy": a.get("accuracy"), "spearman": a["spearman"]["mean"], "alignment": a.get("alignment"),
        "dice": a.get("dice", {}).get("mean"), "iou": a.get("iou", {}).get("mean"),
        "n_images": a["n_images"], "n_nan": a["spearman"].get("n_nan"), "evaluation_key": key,
    }  # fmt: skip


def _adversarial_metrics(a: dict[str, Any], key: str) -> dict[str, Any]:
    """Tolerance (minimal L2 of an FMN attack) and adversarial alignment (|mean| map, 2023)."""
    return {
        "l2_median": a.get("l2_median"), "linf_median": a.get("linf_median"), "alignment": a.get("alignment"),
        "spearman": a["spearman"]["mean"], "n_fooled": a.get("n_fooled"), "n_not_fooled": a.get("n_not_fooled"),
        "n_misclassified": a.get("n_misclassified"), "n_images": a["n_images"],
        "gradients_mean": a.get("backwards_mean"), "evaluation_key": key,
    }  # fmt: skip


def comparison_from_study(study: Any, settings: ComparisonSettings, load_models: bool = True) -> Comparison:
    """The :class:`Comparison` a finished run of :func:`comparison_study` holds: numbers from the
    study's store, histories and (``load_models``) trained models from its training tasks.

    Raises :class:`~harmonia.errors.UserError` naming every task that is not done.

    Example:
        >>> from harmonia.studies import load_study
        >>> cmp = comparison_from_study(load_study("demo-out/demo.toml"), ComparisonSettings())  # doctest: +SKIP
    """
    import json

    from harmonia.errors import UserError
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.studies.execute import CHECKPOINT
    from harmonia.studies.runner import models_dir, task_states

    states = task_states(study)
    missing = [f"{t.title}: {s}" + (f" ({r['reason']})" if r and r.get("reason") else "") for t, s, r in states if s != "done"]
    if missing:
        raise UserError(f"study {study.name} is not done: " + "; ".join(missing))
    timings: dict[str, float] = {}
    ceilings: dict[str, dict[str, Any]] = {}
    runs: dict[str, ModelRun] = {}
    with ResultStore(study.store) as store:
        for t, _, row in states:
            m = t.model
            if t.stage == "train":
                folder = models_dir(study) / t.spec_key
                history = json.loads((folder / HISTORY).read_text()) if (folder / HISTORY).is_file() else {}
                lam = 0.0 if m["variant"] == "baseline" else float(m["train"]["settings"].get(
                    "lambda_harmonization", LossOptions.lambda_harmonization))
                runs[t.spec_key] = ModelRun(m["variant"], int(m["seed"]), lam, {}, history, float(row["seconds"] or 0.0),
                                            folder, load(folder / CHECKPOINT) if load_models else None)
                timings[f"train {m['variant']} seed {m['seed']}"] = float(row["seconds"] or 0.0)
                continue
            run = store.get_run(row["content_key"])
            name = t.measurement["name"]
            if name == "adversarial":
                runs[t.needs].metrics["adversarial"] = _adversarial_metrics(run.aggregates, run.key)
            else:
                runs[t.needs].metrics[t.data["split"]] = _alignment_metrics(run.aggregates, run.key)
                ceilings[t.data["split"]] = dict(run.aggregates["ceiling"])  # what alignment was divided by
            timings[f"{name} {t.data['split']} {m['variant']} seed {m['seed']}"] = float(row["seconds"] or 0.0)
    data = next(d for d in study.data if d.simulate is not None)
    return Comparison(settings, data.path, ceilings, sorted(runs.values(), key=lambda r: (r.seed, VARIANTS.index(r.variant))),
                      timings)


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
