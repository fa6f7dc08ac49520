"""Does a per-frame target-map loss teach a small recurrent model to track? (SYNTHETIC PathTracker)

An experiment, not part of the training protocol: a model of ``harmonia.models.tracking`` is
trained on the easiest PathTracker setting (32 frames, 0 distractors, speed 1) with BCE on its
readout plus ``--aux-weight`` x a per-frame auxiliary loss: a 1 x 1 conv of the recurrent state
(InT's excitatory state, the GRU's hidden state) predicts, per pixel and frame, whether the
target's 2 x 2 dot is there: ``--aux-loss pixels``, BCE with ``pos_weight`` 50 against the mask
drawn from the trajectories in ``meta``; or ``where`` (default), a softmax over each frame's
pixels scored on the target's dot, so a map on both dots costs log 2 a frame. The idea: BCE alone gives one signal, 32 steps after the decision
that matters; the map loss gives a short-range signal at every frame (the CV-RNN's synchrony
loss on masks is the published relative of this).

Every ``--eval-every`` steps it prints, on 256 held-out videos of seed 1: the readout's accuracy
in evaluation mode and in training mode (the marker readout's BatchNorm1d differs between them),
and ``track_last``: how often the map's argmax in the last frame lies on the target's dot (1.0
tracks; about 0.5 finds a dot but not which one; 0 finds none).

Run (one thread; about 1.5-2 s a step at batch 16 on the shared 2-core machine):

  .venv/bin/python benchmarks/tracking_aux_loss.py --model "int:channels=4,kernel=5,readout=marker" --lr 3e-3 --steps 400
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harmonia.challenges as hc  # noqa: E402
from harmonia.challenges.dataset import target_mask, to_tensor  # noqa: E402
from harmonia.models.tracking import target_map_loss  # noqa: E402
from harmonia.models.video import build_video_model  # noqa: E402


def pool(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Videos N x 3 x 32 x 32 x 32, labels N, target masks N x 32 x 32 x 32 of the easiest setting."""
    gen = hc.create("pathtracker", seed=seed, frames=32, distractors=0, length=max(n, 20_000))
    samples = gen.samples(list(range(n)))
    videos = torch.stack([to_tensor(s["video"]) for s in samples])
    labels = torch.tensor([s["label"] for s in samples]).float()
    masks = torch.stack([target_mask(s, gen.object_size) for s in samples]).float()
    return videos, labels, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="int:channels=4,kernel=5,readout=marker")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--aux-loss", choices=("pixels", "where"), default="where",
                    help="pixels: per-pixel BCE (pos_weight 50); where: softmax over the frame's pixels")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--train", type=int, default=1024, help="cached training videos (seed 0)")
    ap.add_argument("--eval-every", type=int, default=25)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, test = pool(0, a.train), pool(1, 256)
    model = build_video_model(a.model)
    head = nn.Conv2d(model.channels, 1, 1)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], a.lr)
    pos_weight = torch.tensor(50.0)

    def losses(videos, labels, masks):
        logits, states = model(videos, return_states=True)
        maps = head(states.flatten(0, 1)).view(masks.shape)
        if a.aux_loss == "pixels":
            aux = F.binary_cross_entropy_with_logits(maps, masks, pos_weight=pos_weight)
        else:  # "where": the trainer's --track-weight loss
            aux = target_map_loss(maps, masks)
        on_target = masks[:, -1].flatten(1).gather(1, maps[:, -1].flatten(1).argmax(1, keepdim=True))
        return F.binary_cross_entropy_with_logits(logits, labels), aux, logits, float(on_target.mean())

    print(f"{a.model}, lr {a.lr}, aux {a.aux_loss} weight {a.aux_weight}, batch {a.batch}; SYNTHETIC PathTracker 32 frames, "
          "0 distractors", flush=True)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, a.train, (a.batch,), generator=g)
        bce, aux, _, _ = losses(*(t[idx] for t in train))
        opt.zero_grad()
        (bce + a.aux_weight * aux).backward()
        opt.step()
        if step % a.eval_every == 0:
            with torch.no_grad():
                model.eval()
                _, aux_test, logits, track = losses(*test)
                model.train()
                logits_train_mode = losses(*test)[2]
            acc = float(((logits > 0).float() == test[1]).float().mean())
            acc_train_mode = float(((logits_train_mode > 0).float() == test[1]).float().mean())
            print(f"step {step} {time.perf_counter() - start:.0f}s bce {float(bce):.3f} aux(test) {float(aux_test):.3f} "
                  f"acc {acc:.3f} acc(train mode) {acc_train_mode:.3f} track_last {track:.3f}", flush=True)


if __name__ == "__main__":
    main()
