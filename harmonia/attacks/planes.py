"""Cutting planes: the smallest perturbation that crosses every linearised boundary seen.

A minimal-norm attack evaluates the logit margin ``m`` and its gradient ``g`` at many points
``delta_j``. Each evaluation gives a half-space where the linearised margin is not positive,
``g_j . delta <= g_j . delta_j - m_j``. Where the decision boundary is piecewise linear (a
ReLU network near one point, or the analytic models of the tests), the minimum often lies on
a kink where two pieces meet; a first-order step only ever sees one piece, so it zig-zags
along the kink and closes in slowly. The nearest point of the intersection of the
half-spaces of *different* pieces is exactly that kink minimum. :class:`CuttingPlanes` keeps a
few linearisations per sample (one per piece: a new gradient nearly parallel to a kept one
replaces it) and solves for that point, a candidate the attack then checks with one forward.

Example:
    >>> import torch
    >>> planes = CuttingPlanes(n=1, shape=(2,), size=2)
    >>> rows = torch.tensor([0])
    >>> # margins 1 - x0 and 1 - x1 (gradients -e0, -e1), both seen at delta = 0
    >>> planes.add(rows, torch.tensor([[-1.0, 0.0]]), torch.zeros(1, 2), torch.tensor([1.0]))
    >>> planes.add(rows, torch.tensor([[0.0, -1.0]]), torch.zeros(1, 2), torch.tensor([1.0]))
    >>> idx, delta = planes.nearest_point(torch.tensor([True]))
    >>> delta.tolist()
    [[1.0, 1.0]]
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls


class CuttingPlanes:
    """Up to ``size`` linearisations of the margin per sample, and the nearest point of their intersection.

    Args:
        n: number of samples.
        shape: shape of one sample's perturbation.
        size: linearisations kept per sample (oldest replaced first).
        same: a new gradient whose cosine with a kept one exceeds this is the same piece of
            the boundary and replaces that one (a fresher linearisation of it).
    """

    def __init__(self, n: int, shape: tuple[int, ...], size: int = 2, same: float = 0.99,
                 device: torch.device | str = "cpu") -> None:
        dim = int(np.prod(shape))
        self.g = torch.zeros(n, size, dim, device=device)
        self.b = torch.zeros(n, size, device=device)
        self.ok = torch.zeros(n, size, dtype=torch.bool, device=device)
        self.next = torch.zeros(n, dtype=torch.long, device=device)
        self.size, self.same, self.shape = size, same, tuple(shape)

    def add(self, rows: torch.Tensor, grad: torch.Tensor, delta: torch.Tensor, margin: torch.Tensor) -> None:
        """Rows ``rows`` had margin ``margin`` with gradient ``grad`` at perturbation ``delta``."""
        g = grad.flatten(1).float()
        norm = g.norm(dim=1)
        live = norm > 0  # a flat margin (dead units) gives no plane
        rows, g, norm, delta, margin = rows[live], g[live], norm[live], delta[live], margin[live]
        if len(rows) == 0:
            return
        unit = g / norm[:, None]
        kept = self.g[rows]
        cos = (kept / kept.norm(dim=2, keepdim=True).clamp_min(1e-12) * unit[:, None]).sum(2)
        cmax, jmax = cos.masked_fill(~self.ok[rows], -2.0).max(1)
        same = cmax > self.same
        slot = torch.where(same, jmax, self.next[rows] % self.size)
        self.g[rows, slot] = g
        self.b[rows, slot] = (g * delta.flatten(1).float()).sum(1) - margin.float()
        self.ok[rows, slot] = True
        self.next[rows] += (~same).long()

    def nearest_point(self, rows_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, perturbations): for the samples in ``rows_mask`` that have a linearisation,
        the smallest-L2 ``delta`` with ``g_j . delta <= b_j`` for all of them (with one, the
        projection onto its plane: DeepFool's step from the clean image).

        Solved in the dual, a non-negative least-squares problem in the multipliers
        (scipy's ``nnls``): ``delta = -sum_j lambda_j g_j``, ``lambda >= 0`` minimising
        ``lambda' Q lambda / 2 + b' lambda`` with ``Q = G G'``.
        """
        idx = torch.nonzero(rows_mask & self.ok.any(1)).flatten()
        out = []
        for i in idx.tolist():
            g, b = self.g[i, self.ok[i]].double(), self.b[i, self.ok[i]].double()
            q = (g @ g.T).cpu().numpy()
            q += np.eye(len(q)) * 1e-9 * np.trace(q)  # duplicates were merged; this only guards rounding
            chol = np.linalg.cholesky(q)
            # lambda' Q lambda / 2 + b' lambda = ||L' lambda + L^-1 b||^2 / 2 + const, with Q = L L'
            lam, _ = nnls(chol.T, -np.linalg.solve(chol, b.cpu().numpy()))
            out.append(-(torch.from_numpy(lam).to(g) @ g).float())
        if not out:
            return idx, torch.zeros(0, *self.shape, device=self.g.device)
        return idx, torch.stack(out).view(len(idx), *self.shape)
