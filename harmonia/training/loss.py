"""The neural harmonizer loss (Fel, Linsley, Serre et al., NeurIPS 2022), as released.

total = CE(logits, y; label smoothing 0.1) + lambda_w * sum 0.5 ||v||^2 + lambda_h * L_h, where
L_h compares, at the first ``levels`` levels of a binomial pyramid, the standardised and
cut saliency of the true-class logit with the human map rescaled to the saliency's max.
The saliency stays in the autograd graph (double back-propagation). The published facts
this follows are listed in docs/methods.md ("The harmonizer loss").

Cheaper than the reference, same loss
-------------------------------------
Samples without a human map (token 0; 80% of a batch in the published recipe) contribute
exactly zero to L_h, and so does every gradient through their saliency. With
``only_contributing=True`` the saliency graph (``create_graph=True``) is built for the
token-1 rows only: the batch is forwarded as two parts, the token-1 rows with an input
that requires grad and the others plainly, and the logits are put back in batch order.
Every sample is still forwarded exactly once (no recomputation) and the first and second
backward through the network cost 20% of the reference's at a 20% share.

Why two parts and not one forward with the gradient of the token-1 logits only: autograd
cannot prune rows. The input-gradient of a batch is computed by full-batch kernels whatever
the rows of the output cotangent hold, and so is the double backward. Measured
(benchmarks/bench_harmonizer_step.py, CPU, batch 16 at 224 px, 3 of 16 rows with a map,
BatchNorm frozen), step time over a plain cross-entropy step: resnet18 reference 2.65x,
one-forward variant 2.85x, two parts 1.32x; EfficientNet-Lite0 3.39x, 3.56x, 1.60x.

What holds with BatchNorm in training mode: the layer couples the rows of a batch through
its batch statistics. The released saliency is the gradient of the *sum* of the true-class
logits of the whole batch, so a token-1 row's saliency then also holds the (small) terms
through the statistics coming from the token-0 rows' logits, and the exact weight gradient
needs second-order work on the token-0 rows too (a Hessian-vector product through every
row: the statistics' adjoints are the gradients w.r.t. the BatchNorm shifts and scales).
No split is exact there, and splitting would also change the statistics themselves. So
whenever a module uses batch statistics (a ``_BatchNorm`` in training mode, or one without
running statistics) the loss takes the reference's full-batch path: same loss, same
gradients, same running-statistics update, no saving (resnet18 3.02x vs 3.06x,
EfficientNet-Lite0 4.04x vs 4.36x in the run above with BatchNorm in training mode; the
one-forward variant is no cheaper there either, 3.09x and 4.00x). Only the maps are
computed for the token-1 rows alone. Models whose rows are independent (BatchNorm in eval
mode / frozen, LayerNorm or GroupNorm models such as ViTs and ConvNeXts, no normalisation)
take the split path; with dropout or stochastic depth the random masks are drawn per part,
which changes no expectation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.attribution.reducers import reduce_channels
from harmonia.settings import LossOptions
from harmonia.training.pyramid import pyramid
from harmonia.training.weight_decay import weight_params as select_weight_params
from harmonia.training.weight_decay import weight_term

SaliencyInput = Literal["pixels", "normalized"]


@dataclass
class HarmonizerLoss:
    """The loss and its parts (scalar tensors) and the logits of the same forward.

    ``total = cross_entropy + lambda_weights * weights + lambda_harmonization * harmonization
    + lambda_outside * outside + lambda_masked * masked``; the parts are unweighted.
    """

    total: torch.Tensor
    cross_entropy: torch.Tensor
    harmonization: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor
    outside: torch.Tensor | None = None  # the saliency outside the human maps (lambda_outside term)
    masked: torch.Tensor | None = None  # cross-entropy on images reduced to the human maps (lambda_masked term)


def standardize_cut(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU((m - mean) / (std + eps)) per map, mean and population std over the last two axes.

    Example:
        >>> standardize_cut(torch.tensor([[[1.0, 3.0]]]))
        tensor([[[0.0000, 1.0000]]])
    """
    mean = maps.mean((-2, -1), keepdim=True)
    var = (maps - mean).square().mean((-2, -1), keepdim=True)
    # sqrt has an infinite slope at 0: a constant map would turn a zero cotangent into NaN.
    # Clamping at the smallest normal number moves std by < 1e-18, far below eps.
    std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
    return F.relu((maps - mean) / (std + eps))


