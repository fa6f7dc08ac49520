"""A torch Dataset over a challenge generator: samples are drawn on the fly, never stored.

Sample ``i`` is ``gen[i]``, a function of (seed, knobs, i) only, so DataLoader workers (which
each hold a copy of the generator) give distinct, reproducible samples in any order: no
per-worker seeding is needed or used.

Example:
    >>> import harmonia.challenges as hc
    >>> ds = ChallengeDataset(hc.create("pathtracker", frames=32, distractors=0), length=4)
    >>> item = ds[1]
    >>> item["video"].shape, item["video"].dtype, int(item["label"])
    (torch.Size([3, 32, 32, 32]), torch.float32, 1)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from harmonia.challenges._tracking import square_pixels
from harmonia.challenges.base import Challenge


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A challenge array as a float tensor in [0, 1], channels first.

    ``video`` T x H x W x 3 -> 3 x T x H x W (torchvision's video layout); ``image``
    H x W -> 1 x H x W, H x W x 3 -> 3 x H x W.

    Example:
        >>> to_tensor(np.zeros((2, 4, 4, 3), np.uint8)).shape
        torch.Size([3, 2, 4, 4])
    """
    t = torch.from_numpy(np.ascontiguousarray(array))
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if t.ndim == 4:  # T x H x W x C
        return t.permute(3, 0, 1, 2).contiguous()
    if t.ndim == 3:  # H x W x C
        return t.permute(2, 0, 1).contiguous()
    if t.ndim == 2:
        return t[None]
    raise ValueError(f"cannot convert an array of shape {array.shape} (expected H x W, H x W x C or T x H x W x C)")


def target_mask(sample: dict[str, Any], size: int) -> torch.Tensor:
    """The tracking target's square in every frame: uint8 T x H x W, 1 on its ``size`` x ``size`` pixels.

    From ``meta`` (``trajectories``, ``target``), so it is where the target is even where a marker
    is drawn over it.

    Example:
        >>> import harmonia.challenges as hc
        >>> s = hc.create("pathtracker", frames=4, distractors=0)[0]
        >>> m = target_mask(s, 2)
        >>> m.shape, m.sum(dim=(1, 2)).tolist()
        (torch.Size([4, 32, 32]), [4, 4, 4, 4])
    """
    path = np.asarray(sample["meta"]["trajectories"])[sample["meta"]["target"]]  # T x 2
    rows, cols = square_pixels(path, size)  # T x size*size each
    out = np.zeros(sample["video"].shape[:3], np.uint8)
    out[np.arange(len(path))[:, None], rows, cols] = 1
    return torch.from_numpy(out)


class ChallengeDataset(torch.utils.data.Dataset):
    """``gen[i]`` as tensors: the modality's array (see :func:`to_tensor`), ``label``, ``index``.

    Per-frame ``masks`` (FeatureTracker) come as a long tensor T x H x W; with ``target_masks`` the
    trackers' items also have ``target_mask`` (:func:`target_mask`; only the target-map loss
    needs it, so it is not built otherwise). ``length`` defaults to ``len(gen)``; ``transform`` (a
    callable on the item dict) replaces the default conversion.

    Example:
        >>> import harmonia.challenges as hc
        >>> loader = torch.utils.data.DataLoader(ChallengeDataset(hc.create("pathtracker"), 8), batch_size=4)
        >>> next(iter(loader))["label"].tolist()
        [0, 1, 0, 1]
    """

    def __init__(self, gen: Challenge, length: int | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 target_masks: bool = False) -> None:
        self.gen = gen
        self.object_size = getattr(gen, "object_size", None) if target_masks else None
        if target_masks and self.object_size is None:
            raise ValueError(f"{gen.name} has no tracking target: target masks need a tracker (pathtracker, featuretracker)")
        self.length = len(gen) if length is None else int(length)
        if not 1 <= self.length <= len(gen):
            raise ValueError(f"length must be in [1, {len(gen)}] (the generator's length), got {self.length}; "
                             "create the generator with a larger length=")
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        self._check(index)
        return self._item(self.gen[index], index)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A whole DataLoader batch at once: the generator may draw it vectorised (same samples)."""
        for i in indices:
            self._check(i)
        return [self._item(s, i) for s, i in zip(self.gen.samples(list(indices)), indices)]

    def _check(self, index: int) -> None:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")

    def _item(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        if self.transform is not None:
            return self.transform(sample)
        modality = self.gen.modality
        item: dict[str, Any] = {modality: to_tensor(sample[modality]),
                                "label": torch.tensor(int(sample["label"])), "index": index}
        if "masks" in sample:
            item["masks"] = torch.from_numpy(np.ascontiguousarray(sample["masks"])).long()
        if self.object_size is not None:
            item["target_mask"] = target_mask(sample, self.object_size)
        return item

    def config(self) -> dict[str, Any]:
        """What the items depend on (part of a results-store key)."""
        return {**self.gen.config(), "length": self.length}
