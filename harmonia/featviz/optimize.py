"""The optimisation loop: K objectives, one image each, optimised together in one batch.

Every step renders the K images, cuts ``crops`` augmented crops of each, runs the model once on
all K x crops of them (hooks on the layers the objectives read), and maximises each image's own
objective averaged over its crops. Image k draws its initialisation and its augmentations from
the seed ``seeds[k]`` (default ``seed + k``) and its loss does not involve the other images, so
a batch of K equals K single runs with those seeds (up to float reassociation in the model).

The *transparency* of image k is the accumulated ``|d objective_k / d image_k|`` over all steps,
on the full image before cropping (an attribution map of the visualization; Fel et al. 2023),
averaged over colour channels: K x H x W, non-negative.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> r = maco(net, ["class:1", "channel:0:2"], steps=3, image_size=32, crops=2, input_size=(16, 16))
    >>> tuple(r.images.shape), tuple(r.transparency.shape), tuple(r.trace.shape)
    ((2, 3, 32, 32), (2, 32, 32), (3, 2))
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn

from harmonia.featviz.augment import AUGMENTATIONS, Augmentation, LucidTransforms
from harmonia.featviz.objectives import LOGITS, Objective, objective_layers, parse_objectives
from harmonia.featviz.params import AccentuationImage, FourierImage, MacoImage
from harmonia.featviz.spectrum import load_spectrum
from harmonia.models.fold_bn import fold_batchnorm
from harmonia.models.layers import resolve_layer, unwrap
from harmonia.utils.io import atomic_write

METHODS = ("maco", "fourier", "accentuation")


@dataclass
class FeatvizResult:
    """What :func:`visualize` returns (tensors on the CPU)."""

    images: torch.Tensor  # K x 3 x H x W in [0, 1]
    transparency: torch.Tensor  # K x H x W, accumulated |gradient|
    trace: torch.Tensor  # steps x K: each image's objective (mean over its crops) at each step
    objectives: list[str]
    settings: dict[str, Any]
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def final_values(self) -> list[float]:
        """Each objective's value at the last step (mean over that step's crops)."""
        return [float(v) for v in self.trace[-1]]


def _input_size(model: nn.Module, input_size: Sequence[int] | int | None) -> tuple[int, int]:
    if input_size is not None:
        return (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    size = getattr(model, "input_size", None)  # a HarmoniaModel's
    if size is None:
        cfg = getattr(unwrap(model)[0], "pretrained_cfg", None) or {}  # a bare timm model's
        size = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    return int(size[0]), int(size[1])


@contextmanager
def _recording(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks keeping each module's last output, under the name an objective reads it by."""
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():

        def keep(_m: nn.Module, _i: Any, out: Any, _name: str = name) -> None:
            a = out[0] if isinstance(out, (tuple, list)) else out
            # a copy: later in-place ops (residual `x += shortcut`, ReLU(inplace=True)) would
            # otherwise change the recorded value; its gradient still reaches this layer's output
            acts[_name] = a.clone()

        handles.append(module.register_forward_hook(keep))
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def _network(model: nn.Module, layers: Sequence[str], in_size: tuple[int, int], device: torch.device,
             fold_bn: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, nn.Module], int]:
    """(crops in [0, 1] -> logits, the modules to hook by objective layer name, BatchNorms folded).

    With ``fold_bn`` the network runs as a copy with its eval-mode BatchNorms folded into the
    convolutions before them (:func:`harmonia.models.fold_bn.fold_batchnorm`; the hooked layers'
    outputs are kept as they are): the same function, one pass less over most activations. That
    copy (ours to change) is also put in the channels-last memory layout, which the CPU's
    convolution kernels run faster (same values up to float rounding).
    """
    net, _ = unwrap(model)
    names = {layer: resolve_layer(model, layer)[0] for layer in layers}
    folded = 0
    if fold_bn:
        example = torch.rand(2, 3, *in_size, generator=torch.Generator().manual_seed(0)).to(device)
        pre = model.preprocess if net is not model and hasattr(model, "preprocess") else (lambda x: x)
        with torch.no_grad():
            example = pre(example)
        net, folded = fold_batchnorm(net, example, keep=set(names.values()))
    forward = _forward(model, net)
    if folded:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        plain = forward
        forward = lambda x: plain(x.contiguous(memory_format=torch.channels_last))  # noqa: E731
    return forward, {layer: net.get_submodule(name) for layer, name in names.items()}, folded


