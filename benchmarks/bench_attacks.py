"""Minimal-norm attacks vs the 2023 PGD bisection, adv-lib's FMN / DDN and torchattacks'
FAB / DeepFool (peers run when installed).

One run, same models and images: a small CNN trained here for a few seconds on the
SYNTHETIC simulated-ClickMe benchmark (32 px), and the ImageNet EfficientNet-Lite0 on real
photos shipped with scikit-image (224 px; labels = the model's own predictions). Per
attack: how many images it fools, the median minimal L2 in [0, 1] pixel space (a
not-fooled image counts as +inf, so the median stays honest), and the mean forward and
backward passes per image (counted by the attack; the peers' by a wrapper that counts every
forward and every backward through the model, per image: FAB and DeepFool back-propagate
once per class per step, and each of those counts). "Equal budget" rows give our attacks as
many steps as the bisection's mean backward passes, without early stopping.

The peers need ``pip install --no-deps adv-lib==0.2.8 torchattacks==3.5.1`` (``make bench``
does it; --no-deps: torchattacks pins an old requests, adv-lib pulls visdom for logging).
DeepFool and untargeted FAB compute the full Jacobian (one backward per class per step): on
the 1000-class Lite0 DeepFool is skipped and FAB runs targeted at the 9 runner-up classes
(FAB-T, as AutoAttack does on ImageNet).

Run: .venv/bin/python benchmarks/bench_attacks.py [--images 16] [--peer-steps 200] [--fab-steps 20] [--skip-lite0] [--linf]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harmonia.attacks import DDN, FMN, FMNLinf, PGDBisection2023  # noqa: E402

Row = tuple[str, torch.Tensor, float, float, float]


class Counting(nn.Module):
    """Counts per-image forward and backward passes of a peer attack that does not report them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.fwd, self.bwd = model, 0, 0

    def forward(self, x):
        out = self.model(x)
        self.fwd += len(x)
        if out.requires_grad:
            def hook(g, n=len(x)):
                self.bwd += n
            out.register_hook(hook)
        return out


