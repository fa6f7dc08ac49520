"""Tracking challenges: generator throughput against the disk floor, and training-step time per model.

1. Generator throughput, videos per second on one core (numpy and torch limited to one
   thread), for PathTracker (the published training condition, 64 frames / 14 distractors,
   and the longest, 128 / 25) and FeatureTracker (32 frames / 10 distractors, in
   distribution), drawn one by one (``gen[i]``) and in chunks of 32 (``gen.samples``, what the
   Dataset's DataLoader fetch and the writer use), against the floor: writing the same arrays
   (the video, and FeatureTracker's masks) to disk as .npy files in a temporary folder, with
   plain ``np.save`` (page cache) and with harmonia's atomic write (temporary file, fsync,
   rename: what ``harmonia data challenge`` does). Target: chunks >= 0.5 x the floor's rate.
2. One training step (forward, BCE, backward, Adam) per video model at batch 32 on the CPU
   (the published model sizes; ``--frames`` frames of 32 x 32), median of ``--repeats``
   after one warm-up step.

Ratios are measured in one run. Run:
    .venv/bin/python benchmarks/bench_challenges.py [--videos 300] [--frames 32] [--batch 32] [--repeats 2]
        [--warmup 1] [--models int,r3d_18] [--skip-models] [--skip-generators]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harmonia.challenges as hc  # noqa: E402
from harmonia.models.video import build_video_model, video_model_names  # noqa: E402

CASES = [
    ("pathtracker", {"frames": 64, "distractors": 14}),
    ("pathtracker", {"frames": 128, "distractors": 25}),
    ("featuretracker", {}),
]


CHUNK = 32  # what ChallengeDataset.__getitems__ (a DataLoader batch) and write_challenge draw at once


def generator_rate(name: str, knobs: dict, n: int, chunk: int) -> tuple[float, list[list[np.ndarray]]]:
    """Videos per second drawing ``chunk`` at a time (``gen.samples``), and the arrays drawn."""
    gen = hc.create(name, seed=0, **knobs)
    gen.samples([0, 1])  # imports, caches
    start = time.perf_counter()
    samples = [s for j in range(0, n, chunk) for s in gen.samples(list(range(j, min(j + chunk, n))))]
    rate = n / (time.perf_counter() - start)
    return rate, [[s["video"]] + ([s["masks"]] if "masks" in s else []) for s in samples]


def write_rate(arrays: list[list[np.ndarray]], atomic: bool) -> float:
    """Videos per second writing each sample's arrays (video, and masks where there are) as .npy files:
    plain ``np.save`` (the page-cache floor) or harmonia's atomic write (temporary file, fsync, rename)."""
    from harmonia.utils.io import atomic_save_npy

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, group in enumerate(arrays):
            for j, a in enumerate(group):
                path = os.path.join(tmp, f"{i:06d}-{j}.npy")
                atomic_save_npy(path, a) if atomic else np.save(path, a)
        return len(arrays) / (time.perf_counter() - start)


def step_time(spec: str, batch: int, frames: int, repeats: int, warmup: int = 1) -> float:
    torch.manual_seed(0)
    model = build_video_model(spec).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    video, labels = torch.rand(batch, 3, frames, 32, 32), (torch.arange(batch) % 2).float()
    times = []
    for r in range(repeats + warmup):
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(video), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r >= warmup:  # the first steps warm up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=300, help="videos per generator case")
    ap.add_argument("--frames", type=int, default=32, help="frames per clip in the training-step timing")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    ap.add_argument("--models", default="", help="comma-separated video models (default: all)")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-generators", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    if not args.skip_generators:
        generator_table(args.videos)
    if args.skip_models:
        return
    print(f"\ntraining step, batch {args.batch}, {args.frames} x 32 x 32 frames, CPU, {torch.get_num_threads()} thread(s)")
    for name in (args.models.split(",") if args.models else video_model_names()):
        seconds = step_time(name, args.batch, args.frames, args.repeats, args.warmup)
        print(f"  {name:14s} {seconds:8.2f} s/step", flush=True)


def generator_table(n_videos: int, rounds: int = 5) -> None:
    """Generation and writing interleaved in ``rounds`` (the machine's load changes by the second);
    medians of the rates and of the per-round ratios."""
    print(f"{'generator (one core), median of ' + str(rounds) + ' rounds':44s} {'one by one':>10s} {'chunks':>8s} "
          f"{'np.save':>8s} {'ratio':>6s} {'atomic':>7s} {'ratio':>6s}   (videos/s; ratio = chunks / write, target >= 0.5)")
    per_round = max(n_videos // rounds, CHUNK)
    for name, knobs in CASES:
        rows = []
        for _ in range(rounds):
            single, _ = generator_rate(name, knobs, max(per_round // 4, 8), 1)
            rate, arrays = generator_rate(name, knobs, per_round, CHUNK)
            rows.append((single, rate, write_rate(arrays, atomic=False), write_rate(arrays, atomic=True)))
        single, rate, floor, atomic = (statistics.median(c) for c in zip(*rows))
        r_floor = statistics.median(r[1] / r[2] for r in rows)
        r_atomic = statistics.median(r[1] / r[3] for r in rows)
        label = f"{name} {','.join(f'{k}={v}' for k, v in knobs.items()) or 'defaults'}"
        print(f"{label:44s} {single:10.0f} {rate:8.0f} {floor:8.0f} {r_floor:6.2f} {atomic:7.0f} {r_atomic:6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
