"""What does PathTracker's easiest setting ask of a model? Shortcut baselines and a hand-made tracker.

No learning: on held-out PathTracker videos (default 32 frames, 0 distractors, speed 1) this
prints the accuracy of

- the best threshold on the start-to-end-marker distance (a shortcut: chance if none);
- the last frame alone: both classes have a dot inside the end marker in the last frame (the
  target's in positives, the second path's in negatives), so it prints how often that holds;
- a hand-made tracker (no parameters learned): a tag seeded on the start marker's area, carried
  each frame to the green pixels within ``reach`` of the tagged ones (a space-time flood fill),
  answering "positive" when the tag ends inside the end marker's area. With ``reach`` 3 (a
  3 x 3 step) the chain breaks where the markers, drawn over the dots, hide them; ``reach`` 5
  follows them. This is what a recurrent model must compute; its accuracy is a rough ceiling
  for a simple tracker (it errs when the two dots pass within ``reach`` of each other).

Run: .venv/bin/python benchmarks/tracking_shortcuts.py [--n 512] [--frames 32] [--distractors 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harmonia.challenges as hc  # noqa: E402
from harmonia.challenges.dataset import to_tensor  # noqa: E402


def flood_fill_tracker(videos: torch.Tensor, reach: int) -> torch.Tensor:
    """1 where the tag seeded on the start marker reaches the end marker's area (videos N x 3 x T x H x W)."""
    green = videos[:, 1]
    tag = F.max_pool2d(videos[:, 0:1, 0], 3, 1, 1)  # the start marker's area, its dot included
    for t in range(videos.shape[2]):
        tag = green[:, t:t + 1] * F.max_pool2d(tag, reach, 1, reach // 2)
    area = F.max_pool2d(videos[:, 2:3, 0], 3, 1, 1)
    return ((tag * area).sum(dim=(1, 2, 3)) > 0).long()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512, help="held-out videos")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--distractors", type=int, default=0)
    ap.add_argument("--speed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    gen = hc.create("pathtracker", seed=a.seed, frames=a.frames, distractors=a.distractors, speed=a.speed,
                    length=max(a.n, 20_000))
    samples = gen.samples(list(range(a.n)))
    labels = torch.tensor([s["label"] for s in samples])
    dist = np.array([np.linalg.norm(np.subtract(s["meta"]["start_marker"], s["meta"]["end_marker"])) for s in samples])
    y = labels.numpy()
    best = max(max(((dist < t) == y).mean(), ((dist >= t) == y).mean()) for t in np.unique(dist))
    print(f"{a.n} videos, frames={a.frames} distractors={a.distractors} speed={a.speed} (synthetic)")
    print(f"best start-end distance threshold: accuracy {best:.3f}")
    ends = [tuple(s["meta"]["trajectories"][:, -1].tolist()) for s in samples]
    dot_in_end = np.mean([list(s["meta"]["end_marker"]) in [list(p) for p in e] for s, e in zip(samples, ends)])
    print(f"last frame: a dot sits in the end marker in {dot_in_end:.3f} of the videos, either label")
    videos = torch.stack([to_tensor(s["video"]) for s in samples])
    for reach in (3, 5):
        pred = flood_fill_tracker(videos, reach)
        print(f"hand-made flood-fill tracker, reach {reach}: accuracy {(pred == labels).float().mean():.3f} "
              f"(says positive for {pred.float().mean():.3f})")


if __name__ == "__main__":
    main()
