"""The 3D-PC protocols for any model harmonia loads: the linear probe (as published) and fine-tuning.

Linear probe (Linsley, Zhou et al., ICLR 2025): the backbone's pooled pre-logit features
(timm ``num_classes=0``), images resized so the short side is the model's input size (no crop),
the model's mean/std; features extracted once (cached in the results store: a second probe
of the same model and files reads them back); head ``BatchNorm1d(affine=False, eps=1e-6) ->
Dropout(0.3) -> Linear(d, 1)``, BCE with logits, AdamW lr 5e-5, weight decay 1e-4, batch 16,
30 epochs; test and human-set accuracy reported at the epoch of best validation accuracy.

Fine-tuning: the whole backbone and the same head, the same optimiser, a cosine schedule
with 3 warm-up epochs down to 1e-6.

Example:
    >>> import tempfile, os
    >>> from harmonia.challenges.threedpc.scenes import write_release
    >>> from harmonia.models import load
    >>> from harmonia.store import ResultStore
    >>> d = tempfile.mkdtemp()
    >>> root = write_release(d, sizes={"train": 8, "val": 4, "test": 4, "human": 2}, size=32, tasks=("depth",))
    >>> store = ResultStore(os.path.join(d, "r.sqlite"))
    >>> res = linear_probe_3dpc(load("efficientnet_lite0"), root, "depth", store=store, config=ProbeConfig(epochs=1))
    >>> sorted(res["accuracy"]), res["feature_cache_hits"]
    (['human', 'test', 'val'], 0)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.challenges.threedpc.data import SPLITS, ThreeDPCSplit, open_split, task_name
from harmonia.store import ResultStore, cache_key, dataset_fingerprint, file_digest
from harmonia.utils.io import atomic_save_npy

FEATURE_KIND = "3dpc-features"
PROBE_KIND = "3dpc-probe"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ProbeConfig:
    """The published linear-probe head and optimiser (defaults) or a variation of them."""

    epochs: int = 30
    lr: float = 5e-5
    weight_decay: float = 1e-4
    batch_size: int = 16
    dropout: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class FinetuneConfig(ProbeConfig):
    """The published fine-tuning schedule: the probe's optimiser, cosine with warm-up."""

    warmup_epochs: int = 3
    min_lr: float = 1e-6


def probe_head(dim: int, dropout: float = 0.3) -> nn.Sequential:
    """BatchNorm1d(affine=False, eps=1e-6) -> Dropout -> Linear(dim, 1).

    Example:
        >>> probe_head(8)(torch.randn(4, 8)).shape
        torch.Size([4, 1])
    """
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Dropout(dropout), nn.Linear(dim, 1))


# -- images and features -----------------------------------------------------------------------


def to_input(model: Any, image: Any, mode: str = "short") -> torch.Tensor:
    """A PIL image -> 3 x H x W float tensor normalised with the model's mean/std.

    ``mode="short"``: the short side resized to the model's input size, no crop (the protocol);
    ``"exact"``: resized to the input size (for networks that only take that size).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pp = model.preprocessing
    interp = {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}.get(
        pp.interpolation, InterpolationMode.BILINEAR)
    size = min(pp.input_size) if mode == "short" else list(pp.input_size)
    x = TF.to_tensor(TF.resize(image, size, interpolation=interp, antialias=True))
    mean = torch.tensor(pp.mean).view(3, 1, 1)
    std = torch.tensor(pp.std).view(3, 1, 1)
    return (x - mean) / std


def pooled_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled pre-logit features (what timm's ``num_classes=0`` returns) of normalised input."""
    if hasattr(net, "forward_features") and hasattr(net, "forward_head"):
        return net.forward_head(net.forward_features(x), pre_logits=True).flatten(1)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"cannot find pooled features of {type(net).__name__}: no forward_head and no final Linear")
    seen: list[torch.Tensor] = []
    handle = last[-1].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return seen[-1].flatten(1)


