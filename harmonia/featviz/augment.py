"""The augmentations every parameterisation shares: random square crops plus noise.

Per image and step, ``crops`` squares with centres ``0.5 + N(0, centre_std)`` per axis (kept
inside the image) and sides (a fraction of the image side) drawn uniformly in ``crop_scale``,
or, with ``schedule="xplique"``, from N(mean, 0.05) clipped to [0.05, 1] with the mean going
linearly from 0.5 to 0.05 over the run. Each crop is resampled to the model's input size with
``roi_align`` (bilinear, 2 x 2 samples per output pixel, which also antialiases a downscale),
then gets noise ``N(0, noise) + U(-noise/2, noise/2)``. Each image draws from its own
generator, so a batch of K images is K independent runs.

Example:
    >>> import torch
    >>> aug = Augmentation(crops=3)
    >>> gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    >>> tuple(aug(torch.rand(2, 3, 64, 64), (32, 32), gens, step=0, steps=10).shape)
    (6, 3, 32, 32)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torchvision.ops import roi_align


@dataclass(frozen=True)
class Augmentation:
    crops: int = 6
    crop_scale: tuple[float, float] = (0.25, 0.30)
    centre_std: float = 0.15
    noise: float = 0.01
    schedule: str = "uniform"  # or "xplique"

    def __post_init__(self) -> None:
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.schedule not in ("uniform", "xplique"):
            raise ValueError(f"schedule must be 'uniform' or 'xplique', got {self.schedule!r}")
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
        crops = roi_align(images, boxes, output_size=tuple(out_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        if self.noise > 0:
            shape = (self.crops, *crops.shape[1:])
            noise = torch.cat([torch.randn(shape, generator=g) * self.noise
                               + (torch.rand(shape, generator=g) - 0.5) * self.noise for g in generators])
            crops = crops + noise.to(crops)
        return crops
