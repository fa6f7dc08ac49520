"""PCA of layer features (Brain-Score reduces each layer to 1000 principal components).

Brain-Score fits its PCA on the features of 1000 ImageNet validation images, which cannot
be downloaded here. We fit it on the features of ``fit`` images the caller gives (e.g.
any folder of natural images, ``--pca-images``) or, by default, on the recording's own
stimuli. Either way only *images* go into the fit, never responses, so nothing about the
held-out neural data leaks into the read-out; with the default, the held-out stimuli's
features do shape the (unsupervised) basis, as any transductive feature normalisation would.

The fit is exact and deterministic: the eigendecomposition of the n x n Gram matrix
(n = fit images, usually << features) or of the p x p covariance when p < n, so memory
is the features themselves plus n^2 (or p^2) and the p x k components; layers are
reduced one at a time and each layer's full features are dropped once reduced.

Example:
    >>> import torch
    >>> X = torch.randn(50, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> Z = PCA(10).fit(X).transform(X)
    >>> Z.shape, bool((Z.var(0)[:-1] >= Z.var(0)[1:]).all())
    (torch.Size([50, 10]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PCA:
    """Principal components without whitening (= ``sklearn.decomposition.PCA(k)`` up to each
    component's sign; ours makes each component's largest-magnitude loading positive)."""

    n_components: int

    def fit(self, X: torch.Tensor) -> "PCA":
        X = X.double()
        n, p = X.shape
        if n < 2:
            raise ValueError("PCA needs at least 2 images to fit")
        self.mean = X.mean(0)
        Xc = X - self.mean
        k = min(self.n_components, n - 1, p)  # a centred n x p matrix has rank <= n - 1
        if n <= p:  # Gram trick: eigenvectors of Xc Xc^T give the components as Xc^T u / s
            lam, U = torch.linalg.eigh(Xc @ Xc.T)
            lam, U = lam.flip(0)[:k], U.flip(1)[:, :k]
            keep = lam > lam[0].clamp_min(0) * 1e-12  # drop numerically null directions
            V = (Xc.T @ U[:, keep]) / lam[keep].sqrt()
        else:
            lam, V = torch.linalg.eigh(Xc.T @ Xc)
            lam, V = lam.flip(0)[:k], V.flip(1)[:, :k]
        idx = V.abs().argmax(0)
        self.components = V * torch.sign(V[idx, torch.arange(V.shape[1])])  # p x k, deterministic signs
        self.explained_variance = lam[: self.components.shape[1]] / (n - 1)
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        return ((X.double() - self.mean) @ self.components).to(X.dtype)


def pca_reduce(
    feats: dict[str, torch.Tensor], n_components: int, fit: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Each layer's features (N x p) projected on its first ``n_components`` principal components,
    fitted on ``fit[layer]`` (features of separate images) or, without ``fit``, on ``feats`` itself.
    ``feats`` is emptied as it goes, so only one layer's full features are freed at a time.

    Example:
        >>> f = {"a": torch.randn(20, 30), "b": torch.randn(20, 5)}
        >>> {k: tuple(v.shape) for k, v in pca_reduce(f, 8).items()}
        {'a': (20, 8), 'b': (20, 5)}
    """
    out = {}
    for name in list(feats):
        X = feats.pop(name)
        src = fit[name] if fit is not None else X
        out[name] = PCA(n_components).fit(src).transform(X)
    return out
