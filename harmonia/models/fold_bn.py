"""Fold eval-mode BatchNorm into the convolution before it: the same function, fewer passes.

In eval mode a BatchNorm is a per-channel affine map ``y = (x - mean) * gamma / sqrt(var + eps) + beta``,
so after a convolution it can be folded into the convolution's weight and bias exactly (up to
float rounding). The network then makes one pass over each activation map instead of two,
forward and backward, which is what repeated forward/backward passes on a frozen model (feature
visualization) pay for.

Pairs are found by running the network once: a BatchNorm whose input is the very tensor a
Conv2d returned. The folded copy is then checked against the original on that input (logits and
input gradient); a network where a folded convolution's output is also used elsewhere fails
that check and is not folded. timm's ``BatchNormAct2d`` keeps its dropout and activation (the
module keeps its name, and hooks on it see the same output).

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> with torch.no_grad():
    ...     _ = net[1].running_mean.uniform_(-1, 1), net[1].running_var.uniform_(0.5, 2)
    >>> folded, n = fold_batchnorm(net, torch.rand(2, 3, 8, 8))
    >>> n, type(folded[1]).__name__
    (1, 'Identity')
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


class FoldedNorm(nn.Module):
    """What is left of a timm ``BatchNormAct2d`` once its affine map is in the conv: drop, then act."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _conv_bn_pairs(net: nn.Module, example: torch.Tensor, keep: set[str]) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) where the BatchNorm's input is the conv's output tensor, and
    that tensor is not the output of a module in ``keep`` (a hooked conv, or a container ending in it)."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # the tensor kept alive, so its id stays its own
    kept: list[torch.Tensor] = []
    pairs: list[tuple[str, str, torch.Tensor]] = []
    handles = []
    for name, mod in net.named_modules():
        if name in keep:
            handles.append(mod.register_forward_hook(lambda _m, _i, out: kept.append(out)))
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(lambda _m, _i, out, _n=name: produced.__setitem__(id(out), (_n, out))))
        elif isinstance(mod, nn.BatchNorm2d):
            def pre(_m: nn.Module, inp: tuple, _n: str = name) -> None:
                hit = produced.get(id(inp[0]))
                if hit is not None and hit[1] is inp[0]:
                    pairs.append((hit[0], _n, inp[0]))
            handles.append(mod.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    convs = [c for c, _, _ in pairs]
    return [(c, b) for c, b, out in pairs
            if convs.count(c) == 1 and not any(out is k for k in kept)]  # a conv run twice is left alone


def _set(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                  bn.weight, bn.bias)
    conv.bias.requires_grad_(conv.weight.requires_grad)  # a bias made from zeros follows the weight


def _logits_and_grad(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    (grad,) = torch.autograd.grad(out.float().pow(2).sum(), x)
    return out.detach(), grad


def fold_batchnorm(net: nn.Module, example: torch.Tensor, keep: Iterable[str] = (), atol: float = 1e-4,
                   rtol: float = 1e-3, grad_rtol: float = 1e-2) -> tuple[nn.Module, int]:
    """A copy of the eval-mode ``net`` with every BatchNorm that directly follows a Conv2d folded into it.

    Args:
        net: the network (left unchanged).
        example: an input batch to find the pairs and check the folded copy on.
        keep: module names whose outputs must stay as they are (hooked layers): a conv named here
            is not folded (its output would then include the BatchNorm's affine map).
        atol, rtol: tolerance of the check on the logits for ``example``.
        grad_rtol: tolerance of the check on the input gradient, relative, in L2 norm. Not
            elementwise: a clamp (ReLU6) turns rounding-level differences of a pre-activation
            sitting on its kink into a different gradient mask; on EfficientNet-Lite0 that is a
            0.2 % L2 difference, the same as perturbing the input by 1e-6 in the unfolded net.

    Returns:
        (folded copy, number of BatchNorms folded); ``(net, 0)`` itself when nothing can be folded
        or the folded copy fails the check.
    """
    if any(m.training for m in net.modules()):
        raise ValueError("fold_batchnorm needs an eval-mode network (train-mode BatchNorm uses batch statistics)")
    pairs = _conv_bn_pairs(net, example, set(keep))
    if not pairs:
        return net, 0
    folded = copy.deepcopy(net)
    for conv_name, bn_name in pairs:
        bn = folded.get_submodule(bn_name)
        _fold(folded.get_submodule(conv_name), bn)  # type: ignore[arg-type]
        has_act = hasattr(bn, "act") and hasattr(bn, "drop")  # timm's BatchNormAct2d
        _set(folded, bn_name, FoldedNorm(bn.drop, bn.act) if has_act else nn.Identity())
    want, want_grad = _logits_and_grad(net, example)
    got, got_grad = _logits_and_grad(folded, example)
    grad_err = float((got_grad - want_grad).norm() / want_grad.norm().clamp_min(1e-12))
    if not (torch.allclose(got, want, atol=atol, rtol=rtol) and grad_err <= grad_rtol):
        return net, 0
    return folded, len(pairs)
