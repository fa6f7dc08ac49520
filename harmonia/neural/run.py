"""Neural scoring with the results store and the layer-profile figure.

A run is keyed on the model's weights + preprocessing, the recording's content and the
scoring settings (:func:`harmonia.store.cache_key`); its rows are the layers, its
aggregates the best layer, its scores and the ceiling. A second identical call is a
cache hit.

Example:
    >>> import tempfile
    >>> from harmonia.neural.simulate import simulate_spatial, ground_truth_model
    >>> from harmonia.store import ResultStore
    >>> rec = simulate_spatial(n_images=4, n_neurons=3, grid=(5, 5), seed=0)
    >>> store = ResultStore(tempfile.mkdtemp() + "/r.sqlite")
    >>> res, cached = run_neural(ground_truth_model(0), rec, store=store, n_components=3)
    >>> run_neural(ground_truth_model(0), rec, store=store, n_components=3)[1]
    True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harmonia.neural.data import NeuralRecording
from harmonia.neural.score import LayerScore, SweepResult, score_recording
from harmonia.store import ResultStore, array_digest, cache_key

KIND = "neural"


def _model_id(model: torch.nn.Module) -> dict[str, Any]:
    fp = getattr(model, "fingerprint", None)
    return {"fingerprint": fp() if callable(fp) else None, "name": getattr(model, "name", type(model).__name__),
            "init_seed": getattr(model, "init_seed", None)}


def run_neural(
    model: torch.nn.Module,
    rec: NeuralRecording,
    store: ResultStore | None = None,
    recompute: bool = False,
    **kw: Any,
) -> tuple[SweepResult, bool]:
    """Score ``rec`` (spatial or flat) with every layer, caching in ``store``; returns (result, cached)."""
    mid = _model_id(model)
    settings = {k: v for k, v in kw.items() if k != "progress"}
    if settings.get("pca_images") is not None:  # arrays are keyed by content, not stored in the key
        settings["pca_images"] = array_digest(np.asarray(settings["pca_images"], dtype=np.float32))
    key = cache_key({"kind": KIND, "model": mid["fingerprint"], "data": rec.fingerprint_settings(), "settings": settings})
    if store is not None and not recompute:
        run = store.get_run(key)
        if run is not None and run.status == "complete" and run.aggregates:
            return _from_store(store, key, run.aggregates), True
    res = score_recording(model, rec, **kw)
    if store is not None:
        if recompute:
            store.delete_run(key)
        meta = {"model": mid["name"], "model_fingerprint": mid["fingerprint"], "init_seed": mid["init_seed"],
                "data": rec.name, "synthetic": rec.synthetic, "benchmark": res.kind, **res.settings}
        store.start_run(key, KIND, meta)
        store.add_rows(key, [{"image_id": f"{i:03d}:{l.layer}", **l.row()} for i, l in enumerate(res.layers)])
        store.finish_run(key, aggregates(res))
    return res, False


def aggregates(res: SweepResult) -> dict[str, Any]:
    """The run's summary: best layer and its raw / ceiled scores, maps alignment, ceiling."""
    b = res.best
    return {
        "kind": res.kind, "best_layer": b.layer, "score": b.score, "ceiled": b.ceiled,
        "map_spearman": b.map_spearman, "map_spearman_down": b.map_spearman_down,
        "ceiling": res.ceiling, "ceiling_kind": res.ceiling_kind, "settings": res.settings,
        "reliability": res.reliability,
    }


def _from_store(store: ResultStore, key: str, agg: dict[str, Any]) -> SweepResult:
    layers = []
    for r in store.rows(key):
        layers.append(LayerScore(r["layer"], r["score"], r["ceiled"], int(r["n_features"]),
                                 [math.nan if v is None else v for v in r["per_neuron"]],
                                 r.get("map_spearman", math.nan), r.get("map_spearman_down", math.nan)))
    ceiling = agg.get("ceiling")
    rel = agg.get("reliability")
    return SweepResult(agg["kind"], layers, math.nan if ceiling is None else ceiling, agg["ceiling_kind"], agg["settings"],
                       math.nan if rel is None else rel)


def plot_layer_profile(results: dict[str, SweepResult], path: str | Path, title: str = "") -> None:
    """Save a PNG: score (and ceiled score, maps Spearman when present) per layer, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harmonia.utils.io import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, res in results.items():
        xs = range(len(res.layers))
        ax.plot(xs, [l.score for l in res.layers], marker="o", label=f"{name} (r)")
        if res.kind == "spatial":
            ax.plot(xs, [l.map_spearman for l in res.layers], marker="s", ls="--", label=f"{name} (maps Spearman)")
        ax.set_xticks(list(xs), [l.layer for l in res.layers], rotation=45, ha="right", fontsize=7)
    any_res = next(iter(results.values()))
    if math.isfinite(any_res.ceiling):
        ax.axhline(any_res.ceiling, color="grey", ls=":", label=f"ceiling {any_res.ceiling:.3f}")
    ax.set_ylabel("median held-out Pearson r")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