def _batches(split: ThreeDPCSplit, model: Any, batch_size: int, mode: str):
    """Consecutive items of one image size, stacked (sizes can differ between images)."""
    batch: list[torch.Tensor] = []
    idx: list[int] = []
    for i in range(len(split)):
        x = to_input(model, split.image(i), mode)
        if batch and (x.shape != batch[0].shape or len(batch) == batch_size):
            yield idx, torch.stack(batch)
            batch, idx = [], []
        batch.append(x)
        idx.append(i)
    if batch:
        yield idx, torch.stack(batch)


@torch.no_grad()
def extract_features(model: Any, split: ThreeDPCSplit, batch_size: int = 64, device: str | None = None,
                     progress: Progress | None = None) -> tuple[np.ndarray, str]:
    """(n x d float32 features, resize mode used): one forward pass over the split."""
    net = model.net.eval()
    dev = torch.device(device) if device else model.device
    net.to(dev)
    out: list[np.ndarray] = []
    mode = "short"
    done = 0
    gen = _batches(split, model, batch_size, mode)
    for idx, x in gen:
        try:
            f = pooled_features(net, x.to(dev))
        except (RuntimeError, AssertionError):
            if mode == "exact" or done:
                raise
            # a network that only takes its input size (e.g. a ViT): resize exactly, as its wrapper would
            mode = "exact"
            gen = _batches(split, model, batch_size, mode)
            idx, x = next(gen)
            f = pooled_features(net, x.to(dev))
        out.append(f.float().cpu().numpy())
        done += len(idx)
        if progress:
            progress(done, len(split))
    return np.concatenate(out).astype(np.float32), mode


def _model_id(model: Any) -> str:
    fp = getattr(model, "fingerprint", None)
    if not callable(fp):
        raise ValueError("the 3D-PC probe needs a harmonia model (harmonia.models.load) to key its cache")
    return fp()


def artifacts_dir(store: ResultStore) -> Path:
    """Where the store keeps array artifacts (features) next to its SQLite file."""
    return store.path.parent / "harmonia-artifacts"


def cached_features(model: Any, split: ThreeDPCSplit, store: ResultStore | None = None, batch_size: int = 64,
                    device: str | None = None, progress: Progress | None = None) -> tuple[np.ndarray, bool, str]:
    """Features of ``split`` (extracted once per model weights + preprocessing + files), hit flag, key."""
    pp = model.preprocessing
    settings = {"kind": FEATURE_KIND, "model": _model_id(model),
                "data": dataset_fingerprint(split, digest=store.file_digest if store else None),
                "transform": {"resize": "short-side", "input_size": list(pp.input_size), "mean": list(pp.mean),
                              "std": list(pp.std), "interpolation": pp.interpolation}}
    key = cache_key(settings)
    if store is not None:
        path = artifacts_dir(store) / FEATURE_KIND / f"{key}.npy"
        run = store.get_run(key)
        if run is not None and run.status == "complete" and path.exists() \
                and file_digest(path) == (run.aggregates or {}).get("digest"):
            return np.load(path), True, key
    feats, mode = extract_features(model, split, batch_size, device, progress)
    if store is not None:
        atomic_save_npy(path, feats)
        store.delete_run(key)
        store.start_run(key, FEATURE_KIND, {"model": getattr(model, "name", "?"), "task": split.task,
                                             "split": split.split, "layout": split.layout, "root": str(split.root),
                                             "resize_mode": mode})
        store.add_rows(key, [{"image_id": i, "label": int(l)} for i, l in zip(split.ids, split.labels)])
        store.finish_run(key, {"file": str(path), "digest": file_digest(path), "n": int(feats.shape[0]),
                               "dim": int(feats.shape[1]), "resize_mode": mode})
    return feats, False, key


# -- the linear probe --------------------------------------------------------------------------


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(((logits > 0).long() == y.long()).float().mean())


