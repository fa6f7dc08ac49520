"""``harmonia neural``: how well a model's layers predict primate IT responses and maps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback
from harmonia.settings import NeuralSettings

NEURAL_HELP = """Score every layer of a model against IT recordings; print the table, save a layer profile.

DATA is a harmonia neural folder (neural.json + responses.npz + stimuli/), a .mat file in
the published spatially resolved layout (imageRF x, y, time, channel, image; UniqueNames),
the archive root with --preset george-ml / george-pl / red, or a Brain-Score public
assembly (.nc, netCDF-4: presentation x neuroid, optionally x time_bin) with its StimulusSet (CSV +
images folder or zip; --stimuli, else found next to the .nc or in brainio's sibling
folder). Spatial recordings run the maps benchmark (leave-one-image-out, per-neuron r over
positions, Spearman of neuron-averaged maps); flat ones (stimuli x neuroids) run k-fold
predictivity.

Examples:

  harmonia neural --make-sim sim-neural          # SYNTHETIC recordings in all formats

  harmonia neural -m simulated:0 -m simulated:5 --data sim-neural/spatial/sim_data.mat

  harmonia neural -m simulated:0 --data sim-neural/brainscore/assy_harmonia_Simulated/assy_harmonia_Simulated.nc --region IT --window 70,170 --pool 2 --reduce pca:50 --regression ridge --alpha cv

  harmonia neural -m timm:resnet18 --data ~/.brainio/assy_dicarlo_MajajHong2015_public/assy_dicarlo_MajajHong2015_public.nc --region IT --window 70,170 --image-size 224 --projection 4096 --reduce pca:1000

  harmonia neural -m timm:resnet18 --data arcaro/ --preset george-ml --layer layer3 --layer layer4
