"""SVRT generation speed vs the cost of saving the images; 3D-PC probe cost vs one forward pass.

1. SVRT: for every problem, --n images generated on one thread (images per second per core),
   then the same images written in harmonia's format by write_challenge (PNG + meta JSON +
   index; generation included) and the cost of saving alone (the floor a generator cannot
   beat when it feeds a dataset on disk). Prints per-problem rates, the total, the
   projected time for 10,000 images per problem on 2 cores and the ratio
   save / generate (>= 1: saving costs more than generating).
2. 3D-PC probe: SYNTHETIC scenes (release layout, --probe-images in all), efficientnet_lite0
   at its 224 px input: one bare forward pass over every image (open, resize, normalise,
   forward), then the full linear-probe protocol with an empty store (features extracted
   and cached, 30 epochs of the published head, selection on val). Target: probe / forward
   <= 1.5. A second probe (cache hit) is timed too.

Run: .venv/bin/python benchmarks/bench_svrt_3dpc.py [--n 100] [--probe-images 256] [--skip-svrt] [--skip-probe]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def bench_svrt(n: int) -> None:
    from harmonia.challenges import create
    from harmonia.challenges.svrt import PROBLEMS
    from harmonia.challenges.writer import write_challenge

    print(f"SVRT: {n} images per problem, one thread")
    print(f"{'problem':>7} {'gen img/s':>10} {'write img/s':>12} {'save-only img/s':>16} {'save/gen':>9}")
    tot_gen = tot_write = 0.0
    for p in sorted(PROBLEMS):
        gen = create("svrt", problem=p, seed=0, length=n)
        t = time.perf_counter()
        for i in range(n):
            gen[i]
        t_gen = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            write_challenge(gen, d, n=n)
            t_write = time.perf_counter() - t
        t_save = max(t_write - t_gen, 1e-9)
        tot_gen += t_gen
        tot_write += t_write
        print(f"{p:>7} {n / t_gen:>10.0f} {n / t_write:>12.0f} {n / t_save:>16.0f} {t_save / t_gen:>9.2f}")
    n_all = n * len(PROBLEMS)
    save = tot_write - tot_gen
    print(f"{'all':>7} {n_all / tot_gen:>10.0f} {n_all / tot_write:>12.0f} {n_all / save:>16.0f} {save / tot_gen:>9.2f}")
    per_image = tot_gen / n_all
    print(f"10,000 images per problem x 23 problems on 2 cores: {10_000 * 23 * per_image / 2 / 60:.1f} min to generate, "
          f"{10_000 * 23 * tot_write / n_all / 2 / 60:.1f} min to generate and write")


def bench_probe(n_images: int) -> None:
    from harmonia.challenges.threedpc.data import open_split
    from harmonia.challenges.threedpc.probe import linear_probe_3dpc, pooled_features, to_input
    from harmonia.challenges.threedpc.scenes import write_release
    from harmonia.models import load
    from harmonia.store import ResultStore

    per = n_images // 8
    sizes = {"train": 3 * per, "val": per, "test": 3 * per, "human": per}
    with tempfile.TemporaryDirectory() as d:
        root = write_release(os.path.join(d, "sim"), sizes=sizes, size=128, tasks=("depth",))
        model = load("efficientnet_lite0")
        splits = [open_split(root, "depth", s) for s in sizes]
        n = sum(len(s) for s in splits)
        t = time.perf_counter()
        with torch.no_grad():
            for s in splits:
                for i in range(0, len(s), 64):
                    x = torch.stack([to_input(model, s.image(j)) for j in range(i, min(i + 64, len(s)))])
                    pooled_features(model.net, x)
        t_forward = time.perf_counter() - t
        store = ResultStore(os.path.join(d, "r.sqlite"))
        t = time.perf_counter()
        res = linear_probe_3dpc(model, root, "depth", store=store)
        t_probe = time.perf_counter() - t
        t = time.perf_counter()
        again = linear_probe_3dpc(model, root, "depth", store=store)
        t_hit = time.perf_counter() - t
    print(f"3D-PC probe (SYNTHETIC scenes, {n} images, efficientnet_lite0 224 px, one thread)")
    print(f"  one forward pass over the images: {t_forward:.1f} s ({n / t_forward:.1f} img/s)")
    print(f"  linear probe, empty store:       {t_probe:.1f} s (features {res['seconds']['features']:.1f} s, "
          f"head {res['seconds']['probe']:.2f} s; test accuracy {res['accuracy']['test']:.3f})")
    print(f"  probe / forward = {t_probe / t_forward:.2f} (target <= 1.5)")
    print(f"  second probe (cache hit, {again['feature_cache_hits']} splits): {t_hit:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="SVRT images per problem")
    ap.add_argument("--probe-images", type=int, default=256)
    ap.add_argument("--skip-svrt", action="store_true")
    ap.add_argument("--skip-probe", action="store_true")
    args = ap.parse_args()
    np.random.seed(0)
    if not args.skip_svrt:
        bench_svrt(args.n)
    if not args.skip_probe:
        bench_probe(args.probe_images)


if __name__ == "__main__":
    main()
