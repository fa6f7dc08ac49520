"""SVRT baselines: a timm ResNet (random init) with optional spatial or feature-based attention,
sample-efficiency curves (test accuracy vs training samples) and the problem taxonomy.

Vaishnav et al. (Neural Computation 2022) explain SVRT difficulty by relation type: ResNets
need far more samples for same-different (SD) problems than for spatial-relation (SR) ones,
and attention helps most on the hardest. The attention modules here are the two standard
kinds, inserted after every ResNet stage: *spatial* (a map over positions from the channel
mean and max, 7 x 7 conv, sigmoid) and *feature-based* (a gate per channel from the pooled
features, squeeze-and-excitation style). The SD / SR split used to colour the taxonomy is
Kim, Ricci & Serre (Interface Focus 2018), the one Vaishnav et al. build on.

Each (problem, model, training size) cell is cached in the results store, so a curve
resumes where it stopped and a finished one is read back.

Example:
    >>> import torch
    >>> net = SVRT_MODELS.from_spec("resnet:attention=spatial,width=8")
    >>> net(torch.zeros(2, 1, 128, 128)).shape
    torch.Size([2])
"""

from __future__ import annotations

import io
import math
import time
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.challenges.svrt import SVRT
from harmonia.registry import Registry

SVRT_MODELS: Registry[nn.Module] = Registry("svrt model")
# Kim, Ricci & Serre 2018: which relation a problem's rule is about
SAME_DIFFERENT = (1, 5, 6, 7, 13, 16, 17, 19, 20, 21, 22)
SPATIAL = (2, 3, 4, 8, 9, 10, 11, 12, 14, 15, 18, 23)
TEST_OFFSET = 1_000_000  # test samples are indices >= this: never a training index
CELL_KIND = "svrt-cell"


def relation_type(problem: int) -> str:
    """'SD' (same-different) or 'SR' (spatial relation) for an SVRT problem.

    Example:
        >>> relation_type(1), relation_type(4)
        ('SD', 'SR')
    """
    return "SD" if int(problem) in SAME_DIFFERENT else "SR"


class SpatialAttention(nn.Module):
    """Reweight positions: sigmoid(conv7x7([mean_c(x), max_c(x)])) * x."""

    def __init__(self, channels: int, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(pooled))


class FeatureAttention(nn.Module):
    """Reweight channels: sigmoid(MLP(avgpool(x))) * x (feature-based attention)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(x.mean((2, 3))))[:, :, None, None]


ATTENTION = {"none": None, "spatial": SpatialAttention, "feature": FeatureAttention}


class SVRTNet(nn.Module):
    """Grayscale 128 x 128 ink-on-white images (1 = ink) -> one logit per image."""

    def __init__(self, net: nn.Module, spec: dict[str, Any], downsample: int = 1) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.downsample = int(downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample > 1:  # area-average: keeps thin outlines as grey lines
            x = F.avg_pool2d(x, self.downsample)
        return self.net(x).squeeze(1)


@SVRT_MODELS.register("resnet")
def svrt_resnet(arch: str = "resnet18", attention: str = "none", width: int = 64, downsample: int = 1) -> SVRTNet:
    """A timm ResNet, random init, one input channel, one logit; ``width`` scales every stage
    (64 is the standard ResNet); ``attention`` none / spatial / feature after each stage."""
    import timm

    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
    if width < 4 or downsample < 1:
        raise ValueError(f"width must be >= 4 and downsample >= 1, got {width}, {downsample}")
    net = timm.create_model(arch, pretrained=False, num_classes=1, in_chans=1,
                            channels=tuple(width * 2**i for i in range(4)), stem_width=width)
    module = ATTENTION[attention]
    if module is not None:
        stages = [info for info in net.feature_info if info["module"].startswith("layer")]
        for info in stages:
            name = info["module"]
            setattr(net, name, nn.Sequential(getattr(net, name), module(info["num_chs"])))
    spec = {"arch": arch, "attention": attention, "width": width, "downsample": downsample}
    return SVRTNet(net, spec, downsample)


@SVRT_MODELS.register("resnet_sa")
def svrt_resnet_sa(arch: str = "resnet18", width: int = 64, downsample: int = 1) -> SVRTNet:
    """The ResNet with spatial attention after each stage."""
    return svrt_resnet(arch, "spatial", width, downsample)


@SVRT_MODELS.register("resnet_fba")
def svrt_resnet_fba(arch: str = "resnet18", width: int = 64, downsample: int = 1) -> SVRTNet:
    """The ResNet with feature-based (channel) attention after each stage."""
    return svrt_resnet(arch, "feature", width, downsample)


def _draw(problem: int, indices: range, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = SVRT(seed=seed, problem=problem, length=TEST_OFFSET * 2)
    images = np.empty((len(indices), 128, 128), dtype=np.uint8)
    labels = np.empty(len(indices), dtype=np.int64)
    for k, i in enumerate(indices):
        s = gen[i]
        images[k], labels[k] = s["image"], s["label"]
    return images, labels


@lru_cache(maxsize=6)
def svrt_arrays(problem: int, indices: range, seed: int = 0, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n x 128 x 128 uint8 images, n labels) for the given sample indices of one problem, drawn
    by ``workers`` processes (0: this one). Cached: the cells of a curve share their data; do not
    modify the arrays. Samples depend on (seed, index) only, so any split of the work gives the
    same arrays."""
    if workers <= 1 or len(indices) < 256:
        return _draw(problem, indices, seed)
    from concurrent.futures import ProcessPoolExecutor

    bounds = np.linspace(0, len(indices), workers * 4 + 1).astype(int)
    parts = [indices[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(_draw, [problem] * len(parts), parts, [seed] * len(parts)))
    return np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])


