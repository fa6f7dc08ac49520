"""Models whose minimal adversarial perturbation is known in closed form, to check attacks.

Linear models (logits ``W x + b``) and a two-piece piecewise-linear one (``MinOfAffine``),
on small mid-grey images far enough from 0 and 1 that the [0, 1] box never binds. The tests
use one instance of each; ``benchmarks/bench_attack_precision.py`` surveys many.

Example:
    >>> model, x, y, d = kink_instance(seed=3, n=4)
    >>> tuple(x.shape), bool((model(x).argmax(1) == y).all()), bool((d > 0).all())
    ((4, 3, 4, 4), True, True)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

SHAPE = (3, 4, 4)
DIM = 48


class Affine(nn.Module):
    """logits = W x + b on flattened images."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


class MinOfAffine(nn.Module):
    """Two classes: z0 = 0, z1 = s * min(p1, p2) with p_i = w_i x + c_i.

    The adversarial region {p1 > 0 and p2 > 0} is convex, so the minimal perturbation is the
    projection onto it (:func:`min_of_affine_distance`); it often lies on the kink
    p1 = p2 = 0, where the margin's gradient switches between the pieces.
    """

    def __init__(self, w: torch.Tensor, c: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.w, self.c, self.scale = w, c, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.scale * (x.flatten(1) @ self.w.T + self.c).amin(1)
        return torch.stack([torch.zeros_like(z1), z1], 1)


def mid_grey_images(n: int, seed: int = 0) -> torch.Tensor:
    """n images of shape SHAPE with pixels in [0.35, 0.65]."""
    g = torch.Generator().manual_seed(seed)
    return 0.35 + 0.3 * torch.rand(n, *SHAPE, generator=g)


def linear_model(classes: int = 2, seed: int = 0, scale: float = 3.0) -> Affine:
    """A random linear classifier whose boundaries pass near mid-grey images."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, DIM, generator=g)
    # x 20: a confident model, as trained networks are (DDN's cross-entropy gradient points
    # at the nearest boundary only when the softmax mass sits on the two classes at stake)
    return Affine(20 * w, 20 * (-0.5 * w.sum(1) + scale * torch.randn(classes, generator=g) / 10))


def linear_distance(model: Affine, x: torch.Tensor, y: torch.Tensor, target: int | None = None) -> torch.Tensor:
    """Minimal L2 perturbation of a linear model: min over classes j of margin_j / ||w_y - w_j||."""
    z = model(x)
    w = model.w
    d = torch.full((len(x),), math.inf)
    for j in range(w.shape[0]):
        if target is not None and j != target:
            continue
        dj = (z.gather(1, y[:, None]).squeeze(1) - z[:, j]) / (w[y] - w[j]).norm(dim=1)
        d = torch.where(y == j, d, torch.minimum(d, dj))
    return d


def min_of_affine_distance(w: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Distance from each x to {w x + c >= 0} (two rows): the smallest feasible projection
    among the two single-hyperplane projections and the projection onto both."""
    xf = x.flatten(1).double()
    w, c = w.double(), c.double()
    p = xf @ w.T + c
    out = []
    for i in range(len(xf)):
        cands = [(-p[i, k] / w[k].dot(w[k])) * w[k] for k in range(2)]
        cands.append(w.T @ torch.linalg.solve(w @ w.T, -p[i]))
        ok = [d.norm() for d in cands if bool(((xf[i] + d) @ w.T + c >= -1e-9).all())]
        out.append(min(ok))
    return torch.stack(out)


def kink_model(seed: int) -> MinOfAffine:
    """A MinOfAffine whose facets meet at an acute angle, so many minima lie on the kink."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2, DIM, generator=g)
    w[1] = 0.3 * w[0] + w[1]
    c = -(0.5 * w.sum(1)) - torch.tensor([0.15, 0.2]) * w.norm(dim=1)
    return MinOfAffine(w, c)


def kink_instance(seed: int, n: int = 24, image_seed: int | None = None
                  ) -> tuple[MinOfAffine, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(model, images it classifies as 0, labels, exact minimal L2 norms) for ``kink_model(seed)``."""
    model = kink_model(seed)
    x = mid_grey_images(n, seed=seed + 100 if image_seed is None else image_seed)
    x = x[model(x).argmax(1) == 0]
    return model, x, torch.zeros(len(x), dtype=torch.long), min_of_affine_distance(model.w, model.c, x)


def linear_instance(classes: int, seed: int, n: int = 24, image_seed: int | None = None
                    ) -> tuple[Affine, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(model, images, the model's labels, exact minimal L2 norms) for ``linear_model(classes, seed)``."""
    model = linear_model(classes, seed=seed)
    x = mid_grey_images(n, seed=seed if image_seed is None else image_seed)
    y = model(x).argmax(1)
    return model, x, y, linear_distance(model, x, y)
