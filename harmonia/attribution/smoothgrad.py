"""SmoothGrad (Smilkov et al. 2017): input gradients averaged over noisy copies of each image.

Our own loop rather than captum's ``NoiseTunnel``, which does accumulate online but (1) draws
its noise from the global RNG, so results can only be made reproducible by reseeding the
whole process, (2) sizes each pass as N images x k samples, so a pass can never hold fewer
than N inputs, and (3) materialises a full-size tensor of standard deviations per pass.

Here all N x n_samples (image, sample) pairs are laid out sample-major and cut into passes
of at most ``internal_batch_size`` inputs; each pass's gradients are added into one
N x 3 x H x W sum, so memory depends on the internal batch size, never on ``n_samples``.
Each image's noise comes from its own generator, seeded from the explainer's seed and the
image's id (``ids=``, as the evaluation passes them) or, without ids, a digest of its
pixels: an image's map does not depend on the internal batch size, on the other images
of its batch or on where a resumed run restarted (so ``internal_batch_size`` is not part
of the cache key, :meth:`SmoothGrad.key_config`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

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


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class SmoothGrad(Explainer):
    """Mean input gradient over ``n_samples`` copies of each image with Gaussian noise.

    Args:
        n_samples: noisy copies per image.
        noise: noise standard deviation as a fraction of the input range; images are in
            [0, 1], so this is the standard deviation itself. Noisy images are not clipped.
        reducer: channel reduction applied to the *averaged* gradient (as SmoothGrad
            averages raw gradients and only then visualises them); default ``"max_abs"``,
            the same map as :class:`Saliency`'s default, smoothed.
        internal_batch_size: at most this many noisy inputs per forward/backward pass.
        squared: average the squared gradients instead (SmoothGrad-Squared, Hooker et al.).
        seed: seed of the noise (reproducible maps); ``None`` draws from torch's global RNG.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> SmoothGrad(n_samples=4, internal_batch_size=3)(net, torch.rand(2, 3, 8, 8), 1).shape
        torch.Size([2, 8, 8])
    """

    name = "smoothgrad"
    uses_ids = True  # the noise is seeded per image id (see the module docstring)
    runtime_options = ("internal_batch_size",)

    def __init__(
        self,
        n_samples: int = 25,
        noise: float = 0.15,
        reducer: str = "max_abs",
        internal_batch_size: int = 64,
        squared: bool = False,
        seed: int | None = 0,
    ) -> None:
        self.n_samples = _positive_int("n_samples", n_samples)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise ValueError(f"noise must be a number >= 0, got {noise!r}")
        self.noise = float(noise)
        self.reducer = check_reducer(reducer)
        self.internal_batch_size = _positive_int("internal_batch_size", internal_batch_size)
        self.squared = bool(squared)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_samples": self.n_samples,
            "noise": self.noise,
            "reducer": self.reducer,
            "internal_batch_size": self.internal_batch_size,
            "squared": self.squared,
            "seed": self.seed,
        }

    def _image_generators(self, images: torch.Tensor, ids: Sequence[Any] | None) -> list[torch.Generator] | None:
        if self.seed is None:
            return None
        if ids is None:  # no ids: the pixels identify the image
            flat = images.detach().to("cpu", torch.float32).contiguous().reshape(images.shape[0], -1)
            ids = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).hexdigest() for row in flat]
        elif len(ids) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(ids)} ids")
        gens = []
        for i in ids:
            h = hashlib.blake2b(f"{self.seed}\0{i}".encode(), digest_size=8).digest()
            gens.append(torch.Generator(device=images.device).manual_seed(int.from_bytes(h, "little") >> 1))
        return gens

    def _noise(self, like: torch.Tensor, gens: list[torch.Generator] | None) -> torch.Tensor:
        """The next sample's noise for every image (each image's generator advances by one draw)."""
        if gens is None:
            return torch.randn(like.shape, device=like.device, dtype=like.dtype)
        return torch.stack([torch.randn(like.shape[1:], device=like.device, dtype=like.dtype, generator=g) for g in gens])

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int,
                 ids: Sequence[Any] | None = None) -> torch.Tensor:
        """Maps N x H x W; ``ids`` (one per image) seed each image's noise (see the module docstring)."""
        targets = check_inputs(images, targets)
        check_device(model, images)
        n = images.shape[0]
        if n == 0:
            return empty_maps(images)
        max_target = target_bounds(targets)[1]
        x0 = images.detach()
        total = torch.zeros(x0.shape, dtype=torch.float32, device=x0.device)
        gens = self._image_generators(x0, ids) if self.noise > 0 else None
        cached: tuple[int, torch.Tensor] | None = None  # the current sample's noise for all N images
        pairs, step = n * self.n_samples, self.internal_batch_size
        with torch.enable_grad():
            for start in range(0, pairs, step):
                stop = min(start + step, pairs)
                image_idx = torch.arange(start, stop, device=x0.device) % n  # sample-major layout
                x = x0.index_select(0, image_idx)
                if self.noise > 0:
                    parts = []
                    for s in range(start // n, (stop - 1) // n + 1):
                        if cached is None or cached[0] != s:
                            cached = (s, self._noise(x0, gens))  # samples are visited in order
                        parts.append(cached[1][max(start - s * n, 0) : min(stop - s * n, n)])
                    x = x + self.noise * torch.cat(parts)
                x.requires_grad_(True)
                logits = check_logits(model(x), max_target)
                score = logits.gather(1, targets.index_select(0, image_idx)[:, None]).sum()
                (g,) = torch.autograd.grad(score, x)
                total.index_add_(0, image_idx, (g * g if self.squared else g).float())
        return reduce_channels(total.div_(self.n_samples), self.reducer)