def small_cnn(n_images: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained ~10 s on the SYNTHETIC simulated benchmark; its first test images."""
    from harmonia.data import HarmoniaDataset
    from harmonia.humans.simulate import simulate_clickme
    from harmonia.models.wrapper import HarmoniaModel, Preprocessing

    root = simulate_clickme(Path(tempfile.mkdtemp()) / "sim", n_train=1200, n_test=max(64, n_images), image_size=32,
                            n_classes=4, n_subjects=2, progress=False)
    train = HarmoniaDataset(root, "train")
    xs = torch.stack([train[i]["image"] for i in range(len(train))])
    ys = torch.tensor([int(train[i]["label"]) for i in range(len(train))])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 4))
    model = HarmoniaModel(net, "small_cnn", Preprocessing(input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(6):
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            b = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xs[b]), ys[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = HarmoniaDataset(root, "test")
    x = torch.stack([test[i]["image"] for i in range(len(test))])
    y = torch.tensor([int(test[i]["label"]) for i in range(len(test))])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    print(f"small CNN: test accuracy {ok.float().mean():.2f} on {len(y)} SYNTHETIC images")
    return model, x[ok][:n_images], y[ok][:n_images]


def lite0_photos(n_images: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """EfficientNet-Lite0 (ImageNet) and crops of scikit-image photos; labels = its predictions."""
    from skimage import data as skdata

    from harmonia.data.images import center_crop_resize
    from harmonia.models import load

    model = load("efficientnet_lite0").eval()
    rng = np.random.default_rng(0)
    photos = [skdata.coffee(), skdata.chelsea(), skdata.astronaut(), skdata.rocket()]
    imgs = []
    for i in range(n_images):
        p = torch.from_numpy(photos[i % len(photos)]).permute(2, 0, 1).float() / 255
        h, w = p.shape[-2:]
        s = int(rng.integers(int(min(h, w) * 0.7), min(h, w) + 1))
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        imgs.append(center_crop_resize(p[:, top:top + s, left:left + s], (224, 224)))
    x = torch.stack(imgs)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _peer_row(name: str, model, x, y, fn, p: float = 2) -> Row:
    """Runs ``fn(counted_model) -> adv`` and measures it like ours (not fooled = inf), in the ``p`` norm."""
    counted = Counting(model)
    t = time.perf_counter()
    adv = fn(counted).detach()
    dt = time.perf_counter() - t
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    norm = torch.linalg.vector_norm((adv - x).flatten(1), ord=p, dim=1).double()
    l2 = torch.where(fooled, norm, torch.full((len(x),), math.inf, dtype=torch.float64))
    return name, l2, counted.fwd / len(x), counted.bwd / len(x), dt


def torchattacks_rows(model, x, y, fab_steps: int, deepfool_steps: int = 50) -> list[Row]:
    """torchattacks 3.5.1 FAB (L2) and DeepFool (L2), gradient evaluations counted per image."""
    try:
        import torchattacks
    except ImportError:
        print("torchattacks not installed: its rows are skipped (pip install --no-deps torchattacks==3.5.1)")
        return []
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    rows = []
    if n_classes <= 100:
        rows.append(_peer_row(f"torchattacks FAB L2 ({fab_steps} steps)", model, x, y,
                              lambda m: torchattacks.FAB(m, norm="L2", eps=1e6, steps=fab_steps, n_classes=n_classes)(x, y)))
        rows.append(_peer_row(f"torchattacks DeepFool L2 (<= {deepfool_steps} steps)", model, x, y,
                              lambda m: torchattacks.DeepFool(m, steps=deepfool_steps, overshoot=0.02)(x, y)))
    else:
        # one backward per class per step would be 1000 per step: FAB-T on the 9 runner-up classes instead
        rows.append(_peer_row(f"torchattacks FAB-T L2 (9 targets x {fab_steps} steps)", model, x, y,
                              lambda m: torchattacks.FAB(m, norm="L2", eps=1e6, steps=fab_steps, multi_targeted=True,
                                                         n_classes=10)(x, y)))
        print(f"(torchattacks DeepFool skipped on {n_classes} classes: one backward per class per step)")
    return rows


def advlib_rows(model, x, y, steps: int) -> list[Row]:
    try:
        sys.modules.setdefault("visdom", types.ModuleType("visdom"))  # adv-lib imports it for logging only
        from adv_lib.attacks import ddn as advlib_ddn
        from adv_lib.attacks import fmn as advlib_fmn
    except ImportError:
        print("adv-lib not installed: its rows are skipped (pip install --no-deps adv-lib)")
        return []
    return [_peer_row(f"adv-lib FMN L2 ({steps} steps)", model, x, y, lambda m: advlib_fmn(m, x, y, norm=2, steps=steps)),
            _peer_row(f"adv-lib DDN ({steps} steps)", model, x, y, lambda m: advlib_ddn(m, x, y, steps=steps))]


def run_attack(name, atk, model, x, y, linf: bool = False):
    t = time.perf_counter()
    r = atk(model, x, y)
    dt = time.perf_counter() - t
    norm = r.linf if linf else r.l2
    l2 = torch.where(r.success, norm, torch.full_like(norm, math.inf))
    return (name, l2, float(r.forwards.double().mean()), float(r.backwards.double().mean()), dt), r


class Table:
    """Prints rows as they finish (a CPU run of the 224 px model takes many minutes)."""

    def __init__(self, title: str, norm: str = "L2", ref: str = "bisect") -> None:
        print(f"\n{title}")
        print(f"{'attack':52s} {'fooled':>7s} {'median ' + norm:>10s} {'vs ' + ref:>9s} {'fwd/img':>8s} {'bwd/img':>8s} {'time s':>7s}")
        self.ref: float | None = None
        self.meds: dict[str, tuple[float, float]] = {}  # name -> (median L2, backward passes / image)

    def add(self, name: str, l2: torch.Tensor, fwd: float, bwd: float, dt: float) -> None:
        # the mean of the two middle values for an even count (torch.median takes the lower one)
        med = float(np.median(l2.numpy()))
        self.ref = med if self.ref is None else self.ref
        self.meds[name] = (med, bwd)
        n = int(torch.isfinite(l2).sum())
        print(f"{name:52s} {n:>3d}/{len(l2):<3d} {med:10.4f} {med / self.ref:9.3f} {fwd:8.1f} {bwd:8.1f} {dt:7.1f}", flush=True)


def targets(t: Table, equal: str, ours: list[str], peers: list[str]) -> None:
    """The issue's two targets, from the rows of one table."""
    bis = t.meds["2023 PGD bisection (eps*)"][0]
    med = t.meds[equal][0]
    print(f"target 1 (equal gradient budget, {equal}): {med:.4f} vs bisection {bis:.4f} = {med / bis:.3f} "
          f"-> {'met' if med < bis else 'NOT met'}")
    if not peers:
        return
    peer = min(peers, key=lambda k: t.meds[k][0])
    pm, pg = t.meds[peer]
    for name in ours:  # met if one of our attacks at its default budget meets both halves
        m, g = t.meds[name]
        ok = m <= pm * 1.02 and g <= pg
        print(f"target 2 (default budget): {name}: {m:.4f} with {g:.1f} grads; best peer {peer}: {pm:.4f} "
              f"with {pg:.1f} grads; ratio {m / pm:.3f} -> {'met' if ok else 'NOT met'}")


def bench(label: str, model, x, y, peer_steps: int, fab_steps: int) -> None:
    t = Table(f"{label}: {len(x)} images (medians: not fooled = inf)")
    row, bis = run_attack("2023 PGD bisection (eps*)", PGDBisection2023(), model, x, y)
    eps = torch.where(bis.success, bis.eps, torch.full_like(bis.eps, math.inf))
    t.add(row[0], eps, *row[2:])
    t.add("2023 PGD bisection (measured ||x_adv - x||)", row[1], *row[2:])
    budget = max(1, round(row[3]))
    equal = f"ours FMN, equal budget ({budget} steps)"
    t.add(*run_attack(equal, FMN(steps=budget, patience=None), model, x, y)[0])
    # the paper's loss (the logit margin throughout), for comparison with our default (see fmn.py)
    t.add(*run_attack(f"ours FMN loss=margin (paper), equal budget ({budget})",
                      FMN(steps=budget, patience=None, loss="margin"), model, x, y)[0])
    t.add(*run_attack(f"ours DDN, equal budget ({budget} steps)", DDN(steps=budget, patience=None), model, x, y)[0])
    # A short budget needs a faster radius: gamma 0.2 instead of 0.1.
    t.add(*run_attack(f"ours DDN gamma 0.2, equal budget ({budget} steps)",
                      DDN(steps=budget, patience=None, gamma_init=0.2), model, x, y)[0])
    ours = ["ours FMN (default: <= 1000 steps, early stop)", "ours DDN (default: <= 1000 steps, early stop)"]
    t.add(*run_attack(ours[0], FMN(), model, x, y)[0])
    t.add(*run_attack(ours[1], DDN(), model, x, y)[0])
    peers = []
    for r in advlib_rows(model, x, y, peer_steps) + torchattacks_rows(model, x, y, fab_steps):
        t.add(*r)
        peers.append(r[0])
    targets(t, equal, ours, peers)


def bench_linf(label: str, model, x, y, peer_steps: int, fab_steps: int) -> None:
    """Linf: our Linf FMN vs adv-lib's Linf FMN and torchattacks' Linf FAB (ratios vs ours)."""
    import types

    t = Table(f"{label}, Linf: {len(x)} images (medians of the Linf norm: not fooled = inf)", "Linf", "ours")
    t.add(*run_attack("ours FMN Linf (default: early stop)", FMNLinf(), model, x, y, linf=True)[0])
    t.add(*run_attack("ours FMN Linf, 27 steps", FMNLinf(steps=27, patience=None), model, x, y, linf=True)[0])
    try:
        sys.modules.setdefault("visdom", types.ModuleType("visdom"))
        from adv_lib.attacks import fmn as advlib_fmn

        t.add(*_peer_row(f"adv-lib FMN Linf ({peer_steps} steps)", model, x, y,
                         lambda m: advlib_fmn(m, x, y, norm=math.inf, steps=peer_steps), p=math.inf))
    except ImportError:
        print("adv-lib not installed: its row is skipped")
    try:
        import torchattacks

        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        if n_classes <= 100:
            t.add(*_peer_row(f"torchattacks FAB Linf ({fab_steps} steps)", model, x, y,
                             lambda m: torchattacks.FAB(m, norm="Linf", eps=1e6, steps=fab_steps,
                                                        n_classes=n_classes)(x, y), p=math.inf))
    except ImportError:
        print("torchattacks not installed: its row is skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16, help="images per model")
    ap.add_argument("--peer-steps", type=int, default=200, help="steps of adv-lib's FMN and DDN")
    ap.add_argument("--fab-steps", type=int, default=20, help="steps of torchattacks' FAB (per target class for FAB-T)")
    ap.add_argument("--skip-lite0", action="store_true")
    ap.add_argument("--linf", action="store_true", help="also the Linf tables (our Linf FMN vs adv-lib's and FAB)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    runs = [("small CNN / SYNTHETIC simulated ClickMe, 32 px", small_cnn)]
    if not args.skip_lite0:
        runs.append(("EfficientNet-Lite0 / scikit-image photos, 224 px", lite0_photos))
    for label, make in runs:
        model, x, y = make(args.images)
        bench(label, model, x, y, args.peer_steps, args.fab_steps)
        if args.linf:
            bench_linf(label, model, x, y, args.peer_steps, args.fab_steps)


if __name__ == "__main__":
    main()
