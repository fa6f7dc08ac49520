"""Evaluate trained challenge models over the generalisation grid; table, heat map, human numbers.

PathTracker: trained on 64 frames / 14 distractors / speed 1, tested on every length (32, 64,
128) crossed with every distractor count (0, 5, 14, 25), plus speeds 2 and 4 at 64 frames /
14 distractors. FeatureTracker: trained in distribution (shapes in, colours in), tested on
all twelve shape x colour conditions. Test samples come from ``seed`` (default 1000; training
uses 0 and validation 1), so no test video was seen in training.

Per-sample rows (index, label, logit, correct) and per-condition accuracy go to the results
store (:class:`harmonia.store.ResultStore`); a repeated evaluation is a cache hit and an
interrupted one resumes. Human accuracies are the reference's (``HUMANS``): FeatureTracker
ranges only; PathTracker has no per-condition human table in the reference.

Example:
    >>> [c["frames"] for c in grid("pathtracker")][:3]
    [32, 64, 128]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from harmonia.challenges.base import create
from harmonia.challenges.dataset import ChallengeDataset
from harmonia.challenges.featuretracker import CONDITIONS, EXTRA_CONDITIONS
from harmonia.challenges.training import accuracy, load_model
from harmonia.store import ResultStore, cache_key
from harmonia.utils.device import resolve_device

EVAL_SEED = 1000
PT_FRAMES, PT_DISTRACTORS, PT_SPEEDS = (32, 64, 128), (0, 5, 14, 25), (2, 4)
# Reference (challenges.md): humans on FeatureTracker, from the released per-trial data.
HUMANS: dict[str, dict[str, Any]] = {
    "featuretracker": {
        "main": (0.81, 0.86, "17 subjects, 2054 trials"),
        "extra": (0.79, 0.92, "20 subjects, 2404 trials (irregular colours)"),
    },
    "pathtracker": {},
}


def grid(challenge: str) -> list[dict[str, Any]]:
    """The test conditions (knob dicts) of a challenge's generalisation grid."""
    name = challenge.lower().replace("-", "_")
    if name in ("pathtracker", "pt", "path_tracker"):
        cells = [{"frames": f, "distractors": d, "speed": 1} for d in PT_DISTRACTORS for f in PT_FRAMES]
        return cells + [{"frames": 64, "distractors": 14, "speed": s} for s in PT_SPEEDS]
    if name in ("featuretracker", "ft", "feature_tracker"):
        return [{"shapes": s, "colors": c} for s, c in CONDITIONS]
    raise ValueError(f"no generalisation grid for {challenge!r} (pathtracker, featuretracker)")


def condition_name(knobs: dict[str, Any]) -> str:
    """``{"frames": 64, "distractors": 14}`` -> ``"frames=64,distractors=14"``."""
    return ",".join(f"{k}={v}" for k, v in knobs.items())


def human_accuracy(challenge: str, knobs: dict[str, Any]) -> tuple[float, float, str] | None:
    """The reference's human accuracy range for a condition, or None when the reference has none."""
    humans = HUMANS.get(challenge, {})
    if challenge == "featuretracker" and humans:
        extra = (knobs.get("shapes", "in"), knobs.get("colors", "in")) in EXTRA_CONDITIONS
        return humans["extra" if extra else "main"]
    return None


def evaluate_condition(model: torch.nn.Module, model_id: str, challenge: str, knobs: dict[str, Any], n: int,
                       seed: int = EVAL_SEED, batch_size: int = 32, store: ResultStore | None = None,
                       device: str | torch.device = "cpu") -> dict[str, Any]:
    """Accuracy of ``model`` on ``n`` fresh samples of one condition (cached in ``store``).

    Example:
        >>> from harmonia.models.video import build_video_model
        >>> row = evaluate_condition(build_video_model("gru:channels=2"), "untrained", "pathtracker",
        ...                          {"frames": 4, "distractors": 0}, n=4)
        >>> row["n_samples"], row["synthetic"]
        (4, True)
    """
    gen = create(challenge, seed=seed, **knobs)
    gen.length = max(gen.length, n)
    key = cache_key({"kind": "challenge-eval", "model": model_id, "challenge": gen.name, "config": gen.config(), "n": n})
    meta = {"model": model_id, "challenge": gen.name, "condition": condition_name(knobs), "n": n, "seed": seed,
            "synthetic": True}
    if store is not None:
        run = store.get_run(key)
        if run is not None and run.status == "complete" and run.aggregates:
            return {**meta, **run.aggregates, "cached": True}
        store.start_run(key, "challenge", meta)
        done = {int(i) for i in store.done_ids(key)}
    else:
        done = set()
    todo = [i for i in range(n) if i not in done]
    ds = torch.utils.data.Subset(ChallengeDataset(gen, n), todo)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(todo), batch_size * 8):  # commit every few batches: resumable
        chunk = torch.utils.data.Subset(ds, range(start, min(start + batch_size * 8, len(todo))))
        _, part = accuracy(model, torch.utils.data.DataLoader(chunk, batch_size=batch_size), resolve_device(device))
        if store is not None:
            store.add_rows(key, [{"image_id": f"{r['index']:07d}", **r} for r in part])
        rows += part
    if store is not None:
        rows = store.rows(key)
    acc = sum(int(r["correct"]) for r in rows) / max(len(rows), 1)
    agg = {"accuracy": acc, "ci95": 1.96 * math.sqrt(max(acc * (1 - acc), 1e-12) / max(len(rows), 1)),
           "n_samples": len(rows)}
    if store is not None:
        store.finish_run(key, agg)
    return {**meta, **agg, "cached": False}