def _math_attention() -> contextlib.AbstractContextManager:
    # The fused scaled-dot-product-attention kernels (flash / memory-efficient, CPU and CUDA)
    # have no second derivative; the plain math kernel has. HarmoniaModel.forward already
    # does this; we also need it for model.net and for models that are not wrapped.
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def disable_fused_attention(model: nn.Module) -> int:
    """Switch timm's fused attention off in ``model``; returns how many layers changed.

    Not needed for :func:`harmonizer_loss`, which runs attention with the twice
    differentiable math kernel; useful for code that double-backpropagates on its own.
    The maths is the same.

    Example:
        >>> disable_fused_attention(nn.Linear(2, 2))
        0
    """
    count = 0
    for module in model.modules():
        if getattr(module, "fused_attn", False) is True:
            module.fused_attn = False
            count += 1
    return count


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer of ``model`` in eval mode; returns how many there are.

    The layers then normalise with their running statistics (which stop updating) while
    their scales and shifts still train: a common fine-tuning choice. It also makes the
    rows of a batch independent, so :func:`harmonizer_loss` takes its cheap split path
    (docs/benchmarks.md). Call it after every ``model.train()``, which undoes it. Layers
    without running statistics cannot be frozen and raise ``ValueError``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
        >>> freeze_batchnorm(net), net[1].training, net[0].training
        (1, False, True)
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        if m.running_mean is None:
            raise ValueError(f"cannot freeze {type(m).__name__}: it keeps no running statistics "
                             "(track_running_stats=False)")
        m.eval()
    return len(layers)


def _uses_batch_statistics(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
        for m in model.modules()
    )


def _reduce(grads: torch.Tensor, reducer: str) -> torch.Tensor:
    if grads.dtype == torch.float64:
        # reduce_channels returns float32 maps (right for explainers); keep float64 here so
        # that gradient checks in float64 stay exact. Same three definitions.
        if reducer == "mean":
            return grads.mean(1)
        if reducer == "max_abs":
            return grads.abs().amax(1)
        if reducer == "abs_mean":
            return grads.mean(1).abs()
    return reduce_channels(grads, reducer)


def _true_class_score(logits: torch.Tensor, labels: torch.Tensor, score: str = "logit") -> torch.Tensor:
    # sum_k s_k * y_k with s the logits (as released), the logits minus their mean over classes
    # (a shift common to all classes changes no decision), or the log-probabilities
    if score == "centered_logit":
        logits = logits - logits.mean(1, keepdim=True)
    elif score == "log_prob":
        logits = torch.log_softmax(logits, 1)
    if labels.ndim == 1:
        return logits.gather(1, labels[:, None]).sum()
    return (logits * labels.to(logits.dtype)).sum()


