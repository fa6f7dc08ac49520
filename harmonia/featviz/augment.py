"""The augmentations every parameterisation shares: random square crops plus noise.

Per image and step, ``crops`` squares with centres ``0.5 + N(0, centre_std)`` per axis (kept
inside the image) and sides (a fraction of the image side) drawn uniformly in ``crop_scale``,
or, with ``schedule="xplique"``, from N(mean, 0.05) clipped to [0.05, 1] with the mean going
linearly from 0.5 to 0.05 over the run. Each crop is resampled to the model's input size
(``resample``): ``"bicubic"`` (default) samples each output pixel bicubically (one
``grid_sample``; no antialiasing, so meant for crops at most about the input size, as at the
default 256 px); ``"bilinear"`` is ``roi_align`` with its adaptive sampling (one bilinear
sample per output pixel when the crop is upscaled, ``ceil(crop / output)`` squared, averaged,
when it is downscaled); ``"box"`` always averages 2 x 2 bilinear samples (the first default:
softer, and its backward pass is slow on the CPU); ``"horama"`` is Horama's ``roi_align`` at
twice the output size, then a bicubic antialiased resize (sharp like ``"bicubic"``,
antialiased, several times as costly). Then noise
``N(0, noise) + U(-noise/2, noise/2)``. Each image draws from its own
generator, so a batch of K images is K independent runs.

:class:`LucidTransforms` is the other augmentation, the one published with the Lucid-style
Fourier baseline (Olah et al. 2017; Lucent's ``standard_transforms``): per copy, pad 12 px
(grey 0.5), jitter by 0-7 px, scale by one of 0.90, 0.92, ..., 1.10, rotate by one of
-10 ... 10 degrees (0 five times as likely), jitter by 0-3 px, then resize to the model's input
size. ``crops`` independent copies per image and step.

Example:
    >>> import torch
    >>> aug = Augmentation(crops=3)
    >>> gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    >>> tuple(aug(torch.rand(2, 3, 64, 64), (32, 32), gens, step=0, steps=10).shape)
    (6, 3, 32, 32)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


RESAMPLINGS = ("bicubic", "bilinear", "box", "horama")


def _bicubic_crops(images: torch.Tensor, boxes: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Each box (image index, x1, y1, x2, y2 in pixel-edge coordinates) sampled bicubically at
    ``out_size`` pixel centres, one ``grid_sample``; values past the border repeat the border."""
    h, w = images.shape[-2:]
    x1, y1, x2, y2 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    theta = torch.zeros(len(boxes), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = (x2 - x1) / w, (x1 + x2) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = (y2 - y1) / h, (y1 + y2) / h - 1
    grid = F.affine_grid(theta, [len(boxes), images.shape[1], *out_size], align_corners=False)
    return F.grid_sample(images[boxes[:, 0].long()], grid, mode="bicubic", padding_mode="border", align_corners=False)


def _resample(images: torch.Tensor, boxes: torch.Tensor, out_size: tuple[int, int], how: str) -> torch.Tensor:
    """Crops (rows of ``boxes``) of ``images`` resampled to ``out_size``."""
    if how == "bicubic":
        return _bicubic_crops(images, boxes, out_size)
    if how == "horama":
        big = roi_align(images, boxes, output_size=(2 * out_size[0], 2 * out_size[1]), aligned=True)
        return F.interpolate(big, size=out_size, mode="bicubic", align_corners=True, antialias=True)
    ratio = 2 if how == "box" else -1  # -1: ceil(crop side / output side) samples per pixel and axis
    return roi_align(images, boxes, output_size=out_size, spatial_scale=1.0, sampling_ratio=ratio, aligned=True)


def _add_noise(crops: torch.Tensor, generators: Sequence[torch.Generator], noise: float) -> torch.Tensor:
    """``N(0, noise) + U(-noise/2, noise/2)`` added to each image's crops (rows in image order),
    drawn from that image's generator."""
    if noise <= 0:
        return crops
    shape = (len(crops) // len(generators), *crops.shape[1:])
    draws = torch.cat([torch.randn(shape, generator=g) * noise + (torch.rand(shape, generator=g) - 0.5) * noise
                       for g in generators])
    return crops + draws.to(crops)


@dataclass(frozen=True)
class Augmentation:
    crops: int = 6
    crop_scale: tuple[float, float] = (0.25, 0.30)
    centre_std: float = 0.15
    noise: float = 0.01
    schedule: str = "uniform"  # or "xplique"
    resample: str = "bicubic"  # or "bilinear", "box", "horama"

    def __post_init__(self) -> None:
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.schedule not in ("uniform", "xplique"):
            raise ValueError(f"schedule must be 'uniform' or 'xplique', got {self.schedule!r}")
        if self.resample not in RESAMPLINGS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLINGS)}, got {self.resample!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def _sides(self, g: torch.Generator, step: int, steps: int) -> torch.Tensor:
        if self.schedule == "xplique":
            mean = 0.5 + (0.05 - 0.5) * step / max(steps - 1, 1)
            return (mean + 0.05 * torch.randn(self.crops, generator=g)).clamp(0.05, 1.0)
        lo, hi = self.crop_scale
        return lo + (hi - lo) * torch.rand(self.crops, generator=g)

    def boxes(self, size: tuple[int, int], generators: Sequence[torch.Generator], step: int, steps: int) -> torch.Tensor:
        """roi_align boxes (K*crops x 5: image index, x1, y1, x2, y2 in pixels)."""
        h, w = size
        rows = []
        for k, g in enumerate(generators):
            side = self._sides(g, step, steps)
            centre = 0.5 + self.centre_std * torch.randn(self.crops, 2, generator=g)
            centre = torch.maximum(torch.minimum(centre, 1 - side[:, None] / 2), side[:, None] / 2)
            cy, cx = centre[:, 0] * h, centre[:, 1] * w
            sy, sx = side * h / 2, side * w / 2
            rows.append(torch.stack([torch.full_like(cx, k), cx - sx, cy - sy, cx + sx, cy + sy], 1))
        return torch.cat(rows)

    def __call__(self, images: torch.Tensor, out_size: tuple[int, int], generators: Sequence[torch.Generator],
                 step: int, steps: int) -> torch.Tensor:
        """K x 3 x H x W -> (K * crops) x 3 x out_size crops (image k's crops are rows k*crops ...)."""
        if len(generators) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(generators)} generators")
        boxes = self.boxes(tuple(images.shape[-2:]), generators, step, steps).to(images)
        crops = _resample(images, boxes, tuple(out_size), self.resample)
        return _add_noise(crops, generators, self.noise)