def _to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(1.0 - images.astype(np.float32) / 255.0)[:, None]


def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device, batch: int = 128) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(labels), batch):
            logits = model(_to_input(images[s:s + batch]).to(device)).cpu()
            correct += int(((logits > 0).long() == torch.from_numpy(labels[s:s + batch])).sum())
    return correct / len(labels)


def train_cell(problem: int, model_spec: str, n_train: int, n_test: int = 400, epochs: int = 10,
               batch_size: int = 32, lr: float = 1e-3, seed: int = 0, device: str = "cpu", workers: int = 0,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train ``model_spec`` from scratch on ``n_train`` samples of one problem; test accuracy on fresh ones."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    t0 = time.perf_counter()
    x_train, y_train = svrt_arrays(problem, range(n_train), seed, workers)  # smaller sizes: the first n of a larger set
    x_test, y_test = svrt_arrays(problem, range(TEST_OFFSET, TEST_OFFSET + n_test), seed, workers)
    t_data = time.perf_counter() - t0
    model = SVRT_MODELS.from_spec(model_spec).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n_train / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen).numpy()
        for s in range(0, n_train, batch_size):
            b = order[s:s + batch_size]
            if len(b) < 2:
                continue
            x = _to_input(x_train[b]).to(dev)
            y = torch.from_numpy(y_train[b]).float().to(dev)
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if progress:
                progress(step, total)
    acc = _accuracy(model, x_test, y_test, dev)
    return {"problem": problem, "relation": relation_type(problem), "model": model_spec, "n_train": n_train,
            "n_test": n_test, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "train_accuracy": _accuracy(model, x_train, y_train, dev), "test_accuracy": acc,
            "seconds_data": t_data, "seconds": time.perf_counter() - t0}


def efficiency_curves(problems: list[int], models: list[str], sizes: list[int], store: Any = None,
                      progress: Callable[[str, int, int], None] | None = None, **train: Any) -> list[dict[str, Any]]:
    """Every (problem, model, size) cell, each cached in ``store`` (resumable); rows in that order."""
    from harmonia.store import cache_key

    rows = []
    cells = [(p, m, n) for p in problems for m in models for n in sizes]
    for k, (p, m, n) in enumerate(cells):
        # how many processes draw the data does not change it: not in the key (the device may)
        same = {key: v for key, v in train.items() if key != "workers"}
        key = cache_key({"kind": CELL_KIND, "problem": p, "model": m, "n_train": n, **same})
        run = store.get_run(key) if store is not None else None
        if run is not None and run.status == "complete" and run.aggregates:
            rows.append({**run.aggregates, "cached": True})
            continue
        cb = (lambda d, t, label=f"problem {p} {m} n={n} ({k + 1}/{len(cells)})": progress(label, d, t)) if progress else None
        row = train_cell(p, m, n, progress=cb, **train)
        if store is not None:
            store.start_run(key, CELL_KIND, {"problem": p, "model": m, "n_train": n})
            store.finish_run(key, row)
        rows.append({**row, "cached": False})
    return rows


