"""``harmonia explain``: feature-importance maps and overlays for your own photos."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback

EXPLAIN_HELP = """Explain a model's decisions on your own photos.

For each image in --images (a folder or one file): resize and centre-crop to the model's
input size, compute the feature-importance map of the top-1 class (or --target), and
write to --out: ID.npy (the map, float32 H x W), ID.png (image | map | overlay with the
top-5 predictions) and predictions.csv (one row per image, with the names of its two files).

ID is the image's file name without its extension; when two images share a name
(coffee.png, coffee.jpg) the extension is kept: coffee_png, coffee_jpg. Nothing is ever
written over an input or over a file harmonia did not write (the folder's
.harmonia-outputs lists what it wrote, so a re-run replaces its own files): such an --out
is refused before any work starts.

Example:

  harmonia explain --model efficientnet_lite0 --images my_photos/ --out maps/
"""


_OLD_NAMES = {"explain_images": "explain_images", "explain_outputs": "check_photo_outputs", "PREDICTIONS": "PREDICTIONS"}


def __getattr__(name: str) -> object:
    """The old names of what moved to :mod:`harmonia.attribution.photos` (imported on first use:
    `harmonia --help` does not wait for torch)."""
    if name in _OLD_NAMES:
        from harmonia.attribution import photos

        return getattr(photos, _OLD_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@user_errors
def explain_command(
    model: str = typer.Option(..., "--model", "-m", help="Model name or checkpoint path (see `harmonia models`)."),
    images: Path = typer.Option(..., "--images", "-i", help="Folder of images, or one image file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for maps, overlays and predictions.csv."),
    explainer: str = typer.Option("saliency", "--explainer", "-e", help="Explainer spec, e.g. 'saliency', 'gradcam', 'smoothgrad:n_samples=32'."),
    target: Optional[int] = typer.Option(None, help="Explain this class index instead of the top-1 prediction.", show_default="the top-1 class"),
    topk: int = typer.Option(5, min=1, help="Predictions listed per image."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", help="'auto', 'cpu', 'cuda', ..."),
    arch: Optional[str] = typer.Option(None, help="Architecture of a plain state-dict checkpoint, e.g. 'timm:resnet18'.", show_default="none"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow checkpoints holding pickled objects (runs code from the file: only for files you trust)."),
    random_init: bool = typer.Option(False, "--random-init", help="Do not load pretrained weights."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random weights of --random-init: the same seed gives the same weights (and a cache hit in the store)."),
) -> None:
    from harmonia.attribution import parse_explainer_spec
    from harmonia.attribution.photos import check_photo_outputs, explain_folder
    from harmonia.data.images import list_images
    from harmonia.models import load
    from harmonia.utils.device import resolve_device

    exp = parse_explainer_spec(explainer)
    dev = resolve_device(device)
    paths = list_images(images)
    check_photo_outputs(paths, out)  # refuse a bad --out before loading anything
    m = load(model, pretrained=not random_init, arch=arch, allow_pickle=allow_pickle, seed=seed).to(dev).eval()
    with progress_callback(f"explaining {len(paths)} images") as update:
        records = explain_folder(m, exp, images, out, target=target, topk=topk, batch_size=batch_size, progress=update)
    table = Table(title=f"{model} on {images}")
    for col in ("image", "top-1", "p"):
        table.add_column(col)
    for r in records:
        table.add_row(r["image"], r["top1"], f"{100 * r['top1_prob']:.1f}%")
    console.print(table)
    console.print(f"maps, overlays and predictions.csv written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``harmonia explain`` to ``app``."""
    app.command("explain", help=reflow(EXPLAIN_HELP))(explain_command)