AUGMENTATIONS = ("crops", "lucid")


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (C x H x W) translated by (dy, dx) whole pixels, zeros shifted in (Lucent's jitter)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """x (C x H x W) rotated about its centre, bilinear, zeros outside."""
    if degrees == 0:
        return x
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


@dataclass(frozen=True)
class LucidTransforms:
    """Lucid's / Lucent's standard transforms (the published Fourier baseline's), ``crops`` copies per image.

    Example:
        >>> import torch
        >>> gens = [torch.Generator().manual_seed(0)]
        >>> tuple(LucidTransforms(crops=2)(torch.rand(1, 3, 40, 40), (32, 32), gens, step=0, steps=10).shape)
        (2, 3, 32, 32)
    """

    crops: int = 1
    pad: int = 12
    jitter: tuple[int, int] = (8, 4)
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[int, ...] = tuple(range(-10, 11)) + (0,) * 5
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "lucid", **asdict(self)}

    def _one(self, x: torch.Tensor, out_size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
        def pick(n: int) -> int:
            return int(torch.randint(n, (1,), generator=g))

        x = F.pad(x, (self.pad,) * 4, value=0.5)
        x = _shift(x, pick(self.jitter[0]), pick(self.jitter[0]))
        scale = self.scales[pick(len(self.scales))]
        size = [max(1, round(s * scale)) for s in x.shape[-2:]]
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        x = _rotate(x, float(self.angles[pick(len(self.angles))]))
        x = _shift(x, pick(self.jitter[1]), pick(self.jitter[1]))
        return F.interpolate(x[None], size=tuple(out_size), mode="bilinear", align_corners=False, antialias=True)[0]

    def __call__(self, images: torch.Tensor, out_size: tuple[int, int], generators: Sequence[torch.Generator],
                 step: int, steps: int) -> torch.Tensor:
        """K x 3 x H x W -> (K * crops) x 3 x out_size copies (image k's are rows k*crops ...)."""
        if len(generators) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(generators)} generators")
        out = torch.stack([self._one(img, tuple(out_size), g) for img, g in zip(images, generators)
                           for _ in range(self.crops)])
        return _add_noise(out, generators, self.noise)