def _curve_matrix(rows: list[dict[str, Any]], model: str) -> tuple[list[int], list[int], np.ndarray]:
    problems = sorted({r["problem"] for r in rows if r["model"] == model})
    sizes = sorted({r["n_train"] for r in rows if r["model"] == model})
    acc = {(r["problem"], r["n_train"]): r["test_accuracy"] for r in rows if r["model"] == model}
    return problems, sizes, np.array([[acc.get((p, n), np.nan) for n in sizes] for p in problems])


def taxonomy(rows: list[dict[str, Any]], model: str | None = None, k: int = 2) -> dict[str, Any]:
    """Cluster problems by their curves (average linkage); agreement of the clusters with SD / SR.

    Example:
        >>> rows = [{"problem": p, "model": "m", "n_train": n, "test_accuracy": a}
        ...         for p, accs in {1: (.5, .55), 5: (.5, .52), 4: (.8, .95), 11: (.75, .97)}.items()
        ...         for n, a in zip((100, 1000), accs)]
        >>> t = taxonomy(rows)
        >>> t["clusters"], t["agreement"]
        ({1: 0, 4: 1, 5: 0, 11: 1}, 1.0)
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    model = model or rows[0]["model"]
    problems, sizes, mat = _curve_matrix(rows, model)
    if len(problems) < k:
        raise ValueError(f"need at least {k} problems to cluster, got {len(problems)}")
    link = linkage(np.nan_to_num(mat, nan=0.5), method="average")
    raw = fcluster(link, k, criterion="maxclust")
    # name clusters by mean accuracy: 0 = hardest (lowest)
    means = {c: mat[raw == c].mean() for c in set(raw)}
    order = {c: i for i, c in enumerate(sorted(means, key=means.get))}
    clusters = {p: order[c] for p, c in zip(problems, raw)}
    hard_is_sd = [(clusters[p] == 0) == (relation_type(p) == "SD") for p in problems]
    return {"model": model, "problems": problems, "sizes": sizes, "curves": mat.tolist(), "clusters": clusters,
            "agreement": float(np.mean(hard_is_sd)), "linkage": link.tolist()}


def curves_png(rows: list[dict[str, Any]], title: str = "") -> bytes:
    """PNG: test accuracy vs training samples, one panel per problem, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({r["problem"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    cols = min(4, len(problems))
    nrows = math.ceil(len(problems) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, problems):
        for m in models:
            pts = sorted((r["n_train"], r["test_accuracy"]) for r in rows if r["problem"] == p and r["model"] == m)
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=m)
        ax.axhline(0.5, color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(0.4, 1.02)
        ax.set_title(f"problem {p} ({relation_type(p)})", fontsize=9)
        ax.set_xlabel("training samples", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title or "SYNTHETIC SVRT: sample efficiency", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def taxonomy_png(rows: list[dict[str, Any]], model: str | None = None) -> bytes:
    """PNG: the dendrogram of problems clustered by their curves, leaves coloured SD / SR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    t = taxonomy(rows, model)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    colour = {"SD": "tab:red", "SR": "tab:blue"}
    for p, curve in zip(t["problems"], t["curves"]):
        ax1.plot(t["sizes"], curve, marker="o", color=colour[relation_type(p)], alpha=0.8)
        ax1.annotate(str(p), (t["sizes"][-1], curve[-1]), fontsize=7)
    ax1.set_xscale("log")
    ax1.set_xlabel("training samples")
    ax1.set_ylabel("test accuracy")
    ax1.set_title(f"{t['model']}: red = same-different, blue = spatial", fontsize=8)
    import warnings

    with warnings.catch_warnings():  # identical curves give a zero-height tree: nothing to warn about
        warnings.simplefilter("ignore", UserWarning)
        d = dendrogram(np.array(t["linkage"]), labels=[str(p) for p in t["problems"]], ax=ax2)
    for lbl in ax2.get_xticklabels():
        lbl.set_color(colour[relation_type(int(lbl.get_text()))])
    ax2.set_title(f"clusters by curve: {t['agreement']:.0%} agree with SD / SR", fontsize=8)
    del d
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
