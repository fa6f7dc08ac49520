"""Features of many layers from one forward pass per batch (forward hooks).

Each hooked layer's output is reduced *inside the hook*, batch by batch, to what scoring
needs, so memory is bounded by the largest single layer's activations of one batch plus
the reduced outputs, never by the sum of all layers' full activations:

- ``flat`` features: flattened activations, optionally multiplied by a fixed random
  Gaussian projection (seeded, so the same model always gets the same projection);
- ``grid`` features: activations resized to the recording's grid (block average when
  larger, bilinear when smaller), channels averaged in groups when there are too many.

Example:
    >>> import torch, torch.nn as nn
    >>> from harmonia.models.wrapper import HarmoniaModel, Preprocessing
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> m = HarmoniaModel(net, "toy", Preprocessing(input_size=(16, 16)))
    >>> f = extract_features(m, torch.rand(5, 3, 16, 16), ["0", "2"], mode="flat")
    >>> {k: tuple(v.shape) for k, v in f.items()}
    {'0': (5, 784), '2': (5, 288)}
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.models.layers import resolve_layer

_SKIP = (nn.Dropout, nn.Flatten, nn.Identity, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def default_layers(net: nn.Module) -> list[str]:
    """A sensible layer sweep: timm's feature stages when the model declares them, else
    the network's top-level children (Sequentials of blocks expanded), heads and
    pooling left out."""
    info = getattr(net, "feature_info", None)
    if info is not None:
        try:
            names = [d["module"] for d in info.get_dicts()] if hasattr(info, "get_dicts") else [d["module"] for d in info]
            mods = dict(net.named_modules())
            names = [n for n in names if n in mods]
            if names:
                return names
        except (TypeError, KeyError):
            pass
    out: list[str] = []
    children = list(net.named_children())
    if len(children) == 1 and isinstance(children[0][1], nn.Sequential):  # a wrapped trunk
        children = [(f"{children[0][0]}.{n}", m) for n, m in children[0][1].named_children()]
    for name, mod in children:
        if isinstance(mod, (nn.Linear, *_SKIP)) or name in ("head", "fc", "classifier"):
            continue
        if isinstance(mod, nn.Sequential) and len(mod) > 1 and len(children) < 4:
            out += [f"{name}.{n}" for n, _ in mod.named_children()]
        else:
            out.append(name)
    return out


def to_spatial(a: torch.Tensor) -> torch.Tensor | None:
    """N x C x h x w for conv maps and square token grids (a class token is dropped)."""
    if a.ndim == 4:
        return a
    if a.ndim == 3:
        n, t, c = a.shape
        for extra in (0, 1):
            s = math.isqrt(t - extra)
            if s * s == t - extra and s > 0:
                return a[:, extra:].transpose(1, 2).reshape(n, c, s, s)
    return None


def to_grid(a: torch.Tensor, grid: tuple[int, int], max_channels: int | None = 600) -> torch.Tensor:
    """N x C x h x w -> N x Gy x Gx x C' (block-averaged or bilinear), C' <= max_channels by group means.

    Example:
        >>> to_grid(torch.rand(2, 1000, 18, 18), (9, 9)).shape
        torch.Size([2, 9, 9, 500])
    """
    a = a.float()
    if max_channels is not None and a.shape[1] > max_channels:
        g = math.ceil(a.shape[1] / max_channels)  # the release's grouping: mean of g consecutive channels
        c = a.shape[1] // g * g
        a = a[:, :c].reshape(a.shape[0], c // g, g, *a.shape[2:]).mean(2)
    if a.shape[-2] >= grid[0] and a.shape[-1] >= grid[1]:
        a = F.adaptive_avg_pool2d(a, grid)
    else:
        a = F.interpolate(a, size=grid, mode="bilinear", align_corners=False)
    return a.permute(0, 2, 3, 1)


def minmax_per_image(x: torch.Tensor) -> torch.Tensor:
    """Scale each image's features (N x ...) to [0, 1], as the release does before regression."""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(x.shape)


