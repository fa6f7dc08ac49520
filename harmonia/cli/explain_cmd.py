"""``harmonia explain``: feature-importance maps and overlays for your own photos."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.main import app
from harmonia.cli.progress import progress_callback

if TYPE_CHECKING:
    from harmonia.utils.io import OutputFolder

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


def explain_outputs(paths: list[Path], out: Path) -> tuple[list[str], "OutputFolder"]:
    """Check every file explaining ``paths`` writes into ``out``; returns each image's ID and the folder.

    Raises (before any work) if an output would replace an input or a file harmonia did not write;
    each file is claimed (listed as harmonia's) just before it is written.
    """
    from harmonia.utils.io import OutputFolder, unique_stems

    stems = unique_stems(paths)
    folder = OutputFolder(out, inputs=paths)
    folder.check([*(f"{s}{ext}" for s in stems for ext in (".npy", ".png")), PREDICTIONS])
    return stems, folder


PREDICTIONS = "predictions.csv"


def explain_images(model, explainer, paths: list[Path], out: Path, target: int | None, topk: int,
                   batch_size: int, progress=None) -> list[dict]:
    """Explain each image; write maps, overlays and return one prediction record per image."""
    import torch

    from harmonia.data.images import load_photo
    from harmonia.utils.io import atomic_save_npy
    from harmonia.viz import save_overlay

    stems, folder = explain_outputs(paths, out)
    out.mkdir(parents=True, exist_ok=True)
    crop = getattr(model.preprocessing, "crop_pct", 1.0)
    names = model.class_names
    records = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        chunk_stems = stems[start : start + batch_size]
        images = torch.stack([load_photo(p, model.input_size, crop) for p in chunk]).to(model.device)
        with torch.no_grad():
            probs = model(images).softmax(1)
        top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
        targets = torch.full_like(top_i[:, 0], target) if target is not None else top_i[:, 0]
        maps = explainer(model, images, targets)
        for j, (p, stem) in enumerate(zip(chunk, chunk_stems)):
            labels = [names[i] if names else str(int(i)) for i in top_i[j]]
            lines = [f"{100 * float(pp):5.1f}%  {lab}" for pp, lab in zip(top_p[j], labels)]
            tname = names[int(targets[j])] if names else str(int(targets[j]))
            folder.claim([f"{stem}.npy", f"{stem}.png"])
            atomic_save_npy(out / f"{stem}.npy", maps[j].cpu().numpy())
            save_overlay(out / f"{stem}.png", images[j], maps[j], title=f"{p.name}: {explainer.short_name} map of '{tname}'",
                         lines=lines, signed=explainer.signed)
            records.append({"image": p.name, "map": f"{stem}.npy", "figure": f"{stem}.png", "top1": labels[0],
                            "top1_prob": float(top_p[j, 0]), "explained_class": tname, "top5": "; ".join(labels)})
        if progress:
            progress(min(start + batch_size, len(paths)), len(paths))
    return records


@app.command("explain", help=reflow(EXPLAIN_HELP))
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
    from harmonia.data.images import list_images
    from harmonia.models import load
    from harmonia.utils.device import resolve_device
    from harmonia.utils.io import atomic_write_text

    exp = parse_explainer_spec(explainer)
    dev = resolve_device(device)
    paths = list_images(images)
    explain_outputs(paths, out)  # refuse a bad --out before loading anything
    m = load(model, pretrained=not random_init, arch=arch, allow_pickle=allow_pickle, seed=seed).to(dev).eval()
    if target is not None and m.num_classes is not None and not 0 <= target < m.num_classes:
        raise ValueError(f"--target {target} outside 0..{m.num_classes - 1}")
    with progress_callback(f"explaining {len(paths)} images") as update:
        records = explain_images(m, exp, paths, out, target, topk, batch_size, update)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    explain_outputs(paths, out)[1].claim([PREDICTIONS])
    atomic_write_text(out / PREDICTIONS, buf.getvalue())
    table = Table(title=f"{model} on {images}")
    for col in ("image", "top-1", "p"):
        table.add_column(col)
    for r in records:
        table.add_row(r["image"], r["top1"], f"{100 * r['top1_prob']:.1f}%")
    console.print(table)
    console.print(f"maps, overlays and predictions.csv written to {out}")