def train_linear_probe(data: dict[str, tuple[np.ndarray, np.ndarray]], config: ProbeConfig = ProbeConfig(),
                       progress: Progress | None = None) -> dict[str, Any]:
    """Train the published head on ``data["train"]``; pick the epoch by ``data["val"]`` accuracy.

    Returns ``best_epoch``, ``accuracy`` per split at that epoch (every split but train) and the
    per-epoch ``history``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(64, 5)).astype(np.float32); y = (x[:, 0] > 0).astype(int)
        >>> res = train_linear_probe({"train": (x, y), "val": (x, y)}, ProbeConfig(epochs=20, lr=1e-2))
        >>> res["best_epoch"] >= 1 and res["accuracy"]["val"] > 0.8
        True
    """
    if "train" not in data or "val" not in data:
        raise ValueError("the probe needs a train and a val split (model selection is on val)")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    xs = {k: torch.as_tensor(v[0], dtype=torch.float32) for k, v in data.items()}
    ys = {k: torch.as_tensor(np.asarray(v[1]), dtype=torch.float32) for k, v in data.items()}
    head = probe_head(xs["train"].shape[1], config.dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(ys["train"])
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for epoch in range(1, config.epochs + 1):
        head.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for start in range(0, n, config.batch_size):
            b = order[start:start + config.batch_size]
            if len(b) < 2:  # BatchNorm cannot train on one sample
                continue
            loss = F.binary_cross_entropy_with_logits(head(xs["train"][b]).squeeze(1), ys["train"][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        head.eval()
        with torch.no_grad():
            acc = {k: _accuracy(head(xs[k]).squeeze(1), ys[k]) for k in xs}
        row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else math.nan, **{f"{k}_accuracy": v for k, v in acc.items()}}
        history.append(row)
        if best is None or acc["val"] > best["val_accuracy"]:
            best = row
        if progress:
            progress(epoch, config.epochs)
    assert best is not None
    return {"best_epoch": best["epoch"], "history": history,
            "accuracy": {k: best[f"{k}_accuracy"] for k in xs if k != "train"},
            "train_accuracy": best["train_accuracy"], "config": asdict(config)}


def _splits(root: str | Path, task: str, layout: str | None) -> dict[str, ThreeDPCSplit]:
    out = {}
    for s in SPLITS:  # each split read once (a parquet split holds its images)
        try:
            out[s] = open_split(root, task, s, layout)
        except FileNotFoundError:
            continue
    missing = [s for s in ("train", "val", "test") if s not in out]
    if missing:
        raise FileNotFoundError(f"3D-PC {task} under {root}: missing split(s) {', '.join(missing)}")
    return out


def linear_probe_3dpc(model: Any, root: str | Path, task: str, store: ResultStore | None = None,
                      config: ProbeConfig = ProbeConfig(), layout: str | None = None, batch_size: int = 64,
                      device: str | None = None, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """The published linear probe of ``model`` on one 3D-PC task: features (cached), head, selection on val."""
    task = task_name(task)
    splits = _splits(root, task, layout)
    data, hits, keys = {}, 0, {}
    t0 = time.perf_counter()
    for name, split in splits.items():
        cb = (lambda d, n, name=name: progress(f"features {name}", d, n)) if progress else None
        feats, hit, key = cached_features(model, split, store, batch_size, device, cb)
        data[name] = (feats, split.labels)
        hits += int(hit)
        keys[name] = key
    t_features = time.perf_counter() - t0
    probe_key = cache_key({"kind": PROBE_KIND, "features": keys, "config": asdict(config)})
    if store is not None:
        run = store.get_run(probe_key)
        if run is not None and run.status == "complete" and run.aggregates:
            return {**run.aggregates, "feature_cache_hits": hits, "probe_cached": True}
    t1 = time.perf_counter()
    res = train_linear_probe(data, config, (lambda d, n: progress("probe epochs", d, n)) if progress else None)
    out = {"protocol": "linear", "task": task, "model": getattr(model, "name", "?"), "root": str(root),
           "n": {k: len(v) for k, v in splits.items()}, "best_epoch": res["best_epoch"], "accuracy": res["accuracy"],
           "train_accuracy": res["train_accuracy"], "config": res["config"],
           "seconds": {"features": t_features, "probe": time.perf_counter() - t1}}
    if store is not None:
        store.start_run(probe_key, PROBE_KIND, {"model": out["model"], "task": task, "root": str(root)})
        store.add_rows(probe_key, [{"image_id": f"epoch{r['epoch']:03d}", **r} for r in res["history"]])
        store.finish_run(probe_key, out)
    return {**out, "feature_cache_hits": hits, "probe_cached": False, "history": res["history"]}


# -- fine-tuning -------------------------------------------------------------------------------


def lr_at(step: int, total: int, warmup: int, config: FinetuneConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from lr down to min_lr.

    Example:
        >>> c = FinetuneConfig()
        >>> [round(lr_at(s, 100, 10, c), 8) for s in (0, 10, 100)]
        [5e-06, 5e-05, 1e-06]
    """
    if step < warmup:
        return config.lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * p))


def finetune_3dpc(model: Any, root: str | Path, task: str, config: FinetuneConfig = FinetuneConfig(),
                  layout: str | None = None, device: str | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Fine-tune the whole backbone with the probe's head; test / human accuracy at the best val epoch.

    The model is changed in place (its weights are the last epoch's; the result reports the
    best epoch's accuracies, as published).
    """
    task = task_name(task)
    splits = _splits(root, task, layout)
    dev = torch.device(device) if device else model.device
    net = model.net.to(dev)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    mode = "short"
    with torch.no_grad():
        probe_x = to_input(model, splits["train"].image(0), mode)[None].to(dev)
        try:
            dim = pooled_features(net.eval(), probe_x).shape[1]
        except (RuntimeError, AssertionError):
            mode = "exact"
            dim = pooled_features(net.eval(), to_input(model, splits["train"].image(0), mode)[None].to(dev)).shape[1]
    head = probe_head(dim, config.dropout).to(dev)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    train = splits["train"]
    n = len(train)
    per_epoch = max(1, sum(1 for s in range(0, n, config.batch_size) if min(config.batch_size, n - s) >= 2))
    total, warmup = per_epoch * config.epochs, per_epoch * config.warmup_epochs
    step = 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    def evaluate(split: ThreeDPCSplit) -> float:
        net.eval()
        head.eval()
        correct = 0
        with torch.no_grad():
            for idx, x in _batches(split, model, 32, mode):
                logits = head(pooled_features(net, x.to(dev))).squeeze(1).cpu()
                correct += int(((logits > 0).long() == torch.as_tensor(split.labels[idx])).sum())
        return correct / len(split)

    for epoch in range(1, config.epochs + 1):
        net.train()
        head.train()
        order = torch.randperm(n, generator=gen).tolist()
        losses = []
        for start in range(0, n, config.batch_size):
            b = order[start:start + config.batch_size]
            if len(b) < 2:
                continue
            xs = [to_input(model, train.image(i), mode) for i in b]
            if len({x.shape for x in xs}) > 1:  # mixed sizes: the exact input size for this batch
                xs = [to_input(model, train.image(i), "exact") for i in b]
            x = torch.stack(xs).to(dev)
            y = torch.as_tensor(train.labels[b], dtype=torch.float32, device=dev)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, config)
            loss = F.binary_cross_entropy_with_logits(head(pooled_features(net, x)).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
        acc = {k: evaluate(s) for k, s in splits.items() if k != "train"}
        row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else math.nan,
               **{f"{k}_accuracy": v for k, v in acc.items()}}
        history.append(row)
        if best is None or acc["val"] > best["val_accuracy"]:
            best = row
        if progress:
            progress("fine-tune epochs", epoch, config.epochs)
    assert best is not None
    model.invalidate_fingerprint()
    return {"protocol": "finetune", "task": task, "model": getattr(model, "name", "?"), "root": str(root),
            "n": {k: len(v) for k, v in splits.items()}, "best_epoch": best["epoch"],
            "accuracy": {k: best[f"{k}_accuracy"] for k in splits if k != "train"}, "history": history,
            "config": asdict(config)}
