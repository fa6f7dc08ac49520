"""Explaining a folder of photos: maps (``ID.npy``), overlays (``ID.png``) and ``predictions.csv``.

What ``harmonia explain`` does, callable without the command line (e.g. from a worker):
:func:`check_photo_outputs` refuses a bad output folder before any work,
:func:`explain_images` writes one map and one overlay per photo, :func:`explain_folder` does
both and writes the predictions table.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> from harmonia.attribution import Saliency
    >>> from harmonia.models import load
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> (tmp / "in").mkdir()
    >>> Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(tmp / "in" / "grey.png")
    >>> model = load("small_cnn", pretrained=False, num_classes=3, seed=0)
    >>> records = explain_folder(model, Saliency(), tmp / "in", tmp / "out", topk=2)
    >>> records[0]["map"], sorted(p.name for p in (tmp / "out").iterdir() if not p.name.startswith("."))
    ('grey.npy', ['grey.npy', 'grey.png', 'predictions.csv'])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from harmonia.attribution.base import Explainer
    from harmonia.models import HarmoniaModel
    from harmonia.utils.io import OutputFolder

PREDICTIONS = "predictions.csv"


def check_photo_outputs(paths: list[Path], out: str | os.PathLike) -> tuple[list[str], OutputFolder]:
    """Check every file explaining ``paths`` writes into ``out``; returns each image's ID and the folder.

    Raises (before any work) if an output would replace an input or a file harmonia did not write;
    each file is claimed (listed as harmonia's) just before it is written. An image's ID is its
    file name without the extension, unless two images share it (``coffee_png``, ``coffee_jpg``).
    """
    from harmonia.utils.io import OutputFolder, unique_stems

    stems = unique_stems(paths)
    folder = OutputFolder(Path(out), inputs=paths)
    folder.check([*(f"{s}{ext}" for s in stems for ext in (".npy", ".png")), PREDICTIONS])
    return stems, folder


def explain_images(model: HarmoniaModel, explainer: Explainer, paths: list[Path], out: str | os.PathLike,
                   target: int | None = None, topk: int = 5, batch_size: int = 8,
                   progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Explain each photo (resized and centre-cropped to the model's input); write its map and
    overlay into ``out``; return one prediction record per photo.

    The explained class is ``target`` when given, else each photo's top-1 class.
    """
    import torch

    from harmonia.data.images import load_photo
    from harmonia.utils.io import atomic_save_npy
    from harmonia.viz import save_overlay

    out = Path(out)
    stems, folder = check_photo_outputs(paths, out)
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


def write_predictions(records: list[dict[str, Any]], paths: list[Path], out: str | os.PathLike) -> Path:
    """``out/predictions.csv``: one row per record (atomically, claimed as harmonia's); returns its path."""
    from harmonia.utils.io import atomic_write_text, records_csv

    check_photo_outputs(paths, out)[1].claim([PREDICTIONS])
    path = Path(out) / PREDICTIONS
    atomic_write_text(path, records_csv(records))
    return path


def explain_folder(model: HarmoniaModel, explainer: Explainer, images: str | os.PathLike, out: str | os.PathLike, *,
                   target: int | None = None, topk: int = 5, batch_size: int = 8,
                   progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Explain every photo of ``images`` (a folder or one file) into ``out``: maps, overlays and
    ``predictions.csv``; returns the prediction records (see the module docstring)."""
    from harmonia.data.images import list_images

    paths = list_images(images)
    check_photo_outputs(paths, out)
    if target is not None and model.num_classes is not None and not 0 <= target < model.num_classes:
        raise ValueError(f"--target {target} outside 0..{model.num_classes - 1}")
    records = explain_images(model, explainer, paths, out, target, topk, batch_size, progress)
    write_predictions(records, paths, out)
    return records
