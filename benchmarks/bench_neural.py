"""Neural scoring: our cross-validated PLS vs scikit-learn's PLSRegression on the same folds,
and the peak memory of a layer sweep over a resnet-sized model.

1. PLS: a George-sized spatial problem (14 images x 17 x 17 positions = 4046 samples,
   600 features, 31 neurons, SYNTHETIC low-rank data), leave-one-image-out, 25 components,
   scale=False. Prints the score (mean over folds of the median per-neuron r) of both,
   their difference (target <= 1e-3) and time(sklearn) / time(ours) (target >= 5), both
   on one thread (BLAS and torch), median of --repeats runs.
2. Memory: timm resnet50 (random init), every residual block hooked (16 layers), 224 px,
   flat features with a fixed random projection to --dim. Each measurement runs in a
   fresh process and reports the peak resident memory above the loaded model: a plain
   forward of one batch, and the full sweep. The sum of all layers' activations (what
   keeping them would cost) and the largest single layer are printed for comparison.
   Target: sweep peak ~ forward peak (bounded by one layer), far below the sum.

3. Ridge with cross-validated alpha (nested: 5 outer folds, 5 inner folds, 10 alphas) on a
   MajajHong-sized problem (2560 stimuli x 1000 features x 168 neuroids, SYNTHETIC): ours
   (one eigendecomposition per inner fold, all alphas from it) vs the brute-force loop of
   scikit-learn Ridge fits over the same folds (= GridSearchCV); same alphas and predictions.

Run: .venv/bin/python benchmarks/bench_neural.py [--repeats 3] [--images 32] [--skip-memory] [--skip-ridge]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread for both sides: a fair, stable ratio on a shared machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def pls_problem(n_images: int = 14, grid: int = 17, p: int = 600, k: int = 31, seed: int = 0):
    """SYNTHETIC: features with a decaying spectrum, neurons a noisy low-rank read-out."""
    g = np.random.default_rng(seed)
    n = n_images * grid * grid
    latent = g.normal(size=(n, 40))
    X = latent @ g.normal(size=(40, p)) + 0.5 * g.normal(size=(n, p))
    Y = latent[:, :10] @ g.normal(size=(10, k)) + 2.0 * g.normal(size=(n, k))
    folds = [np.arange(i * grid * grid, (i + 1) * grid * grid) for i in range(n_images)]
    return X, Y, folds


def score_from_predictions(pred: np.ndarray, Y: np.ndarray, folds) -> float:
    from harmonia.neural.regression import fold_score, pearson_columns

    P, T = torch.from_numpy(pred), torch.from_numpy(Y)
    return fold_score(torch.stack([pearson_columns(P[f], T[f]) for f in folds]))


def run_ours(X, Y, folds, dtype=torch.float64):
    from harmonia.neural.regression import PLS, cross_validated_predictions

    Xt, Yt = torch.from_numpy(X).to(dtype), torch.from_numpy(Y).to(dtype)
    return cross_validated_predictions(Xt, Yt, folds, PLS(n_components=25)).double().numpy()


def run_sklearn(X, Y, folds, **kw):
    from sklearn.cross_decomposition import PLSRegression

    pred = np.zeros_like(Y)
    for f in folds:
        train = np.setdiff1d(np.arange(len(X)), f)
        pred[f] = PLSRegression(n_components=25, scale=False, **kw).fit(X[train], Y[train]).predict(X[f])
    return pred


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_pls(repeats: int) -> None:
    import warnings

    torch.set_num_threads(1)
    X, Y, folds = pls_problem()
    print(f"PLS, 25 components, leave-one-image-out: {X.shape[0]} samples x {X.shape[1]} features x {Y.shape[1]} neurons, {len(folds)} folds (SYNTHETIC)")
    t_ours, p_ours = timed(lambda: run_ours(X, Y, folds), repeats)
    t_ours32, p_ours32 = timed(lambda: run_ours(X, Y, folds, torch.float32), repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_sk, p_sk = timed(lambda: run_sklearn(X, Y, folds), repeats)
        t_skt, p_skt = timed(lambda: run_sklearn(X, Y, folds, max_iter=5000, tol=1e-14), 1)
    s_ours, s_ours32, s_sk, s_skt = (score_from_predictions(p, Y, folds) for p in (p_ours, p_ours32, p_sk, p_skt))
    print(f"  score ours float64 {s_ours:.6f}  float32 {s_ours32:.6f}  sklearn {s_sk:.6f}  sklearn (converged) {s_skt:.6f}")
    print(f"  |score difference| vs sklearn default: {abs(s_ours - s_sk):.2e} (target <= 1e-3); vs converged sklearn: {abs(s_ours - s_skt):.2e}")
    print(f"  max |prediction difference| vs converged sklearn: {np.abs(p_ours - p_skt).max():.2e}")
    print(f"  time ours {t_ours:.3f} s (float32 {t_ours32:.3f} s), sklearn {t_sk:.3f} s -> sklearn / ours = {t_sk / t_ours:.1f}x "
          f"(float32 {t_sk / t_ours32:.1f}x; target >= 5x)")


def bench_ridge_cv(n: int = 2560, p: int = 1000, k: int = 168) -> None:
    from sklearn.linear_model import Ridge as SkRidge

    from harmonia.neural.regression import DEFAULT_ALPHAS, RidgeCV, cross_validated_predictions, kfold

    torch.set_num_threads(1)
    g = np.random.default_rng(0)
    latent = g.normal(size=(n, 50))
    X = latent @ g.normal(size=(50, p)) + g.normal(size=(n, p))
    Y = latent[:, :20] @ g.normal(size=(20, k)) + 5.0 * g.normal(size=(n, k))
    outer = kfold(n, 5, seed=0)
    alphas = list(DEFAULT_ALPHAS)
    t = time.perf_counter()
    ours = cross_validated_predictions(torch.from_numpy(X), torch.from_numpy(Y), outer, RidgeCV(alphas=alphas)).numpy()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = np.zeros_like(Y)
    for test in outer:
        train = np.setdiff1d(np.arange(n), test)
        inner = kfold(len(train), 5, seed=0)
        mse = []
        for a in alphas:
            errs = []
            for it in inner:
                itr = np.setdiff1d(np.arange(len(train)), it)
                pr = SkRidge(alpha=a).fit(X[train][itr], Y[train][itr]).predict(X[train][it])
                errs.append(((pr - Y[train][it]) ** 2).mean())
            mse.append(np.mean(errs))
        best = alphas[int(np.argmin(mse))]
        ref[test] = SkRidge(alpha=best).fit(X[train], Y[train]).predict(X[test])
    t_sk = time.perf_counter() - t
    print(f"Ridge, alpha by nested CV (5 outer x 5 inner folds, {len(alphas)} alphas): {n} stimuli x {p} features x {k} neuroids (SYNTHETIC)")
    print(f"  max |prediction difference| vs brute-force scikit-learn: {np.abs(ours - ref).max():.2e}")
    print(f"  time ours {t_ours:.2f} s, brute-force sklearn {t_sk:.2f} s -> {t_sk / t_ours:.1f}x")


_MEM_CHILD = r"""
import json, os, resource, sys, timm, torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
from harmonia.models.wrapper import HarmoniaModel, Preprocessing
from harmonia.neural.features import extract_features
mode, n, bs, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
net = timm.create_model("resnet50", pretrained=False)
m = HarmoniaModel(net, "resnet50", Preprocessing(input_size=(224, 224))).eval()
layers = [f"layer{i}.{j}" for i, d in zip(range(1, 5), (3, 4, 6, 3)) for j in range(d)]
x = torch.rand(n, 3, 224, 224)
base = rss_kb()
sizes = {}
if mode == "sizes":
    hs = [dict(m.net.named_modules())[l].register_forward_hook(lambda mod, i, o, l=l: sizes.__setitem__(l, o[0].numel() * 4)) for l in layers]
    with torch.no_grad(): m(x[:1])
    print(json.dumps({"sizes": sizes})); sys.exit()