"""


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _make_sim(out: Path) -> None:
    from harmonia.neural.options import write_simulated_recordings

    write_simulated_recordings(out)
    console.print(f"[yellow]SYNTHETIC[/] recordings written to {out}: flat/ (true layer block2 of simulated:0, "
                  f"reliability 0.8; also as a Brain-Score assembly in brainscore/, region IT) and spatial/sim_data.mat (true layer block3, window 90-130 ms).")


@user_errors
def neural_command(
    model: list[str] = typer.Option([], "--model", "-m", help="Model name (timm:NAME, torchvision:NAME, efficientnet_lite0, simulated:SEED) or checkpoint. Repeat for several.", show_default="none (needed unless --make-sim)"),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Recording: harmonia neural folder, published-layout .mat, archive root with --preset, or Brain-Score assembly .nc.", show_default="none (needed unless --make-sim)"),
    preset: Optional[str] = typer.Option(None, help="Release preset: george-ml (130-170 ms, ch 33-63), george-pl (90-130 ms, ch 1-32), red (90-130 ms).", show_default="none"),
    window: Optional[str] = typer.Option(None, help="Time window a,b in ms: a .mat without preset or a Brain-Score .nc (its time bins inside the window are averaged).", show_default=".mat: 90,130; .nc: all bins"),
    stimuli: Optional[Path] = typer.Option(None, help="Brain-Score .nc: its StimulusSet (CSV, its folder or its zip).", show_default="found next to the .nc or in brainio's sibling folder"),
    region: Optional[str] = typer.Option(None, help="Brain-Score .nc: keep the neuroids of this region (e.g. IT).", show_default="all neuroids"),
    image_size: Optional[int] = typer.Option(None, help="Resize stimuli to SIZE x SIZE when reading (needed when their sizes differ; saves memory).", show_default="the stimuli's size"),
    layer: list[str] = typer.Option([], "--layer", "-l", help="Layers to sweep. Repeat.", show_default="the model's stages"),
    regression: str = typer.Option(NeuralSettings.regression, help="'pls' or 'ridge'."),
    components: int = typer.Option(NeuralSettings.n_components, help="PLS components."),
    alpha: str = typer.Option(f"{NeuralSettings.alpha:g}", help="Ridge penalty: a number, 'cv' (chosen per training fold by nested 5-fold CV over 1e-3..1e6) or 'cv:A,B,...' (that grid)."),
    folds: int = typer.Option(NeuralSettings.folds, help="Cross-validation folds (flat recordings)."),
    projection: Optional[int] = typer.Option(None, help="Flat recordings: fixed random projection of each layer to this many features (bounds memory).", show_default="none"),
    pool: Optional[int] = typer.Option(None, help="Flat recordings: average-pool layers to POOL x POOL before flattening.", show_default="none"),
    reduce: Optional[str] = typer.Option(None, help="Flat recordings: 'pca:N' (N principal components per layer, after --pool/--projection) or 'random:D' (= --projection D).", show_default="none"),
    pca_images: Optional[Path] = typer.Option(None, help="Folder of images to fit the PCA on (images only, never responses).", show_default="the recording's stimuli"),
    ceiling: Optional[float] = typer.Option(None, help="Override the ceiling.", show_default="computed from the recording"),
    plot: Path = typer.Option(Path("neural-profile.png"), help="Where to write the layer-profile PNG."),
    random_init: bool = typer.Option(False, "--random-init", help="Random weights for timm/torchvision names."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random weights of --random-init: the same seed gives the same weights (and a cache hit in the store)."),
    batch_size: int = typer.Option(NeuralSettings.batch_size, "--batch-size", "-b", min=1),
    device: str = typer.Option("cpu", help="Where the model runs: 'cpu', 'auto' (GPU if any), 'cuda', ... (read-outs run on the CPU in float64)."),
    store: Optional[Path] = typer.Option(None, help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
    recompute: bool = typer.Option(False, help="Ignore cached results."),
    make_sim: Optional[Path] = typer.Option(None, "--make-sim", help="Write SYNTHETIC recordings (both formats) to this folder and exit.", show_default="none"),
) -> None:
    from harmonia.models import load
    from harmonia.neural.options import check_regression, open_recording, sweep_options
    from harmonia.neural.run import plot_layer_profile, run_neural
    from harmonia.store import ResultStore
    from harmonia.utils.device import resolve_device

    if make_sim is not None:
        _make_sim(make_sim)
        return
    if data is None or not model:
        raise ValueError("need --model and --data (or --make-sim DIR)")
    from harmonia.store.sqlite import default_store_path
    from harmonia.utils.io import claim_output_file

    claim_output_file(plot, inputs=[data, store or default_store_path()], option="--plot")  # before any work
    dev = resolve_device(device)
    check_regression(regression)
    rec = open_recording(data, preset=preset, window=window, stimuli=stimuli, region=region, image_size=image_size)
    if rec.synthetic:
        console.print(f"[yellow]Note:[/] {rec.name} is SYNTHETIC ({rec.description or 'simulated data'}).")
    opts = sweep_options(rec, layers=layer, regression=regression, components=components, alpha=alpha, folds=folds,
                         projection=projection, pool=pool, reduce=reduce, pca_images=pca_images, batch_size=batch_size,
                         ceiling=ceiling)
    result_store = ResultStore(store)
    results = {}
    for name in model:
        m = load(name, pretrained=not random_init, seed=seed).to(dev)
        with progress_callback(f"{name} features") as update:
            res, cached = run_neural(m, rec, store=result_store, recompute=recompute, progress=update, **opts)
        results[name] = res
        title = f"{name} on {rec.name} ({rec.kind}, {len(rec.stimulus_ids)} stimuli, {len(rec.neuroid_ids)} neurons{', cached' if cached else ''})"
        table = Table(title=title)
        cols = ["layer", "features", "r (median)", "ceiled"] + (["maps Spearman", "maps Spearman (down)"] if rec.kind == "spatial" else [])
        for c in cols:
            table.add_column(c, justify="left" if c == "layer" else "right")
        best = res.best.layer
        for l in res.layers:
            row = [("* " if l.layer == best else "  ") + l.layer, str(l.n_features), _fmt(l.score), _fmt(l.ceiled)]
            if rec.kind == "spatial":
                row += [_fmt(l.map_spearman), _fmt(l.map_spearman_down)]
            table.add_row(*row)
        console.print(table)
        console.print(f"best layer {best}: r {_fmt(res.best.score)}, ceiled {_fmt(res.best.ceiled)}; "
                      f"ceiling {_fmt(res.ceiling)} ({res.ceiling_kind})"
                      + (f"; split-half reliability {_fmt(res.reliability)}" if math.isfinite(res.reliability) else ""))
    plot_layer_profile(results, plot, title=rec.name + (" (SYNTHETIC)" if rec.synthetic else ""))
    console.print(f"layer profile written to {plot}; results stored in {result_store.path}")


def register(app: typer.Typer) -> None:
    """Add ``harmonia neural`` to ``app``."""
    app.command("neural", help=reflow(NEURAL_HELP))(neural_command)
