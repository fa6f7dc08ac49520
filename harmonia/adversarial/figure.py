"""Figure for reports: image | human map | perturbation map | adversarial image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from harmonia.viz.overlay import normalize_map


def save_attack_figure(path: str | os.PathLike, image: torch.Tensor, human_map: torch.Tensor | None,
                       perturbation: torch.Tensor, adv: torch.Tensor | None = None, title: str = "",
                       lines: Sequence[str] = (), cmap: str = "jet") -> None:
    """Write a PNG with the image, the human map, the perturbation map (and the adversarial image).

    ``image`` / ``adv`` are 3 x H x W in [0, 1]; ``human_map`` and ``perturbation`` H x W.

    Example:
        >>> save_attack_figure("/tmp/fig.png", torch.rand(3, 8, 8), torch.rand(8, 8), torch.rand(8, 8))
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harmonia.utils.io import atomic_write

    def rgb(t: torch.Tensor):
        return t.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()

    panels = [("image", rgb(image), None)]
    if human_map is not None:
        panels.append(("human map", normalize_map(human_map), cmap))
    panels.append(("perturbation map", normalize_map(perturbation), cmap))
    if adv is not None:
        panels.append(("adversarial image", rgb(adv), None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6 + 0.22 * len(lines)))
    for ax, (name, data, cm) in zip(axes, panels):
        ax.imshow(data, cmap=cm, vmin=0 if cm else None, vmax=1 if cm else None)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    if lines:
        fig.text(0.02, 0.02, "\n".join(lines), fontsize=9, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.03 + 0.045 * len(lines), 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


class FooledFigures:
    """One folder of figures of the fooled images of adversarial-alignment runs (several models).

    :meth:`check` refuses, before any work, a folder where a figure ``LABEL-ID.png`` would
    replace an input or a file harmonia did not write; :meth:`writer` is the ``on_batch``
    callback of one model's :func:`~harmonia.adversarial.adversarial_alignment` run.

    Example:
        >>> import tempfile
        >>> figs = FooledFigures(tempfile.mkdtemp())
        >>> figs.check(["resnet18"], ["img0", "img1"])
        >>> callable(figs.writer("resnet18", "timm:resnet18", "abs_mean"))
        True
    """

    def __init__(self, folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option: str = "--figures") -> None:
        from harmonia.utils.io import OutputFolder

        self.path = Path(folder)
        self.folder = OutputFolder(self.path, inputs=inputs, option=option)

    def check(self, labels: Iterable[str], ids: Iterable[str]) -> None:
        """Check every figure the runs of ``labels`` (one per model) on images ``ids`` may write."""
        ids = list(ids)
        self.folder.check([f"{label}-{i}.png" for label in labels for i in ids])

    def writer(self, label: str, title: str, reducer: str) -> Callable[[dict[str, Any], Any, list[dict[str, Any]]], None]:
        """``on_batch(batch, attack_result, rows)``: ``LABEL-ID.png`` (image, human map, perturbation map
        by ``reducer``, adversarial image) for each fooled image; ``title`` names the model."""
        from harmonia.adversarial.maps import perturbation_map

        self.path.mkdir(parents=True, exist_ok=True)

        def on_batch(batch: dict[str, Any], res: Any, rows: list[dict[str, Any]]) -> None:
            for j, row in enumerate(rows):
                if row["status"] != "fooled":
                    continue
                pmap = perturbation_map((res.adv[j:j + 1] - batch["image"][j:j + 1].to(res.adv.device)), reducer)[0]
                stem = f"{label}-{row['image_id']}"
                self.folder.claim([f"{stem}.png"])
                save_attack_figure(self.path / f"{stem}.png", batch["image"][j], batch["map"][j], pmap,
                                   res.adv[j], title=f"{title} / {row['image_id']}",
                                   lines=[f"L2 {row['l2']:.4f}  Linf {row['linf']:.4f}  spearman {row['spearman']:.3f}"])

        return on_batch
