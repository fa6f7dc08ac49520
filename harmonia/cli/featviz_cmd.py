"""``harmonia featviz``: feature visualizations (MACO, Fourier, accentuation), layers, spectra."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, List, Optional

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback

FEATVIZ_HELP = """Feature visualizations: what a class, a channel, a neuron, a layer or a direction of a network responds to.

Optimises one image per --objective, all of them together in one batch, with MACO (only the phase of the image's spectrum is optimised; its magnitude stays that of natural photos, the spectrum shipped with harmonia or --spectrum FILE), the Lucid-style Fourier baseline (--method fourier), or feature accentuation of a photo (--method accentuation --image PHOTO). Writes to --out, per objective: NN_NAME.png (the visualization), NN_NAME_rgba.png (its transparency, where the objective is driven, as alpha), NN_NAME_transparency.npy; and grid.png, result.json (settings, per-step objective values), with --report report.html. The run is recorded in the results store (`harmonia results list`); the same run again is a cache hit, and an interrupted one resumes from its last checkpoint (every 25 steps, in --out).

Objectives (layer names are the model's own module names: `harmonia featviz layers MODEL`): class:967 or class:espresso; channel:LAYER:C; neuron:LAYER:C[,y=Y,x=X]; layer:LAYER; direction:LAYER,file=V.npy; combined with ' + ', ' - ' and 'W*' (spaces around + and -).

--transfer MODEL (repeatable) classifies each class visualization with other models and prints the rank of its class (transferability).

Examples:

  harmonia featviz --model efficientnet_lite0 --objective class:967 --out viz/

  harmonia featviz -m efficientnet_lite0 -o class:967 -o class:1 -o 'channel:blocks.5:12' --out viz/ --report --transfer efficientnet_lite1 --transfer efficientnet_lite2

  harmonia featviz layers efficientnet_lite0

  harmonia featviz spectrum --images my_photos/ --out spectrum.npy
"""

featviz_app = typer.Typer(help=reflow(FEATVIZ_HELP), invoke_without_command=True)


def register(app: typer.Typer) -> None:
    """Add the ``harmonia featviz`` group (the visualization itself, ``layers``, ``spectrum``) to ``app``."""
    app.add_typer(featviz_app, name="featviz")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:60] or "objective"


def _class_targets(objectives: list, model: Any) -> list[int | None]:
    """The class of each objective that is a single class term (else None)."""
    out: list[int | None] = []
    for o in objectives:
        terms = o.bind(model).terms
        out.append(int(terms[0][1].channel) if len(terms) == 1 and terms[0][1].kind == "class" and terms[0][0] > 0 else None)
    return out


def write_outputs(out: Path, result: Any, model_name: str, class_names: list[str] | None,
                  transfer: dict | None, report: bool) -> list[dict]:
    """Images, RGBA renderings, transparency arrays, grid, result.json (and report.html); one row per objective."""
    import numpy as np

    from harmonia.featviz.render import grid, png_bytes, rgba, save_png, to_uint8
    from harmonia.utils.io import atomic_save_npy, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(result.objectives):
        stem = f"{i:02d}_{_slug(spec)}"
        save_png(out / f"{stem}.png", to_uint8(result.images[i]))
        save_png(out / f"{stem}_rgba.png", rgba(result.images[i], result.transparency[i]))
        atomic_save_npy(out / f"{stem}_transparency.npy", result.transparency[i].numpy().astype(np.float32))
        row = {"image_id": f"{i:02d}", "objective": spec, "final_value": float(result.trace[-1, i]),
               "start_value": float(result.trace[0, i]), "image": f"{stem}.png", "rgba": f"{stem}_rgba.png",
               "transparency": f"{stem}_transparency.npy"}
        if transfer is not None and transfer["targets"][i] is not None:
            row.update({f"rank_{m}": r[i] for m, r in transfer["ranks"].items()})
        rows.append(row)
    titles = [f"{i:02d} {s}" for i, s in enumerate(result.objectives)]
    grid_png = grid(result.images, result.transparency, titles)
    save_png(out / "grid.png", grid_png)
    data = {"model": model_name, "objectives": result.objectives, "settings": result.settings,
            "seconds": result.seconds, "final_values": result.final_values, "trace": result.trace.tolist(),
            "transfer": transfer}
    atomic_write_text(out / "result.json", json.dumps(data, indent=1))
    if report:
        from harmonia.report.html import img_tag, render_page, table, write_html

        header = ["#", "objective", "start", "final", *(f"rank in {m}" for m in (transfer or {}).get("ranks", {}))]
        body = [[r["image_id"], r["objective"], f"{r['start_value']:.3f}", f"{r['final_value']:.3f}",
                 *(r.get(f"rank_{m}", "") for m in (transfer or {}).get("ranks", {}))] for r in rows]
        s = result.settings
        sections = [f"<h1>Feature visualizations of {model_name}</h1>",
                    f"<p>{s['method']}: {s['steps']} steps, {s['image_size'][0]} x {s['image_size'][1]} px, "
                    f"{s['augmentation']['crops']} crops per step, {result.seconds:.0f} s. Top row: the visualizations; "
                    "bottom row: the same weighted by their transparency (accumulated |gradient| of the objective; "
                    "opaque where the objective is driven). Ranks: 0 = that model's top-1.</p>",
                    img_tag(png_bytes(grid_png), "visualizations"), table(header, body),
                    "<pre>" + json.dumps(s, indent=1) + "</pre>"]
        write_html(out / "report.html", render_page(f"featviz {model_name}", sections))
    return rows


@featviz_app.callback()
@user_errors
def featviz_command(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or checkpoint path (see `harmonia models`)."),
    objective: Optional[List[str]] = typer.Option(None, "--objective", "-o", help="Objective spec; repeat for several (one image each, optimised together)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder."),
    method: str = typer.Option("maco", help="maco | fourier | accentuation."),
    steps: int = typer.Option(256, min=1, help="Optimisation steps."),
    image_size: int = typer.Option(256, "--image-size", min=8, help="Side of the visualization in pixels."),
    crops: int = typer.Option(6, min=1, help="Augmented crops per image and step."),
    crop_scale: str = typer.Option("0.5,1.0", help="Crop side range as a fraction of the image side, 'LOW,HIGH'."),
    resample: str = typer.Option("bicubic", help="How crops are resized to the model's input: bicubic | bilinear "
                                 "(roi_align, adaptive sampling) | box (2 x 2 samples) | horama (2x, then bicubic antialiased)."),
    augmentation: str = typer.Option("crops", help="crops (random crops + noise, every method) | lucid (the transforms "
                                     "published with the Fourier baseline: pad, jitter, scale, rotate)."),
    seed: int = typer.Option(0, help="Seed of objective 0 (objective k uses seed + k)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate.", show_default="NAdam 1.0 maco, Adam 0.05 fourier, NAdam 0.1 accentuation"),
    spectrum: Optional[Path] = typer.Option(None, help="Magnitude spectrum .npy.", show_default="the one shipped with harmonia"),
    image: Optional[Path] = typer.Option(None, help="Seed photo for --method accentuation."),
    closeness: float = typer.Option(1.0, help="Accentuation: weight of mean((x - photo)^2)."),
    transfer: Optional[List[str]] = typer.Option(None, "--transfer", "-t", help="Other model(s) that classify each class visualization."),
    report: bool = typer.Option(False, "--report", help="Also write report.html."),
    device: str = typer.Option("auto", help="'auto', 'cpu', 'cuda', ..."),
    random_init: bool = typer.Option(False, "--random-init", help="Do not load pretrained weights."),
    store: Optional[Path] = typer.Option(None, help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
    recompute: bool = typer.Option(False, help="Ignore a cached run and optimise again."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if not model or not objective or out is None:
        missing = [n for n, v in (("--model", model), ("--objective", objective), ("--out", out)) if not v]
        raise ValueError(f"missing {', '.join(missing)} (see `harmonia featviz --help`)")
    import torch

    from harmonia.featviz import parse_objectives, visualize
    from harmonia.featviz.scores import transferability
    from harmonia.models import load
    from harmonia.store import ResultStore, cache_key, file_digest
    from harmonia.utils.device import resolve_device

    try:
        scale = tuple(float(v) for v in crop_scale.split(","))
    except ValueError:
        raise ValueError(f"--crop-scale {crop_scale!r}: expected 'LOW,HIGH', e.g. 0.5,1.0") from None
    if len(scale) != 2:
        raise ValueError(f"--crop-scale {crop_scale!r}: expected two numbers 'LOW,HIGH'")
    if method == "accentuation" and image is None:
        raise ValueError("--method accentuation needs --image PHOTO")
    objs = parse_objectives(objective)  # malformed specs fail before the model loads
    dev = resolve_device(device)
    torch.manual_seed(seed)  # a --random-init model is then the same model each time (and its run a cache hit)
    m = load(model, pretrained=not random_init).to(dev).eval()
    objs = [o.bind(m) for o in objs]  # unknown layers / classes fail before optimising
    seed_images = None
    if image is not None:
        from harmonia.data.images import load_photo

        seed_images = load_photo(image, (image_size, image_size))
    settings = {"method": method, "steps": steps, "image_size": image_size, "crops": crops, "crop_scale": list(scale),
                "resample": resample, "augmentation": augmentation, "seed": seed, "lr": lr, "closeness": closeness if method == "accentuation" else None}
    key = cache_key({"kind": "featviz", "model": m.fingerprint(), "objectives": [o.spec() for o in objs],
                     "settings": settings, "spectrum": file_digest(spectrum) if spectrum else "default",
                     "image": file_digest(image) if image else None, "transfer": sorted(transfer or [])})
    result_store = ResultStore(store)
    cached = result_store.get_run(key)
    if cached is not None and cached.status == "complete" and not recompute and (out / "result.json").is_file():
        console.print(f"cached: this run is already in {result_store.path} and {out} (--recompute to run again)")
        _print_rows(result_store.rows(key))
        return
    out.mkdir(parents=True, exist_ok=True)
    with progress_callback(f"{method}: {len(objs)} objective(s) x {steps} steps") as update:
        result = visualize(m, objs, method=method, steps=steps, image_size=image_size, crops=crops, crop_scale=scale,
                           resample=resample, augmentation=augmentation, seed=seed, lr=lr, spectrum=str(spectrum) if spectrum else None, seed_images=seed_images,
                           closeness=closeness, progress=update,
                           checkpoint=out / f".featviz-{key[:16]}.ckpt")  # an interrupted run resumes from it
    ranks = None
    if transfer:
        targets = _class_targets(objs, m)
        idx = [i for i, t in enumerate(targets) if t is not None]
        if not idx:
            raise ValueError("--transfer needs at least one class objective (class:C)")
        others = {name: load(name, pretrained=not random_init).to(dev).eval() for name in transfer}
        t = transferability(result.images[idx], [targets[i] for i in idx], others)
        full = {name: [None] * len(objs) for name in others}
        for name, r in t["ranks"].items():
            for j, i in enumerate(idx):
                full[name][i] = r[j]
        ranks = {"targets": targets, "ranks": full, "topk_all": t["topk_all"], "k": t["k"]}
    rows = write_outputs(out, result, model, m.class_names, ranks, report)
    result_store.delete_run(key)
    result_store.start_run(key, "featviz", {"model": model, "objectives": result.objectives, "out": str(out.resolve()),
                                            **result.settings})
    result_store.add_rows(key, rows)
    aggregates: dict[str, Any] = {"final_value_mean": float(torch.tensor(result.final_values).mean()),
                                  "seconds": result.seconds}
    if ranks:
        aggregates["transfer_top5_all"] = ranks["topk_all"]
    result_store.finish_run(key, aggregates)
    _print_rows(rows)
    console.print(f"written to {out} (grid.png{', report.html' if report else ''}); run recorded in {result_store.path}")


def _print_rows(rows: list[dict]) -> None:
    from rich.table import Table

    ranks = sorted({k for r in rows for k in r if k.startswith("rank_")})
    t = Table(title="feature visualizations")
    for col in ("#", "objective", "start", "final", *(f"rank in {k[5:]}" for k in ranks), "image"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["image_id"], r["objective"], f"{r['start_value']:.3f}", f"{r['final_value']:.3f}",
                  *(str(r.get(k, "")) for k in ranks), r["image"])
    console.print(t)
    if ranks:
        console.print("rank: the class's rank in that model's prediction (0 = top-1)")


@featviz_app.command("layers", help=reflow("""List a model's layers by the names the objectives take (its own module names), with each layer's output shape on one image.

Example:

  harmonia featviz layers efficientnet_lite0

  harmonia featviz layers efficientnet_lite0 --filter blocks.5
"""))
@user_errors
def layers_command(
    model: str = typer.Argument(..., help="Model name or checkpoint path."),
    filter: Optional[str] = typer.Option(None, "--filter", help="Only names containing this.", show_default="all layers"),
    random_init: bool = typer.Option(False, "--random-init", help="Do not load pretrained weights."),
) -> None:
    import torch
    from rich.table import Table

    from harmonia.models import load
    from harmonia.models.layers import list_layers

    m = load(model, pretrained=not random_init).eval()
    layers = list(list_layers(m))
    shapes: dict[str, str] = {}
    def record(name: str):
        def hook(_m: Any, _i: Any, o: Any) -> None:  # returns None: the output is left alone
            shapes.setdefault(name, "x".join(map(str, o.shape[1:])) if isinstance(o, torch.Tensor) else type(o).__name__)

        return hook

    handles = [mod.register_forward_hook(record(name)) for name, mod in layers]
    try:
        with torch.no_grad():
            m(torch.zeros(1, 3, *m.input_size))
    finally:
        for h in handles:
            h.remove()
    t = Table(title=f"layers of {model} (input {m.input_size[0]} x {m.input_size[1]})")
    for col in ("name", "type", "output (C x H x W or T x C)"):
        t.add_column(col, overflow="fold")
    shown = [(n, mod) for n, mod in layers if not filter or filter in n]
    if not shown:
        raise LookupError(f"no layer name contains {filter!r}")
    for name, mod in shown:
        t.add_row(name, type(mod).__name__, shapes.get(name, "not called"))
    console.print(t)
    console.print("objectives: channel:NAME:C, neuron:NAME:C, layer:NAME, direction:NAME,file=V.npy")


@featviz_app.command("spectrum", help=reflow("""Compute a magnitude spectrum for MACO from a folder of photos.

The mean |rfft2| of the photos in MACO's decorrelated colour space, each photo's centre square (and --crops - 1 random squares) resized to --size x --size: a float32 array 3 x SIZE x (SIZE//2+1), the layout of the MACO releases. Pass it to `harmonia featviz --spectrum FILE`.

Example:

  harmonia featviz spectrum --images my_photos/ --out spectrum.npy
"""))
@user_errors
def spectrum_command(
    images: Path = typer.Option(..., "--images", "-i", help="Folder of images (or one image)."),
    out: Path = typer.Option(..., "--out", help="Output .npy file."),
    size: int = typer.Option(512, min=2, help="Side of the square the photos are resized to."),
    crops: int = typer.Option(1, min=1, help="Squares per photo (the centre one plus random ones)."),
    seed: int = typer.Option(0, help="Seed of the random squares."),
) -> None:
    from harmonia.data.images import list_images
    from harmonia.featviz.spectrum import compute_spectrum, save_spectrum

    paths = list_images(images)
    with progress_callback(f"spectrum of {len(paths)} images") as update:
        spec = compute_spectrum(paths, size=size, crops_per_image=crops, seed=seed, progress=update)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_spectrum(out, spec)
    console.print(f"spectrum {tuple(spec.shape)} of {len(paths)} images written to {out}")
