"""Integrated Gradients (Sundararajan et al. 2017) through captum, with bounded memory.

captum's ``IntegratedGradients.attribute(internal_batch_size=B)`` evaluates the path in
chunks of ``B // N`` steps for all N images and adds each chunk's (detached) result into a
running total, so its memory follows B, not ``steps`` (``captum.attr._utils.batching.
_batch_attribution``; checked by ``tests/test_attribution.py`` and the memory probe in
``benchmarks/bench_attribution_overhead.py``). Its one gap is that a chunk never holds
fewer than N inputs; we close it by also splitting the images into groups of at most B,
so every forward pass holds at most ``internal_batch_size`` inputs.

captum's ``"riemann_trapezoid"`` weights do not sum to 1: it puts the points at
``linspace(0, 1, n)`` (spacing 1/(n-1)) but weighs them 1/n (halved at the ends), so every
attribution is (n-1)/n of the trapezoid rule's (3% low at 32 steps, and completeness fails
by that much). As the error is one common factor, we divide by the sum of captum's own
weights, which also stays right if captum fixes them (the other rules already sum to 1).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import torch
import torch.nn as nn

from harmonia.attribution.base import (
    Explainer,
    check_device,
    check_inputs,
    check_logits,
    empty_maps,
    target_bounds,
)
from harmonia.attribution.reducers import check_reducer, reduce_channels
from harmonia.attribution.smoothgrad import _positive_int

#: named baselines, in [0, 1] pixel space (the model normalises inside)
BASELINES: dict[str, float] = {"black": 0.0, "gray": 0.5, "grey": 0.5, "white": 1.0}
METHODS: tuple[str, ...] = ("riemann_trapezoid", "gausslegendre", "riemann_left", "riemann_right", "riemann_middle")


class IntegratedGradients(Explainer):
    """Path integral of input gradients from a baseline to the image, times (image - baseline).

    Args:
        steps: points on the path.
        baseline: ``"black"`` (0), ``"gray"`` (0.5), ``"white"`` (1), a float, or a tensor
            broadcastable to N x 3 x H x W, all in [0, 1] pixel space.
        method: captum's quadrature, ``"riemann_trapezoid"`` (default, as Xplique) or
            ``"gausslegendre"`` (more accurate per step), or a left/right/middle Riemann sum.
        internal_batch_size: at most this many path points per forward/backward pass.
        reducer: channel reduction; default ``"mean"`` (signed, Xplique's default);
            ``"sum"`` makes each map sum to f(image) - f(baseline) (completeness).

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> IntegratedGradients(steps=8, internal_batch_size=4)(net, torch.rand(2, 3, 8, 8), 0).shape
        torch.Size([2, 8, 8])
    """

    name = "integrated_gradients"
    runtime_options = ("internal_batch_size",)  # changes the grouping of path points only

    def __init__(
        self,
        steps: int = 32,
        baseline: str | float | torch.Tensor = "black",
        method: str = "riemann_trapezoid",
        internal_batch_size: int = 64,
        reducer: str = "mean",
    ) -> None:
        self.steps = _positive_int("steps", steps)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        if method == "riemann_trapezoid" and steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2")
        self.method = method
        if isinstance(baseline, str) and baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}, a float or a tensor")
        if isinstance(baseline, bool) or not isinstance(baseline, (str, int, float, torch.Tensor)):
            raise ValueError(f"baseline must be a name, a float or a tensor, got {type(baseline).__name__}")
        self.baseline = baseline.detach() if isinstance(baseline, torch.Tensor) else baseline
        self.internal_batch_size = _positive_int("internal_batch_size", internal_batch_size)
        self.reducer = check_reducer(reducer)

    def _baseline_key(self) -> str | float:
        b = self.baseline
        if isinstance(b, torch.Tensor):  # not JSON-able: identify it by content
            t = b.detach().to("cpu", torch.float32).contiguous()
            digest = hashlib.blake2b(t.numpy().tobytes() + str(tuple(t.shape)).encode(), digest_size=8).hexdigest()
            return f"tensor:{digest}"
        return b if isinstance(b, str) else float(b)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": self.steps,
            "baseline": self._baseline_key(),
            "method": self.method,
            "internal_batch_size": self.internal_batch_size,
            "reducer": self.reducer,
        }

    def _baseline_for(self, images: torch.Tensor) -> torch.Tensor:
        b = self.baseline
        if isinstance(b, str):
            b = BASELINES[b]
        if not isinstance(b, torch.Tensor):
            return torch.full((1, 1, 1, 1), float(b), dtype=images.dtype, device=images.device).expand_as(images)
        b = b.to(images.device, images.dtype)
        try:
            return b.expand_as(images)  # a view: no copy of the baseline per image
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to images {tuple(images.shape)}") from None

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        targets = check_inputs(images, targets)
        check_device(model, images)
        n = images.shape[0]
        if n == 0:
            return empty_maps(images)
        max_target = target_bounds(targets)[1]
        x = images.detach()
        base = self._baseline_for(x)
        def forward(inputs: torch.Tensor) -> torch.Tensor:  # check logits before captum indexes them
            return check_logits(model(inputs), max_target)

        ig = CaptumIG(forward, multiply_by_inputs=True)
        scale = 1.0 / _captum_weight_sum(self.method, self.steps)  # see the module docstring
        group = min(n, self.internal_batch_size)
        parts = []
        with torch.enable_grad(), warnings.catch_warnings():
            # captum warns about batch sizes we chose on purpose
            warnings.filterwarnings("ignore", message="Internal batch size", module="captum")
            for i in range(0, n, group):
                attr = ig.attribute(
                    x[i : i + group],
                    baselines=base[i : i + group],
                    target=targets[i : i + group],
                    n_steps=self.steps,
                    method=self.method,
                    internal_batch_size=self.internal_batch_size,
                )
                parts.append(reduce_channels(attr.detach() * scale, self.reducer))
        return torch.cat(parts)


def _captum_weight_sum(method: str, steps: int) -> float:
    """Sum of the quadrature weights captum uses (1 for a correct rule)."""
    try:
        from captum.attr._utils.approximation_methods import approximation_parameters
    except ImportError:  # private module moved: assume the weights of captum 0.7-0.9
        return (steps - 1) / steps if method == "riemann_trapezoid" else 1.0
    return math.fsum(approximation_parameters(method)[0](steps))
