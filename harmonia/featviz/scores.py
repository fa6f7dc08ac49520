"""Scores that say whether class visualizations are any good (definitions: docs/featviz.md).

- :func:`transferability`: for each visualization of class c and each *other* model, the rank of
  c in that model's prediction on the whole visualization (resized by the model's own
  preprocessing); scores are the fractions in each model's top 1 / top k, and in every model's top k.
- :func:`plausibility`: the cosine similarity, in a feature space (a layer of a chosen model,
  spatially averaged), between a visualization of class c and the mean feature of real images
  of class c.
- :func:`frechet_distance`: the Frechet distance between Gaussians fitted to two sets of
  features (visualizations vs real images) in that feature space. With the EfficientNet-Lite
  features this is **not** the Inception FID (no Inception weights offline) and its values are
  not comparable with published FIDs, only between methods scored the same way.
- :func:`transparency_alignment`: Spearman (harmonia.metrics.spearman) between each
  visualization's transparency map and a human importance map of the same image (feature
  accentuation of a ClickMe image) or class, after resizing the transparency to the human map.

Example:
    >>> import torch
    >>> a, b = torch.randn(50, 4), torch.randn(60, 4) + 1
    >>> frechet_distance(a, a) < 1e-6 < frechet_distance(a, b)
    True
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.metrics import spearman
from harmonia.models.layers import resolve_layer
from harmonia.neural.features import to_spatial


@torch.no_grad()
def transferability(images: torch.Tensor, targets: Sequence[int], models: Mapping[str, nn.Module],
                    k: int = 5) -> dict:
    """Ranks of each target class under each model, and the fractions in top 1 / top ``k``.

    Returns ``{"ranks": {model: [rank per image]}, "top1": {model: frac}, "topk": {model: frac},
    "topk_all": frac in every model's top k, "k": k, "in_all": [bool per image]}`` (rank 0 = top 1).

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> transferability(torch.rand(2, 3, 2, 2), [0, 2], {"m": net}, k=3)["topk"]
        {'m': 1.0}
    """
    if images.shape[0] != len(targets):
        raise ValueError(f"{images.shape[0]} images but {len(targets)} targets")
    if not models:
        raise ValueError("transferability needs at least one model")
    t = torch.as_tensor(list(targets))
    ranks: dict[str, list[int]] = {}
    for name, model in models.items():
        p = next(model.parameters(), None)
        logits = model(images.to(p.device if p is not None else "cpu")).float().cpu()
        target_logit = logits.gather(1, t[:, None])
        ranks[name] = (logits > target_logit).sum(1).tolist()
    n = len(targets)
    in_all = [all(ranks[m][i] < k for m in ranks) for i in range(n)]
    return {
        "k": k,
        "ranks": ranks,
        "top1": {m: sum(r == 0 for r in v) / n for m, v in ranks.items()},
        "topk": {m: sum(r < k for r in v) / n for m, v in ranks.items()},
        "in_all": in_all,
        "topk_all": sum(in_all) / n,
    }


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor, layer: str | None = None, batch_size: int = 16) -> torch.Tensor:
    """N x C: ``layer``'s output (default: the layer Grad-CAM uses, the last spatial stage),
    averaged over positions (ViT tokens on their patch grid)."""
    from harmonia.attribution import find_target_layer

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    if layer is None:
        target = find_target_layer(model)
        module = target.module
    else:
        module = resolve_layer(model, layer)[1]
    box: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: box.__setitem__("a", (o[0] if isinstance(o, (tuple, list)) else o).clone()))
    out = []
    try:
        for s in range(0, images.shape[0], batch_size):
            model(images[s:s + batch_size].to(device))
            a = box["a"]
            sp = to_spatial(a) if a.ndim != 4 else a
            out.append((sp.float().mean((2, 3)) if sp is not None else a.float().reshape(a.shape[0], -1)).cpu())
    finally:
        handle.remove()
    return torch.cat(out)


def plausibility(viz_features: torch.Tensor, real_features: Mapping[int, torch.Tensor], targets: Sequence[int]) -> list[float]:
    """Cosine similarity of each visualization's feature with the mean feature of its class's
    real images (NaN where no real image of that class is given).

    Example:
        >>> import torch
        >>> plausibility(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), {3: torch.tensor([[2.0, 0.0]])}, [3, 4])
        [1.0, nan]
    """
    out = []
    for f, c in zip(viz_features, targets):
        real = real_features.get(int(c))
        if real is None or len(real) == 0:
            out.append(float("nan"))
            continue
        out.append(float(F.cosine_similarity(f[None].double(), real.double().mean(0, keepdim=True)).item()))
    return out


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of features (rows = samples), float64."""
    from scipy import linalg

    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"frechet_distance needs two N x D feature sets of the same D, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("frechet_distance needs at least 2 samples per set")
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise, as the FID reference code does
        eps = 1e-6 * np.eye(len(s1))
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean), 0.0))


def transparency_alignment(transparency: torch.Tensor, human_maps: torch.Tensor) -> torch.Tensor:
    """Spearman (N,) between each transparency map (N x H x W) and its human map (N x h x w),
    the transparency resized (area) to the human map's size.

    Example:
        >>> import torch
        >>> m = torch.rand(2, 8, 8)
        >>> transparency_alignment(m, m).tolist()
        [1.0, 1.0]
    """
    if transparency.ndim != 3 or human_maps.ndim != 3 or transparency.shape[0] != human_maps.shape[0]:
        raise ValueError(f"need N x H x W transparency and N x h x w human maps, got {tuple(transparency.shape)} "
                         f"and {tuple(human_maps.shape)}")
    t = transparency.float()[:, None]
    if t.shape[-2:] != human_maps.shape[-2:]:
        t = F.interpolate(t, size=tuple(human_maps.shape[-2:]), mode="area")
    return spearman(t[:, 0], human_maps.float())