with torch.no_grad():
    if mode == "forward":
        for i in range(0, n, bs): m(x[i:i + bs])
    else:
        f = extract_features(m, x, layers, mode="flat", projection=dim, batch_size=bs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_above_model_mb": (peak - base) / 1024}))
"""


def bench_memory(n: int, bs: int, dim: int) -> None:
    def child(mode):
        r = subprocess.run([sys.executable, "-c", _MEM_CHILD, mode, str(n), str(bs), str(dim)],
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    sizes = child("sizes")["sizes"]
    per_img = sum(sizes.values())
    largest = max(sizes.values())
    fwd = child("forward")["peak_above_model_mb"]
    sweep = child("sweep")["peak_above_model_mb"]
    mb = 1 / 2**20
    print(f"Layer sweep memory: resnet50 (random init), {len(sizes)} residual blocks, {n} images of 224 px, batch {bs}, projection to {dim}")
    print(f"  largest single layer: {largest * mb:.1f} MB per image, {largest * bs * mb:.0f} MB per batch")
    print(f"  all {len(sizes)} layers: {per_img * mb:.1f} MB per image, {per_img * bs * mb:.0f} MB per batch, "
          f"{per_img * n * mb:.0f} MB for the {n} images (what keeping every activation would take)")
    print(f"  peak RSS above the loaded model: plain forward {fwd:.0f} MB, full sweep {sweep:.0f} MB "
          f"(sweep - forward = {sweep - fwd:.0f} MB; stored projected features {len(sizes) * n * dim * 4 * mb:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=1000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-pls", action="store_true")
    ap.add_argument("--skip-ridge", action="store_true")
    a = ap.parse_args()
    if not a.skip_pls:
        bench_pls(a.repeats)
    if not a.skip_ridge:
        bench_ridge_cv()
    if not a.skip_memory:
        bench_memory(a.images, a.batch, a.dim)


if __name__ == "__main__":
    main()
