"""Cross-validated linear read-outs in torch: PLS (NIPALS, scikit-learn's PLSRegression
maths) and ridge, with per-neuron Pearson correlation on held-out samples.

Samples are rows: X is n x p (model features), Y is n x k (neurons).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(60, 10, generator=g, dtype=torch.float64)
    >>> Y = X[:, :3] + 0.1 * torch.randn(60, 3, generator=g, dtype=torch.float64)
    >>> r = cross_validated_pearson(X, Y, kfold(60, 5), PLS(n_components=5))
    >>> bool(r.median() > 0.9)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from harmonia.settings import NeuralSettings

Folds = Sequence[np.ndarray]  # test indices of each fold; training = the rest


def kfold(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint test sets covering ``range(n)`` after a seeded shuffle.

    Example:
        >>> sorted(np.concatenate(kfold(7, 3)).tolist()) == list(range(7))
        True
    """
    if not 2 <= k <= n:
        raise ValueError(f"need 2 <= folds <= samples, got {k} folds for {n} samples")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(order, k)]


def leave_one_group_out(groups: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """One fold per distinct group (e.g. leave-one-image-out over grid positions).

    Example:
        >>> [f.tolist() for f in leave_one_group_out([0, 0, 1, 1])]
        [[0, 1], [2, 3]]
    """
    g = np.asarray(groups)
    return [np.flatnonzero(g == v) for v in np.unique(g)]


def pearson_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r between matching columns of ``a`` and ``b`` (n x k -> k); NaN for a constant column.

    Example:
        >>> x = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
        >>> round(pearson_columns(x, x * 2)[0].item(), 6), pearson_columns(x, x).isnan().tolist()[1]
        (1.0, True)
    """
    a = a - a.mean(0)
    b = b - b.mean(0)
    num = (a * b).sum(0)
    den = a.pow(2).sum(0).sqrt() * b.pow(2).sum(0).sqrt()
    # A zero denominator is "no variance", not "no correlation": NaN, never 0.
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(num, float("nan")))


@dataclass
class PLS:
    """PLS regression (mode A, regression deflation), predictions *with* centering and intercept.

    Matches ``sklearn.cross_decomposition.PLSRegression(n_components, scale=scale)``. The
    x-weights of each component are the first left singular vector of X_k^T Y (what
    scikit-learn's power iteration converges to), computed directly, which is where the
    speed comes from. ``scale=False`` is Brain-Score's setting; scikit-learn's default is True.
    """

    n_components: int = NeuralSettings.n_components
    scale: bool = False

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> "PLS":
        n, p = X.shape
        nc = min(self.n_components, n - 1, p)  # more components than rank only deflate noise
        self.x_mean, self.y_mean = X.mean(0), Y.mean(0)
        Xk, Yc = X - self.x_mean, Y - self.y_mean
        if self.scale:
            self.x_std = _std(Xk)
            self.y_std = _std(Yc)
            Xk, Yc = Xk / self.x_std, Yc / self.y_std
        W = X.new_zeros(p, nc)
        P = X.new_zeros(p, nc)
        Q = X.new_zeros(Y.shape[1], nc)
        T = X.new_zeros(n, nc)
        # X_k^T Y_k == X_k^T Y: the deflated X is orthogonal to earlier scores, so Y need
        # not be deflated to find the next weights, only M updated. X_k itself is never
        # formed: X_k w = X w - T (P^T w) and X_k^T t = X^T t - P (T^T t) read X twice per
        # component instead of writing a deflated copy (the slow, memory-bound part).
        M = Xk.T @ Yc
        for c in range(nc):
            if not torch.isfinite(M).all() or M.abs().max() == 0:
                nc = c
                break
            w = _top_left_singular_vector(M)
            w = w * torch.sign(w[w.abs().argmax()])  # scikit-learn's sign convention
            t = Xk @ w - T[:, :c] @ (P[:, :c].T @ w)
            tt = t @ t
            p_load = (Xk.T @ t - P[:, :c] @ (T[:, :c].T @ t)) / tt
            q_load = Yc.T @ t / tt
            M = M - torch.outer(p_load, t @ Yc)
            W[:, c], P[:, c], Q[:, c], T[:, c] = w, p_load, q_load, t
        W, P, Q = W[:, :nc], P[:, :nc], Q[:, :nc]
        rotations = W @ torch.linalg.pinv(P.T @ W)
        self.coef = rotations @ Q.T  # p x k, in the (scaled) centred space
        return self

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        Xc = X - self.x_mean
        if self.scale:
            Xc = Xc / self.x_std
        Yp = Xc @ self.coef
        if self.scale:
            Yp = Yp * self.y_std
        return Yp + self.y_mean  # the intercept the reference code leaves out


@dataclass
class Ridge:
    """Ridge regression with an unpenalised intercept (= ``sklearn.linear_model.Ridge(alpha)``).

    Solved in the dual (n x n) when there are more features than samples, so a wide
    layer costs n^2 p, not p^3.
    """

    alpha: float = 1.0

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> "Ridge":
        self.x_mean, self.y_mean = X.mean(0), Y.mean(0)
        Xc, Yc = X - self.x_mean, Y - self.y_mean
        n, p = Xc.shape
        if p > n:
            K = Xc @ Xc.T + self.alpha * torch.eye(n, dtype=X.dtype, device=X.device)
            self.coef = Xc.T @ torch.linalg.solve(K, Yc)
        else:
            G = Xc.T @ Xc + self.alpha * torch.eye(p, dtype=X.dtype, device=X.device)
            self.coef = torch.linalg.solve(G, Xc.T @ Yc)
        return self

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return (X - self.x_mean) @ self.coef + self.y_mean


DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in range(-3, 7))  # 1e-3 .. 1e6


@dataclass
class RidgeCV:
    """Ridge whose alpha is chosen by an inner k-fold CV on the data it is fitted on.

    Called by :func:`cross_validated_predictions` on each outer training fold, so the
    choice never sees the outer test samples (nested CV). The criterion is the mean over
    inner folds of the mean squared error over samples and neurons (one alpha shared by
    all neurons) = scikit-learn's ``GridSearchCV(Ridge(), {"alpha": alphas}, cv=<the same
    folds>, scoring="neg_mean_squared_error")``; ties go to the first alpha in the grid.
    Each inner fold costs one eigendecomposition (of the n x n Gram matrix, or of the
    p x p covariance when p < n), after which every alpha's predictions are a rescaling.
    ``block`` > 1 keeps consecutive rows together (the spatial benchmark sets it to the
    grid size, so inner folds leave whole images out, like the outer folds).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(80, 5, generator=g, dtype=torch.float64)
        >>> Y = X @ torch.ones(5, 2, dtype=torch.float64) + 0.1 * torch.randn(80, 2, generator=g, dtype=torch.float64)
        >>> RidgeCV(alphas=(0.01, 1000.0)).fit(X, Y).alpha_
        0.01
    """

    alphas: Sequence[float] = DEFAULT_ALPHAS
    inner_folds: int = 5
    seed: int = 0
    block: int = 1  # inner folds hold whole blocks of this many consecutive rows (one image's grid positions)

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> "RidgeCV":
        n = X.shape[0]
        b = self.block if self.block > 1 and n % self.block == 0 and n // self.block >= 2 else 1
        blocks = kfold(n // b, min(self.inner_folds, n // b), self.seed)
        folds = [(f[:, None] * b + np.arange(b)).reshape(-1) for f in blocks]
        self.cv_mse = ridge_path_mse(X, Y, folds, self.alphas)  # (alphas,) mean over inner folds
        self.alpha_ = float(self.alphas[int(torch.argmin(self.cv_mse))])
        self.model = Ridge(self.alpha_).fit(X, Y)
        return self

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return self.model.predict(X)


def ridge_path_mse(X: torch.Tensor, Y: torch.Tensor, folds: Folds, alphas: Sequence[float]) -> torch.Tensor:
    """Mean over ``folds`` of the held-out MSE of :class:`Ridge` for every alpha (one eigh per fold).

    Example:
        >>> X = torch.randn(30, 4, dtype=torch.float64); Y = X[:, :1]
        >>> ridge_path_mse(X, Y, kfold(30, 3), [1e-6, 1e6]).argmin().item()
        0
    """
    a = torch.as_tensor(list(alphas), dtype=X.dtype, device=X.device)
    total = torch.zeros(len(a), dtype=X.dtype, device=X.device)
    n = X.shape[0]
    for test in folds:
        test_t = torch.as_tensor(test, dtype=torch.long, device=X.device)
        train = torch.ones(n, dtype=torch.bool, device=X.device)
        train[test_t] = False
        xm, ym = X[train].mean(0), Y[train].mean(0)
        Xc, Yc, Xt = X[train] - xm, Y[train] - ym, X[test_t] - xm
        if Xc.shape[1] > Xc.shape[0]:  # dual: coef = Xc^T U diag(1/(lam+a)) U^T Yc
            lam, U = torch.linalg.eigh(Xc @ Xc.T)
            A, B = (Xt @ Xc.T) @ U, U.T @ Yc
        else:  # primal: coef = V diag(1/(lam+a)) V^T Xc^T Yc
            lam, V = torch.linalg.eigh(Xc.T @ Xc)
            A, B = Xt @ V, V.T @ (Xc.T @ Yc)
        lam = lam.clamp_min(0)  # round-off can make null eigenvalues slightly negative
        resid = Y[test_t] - ym
        for i, alpha in enumerate(a):
            pred = (A / (lam + alpha)) @ B
            total[i] += (resid - pred).pow(2).mean()
    return total / len(folds)


def _top_left_singular_vector(M: torch.Tensor) -> torch.Tensor:
    """First left singular vector of M (p x k) from the eigh of the smaller Gram matrix.

    ``torch.linalg.svd`` of even a 32 x 16 matrix is 100-1000x slower than this on a
    loaded CPU (its multi-threaded LAPACK path spins at barriers); ``eigh`` of a k x k
    matrix is not, and the dominant vector is what PLS needs.
    """
    p, k = M.shape
    if p <= k:
        return torch.linalg.eigh(M @ M.T).eigenvectors[:, -1]
    v = torch.linalg.eigh(M.T @ M).eigenvectors[:, -1]
    u = M @ v
    return u / u.norm()


def _std(x: torch.Tensor) -> torch.Tensor:
    s = x.std(0, unbiased=True)
    return torch.where(s > 0, s, torch.ones_like(s))  # constant column: leave it as it is


def make_regression(name: str, **kw: Any) -> PLS | Ridge | RidgeCV:
    """``"pls"`` (25 components) or ``"ridge"`` (``alpha``, default 1; ``alphas=[...]``: alpha chosen by nested CV).

    Example:
        >>> make_regression("pls").n_components, type(make_regression("ridge", alphas=[0.1, 1.0])).__name__
        (25, 'RidgeCV')
    """
    if name == "pls":
        return PLS(n_components=int(kw.get("n_components", 25)), scale=bool(kw.get("scale", False)))
    if name == "ridge":
        if kw.get("alphas"):
            return RidgeCV(alphas=tuple(float(a) for a in kw["alphas"]), inner_folds=int(kw.get("inner_folds", 5)))
        return Ridge(alpha=float(kw.get("alpha", 1.0)))
    raise ValueError(f"unknown regression {name!r}: use 'pls' or 'ridge'")


def cross_validated_predictions(X: torch.Tensor, Y: torch.Tensor, folds: Folds, regression: PLS | Ridge | RidgeCV) -> torch.Tensor:
    """Held-out predictions of Y (n x k): each fold's rows predicted by a model fitted on the others."""
    out = torch.full_like(Y, float("nan"))
    n = X.shape[0]
    for test in folds:
        test_t = torch.as_tensor(test, dtype=torch.long, device=X.device)
        train = torch.ones(n, dtype=torch.bool, device=X.device)
        train[test_t] = False
        model = regression.fit(X[train], Y[train])
        out[test_t] = model.predict(X[test_t])
    return out


def cross_validated_pearson(X: torch.Tensor, Y: torch.Tensor, folds: Folds, regression: PLS | Ridge | RidgeCV) -> torch.Tensor:
    """Per fold, per neuron Pearson r between held-out predictions and responses (folds x k).

    Brain-Score convention: correlation over each fold's test samples, then (by the
    caller) median over neurons and mean over folds.
    """
    pred = cross_validated_predictions(X, Y, folds, regression)
    return torch.stack([pearson_columns(pred[torch.as_tensor(t)], Y[torch.as_tensor(t)]) for t in folds])


def fold_score(r: torch.Tensor) -> float:
    """Mean over folds of the median over neurons (NaN neurons ignored; NaN if none left).

    Example:
        >>> fold_score(torch.tensor([[0.1, 0.5, 0.3], [0.2, float("nan"), 0.4]], dtype=torch.float64))
        0.3
    """
    a = np.asarray(r.detach().cpu(), dtype=np.float64)
    a = a[None] if a.ndim == 1 else a
    # numpy's median averages the two middle values; torch's returns the lower one.
    med = np.array([np.median(row[~np.isnan(row)]) if (~np.isnan(row)).any() else np.nan for row in a])
    med = med[~np.isnan(med)]
    return round(float(med.mean()), 12) if med.size else float("nan")