def evaluate_grid(model_paths: list[str | Path], challenge: str | None = None,
                  conditions: list[dict[str, Any]] | None = None, n: int = 256, seed: int = EVAL_SEED,
                  batch_size: int = 32, store: ResultStore | None = None, device: str = "cpu",
                  progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One row per (model, condition): accuracy, 95% interval, human range; models from ``final.pt`` files.

    Example:
        >>> rows = evaluate_grid(["runs/pt-int/final.pt"], n=256, store=ResultStore())  # doctest: +SKIP
        >>> rows[0]["condition"], rows[0]["accuracy"]  # doctest: +SKIP
        ('frames=32,distractors=0,speed=1', 0.53)
    """
    loaded = []
    for path in model_paths:
        model, record = load_model(path, device=resolve_device(device))
        name = challenge or record["challenge"]
        if record["challenge"] != create(name).name:
            raise ValueError(f"{path} was trained on {record['challenge']}, not {name}")
        digest = store.file_digest(path) if store is not None else str(Path(path).resolve())
        loaded.append((model, f"{record['model']}@{digest[:16]}", record, str(path)))
    name = challenge or loaded[0][2]["challenge"]
    cells = conditions or grid(name)
    out, total, done = [], len(cells) * len(loaded), 0
    for model, model_id, record, path in loaded:
        for knobs in cells:
            row = evaluate_condition(model, model_id, name, knobs, n, seed, batch_size, store, device)
            human = human_accuracy(record["challenge"], knobs)
            trained_on = all(record["knobs"].get(k) == v for k, v in knobs.items())
            out.append({**row, "model_file": path, "model_spec": record["model"], "trained_on": trained_on,
                        "human_low": human[0] if human else None, "human_high": human[1] if human else None})
            done += 1
            if progress:
                progress(done, total)
    return out


def heatmap_figure(rows: list[dict[str, Any]], challenge: str) -> bytes:
    """PNG: one accuracy heat map per model over the grid, and the reference's humans beside them.

    Example:
        >>> Path("grid.png").write_bytes(heatmap_figure(rows, "pathtracker"))  # doctest: +SKIP
    """
    import numpy as np

    from harmonia.report.figures import _png, _pyplot

    plt = _pyplot()
    models = list(dict.fromkeys(r["model_file"] for r in rows))
    if challenge == "featuretracker":
        ys, xs = ["none", "in", "out"], ["none", "in", "out", "irregular"]
        ylabel, xlabel, ykey, xkey, fixed = "shape change", "colour change", "shapes", "colors", {}
    else:
        ys, xs = list(PT_DISTRACTORS), list(PT_FRAMES)
        ylabel, xlabel, ykey, xkey, fixed = "distractors", "frames", "distractors", "frames", {"speed": 1}
    panels = len(models) + 1  # the reference's humans beside the models
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels + 0.8, 3.2), squeeze=False)
    fig.subplots_adjust(wspace=0.45)
    for ax, model_file in zip(axes[0], models):
        grid_ = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            knobs = dict(p.split("=") for p in r["condition"].split(","))
            if r["model_file"] != model_file or any(str(knobs.get(k)) != str(v) for k, v in fixed.items()):
                continue
            grid_[ys.index(type(ys[0])(knobs[ykey])), xs.index(type(xs[0])(knobs[xkey]))] = r["accuracy"]
        spec = next(r["model_spec"] for r in rows if r["model_file"] == model_file)
        _heat(ax, grid_, xs, ys, xlabel, ylabel, f"{spec}\n({Path(model_file).parent.name})")
    if challenge == "featuretracker":
        ax = axes[0][-1]
        grid_ = np.full((len(ys), len(xs)), np.nan)
        labels = np.full(grid_.shape, "", dtype=object)
        for yi, s in enumerate(ys):
            for xi, c in enumerate(xs):
                lo, hi, _ = human_accuracy("featuretracker", {"shapes": s, "colors": c})
                grid_[yi, xi], labels[yi, xi] = (lo + hi) / 2, f"{lo:.0%}-\n{hi:.0%}"
        _heat(ax, grid_, xs, ys, xlabel, ylabel, "humans (reference ranges)", labels)
    else:
        ax = axes[0][-1]
        ax.axis("off")
        ax.set_title("humans (reference)", fontsize=9)
        ax.text(0.5, 0.5, "no per-condition\nPathTracker table\nin the reference;\nreported: humans do\nnot degrade with\nclutter or length",
                ha="center", va="center", fontsize=8, transform=ax.transAxes)
    fig.suptitle(f"SYNTHETIC {challenge}: accuracy over the generalisation grid", fontsize=10, y=1.08)
    return _png(fig)


def _heat(ax, values, xs, ys, xlabel, ylabel, title, labels=None) -> None:
    ax.imshow(values, vmin=0.5, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    for yi in range(len(ys)):
        for xi in range(len(xs)):
            text = labels[yi, xi] if labels is not None else ("" if values[yi, xi] != values[yi, xi] else f"{values[yi, xi]:.2f}")
            ax.text(xi, yi, text, ha="center", va="center", fontsize=7, color="white")
