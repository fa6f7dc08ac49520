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
from typing import Any, Callable

import numpy as np
import torch

from harmonia.measurements import Measurement, run
from harmonia.neural.data import NeuralRecording
from harmonia.neural.features import default_layers
from harmonia.neural.score import LayerScore, SweepResult, score_recording, sweep_header
from harmonia.store import ResultStore, array_digest, model_key

KIND = "neural"
RUNTIME_OPTIONS = ("progress", "batch_size")  # never change a number: not in the key


class NeuralSweep(Measurement):
    """A layer sweep on a neural recording as a measurement: the items are the layers.

    All layers are scored in one call by default (one forward pass per image batch feeds
    every layer); each layer's score depends on that layer only, so any split gives the
    same rows. Options are those of :func:`harmonia.neural.score.score_recording`.

    Example:
        >>> from harmonia.neural.simulate import simulate_spatial, ground_truth_model
        >>> rec = simulate_spatial(n_images=4, n_neurons=3, grid=(5, 5), seed=0)
        >>> res = run(NeuralSweep(n_components=3), ground_truth_model(0), rec)
        >>> [r["layer"] for r in res.rows][:2], sorted(res.headline)[:2]
        (['block1', 'block2'], ['best_layer', 'ceiled'])
    """

    kind = KIND
    version = "1"
    default_batch_size = None  # all layers at once

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.layers: list[str] = list(kw["layers"]) if kw.get("layers") else []

    def check(self, model: Any, data: NeuralRecording) -> None:
        if not self.kw.get("layers"):  # the model's default sweep
            self.layers = default_layers(getattr(model, "net", model))

    def settings(self) -> dict[str, Any]:
        settings = {k: v for k, v in self.kw.items() if k not in RUNTIME_OPTIONS}
        if settings.get("pca_images") is not None:  # arrays are keyed by content, not stored in the key
            settings["pca_images"] = array_digest(np.asarray(settings["pca_images"], dtype=np.float32))
        return settings

    def data_key(self, data: NeuralRecording, store: ResultStore | None) -> Any:
        return data.fingerprint_settings()

    def items(self, data: NeuralRecording) -> list[str]:
        return [f"{i:03d}:{layer}" for i, layer in enumerate(self.layers)]  # ids sort in sweep order

    def meta(self, model: Any, data: NeuralRecording) -> dict[str, Any]:
        settings = sweep_header(data, self.layers, **self._score_kw())[2]
        return {"model": getattr(model, "name", type(model).__name__), "model_fingerprint": model_key(model),
                "init_seed": getattr(model, "init_seed", None), "data": data.name, "synthetic": data.synthetic,
                "benchmark": data.kind, **settings}

    def _score_kw(self) -> dict[str, Any]:
        return {k: v for k, v in self.kw.items() if k != "layers"}

    def prepare(self, model: Any, data: NeuralRecording, data_key: Any) -> tuple[Any, NeuralRecording]:
        return model, data

    def compute(self, ctx: tuple[Any, NeuralRecording], batch: Any) -> list[dict[str, Any]]:
        model, rec = ctx
        layers = [self.layers[i] for i in batch.index]
        res = score_recording(model, rec, layers=layers, **self._score_kw())
        return [{"item_id": item, **l.row()} for item, l in zip(batch.ids, res.layers)]

    def aggregate(self, rows: list[dict[str, Any]], data: NeuralRecording) -> dict[str, Any]:
        return aggregates(self.sweep(rows, data))

    def sweep(self, rows: list[dict[str, Any]], data: NeuralRecording, agg: dict[str, Any] | None = None) -> SweepResult:
        """The :class:`SweepResult` of a run's rows (its ceiling and settings from the run's
        aggregates ``agg`` when given, else computed from the recording)."""
        if agg is not None:
            nan_if_none = lambda v: math.nan if v is None else v  # noqa: E731 (runs migrated from a v1 store)
            ceiling, kind, settings, reliability = (nan_if_none(agg["ceiling"]), agg["ceiling_kind"], agg["settings"],
                                                    nan_if_none(agg.get("reliability")))
        else:
            ceiling, kind, settings, reliability = sweep_header(data, self.layers, **self._score_kw())
        layers = [LayerScore(r["layer"], r["score"], r["ceiled"], int(r["n_features"]), list(r["per_neuron"]),
                             r.get("map_spearman", math.nan), r.get("map_spearman_down", math.nan)) for r in rows]
        return SweepResult(data.kind, layers, ceiling, kind, settings, reliability)

    def headline(self, agg: dict[str, Any]) -> dict[str, Any]:
        return {k: agg[k] for k in ("best_layer", "score", "ceiled", "map_spearman", "ceiling")}

    def reaggregate_cached(self) -> bool:
        return False


def run_neural(
    model: torch.nn.Module,
    rec: NeuralRecording,
    store: ResultStore | None = None,
    recompute: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **kw: Any,
) -> tuple[SweepResult, bool]:
    """Score ``rec`` (spatial or flat) with every layer, caching in ``store``; returns (result, cached).

    :class:`NeuralSweep` through :func:`harmonia.measurements.run`; ``progress`` follows
    the feature extraction (images), ``kw`` are :func:`~harmonia.neural.score.score_recording`'s.
    """
    m = NeuralSweep(**kw, **({"progress": progress} if progress is not None else {}))
    res = run(m, model, rec, store=store, recompute=recompute)
    return m.sweep(res.rows, rec, res.aggregates), res.cached


def aggregates(res: SweepResult) -> dict[str, Any]:
    """The run's summary: best layer and its raw / ceiled scores, maps alignment, ceiling."""
    b = res.best
    return {
        "kind": res.kind, "best_layer": b.layer, "score": b.score, "ceiled": b.ceiled,
        "map_spearman": b.map_spearman, "map_spearman_down": b.map_spearman_down,
        "ceiling": res.ceiling, "ceiling_kind": res.ceiling_kind, "settings": res.settings,
        "reliability": res.reliability,
    }


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
