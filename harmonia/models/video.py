"""Video models for the tracking challenges, registered by name in :data:`VIDEO_MODELS`.

Every model maps videos N x 3 x T x H x W in [0, 1] to one logit per video (N,); none is
pretrained (the challenges are trained from scratch, as published). Names:

- ``int``: the InT circuit (harmonia.models.tracking.InT; ``channels`` 32, ``kernel`` 7 as published);
- ``cv_rnn``: the complex-valued CV-RNN (uses FeatureTracker's masks for its synchrony loss);
- ``gru``: a small convolutional GRU (``channels`` 16, ``kernel`` 3);
- ``r3d_18``, ``mc3_18``, ``r2plus1d_18``: torchvision's 3D ResNets, random init, one output.

Build with a spec (``harmonia.registry`` grammar): ``build_video_model("int:channels=8,kernel=5")``.
``harmonia models --all`` lists them next to the image models.

Example:
    >>> import torch
    >>> m = build_video_model("r3d_18")
    >>> m(torch.rand(2, 3, 8, 32, 32)).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from harmonia.models.tracking import CVRNN, ConvGRU, InT
from harmonia.registry import Registry

VIDEO_MODELS: Registry[nn.Module] = Registry("video model")

VIDEO_MODELS.register("int", aliases=("int_circuit",))(InT)
VIDEO_MODELS.register("cv_rnn", aliases=("cvrnn",))(CVRNN)
VIDEO_MODELS.register("gru", aliases=("conv_gru",))(ConvGRU)


class TorchvisionVideo(nn.Module):
    """A torchvision video ResNet with one output, fed videos centred at 0 (random init: no Kinetics statistics)."""

    uses_masks = False

    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision.models.video as tvv

        self.arch = arch
        self.net = getattr(tvv, arch)(weights=None, num_classes=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected videos N x 3 x T x H x W, got {tuple(video.shape)}")
        return self.net((video - 0.5) / 0.25).squeeze(1)


def _torchvision_factory(arch: str):
    def build() -> TorchvisionVideo:
        return TorchvisionVideo(arch)

    build.__name__ = f"build_{arch}"
    build.__doc__ = f"torchvision's {arch}, random init, one logit."
    return build


for _arch in ("r3d_18", "mc3_18", "r2plus1d_18"):
    VIDEO_MODELS.register(_arch)(_torchvision_factory(_arch))


def build_video_model(spec: str, **defaults: Any) -> nn.Module:
    """A video model from ``"name"`` or ``"name:key=value,..."``; unknown names and settings are refused.

    Example:
        >>> build_video_model("gru:channels=4").channels
        4
    """
    model = VIDEO_MODELS.from_spec(spec, **defaults)
    model.spec = spec  # type: ignore[attr-defined]
    return model


def video_model_names() -> list[str]:
    """Registered video model names."""
    return VIDEO_MODELS.names()
