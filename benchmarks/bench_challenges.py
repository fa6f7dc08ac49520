"""Tracking challenges: generator throughput against the disk floor, and training-step time per model.

1. Generator throughput, videos per second on one core (numpy and torch limited to one
   thread), for PathTracker (the published training condition, 64 frames / 14 distractors,
   and the longest, 128 / 25) and FeatureTracker (32 frames / 10 distractors, in
   distribution), against the floor: writing the same arrays to disk with ``np.save`` (one
   .npy file per video, into a temporary folder). Target: generation >= 0.5 x the floor's rate.
2. One training step (forward, BCE, backward, Adam) per video model at batch 32 on the CPU
   (the published model sizes; ``--frames`` frames of 32 x 32), median of ``--repeats``
   after one warm-up step.

Ratios are measured in one run. Run:
    .venv/bin/python benchmarks/bench_challenges.py [--videos 300] [--frames 32] [--batch 32] [--repeats 2] [--skip-models]
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


def generator_rate(name: str, knobs: dict, n: int) -> tuple[float, list[np.ndarray]]:
    gen = hc.create(name, seed=0, **knobs)
    gen[0]  # imports, caches
    start = time.perf_counter()
    videos = [gen[i]["video"] for i in range(n)]
    return n / (time.perf_counter() - start), videos


def write_rate(videos: list[np.ndarray]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, v in enumerate(videos):
            np.save(os.path.join(tmp, f"{i:06d}.npy"), v)
        return len(videos) / (time.perf_counter() - start)


def step_time(spec: str, batch: int, frames: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = build_video_model(spec).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    video, labels = torch.rand(batch, 3, frames, 32, 32), (torch.arange(batch) % 2).float()
    times = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(video), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=300, help="videos per generator case")
    ap.add_argument("--frames", type=int, default=32, help="frames per clip in the training-step timing")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-models", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    print(f"{'generator (one core)':44s} {'videos/s':>9s} {'np.save/s':>10s} {'ratio':>7s}")
    for name, knobs in CASES:
        rate, videos = generator_rate(name, knobs, args.videos)
        floor = write_rate(videos)
        label = f"{name} {','.join(f'{k}={v}' for k, v in knobs.items()) or 'defaults'}"
        print(f"{label:44s} {rate:9.0f} {floor:10.0f} {rate / floor:7.2f}  (target >= 0.5)")
    if args.skip_models:
        return
    print(f"\ntraining step, batch {args.batch}, {args.frames} x 32 x 32 frames, CPU, {torch.get_num_threads()} thread(s)")
    for name in video_model_names():
        print(f"  {name:14s} {step_time(name, args.batch, args.frames, args.repeats):8.2f} s/step", flush=True)


if __name__ == "__main__":
    main()