def _forward(model: nn.Module, net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """[0, 1] crops -> logits through ``net`` (the model's network or a folded copy of it). A
    HarmoniaModel's preprocessing, then the network directly: one backward only, so its
    double-backward conveniences are not needed."""
    if hasattr(model, "preprocess") and isinstance(getattr(model, "net", None), nn.Module):
        return lambda x: net(model.preprocess(x))  # type: ignore[operator]
    return net


def _optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    table = {"nadam": torch.optim.NAdam, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if name not in table:
        raise ValueError(f"unknown optimizer {name!r}; one of {', '.join(table)}")
    return table[name](params, lr=lr)


def visualize(
    model: nn.Module,
    objectives: Sequence[str | Objective] | str | Objective,
    *,
    method: str = "maco",
    steps: int = 256,
    image_size: int | Sequence[int] = 256,
    crops: int = 6,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    crop_schedule: str = "uniform",
    augmentation: str = "crops",
    resample: str = "bicubic",
    centre_std: float = 0.15,
    noise: float = 0.01,
    optimizer: str | None = None,
    lr: float | None = None,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    spectrum: str | torch.Tensor | None = None,
    decay: float = 1.0,
    seed_images: torch.Tensor | None = None,
    closeness: float = 1.0,
    input_size: Sequence[int] | int | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 25,
    max_batch: int | None = None,
    fold_bn: bool = True,
) -> FeatvizResult:
    """Optimise one image per objective, all K in one batch. See :func:`maco` for the settings.

    With ``checkpoint`` (a file), the state (parameters, optimiser, augmentation streams,
    transparency, trace) is saved atomically every ``checkpoint_every`` steps; a run with the
    same settings resumes from it and ends exactly as an uninterrupted one would. The file is
    removed when the run completes. ``max_batch`` bounds the crops per forward pass (default
    4 on the CPU, at least one image's crops; all on a GPU); results do not depend on it. ``fold_bn`` runs a copy of the
    network with its eval-mode BatchNorms folded into the convolutions before them (the same
    function up to float rounding; faster); the model itself is not changed.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    objs = [o.bind(model) for o in parse_objectives(objectives)]
    k = len(objs)
    seeds = [seed + i for i in range(k)] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != k:
        raise ValueError(f"{k} objectives but {len(seeds)} seeds")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; one of {', '.join(AUGMENTATIONS)}")
    aug: Augmentation | LucidTransforms
    if augmentation == "lucid":  # the published Fourier baseline's transforms (no crops, no noise)
        aug = LucidTransforms(crops=crops)
    else:
        aug = Augmentation(crops=crops, crop_scale=tuple(crop_scale), centre_std=centre_std, noise=noise,  # type: ignore[arg-type]
                           schedule=crop_schedule, resample=resample)
    in_size = _input_size(model, input_size)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")

    if method == "accentuation":
        if seed_images is None:
            raise ValueError("feature accentuation needs seed_images (K x 3 x H x W in [0, 1], one per objective)")
        if seed_images.ndim == 3:
            seed_images = seed_images[None].expand(k, -1, -1, -1)
        if seed_images.shape[0] != k:
            raise ValueError(f"{k} objectives but {seed_images.shape[0]} seed images")
        param: Any = AccentuationImage(seed_images, closeness=closeness, device=device)
        size = param.size
    else:
        size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        if min(size) < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {size}")
        if method == "maco":
            mag = spectrum if isinstance(spectrum, torch.Tensor) else load_spectrum(spectrum, size)
            param = MacoImage(mag, size, seeds, device=device)
        else:
            param = FourierImage(size, seeds, decay=decay, device=device)
    opt_name, default_lr = param.default_optimizer
    opt_name = optimizer or opt_name
    lr = default_lr if lr is None else float(lr)
    opt = _optimizer(opt_name, param.parameters(), lr)
    gens = [torch.Generator().manual_seed(10_007 * s + 1) for s in seeds]  # augmentation streams
    if max_batch is None:  # on one CPU core Lite0 runs fastest per crop at 4 per pass (docs/featviz.md)
        max_batch = 10_000 if device.type == "cuda" else 4
    per_chunk = max(1, int(max_batch) // crops)
    layers = objective_layers(objs)
    trace = torch.zeros(steps, k)
    transparency = torch.zeros(k, *size, device=device)

    settings = {
        "method": method, "steps": steps, "image_size": list(size), "input_size": list(in_size),
        "optimizer": opt_name, "lr": lr, "seeds": seeds, "augmentation": aug.to_json(),
        "spectrum": (spectrum if isinstance(spectrum, str) else ("tensor" if spectrum is not None else "default"))
        if method == "maco" else None,
        "decay": decay if method == "fourier" else None,
        "closeness": closeness if method == "accentuation" else None,
        "fold_bn": bool(fold_bn),
    }
    first = 0
    ckpt_id = repr((settings, [o.spec() for o in objs]))
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state.get("id") == ckpt_id:  # a checkpoint of another run is ignored (and replaced)
            with torch.no_grad():
                for q, v in zip(param.parameters(), state["params"]):
                    q.copy_(v)
            opt.load_state_dict(state["optimizer"])
            for g, st in zip(gens, state["generators"]):
                g.set_state(st)
            transparency.copy_(state["transparency"])
            trace.copy_(state["trace"])
            first = int(state["step"])

    def save_checkpoint(step: int) -> None:
        state = {"id": ckpt_id, "step": step, "params": [q.detach() for q in param.parameters()],
                 "optimizer": opt.state_dict(), "generators": [g.get_state() for g in gens],
                 "transparency": transparency, "trace": trace}
        atomic_write(checkpoint, lambda tmp: torch.save(state, tmp))  # type: ignore[arg-type]

    restore = [(m, m.training) for m in model.modules()]
    grad_flags = [(q, q.requires_grad) for q in model.parameters()]
    model.eval()
    for q, _ in grad_flags:
        q.requires_grad_(False)  # gradients flow to the image only
    start = time.perf_counter()
    try:
        forward, hooked, folded = _network(model, layers, in_size, device, fold_bn)
        with _recording(hooked) as acts:
            if progress and first:
                progress(first, steps)
            for step in range(first, steps):
                images = param.images()
                # The model runs on chunks of images (at most max_batch crops per forward): the
                # same result as one batch, since image k's loss involves only its own crops,
                # with memory bounded whatever K.
                leaf = images.detach().requires_grad_(True)
                values = torch.zeros(k, device=device)
                for lo in range(0, k, per_chunk):
                    hi = min(k, lo + per_chunk)
                    acts.clear()
                    acts[LOGITS] = forward(aug(leaf[lo:hi], in_size, gens[lo:hi], step, steps))
                    v = torch.stack([objs[i]({name: a[(i - lo) * crops:(i - lo + 1) * crops] for name, a in acts.items()}).mean()
                                     for i in range(lo, hi)])
                    v.sum().backward()
                    values[lo:hi] = v.detach()
                acts.clear()
                g_obj = leaf.grad
                g_img = -g_obj  # we minimise -objective
                pen = param.penalty(images)
                if pen is not None:
                    (g_pen,) = torch.autograd.grad(pen, images, retain_graph=True)
                    g_img = g_img + g_pen
                grads = torch.autograd.grad(images, param.parameters(), grad_outputs=g_img)
                for q, g in zip(param.parameters(), grads):
                    q.grad = g
                opt.step()
                opt.zero_grad(set_to_none=True)
                transparency += g_obj.detach().abs().mean(1)
                trace[step] = values.cpu()
                if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                    save_checkpoint(step + 1)
                if progress:
                    progress(step + 1, steps)
            with torch.no_grad():
                final = param.images().detach().clamp(0, 1).cpu()
    finally:
        for m, mode in restore:
            m.training = mode
        for q, flag in grad_flags:
            q.requires_grad_(flag)
    seconds = time.perf_counter() - start
    if checkpoint is not None and Path(checkpoint).is_file():
        Path(checkpoint).unlink()
    return FeatvizResult(final, transparency.cpu(), trace, [o.name or o.spec() for o in objs], settings, seconds,
                         extras={"batchnorms_folded": folded})


def maco(model: nn.Module, objectives: Sequence[str | Objective] | str | Objective, *, steps: int = 256,
         image_size: int | Sequence[int] = 256, crops: int = 6, **settings: Any) -> FeatvizResult:
    """MACO feature visualizations of ``objectives`` (one image each, optimised in one batch).

    Args:
        model: a HarmoniaModel (images in [0, 1]) or any module taking the crops directly.
        objectives: specs (``"class:967"``, ``"channel:blocks.5:12"``) or :class:`Objective` s.
        steps: optimisation steps (Xplique's default 256; Horama 1000).
        image_size: side of the visualization (Xplique 512, Horama 1280; 256 here, CPU-sized).
        crops: augmented crops per image and step (Horama 6, Xplique 32).
        **settings: ``crop_scale`` (crop side as a fraction of the image side, uniform in
            (0.5, 1.0): at 256 px, Horama's (0.25, 0.30) gives no transferable image, see
            docs/featviz.md), ``crop_schedule`` ("uniform" | "xplique"), ``augmentation`` ("crops";
            "lucid": Lucid's transforms instead of crops), ``resample`` ("bicubic", the sharpest and
            cheapest, see docs/featviz.md; "bilinear": roi_align's adaptive sampling; "box": 2 x 2
            samples, the earlier default; "horama": 2x then bicubic antialiased), ``centre_std`` (0.15),
            ``noise`` (0.01 of the [0, 1] range), ``optimizer``/``lr`` (NAdam 1.0), ``seed`` /
            ``seeds`` (image k uses ``seed + k``), ``spectrum`` (a .npy file or a tensor; default the
            shipped one), ``input_size`` (crop size fed to the model; default the model's),
            ``progress`` (``callback(done, total)``).

    Returns:
        :class:`FeatvizResult`: ``images`` K x 3 x H x W in [0, 1], ``transparency`` K x H x W,
        ``trace`` steps x K, ``settings``.

    Example:
        >>> from harmonia.models import load
        >>> r = maco(load("efficientnet_lite0"), "class:967", steps=2, image_size=64, crops=1)
        >>> r.images.shape[0], r.settings["method"]
        (1, 'maco')
    """
    return visualize(model, objectives, method="maco", steps=steps, image_size=image_size, crops=crops, **settings)


def fourier(model: nn.Module, objectives: Sequence[str | Objective] | str | Objective, *, steps: int = 256,
            image_size: int | Sequence[int] = 256, crops: int = 6, **settings: Any) -> FeatvizResult:
    """The Lucid-style Fourier baseline (whole spectrum optimised, 1/f^decay scaling, Adam 0.05),
    with the same augmentations and objectives as :func:`maco`; ``augmentation="lucid"`` swaps
    MACO's crops for the transforms published with it (:class:`LucidTransforms`).

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> fourier(net, "class:0", steps=2, image_size=16, crops=1, input_size=8).images.shape
        torch.Size([1, 3, 16, 16])
    """
    return visualize(model, objectives, method="fourier", steps=steps, image_size=image_size, crops=crops, **settings)


def accentuate(model: nn.Module, objectives: Sequence[str | Objective] | str | Objective, images: torch.Tensor, *,
               steps: int = 256, crops: int = 6, closeness: float = 1.0, **settings: Any) -> FeatvizResult:
    """Feature accentuation: start from ``images`` (one per objective, or one for all) and push
    each towards its objective, penalised by ``closeness * mean((x - image)^2)``.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> accentuate(net, "class:1", torch.rand(3, 16, 16), steps=2, crops=1, input_size=8).images.shape
        torch.Size([1, 3, 16, 16])
    """
    return visualize(model, objectives, method="accentuation", steps=steps, crops=crops, seed_images=images,
                     closeness=closeness, **settings)