class _Projector:
    """A fixed random projection p -> d per layer, drawn from a seeded generator.

    Small layers (p x d <= ``dense_limit`` entries, 4 MB) get a dense Gaussian matrix
    N(0, 1/d), kept for the next batches. Larger ones (a resnet block at 224 px has ~800k
    features: a dense matrix to 1000 dims would be 3 GB) use a count sketch: each input
    feature is added, with a random sign, to one random output. It preserves inner
    products in expectation like the Gaussian projection and costs O(p) per image. The
    sketch is re-drawn from the same seed at every batch rather than kept, so that the
    memory a sweep holds does not grow with the sum of all layers' sizes.
    """

    def __init__(self, dim: int, seed: int, dense_limit: int = 1 << 20) -> None:
        self.dim, self.seed, self.dense_limit = dim, seed, dense_limit
        self.mats: dict[str, torch.Tensor] = {}

    def _generator(self, name: str) -> torch.Generator:
        # zlib.crc32, not hash(): Python salts str hashes per process.
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))

    def is_dense(self, p: int) -> bool:
        return p * self.dim <= self.dense_limit

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        p = x.shape[1]
        if p <= self.dim:
            return x
        if self.is_dense(p):
            if name not in self.mats:
                self.mats[name] = (torch.randn(p, self.dim, generator=self._generator(name)) / math.sqrt(self.dim)).to(x.device)
            return x @ self.mats[name]
        g = self._generator(name)
        idx = torch.randint(self.dim, (p,), generator=g).to(x.device)
        sign = (torch.randint(2, (p,), generator=g) * 2 - 1).to(x.device, x.dtype)
        return x.new_zeros(x.shape[0], self.dim).index_add_(1, idx, x * sign)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    mode: str = "flat",
    grid: tuple[int, int] | None = None,
    projection: int | None = None,
    pool: int | None = None,
    max_channels: int | None = 600,
    batch_size: int = 32,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Reduced features of ``layers`` for ``images`` ([0, 1], N x 3 x H x W), one forward per batch.

    ``model`` is a :class:`~harmonia.models.HarmoniaModel` (its ``net`` is hooked and it
    preprocesses) or a bare module. ``mode="flat"`` -> N x p (p <= ``projection`` if given);
    ``mode="grid"`` -> N x Gy x Gx x C (needs ``grid``). ``pool`` (flat mode) first
    average-pools spatial maps to ``pool x pool``. Returned on the CPU, float32.
    """
    if mode not in ("flat", "grid"):
        raise ValueError(f"mode must be 'flat' or 'grid', got {mode!r}")
    if mode == "grid" and grid is None:
        raise ValueError("grid features need the recording's grid")
    net = getattr(model, "net", model)
    layers = list(layers) if layers else default_layers(net)
    modules = {n: resolve_layer(model, n)[1] for n in layers}  # a wrong name fails with the closest ones
    proj = _Projector(projection, seed) if projection else None
    out: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    skipped: set[str] = set()

    def hook_for(name: str):
        def hook(_m: nn.Module, _i: object, o: object) -> None:
            a = o[0] if isinstance(o, (tuple, list)) else o
            if not isinstance(a, torch.Tensor):
                skipped.add(name)
                return
            if mode == "grid":
                s = to_spatial(a)
                if s is None:
                    skipped.add(name)
                    return
                out[name].append(to_grid(s, grid, max_channels).cpu())  # type: ignore[arg-type]
            else:
                if pool and (s := to_spatial(a)) is not None:
                    a = F.adaptive_avg_pool2d(s.float(), pool)
                f = a.reshape(a.shape[0], -1).float()
                out[name].append((proj(name, f) if proj else f).cpu())

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in layers]
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        n = images.shape[0]
        for i in range(0, n, batch_size):
            model(images[i : i + batch_size].to(device))
            if progress:
                progress(min(i + batch_size, n), n)
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in out.items() if v and k not in skipped}