def _forward_for_saliency(model: nn.Module, images: torch.Tensor, saliency_input: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward with a fresh leaf input; returns (leaf, logits). The leaf is where the saliency lives."""
    if saliency_input == "pixels":
        x = images.detach().requires_grad_(True)
        net = model
    else:
        x = model.preprocess(images).detach().requires_grad_(True)
        net = model.net
    with _math_attention():
        return x, net(x)


def _harmonization_term(
    saliency: torch.Tensor, human: torch.Tensor, tokens: torch.Tensor, batch_size: int, levels: int
) -> torch.Tensor:
    """mean over levels of [sum over rows, pixels of t_n (P_i(z_s) - P_i(h'))^2] / (N h_i w_i).

    ``saliency`` may hold only the contributing rows; ``batch_size`` is the whole batch's N,
    so the result equals the release's mean over the full batch (zero rows add nothing).
    """
    with torch.autocast(saliency.device.type, enabled=False):  # maps in float32 even under autocast
        dtype = torch.promote_types(saliency.dtype, torch.float32)
        z_s = standardize_cut(saliency.to(dtype))
        z_h = standardize_cut(human.to(dtype))
        scale = (z_s.amax((-2, -1), keepdim=True) + 1e-6).detach()  # stop-gradient, as released
        human_rescaled = z_h / (z_h.amax((-2, -1), keepdim=True) + 1e-6) * scale
        weights = tokens.to(dtype)[:, None, None]
        terms = []
        for p_s, p_h in zip(pyramid(z_s, levels), pyramid(human_rescaled, levels)):
            denominator = batch_size * p_s.shape[-2] * p_s.shape[-1]
            terms.append((weights * (p_s - p_h).square()).sum() / denominator)
        return torch.stack(terms).mean()


def _ignored_pixels(human: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool mask of the pixels where a human map is at most ``threshold`` of its max (nobody looked)."""
    return human <= threshold * human.amax((-2, -1), keepdim=True)


def _outside_term(
    saliency: torch.Tensor, human: torch.Tensor, tokens: torch.Tensor, batch_size: int, threshold: float
) -> torch.Tensor:
    """sum over rows and pixels of t_n * saliency^2 where the human map is <= threshold * its max, / N.

    Not standardised (unlike the harmonization term): the size of the gradient where people
    do not look is what it penalises ("right for the right reasons", Ross et al. 2017).
    """
    with torch.autocast(saliency.device.type, enabled=False):
        dtype = torch.promote_types(saliency.dtype, torch.float32)
        human = human.to(dtype)
        mask = _ignored_pixels(human, threshold).to(dtype)
        return (tokens.to(dtype)[:, None, None] * mask * saliency.to(dtype).square()).sum() / batch_size


def check_loss_options(**options: Any) -> None:
    """Raise :class:`~harmonia.errors.UserError` naming the first unusable option of
    :func:`harmonizer_loss` (``options``: any :class:`LossOptions` fields; the rest default).

    Example:
        >>> check_loss_options(reducer="max_abs", score="centered_logit")
    """
    LossOptions.check_keys(options, "loss")
    LossOptions(**options).validate()


def harmonizer_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    human_maps: torch.Tensor | None,
    tokens: torch.Tensor | None = None,
    *,
    lambda_harmonization: float = LossOptions.lambda_harmonization,
    lambda_weights: float = LossOptions.lambda_weights,
    label_smoothing: float = LossOptions.label_smoothing,
    levels: int = LossOptions.levels,
    pyramid_levels: int = LossOptions.pyramid_levels,
    reducer: str = LossOptions.reducer,
    saliency_input: SaliencyInput = LossOptions.saliency_input,  # type: ignore[assignment]
    score: str = LossOptions.score,
    lambda_outside: float = LossOptions.lambda_outside,
    outside_threshold: float = LossOptions.outside_threshold,
    lambda_masked: float = LossOptions.lambda_masked,
    only_contributing: bool = True,
    weight_params: list[torch.Tensor] | None = None,
) -> HarmonizerLoss:
    """The released neural-harmonizer training loss for one batch (one forward, no recomputation).

    Args:
        model: a classifier taking [0, 1] images (a ``HarmoniaModel``; ``saliency_input=
            "normalized"`` needs its ``preprocess`` and ``net``). Put it in the mode you train in.
        images: N x 3 x H x W in [0, 1] (channels-last is fine).
        labels: class indices (N,), or one-hot / soft labels (N x C).
        human_maps: N x H x W (or N x 1 x H x W) at the saliency's resolution; rows with token 0
            are ignored (may be None when no row contributes).
        tokens: (N,) weights of the harmonization term per sample, 1 = has a human map, 0 = none;
            None means all ones.
        lambda_harmonization: weight of the harmonization term; 0 skips the saliency entirely.
        lambda_weights: weight of the sum 0.5 ||v||^2 term.
        label_smoothing: of the cross-entropy.
        levels: how many pyramid levels are averaged: 5 as released, 6 as in the original code.
        pyramid_levels: levels the published pyramid builds (levels beyond ``levels`` do not
            change the loss and are not computed).
        reducer: colour-channel reduction of the input gradient: "mean" (signed, as released),
            "max_abs" or "abs_mean" (see ``harmonia.attribution.reducers``).
        saliency_input: "pixels" (gradient w.r.t. the [0, 1] images, as released) or
            "normalized" (w.r.t. the ImageNet-normalised network input, the original code).
        score: what the saliency explains: "logit" (the true-class logit, as released),
            "centered_logit" (minus the mean logit: a component shared by all classes, which
            no decision sees, cannot make the map) or "log_prob" (the log-probability).
        lambda_outside: weight of an extra term, not in the release (0 = off): the sum of the
            squared saliency over the pixels where the human map is at most
            ``outside_threshold`` of its max, averaged over the batch. Unlike the
            standardised harmonization term it grows with the gradient itself, so a cue
            read where people do not look costs something (docs/demo.md, measured).
        lambda_masked: weight of an extra term, not in the release (0 = off): the
            cross-entropy of the images reduced to what people looked at (pixels where the
            human map is at most ``outside_threshold`` of its max set to grey, 0.5), per
            row with a human map, token-weighted and averaged over the batch. It supervises
            the decision on the human-relevant pixels themselves rather than the gradient
            map, which training can reshape without changing the decision (docs/demo.md).
            One extra forward of those rows.
        only_contributing: build the double-backward graph only for token != 0 rows when the
            model's rows are independent (see the module docstring); same loss either way.
        weight_params: the parameters of the weight term; None selects them as the release
            (``harmonia.training.weight_params``). Pass the list once to save the selection.

    Returns:
        HarmonizerLoss(total, cross_entropy, harmonization, weights, logits, outside, masked).

    Example:
        >>> from harmonia.models.wrapper import HarmoniaModel, Preprocessing
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> model = HarmoniaModel(net, "toy", Preprocessing(input_size=(16, 16)))
        >>> out = harmonizer_loss(model, torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]),
        ...                       torch.rand(4, 16, 16), tokens=torch.tensor([1, 0, 0, 1]))
        >>> out.total.backward()
        >>> out.logits.shape, bool(out.harmonization > 0)
        (torch.Size([4, 2]), True)
    """
    LossOptions(lambda_harmonization, lambda_weights, label_smoothing, levels, pyramid_levels, reducer,
                saliency_input, score, lambda_outside, outside_threshold, lambda_masked).validate()
    if saliency_input == "normalized" and not (hasattr(model, "preprocess") and hasattr(model, "net")):
        raise ValueError("saliency_input='normalized' needs a HarmoniaModel (model.preprocess and model.net)")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images N x 3 x H x W, got {tuple(images.shape)}")
    n = images.shape[0]
    labels = labels.to(images.device)
    if labels.shape[0] != n:
        raise ValueError(f"got {n} images but {labels.shape[0]} labels")
    tokens = torch.ones(n, device=images.device) if tokens is None else torch.as_tensor(tokens, device=images.device).reshape(-1)
    if tokens.shape[0] != n:
        raise ValueError(f"got {n} images but {tokens.shape[0]} tokens")

    params = select_weight_params(model) if weight_params is None else list(weight_params)
    weights = weight_term(params) if params else torch.zeros((), device=images.device)

    contributing = (tokens != 0).nonzero().flatten()
    harmonize = (lambda_harmonization != 0 or lambda_outside != 0) and (contributing.numel() > 0 or not only_contributing)
    mask_inputs = lambda_masked != 0 and contributing.numel() > 0
    if harmonize or mask_inputs:
        if human_maps is None:
            raise ValueError("human_maps is needed when some tokens are non-zero")
        human_maps = human_maps.to(images.device)
        if human_maps.ndim == 4:
            human_maps = human_maps.squeeze(1)
    if not harmonize:  # no double backward at all: L_h is exactly zero
        logits = model(images)
        harmonization = torch.zeros((), device=images.device)
        outside = torch.zeros((), device=images.device)
    else:
        split = only_contributing and contributing.numel() < n and not _uses_batch_statistics(model)
        if split:
            others = (tokens == 0).nonzero().flatten()
            x1, logits1 = _forward_for_saliency(model, images[contributing], saliency_input)
            logits0 = model(images[others])
            # back to batch order: logits[contributing] = logits1, logits[others] = logits0
            order = torch.cat([contributing, others])
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(n, device=order.device)
            logits = torch.cat([logits1, logits0])[inverse]
            (grads,) = torch.autograd.grad(_true_class_score(logits1, labels[contributing], score), x1, create_graph=True)
            saliency, keep = _reduce(grads, reducer), contributing
        else:
            x, logits = _forward_for_saliency(model, images, saliency_input)
            # the whole batch's sum: with batch statistics a row's saliency has terms from every logit
            (grads,) = torch.autograd.grad(_true_class_score(logits, labels, score), x, create_graph=True)
            saliency = _reduce(grads, reducer)
            keep = contributing if only_contributing else torch.arange(n, device=images.device)
            if only_contributing:  # the maps of token-0 rows add exactly zero
                saliency = saliency[keep]
        if human_maps.shape[-2:] != saliency.shape[-2:]:
            raise ValueError(
                f"human maps are {tuple(human_maps.shape[-2:])} but the saliency is {tuple(saliency.shape[-2:])}"
            )
        harmonization = _harmonization_term(saliency, human_maps[keep], tokens[keep], n, levels)
        outside = (_outside_term(saliency, human_maps[keep], tokens[keep], n, outside_threshold) if lambda_outside
                   else torch.zeros((), device=images.device))

    with torch.autocast(images.device.type, enabled=False):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        if labels.ndim == 1:
            cross_entropy = F.cross_entropy(logits.to(dtype), labels, label_smoothing=label_smoothing)
        else:
            cross_entropy = F.cross_entropy(logits.to(dtype), labels.to(dtype), label_smoothing=label_smoothing)
        total = cross_entropy + lambda_weights * weights.to(dtype) + lambda_harmonization * harmonization.to(dtype)
        if lambda_outside:
            total = total + lambda_outside * outside.to(dtype)
    masked = torch.zeros((), device=images.device)
    if mask_inputs:
        masked = _masked_term(model, images, labels, human_maps, tokens, contributing, outside_threshold, label_smoothing)
        total = total + lambda_masked * masked.to(total.dtype)
    return HarmonizerLoss(total, cross_entropy, harmonization, weights, logits, outside, masked)


def _masked_term(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, human_maps: torch.Tensor,
                 tokens: torch.Tensor, rows: torch.Tensor, threshold: float, label_smoothing: float) -> torch.Tensor:
    """sum over rows with a map of t_n * CE(model(image_n greyed where its map <= threshold * max)) / N."""
    if human_maps.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"lambda_masked needs human maps at the image size {tuple(images.shape[-2:])}, got {tuple(human_maps.shape[-2:])}")
    keep = (~_ignored_pixels(human_maps[rows].float(), threshold)).to(images.dtype)[:, None]
    x = images[rows]
    logits = model(x * keep + 0.5 * (1 - keep))
    with torch.autocast(images.device.type, enabled=False):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        target = labels[rows] if labels.ndim == 1 else labels[rows].to(dtype)
        ce = F.cross_entropy(logits.to(dtype), target, label_smoothing=label_smoothing, reduction="none")
        return (tokens[rows].to(dtype) * ce).sum() / images.shape[0]
