"""``harmonia neural`` as a library call: :func:`score_neural_models` sweeps every layer of several models.

The options are checked and the recording is read before a model is loaded; each model is
one :func:`harmonia.neural.run.run_neural` run in the results store, shown as one table per
model, and the layer profiles of all models go to one PNG. What is shown goes through a
:class:`harmonia.utils.ui.UI` (silent by default).

Example:
    >>> score_neural_models(["simulated:0"], "sim-neural/spatial/sim_data.mat")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from harmonia.settings import NeuralSettings
from harmonia.utils.ui import UI, fmt_number


@dataclass
class NeuralModels:
    """What :func:`score_neural_models` ran: per model (as named) its sweep and whether it was cached."""

    recording: Any  # harmonia.neural.NeuralRecording
    results: dict[str, Any]  # name -> harmonia.neural.score.SweepResult
    cached: dict[str, bool]
    plot: Optional[Path]
    store: Path


def score_neural_models(
    models: Sequence[str],
    data: str | os.PathLike,
    *,
    preset: Optional[str] = None,
    window: Optional[str] = None,
    stimuli: str | os.PathLike | None = None,
    region: Optional[str] = None,
    image_size: Optional[int] = None,
    layers: Sequence[str] = (),
    regression: str = NeuralSettings.regression,
    components: int = NeuralSettings.n_components,
    alpha: str = f"{NeuralSettings.alpha:g}",
    folds: int = NeuralSettings.folds,
    projection: Optional[int] = None,
    pool: Optional[int] = None,
    reduce: Optional[str] = None,
    pca_images: str | os.PathLike | None = None,
    ceiling: Optional[float] = None,
    plot: str | os.PathLike | None = None,
    random_init: bool = False,
    seed: int = 0,
    batch_size: int = NeuralSettings.batch_size,
    device: str = "cpu",
    store: str | os.PathLike | None = None,
    recompute: bool = False,
    ui: UI = UI(),
) -> NeuralModels:
    """Score every layer of every model against a recording; write their layer profiles to ``plot``.

    ``data`` and the reading options (``preset``, ``window``, ``stimuli``, ``region``,
    ``image_size``) go to :func:`harmonia.neural.options.open_recording`, the read-out options
    (``layers``, ``regression``, ``components``, ``alpha`` as text, ``reduce``, ...) to
    :func:`harmonia.neural.options.sweep_options`; ``plot``: the PNG (None: none written; an
    existing file harmonia did not write is refused before any work). Logs a note for
    SYNTHETIC recordings, then one table per model and its best layer.

    Example:
        >>> res = score_neural_models(["simulated:0"], "sim-neural/flat", regression="ridge")  # doctest: +SKIP
        >>> res.results["simulated:0"].best.layer  # doctest: +SKIP
        'block2'
    """
    from harmonia.models import load
    from harmonia.neural.options import check_regression, open_recording, sweep_options
    from harmonia.neural.run import plot_layer_profile, run_neural
    from harmonia.store import ResultStore
    from harmonia.store.sqlite import default_store_path
    from harmonia.utils.device import resolve_device
    from harmonia.utils.io import OutputFolder

    dev = resolve_device(device)  # first: a bad device must not leave an output claimed
    if plot is not None:  # checked before any work, listed as harmonia's only when written
        plot_out = OutputFolder(Path(plot).parent, inputs=[data, store or default_store_path()], option="--plot")
        plot_out.check([Path(plot).name])
    check_regression(regression)
    rec = open_recording(data, preset=preset, window=window, stimuli=stimuli, region=region, image_size=image_size)
    if rec.synthetic:
        ui.log(f"[yellow]Note:[/] {rec.name} is SYNTHETIC ({rec.description or 'simulated data'}).")
    opts = sweep_options(rec, layers=list(layers), regression=regression, components=components, alpha=alpha,
                         folds=folds, projection=projection, pool=pool, reduce=reduce, pca_images=pca_images,
                         batch_size=batch_size, ceiling=ceiling)
    result_store = ResultStore(store)
    results, cached = {}, {}
    spatial = rec.kind == "spatial"
    cols = ["layer", "features", "r (median)", "ceiled"] + (["maps Spearman", "maps Spearman (down)"] if spatial else [])
    for name in models:
        m = load(name, pretrained=not random_init, seed=seed).to(dev)
        with ui.progress(f"{name} features") as update:
            res, cached[name] = run_neural(m, rec, store=result_store, recompute=recompute, progress=update, **opts)
        results[name] = res
        best = res.best.layer
        rows = []
        for layer in res.layers:
            row = [("* " if layer.layer == best else "  ") + layer.layer, str(layer.n_features), fmt_number(layer.score),
                   fmt_number(layer.ceiled)]
            rows.append(row + ([fmt_number(layer.map_spearman), fmt_number(layer.map_spearman_down)] if spatial else []))
        ui.table(f"{name} on {rec.name} ({rec.kind}, {len(rec.stimulus_ids)} stimuli, {len(rec.neuroid_ids)} neurons"
                 f"{', cached' if cached[name] else ''})", cols, rows,
                 justify=["left" if c == "layer" else "right" for c in cols])
        ui.log(f"best layer {best}: r {fmt_number(res.best.score)}, ceiled {fmt_number(res.best.ceiled)}; "
               f"ceiling {fmt_number(res.ceiling)} ({res.ceiling_kind})"
               + (f"; split-half reliability {fmt_number(res.reliability)}" if math.isfinite(res.reliability) else ""))
    if plot is not None:
        plot_out.claim([Path(plot).name])
        plot_layer_profile(results, plot, title=rec.name + (" (SYNTHETIC)" if rec.synthetic else ""))
        ui.log(f"layer profile written to {plot}; results stored in {result_store.path}")
    else:
        ui.log(f"results stored in {result_store.path}")
    return NeuralModels(rec, results, cached, Path(plot) if plot is not None else None, Path(result_store.path))
