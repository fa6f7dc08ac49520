"""Cost of one harmonizer training step relative to one plain cross-entropy step.

Each configuration runs a full step on the same model and batch (forward, loss, backward,
SGD step with momentum), interleaved repeat by repeat so that load on the machine hits all
of them alike; the median is reported with its ratio to the plain step:

- ``plain``: cross-entropy (label smoothing 0.1) only.
- ``reference``: ``harmonizer_loss(only_contributing=False)`` with a human map on every
  sample (the reference computes the saliency graph for the whole batch in any case).
- ``optimised``: ``harmonizer_loss()`` with human maps on ``--share`` of the batch (20%).
- with ``--alternatives``: ``1fwd-subset-grad``, one forward of the whole batch and the
  saliency of the token-1 logits only (the design that was measured and rejected: autograd
  cannot prune rows, and with BatchNorm in training mode it is not even the same loss).

BatchNorm modes (``--bn``): ``train`` is the published recipe (batch statistics; the rows
of a batch are coupled, so the exact loss cannot skip the token-0 rows and ``optimised``
takes the reference's path); ``frozen`` keeps BatchNorm in eval mode while training the
rest (fine-tuning practice; rows independent, so ``optimised`` builds the saliency graph
for the token-1 rows only).

On the CPU the times are process CPU seconds with ``--threads`` (default 1) threads: with
other jobs on the machine, CPU time is far steadier than wall time (both are printed).
On a GPU: bf16 autocast, channels-last, wall time between synchronisations.

Run: .venv/bin/python benchmarks/bench_harmonizer_step.py [--models resnet18,efficientnet_lite0]
     [--batch 16] [--size 224] [--repeats 3] [--share 0.2] [--bn train,frozen] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.models.wrapper import HarmoniaModel, Preprocessing
from harmonia.training import freeze_batchnorm, harmonizer_loss, weight_params
from harmonia.training.loss import _harmonization_term, _reduce, _true_class_score


def build_model(name: str, size: int) -> HarmoniaModel:
    if name == "resnet18":
        import torchvision

        return HarmoniaModel(torchvision.models.resnet18(), "torchvision:resnet18", Preprocessing(input_size=(size, size)))
    from harmonia.models import load

    model = load(name, pretrained=False)
    model.preprocessing = replace(model.preprocessing, input_size=(size, size))
    return model


def set_bn_mode(model: nn.Module, mode: str) -> None:
    model.train()
    if mode == "frozen":
        freeze_batchnorm(model)


def one_forward_subset_grad(model, images, labels, maps, tokens, params) -> torch.Tensor:
    """The rejected design: whole-batch forward, saliency of the token-1 logits only."""
    x = images.detach().requires_grad_(True)
    logits = model(x)
    rows = tokens.nonzero().flatten()
    (g,) = torch.autograd.grad(_true_class_score(logits[rows], labels[rows]), x, create_graph=True)
    lh = _harmonization_term(_reduce(g, "mean")[rows], maps[rows], tokens[rows], len(images), 5)
    ce = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
    w = 0.5 * sum(p.float().pow(2).sum() for p in params)
    return ce + 1e-5 * w + lh


def bench_model(name: str, args: argparse.Namespace, device: torch.device, bn_mode: str) -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = build_model(name, args.size).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    set_bn_mode(model, bn_mode)
    params = weight_params(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    n, num_classes = args.batch, 1000
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, args.size, args.size, generator=g).to(device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (n,), generator=g).to(device)
    maps = torch.rand(n, args.size, args.size, generator=g).to(device)
    all_ones = torch.ones(n, device=device)
    share = torch.zeros(n, device=device)
    n1 = max(1, round(args.share * n))
    share[torch.randperm(n, generator=g)[:n1].to(device)] = 1.0

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def step(loss_fn: Callable[[], torch.Tensor]) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn()
        loss.backward()
        opt.step()

    configs: dict[str, Callable[[], torch.Tensor]] = {
        "plain": lambda: F.cross_entropy(model(images).float(), labels, label_smoothing=0.1),
        "reference": lambda: harmonizer_loss(model, images, labels, maps, all_ones, only_contributing=False,
                                             weight_params=params).total,
        "optimised": lambda: harmonizer_loss(model, images, labels, maps, share, weight_params=params).total,
    }
    if args.alternatives:
        configs["1fwd-subset-grad"] = lambda: one_forward_subset_grad(model, images, labels, maps, share, params)

    def timed(fn) -> tuple[float, float]:
        if cuda:
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        step(fn)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - w0, time.process_time() - c0

    for fn in configs.values():  # warm-up (allocator, kernels, mkldnn primitives)
        timed(fn)
    wall: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for key, fn in configs.items():
            w, c = timed(fn)
            wall[key].append(w)
            cpu[key].append(c)
    primary = wall if cuda else cpu
    base = statistics.median(primary["plain"])
    print(f"\n{name} | {device.type} | batch {n} at {args.size}px | BatchNorm {bn_mode} | "
          f"human maps on {n1}/{n} for 'optimised' | median of {args.repeats}"
          + ("" if cuda else f" | {torch.get_num_threads()} thread(s), CPU seconds"))
    print(f"  {'step':18s} {'time (s)':>9s} {'x plain':>8s} {'wall (s)':>9s}")
    for key in configs:
        t = statistics.median(primary[key])
        print(f"  {key:18s} {t:9.3f} {t / base:8.2f} {statistics.median(wall[key]):9.3f}", flush=True)
    return primary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=None, help="default 16 on the CPU, 128 on a GPU")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--share", type=float, default=0.2, help="fraction of the batch with a human map ('optimised')")
    ap.add_argument("--bn", default="train,frozen", help="BatchNorm modes to run: train, frozen or both")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs)")
    ap.add_argument("--alternatives", action="store_true", help="also time the rejected one-forward variant")
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" else [args.device]
    torch.set_num_threads(args.threads)
    for dev in devices:
        batch = args.batch or (128 if dev == "cuda" else 16)
        for name in args.models.split(","):
            for bn_mode in args.bn.split(","):
                bench_model(name, argparse.Namespace(**{**vars(args), "batch": batch}), torch.device(dev), bn_mode)


if __name__ == "__main__":
    main()
