"""How close do the minimal-norm attacks get to the exact minimum, over many random instances?

The tests check one linear and one piecewise-linear instance each ("within 2%"); this
survey draws many (``harmonia.attacks.analytic``: random linear classifiers with 2 and 5
classes, random two-facet models whose minima often lie on the kink) and prints, per
attack and family, the found L2 norm / the exact minimum: median, 95th percentile, max,
how many images are above 1.02x, and the mean gradient evaluations per image. CPU, a few
seconds per row.

Run: .venv/bin/python benchmarks/bench_attack_precision.py [--seeds 8] [--images 24]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harmonia.attacks import DDN, FMN  # noqa: E402
from harmonia.attacks.analytic import kink_instance, linear_instance  # noqa: E402

ATTACKS = {
    "FMN (default)": lambda: FMN(),
    "FMN planes=0": lambda: FMN(planes=0),
    "FMN rtol=1e-3 planes=0 (default before 2026-11-24)": lambda: FMN(rtol=1e-3, planes=0),
    "FMN extrapolate=False": lambda: FMN(extrapolate=False),
    "FMN patience=5": lambda: FMN(patience=5),
    "DDN (default)": lambda: DDN(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8, help="random instances per family")
    ap.add_argument("--images", type=int, default=24, help="images per instance")
    a = ap.parse_args()
    torch.set_num_threads(1)
    families = {
        "linear, 2 classes": [linear_instance(2, s, a.images) for s in range(a.seeds)],
        "linear, 5 classes": [linear_instance(5, s, a.images) for s in range(a.seeds)],
        "two facets (kink)": [kink_instance(s, a.images) for s in range(a.seeds)],
    }
    print(f"{a.seeds} instances x {a.images} images per family; ratio = found L2 / exact minimum")
    print(f"| attack | family | images | median | p95 | max | > 1.02 | grads / img |\n|{'---|' * 8}")
    for name, make in ATTACKS.items():
        for family, cases in families.items():
            ratios, grads = [], []
            for model, x, y, d in cases:
                res = make()(model, x, y)
                if not bool(res.success.all()):
                    raise SystemExit(f"{name} failed to fool an image of {family}")
                ratios.append(res.l2 / d)
                grads.append(res.backwards.double())
            r, g = torch.cat(ratios), torch.cat(grads)
            print(f"| {name} | {family} | {len(r)} | {float(r.median()):.4f} | {float(r.quantile(0.95)):.4f} | "
                  f"{float(r.max()):.4f} | {int((r > 1.02).sum())} | {float(g.mean()):.1f} |", flush=True)


if __name__ == "__main__":
    main()
