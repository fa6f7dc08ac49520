"""The explainer interface: ``explainer(model, images, targets) -> maps`` (N x H x W).

Every feature-importance method is a class whose constructor takes its settings and whose
call takes a model (images in [0, 1], see :class:`harmonia.models.HarmoniaModel`), a batch
of images N x 3 x H x W and the target class per image (N,). It returns detached float32
maps N x H x W at the input resolution, on the images' device. Methods are therefore
interchangeable, and ``config()`` gives the settings that identify its output (used in the
results-store cache key).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
import torch.nn as nn


class Explainer(ABC):
    """Base class of every feature-importance method.

    Example:
        >>> import torch, torch.nn as nn
        >>> from harmonia.attribution import Saliency
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> Saliency()(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 8, 8])
    """

    #: registry name, e.g. "saliency"
    name: str = "explainer"

    @abstractmethod
    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return maps N x H x W (float32, detached) for ``images`` N x 3 x H x W in [0, 1]."""

    uses_ids: bool = False  # True: __call__ takes ``ids=`` (one per image, e.g. to seed its noise)
    runtime_options: tuple[str, ...] = ()  # config entries that never change a map (left out of keys)

    def explain(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int | None = None,
        ids: Sequence[Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Maps and, when the method's own forward pass gives them for free, the logits.

        ``targets=None`` explains each image's predicted class. Methods with a single
        forward pass (saliency, input x gradient, Grad-CAM) override this to return the
        logits of that pass, so a caller that also needs predictions saves a forward; the
        others return ``None`` for the logits unless they had to compute them to pick the
        predicted class.

        Example:
            >>> import torch, torch.nn as nn
            >>> from harmonia.attribution import Saliency
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
            >>> maps, logits = Saliency().explain(net, torch.rand(2, 3, 8, 8))
            >>> maps.shape, logits.shape
            (torch.Size([2, 8, 8]), torch.Size([2, 4]))
        """
        kw = {"ids": ids} if self.uses_ids and ids is not None else {}
        if targets is None:
            with torch.no_grad():
                logits = model(images)
            return self(model, images, logits.argmax(1), **kw), logits
        return self(model, images, targets, **kw), None

    def config(self) -> dict[str, Any]:
        """The explainer's settings (JSON-able), as shown in run metadata."""
        return {"name": self.name}

    def key_config(self) -> dict[str, Any]:
        """The settings that change a map: :meth:`config` without ``runtime_options``; part of
        cache keys, so e.g. a smaller internal batch reuses stored results.

        Example:
            >>> from harmonia.attribution import SmoothGrad
            >>> SmoothGrad(internal_batch_size=8).key_config() == SmoothGrad(internal_batch_size=64).key_config()
            True
        """
        return {k: v for k, v in self.config().items() if k not in self.runtime_options}

    @property
    def signed(self) -> bool:
        """Whether the maps have a sign (a signed channel reducer): figures centre them at 0.

        Example:
            >>> from harmonia.attribution import InputXGradient, Saliency
            >>> InputXGradient().signed, Saliency().signed
            (True, False)
        """
        from harmonia.attribution.reducers import SIGNED_REDUCERS

        return getattr(self, "reducer", None) in SIGNED_REDUCERS

    @property
    def short_name(self) -> str:
        """The method's name and channel reducer, for titles (``repr`` lists every setting).

        Example:
            >>> from harmonia.attribution import IntegratedGradients
            >>> IntegratedGradients().short_name
            'integrated_gradients (mean)'
        """
        reducer = getattr(self, "reducer", None)
        return f"{self.name} ({reducer})" if reducer else self.name

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def check_inputs(images: torch.Tensor, targets: torch.Tensor | int) -> torch.Tensor:
    """Validate an explainer's inputs; returns targets as a long tensor (N,) on images.device.

    Example:
        >>> check_inputs(torch.rand(2, 3, 8, 8), 1)
        tensor([1, 1])
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor N x 3 x H x W, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("explainers need autograd: do not call them inside torch.inference_mode()")
    if isinstance(targets, int):
        targets = torch.full((images.shape[0],), targets, dtype=torch.long)
    targets = torch.as_tensor(targets, device=images.device)
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    targets = targets.long().reshape(-1)
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {targets.shape[0]} targets")
    return targets


def target_bounds(targets: torch.Tensor) -> tuple[int, int]:
    """(min, max) of the targets, checked to be >= 0.

    One host sync, taken *before* the forward pass: on the GPU an out-of-range index in
    ``gather`` is a device-side assert that poisons the CUDA context, so it must be caught
    here, and syncing before the forward costs less than syncing between forward and backward.

    Example:
        >>> target_bounds(torch.tensor([3, 0, 2]))
        (0, 3)
    """
    if targets.numel() == 0:
        return 0, -1
    lo, hi = (int(v) for v in torch.aminmax(targets))
    if lo < 0:
        raise ValueError(f"targets must be >= 0, got {lo}")
    return lo, hi


def check_logits(logits: Any, max_target: int) -> torch.Tensor:
    """The model output must be N x C logits and every target < C.

    Example:
        >>> check_logits(torch.zeros(2, 5), 4).shape
        torch.Size([2, 5])
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        what = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits N x C, got {what}")
    if max_target >= logits.shape[1]:
        raise ValueError(f"target {max_target} out of range for a model with {logits.shape[1]} classes")
    return logits


def check_device(model: nn.Module, images: torch.Tensor) -> None:
    """Fail early, with a readable message, when model and images live on different devices.

    Example:
        >>> check_device(nn.Linear(2, 2), torch.zeros(1, 3, 2, 2))
    """
    p = next(model.parameters(), None)
    if p is not None and p.device != images.device:
        raise ValueError(f"model is on {p.device} but images are on {images.device}; move one of them")


def empty_maps(images: torch.Tensor) -> torch.Tensor:
    """Maps for an empty batch: 0 x H x W float32 on the images' device."""
    return torch.zeros((0, *images.shape[-2:]), dtype=torch.float32, device=images.device)
