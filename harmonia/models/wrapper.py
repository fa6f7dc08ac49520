"""The one model interface: images in [0, 1] pixel space, preprocessing inside.

Every model harmonia loads is a :class:`HarmoniaModel`. Callers always pass float images
in [0, 1], shape N x 3 x H x W; the wrapper resizes them to the network's input size and
normalises them inside ``forward``. Gradients, saliency maps and adversarial perturbation
norms are therefore always expressed in that one pixel space, whatever the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.store.keys import hash_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


@dataclass(frozen=True)
class Preprocessing:
    """What the wrapper does to [0, 1] images before the network sees them.

    ``crop_pct`` is not applied by the wrapper (it never crops: maps must stay aligned with
    the pixels the caller passed); photo loaders use it to centre-crop the way the weights
    were evaluated.

    Example:
        >>> Preprocessing(input_size=(240, 240)).to_json()["input_size"]
        [240, 240]
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # used only when the input is not already input_size
    resize: bool = True  # False: feed images at whatever size they come (fully convolutional nets)
    antialias: bool = True  # low-pass when shrinking, like the PIL resize the weights were trained with
    crop_pct: float = 1.0  # centre-crop fraction photo loaders use; the wrapper itself never crops

    def __post_init__(self) -> None:
        # Normalise lists (JSON, checkpoints) to tuples so equal settings compare and hash equal.
        for name in ("input_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.input_size) != 2 or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"bad preprocessing: input_size {self.input_size}, mean {self.mean}, std {self.std}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} not in {_INTERPOLATIONS}")

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Preprocessing":
        """Inverse of :meth:`to_json`; keys this version does not know are ignored.

        Example:
            >>> p = Preprocessing(input_size=(32, 32))
            >>> Preprocessing.from_json(p.to_json()) == p
            True
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _sdpa_math() -> contextlib.AbstractContextManager:
    """Context that forces the plain (math) scaled-dot-product attention.

    The fused SDPA kernels (flash / memory-efficient, CPU and CUDA) have no second
    derivative, so double back-propagation through any attention layer that calls
    ``F.scaled_dot_product_attention`` (timm with fused_attn on, torchvision ViTs,
    nn.MultiheadAttention) fails without this.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # very old torch: nothing to switch
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


def _grad_needed(t: torch.Tensor | None, static: bool) -> bool:
    """Will this backward pass use a gradient for ``t``? (``needs_input_grad`` is only
    whether ``t`` requires grad; computing a weight gradient nobody asked for, e.g. for
    a saliency map, would double the cost of the backward.)"""
    if t is None or not static:
        return False
    try:
        from torch.autograd.graph import get_gradient_edge

        return bool(torch._C._will_engine_execute_node(get_gradient_edge(t).node))
    except Exception:  # API missing or changed: be safe and compute it
        return True


class _GroupedConv2d(torch.autograd.Function):
    """``F.conv2d`` with ``groups > 1`` whose backward is itself cheap to differentiate.

    PyTorch's second derivative of a grouped convolution loops over the groups (one
    small convolution per channel for a depthwise layer), which makes double
    back-propagation through EfficientNets / MobileNets / ConvNeXts several times slower.
    Here, when the backward builds a graph (``create_graph=True``), the input gradient is
    a transposed convolution and the weight gradient ``conv2d_weight``: single ops whose
    own gradients are ordinary grouped convolutions. Otherwise the native kernel runs.
    Values and every derivative are the same as ``F.conv2d``'s.
    """

    generate_vmap_rule = True  # forward is plain torch: torch.func transforms work too

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight, bias)
        ctx.conf = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need = [_grad_needed(t, s) for t, s in zip((x, weight, bias), ctx.needs_input_grad[:3])]
        if not torch.is_grad_enabled():  # plain backward: the native kernel is fastest
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if bias is not None else None,
                stride, padding, dilation, False, [0, 0], groups, need,
            )
            return gx, gw, gb, None, None, None, None
        gx = gw = gb = None
        if need[0]:
            k = weight.shape[-2:]
            extra = [x.shape[2 + i] - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                       + dilation[i] * (k[i] - 1) + 1) for i in range(2)]
            gx = F.conv_transpose2d(grad_out, weight, None, stride, padding, extra, groups, dilation)
        if need[1]:
            gw = torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, stride, padding, dilation, groups)
        if need[2]:
            gb = grad_out.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


class _DoubleBackwardMode(torch.overrides.TorchFunctionMode):
    """Routes grouped 2-D convolutions through :class:`_GroupedConv2d` (see there)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            a = dict(zip(_CONV_ARGS, args), **kwargs)
            groups, padding = a.get("groups", 1), a.get("padding", 0)
            if groups > 1 and not isinstance(padding, str) and a["input"].dim() == 4:
                return _GroupedConv2d.apply(a["input"], a["weight"], a.get("bias"), _pair(a.get("stride", 1)),
                                            _pair(padding), _pair(a.get("dilation", 1)), groups)
        return func(*args, **kwargs)


class HarmoniaModel(nn.Module):
    """A classifier that takes [0, 1] images and owns its preprocessing.

    Attributes:
        net: the wrapped network (expects normalised input at ``input_size``).
        name: how it was loaded (e.g. ``"efficientnet_lite0"``, ``"timm:resnet18"``, a path).
        arch: a name :func:`harmonia.models.load` can rebuild the architecture from
            (defaults to ``name``); checkpoints record it.
        preprocessing: input size, mean/std, interpolation (assigning a new one updates
            the normalisation buffers and the fingerprint).
        class_names: list of class names when known, else None.
        build_kwargs: JSON-able keyword arguments the architecture was built with
            (e.g. ``{"img_size": 32}``), recorded in checkpoints.
        init_seed: the seed its random weights were drawn with (``load(..., pretrained=False,
            seed=S)``), else None; shown with stored results. The weights themselves are what
            the fingerprint hashes.
        safe_attention: when True (default) attention runs with the math SDPA kernel
            whenever autograd is on, so double back-propagation works for ViTs too.
        fast_double_backward: when True (default) grouped / depthwise convolutions run,
            with autograd on, through an op whose second derivative is one convolution
            instead of one per group (same values; double back-propagation through
            EfficientNet-Lite0 measured ~3x faster on the CPU).

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> m = HarmoniaModel(net, "toy", Preprocessing(input_size=(32, 32)))
        >>> m(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        net: nn.Module,
        name: str,
        preprocessing: Preprocessing | None = None,
        class_names: list[str] | None = None,
        source: str = "custom",
        *,
        arch: str | None = None,
        num_classes: int | None = None,
        build_kwargs: dict[str, Any] | None = None,
        safe_attention: bool = True,
        fast_double_backward: bool = True,
    ) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.source = source
        self.arch = arch or name
        self.class_names = list(class_names) if class_names is not None else None
        if num_classes is not None and self.class_names is not None and num_classes != len(self.class_names):
            raise ValueError(f"num_classes={num_classes} but {len(self.class_names)} class names")
        self._num_classes = num_classes
        self.build_kwargs = dict(build_kwargs or {})
        self.init_seed: int | None = None
        self.safe_attention = safe_attention
        self.fast_double_backward = fast_double_backward
        pp = preprocessing or Preprocessing()
        self.register_buffer("_mean", torch.tensor(pp.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(pp.std).view(1, 3, 1, 1), persistent=False)
        self._fingerprint: str | None = None
        self._stamp: tuple | None = None
        self.preprocessing = pp

    # -- preprocessing -------------------------------------------------------------------

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    @preprocessing.setter
    def preprocessing(self, pp: Preprocessing) -> None:
        # Keep the normalisation buffers and the cache key in step with the settings.
        self._preprocessing = pp
        with torch.no_grad():
            self._mean.copy_(torch.tensor(pp.mean).view(1, 3, 1, 1))
            self._std.copy_(torch.tensor(pp.std).view(1, 3, 1, 1))
        self._fingerprint = None

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.preprocessing.input_size)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int | None:
        if self.class_names:
            return len(self.class_names)
        return self._num_classes

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else self._mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images N x 3 x H x W -> the network's normalised input (differentiable)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape N x 3 x H x W, got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        pp = self.preprocessing
        if pp.resize and tuple(images.shape[-2:]) != tuple(pp.input_size):
            mode = pp.interpolation
            kw: dict[str, Any] = {}
            if mode in ("bilinear", "bicubic"):
                kw = {"align_corners": False, "antialias": pp.antialias}
            images = F.interpolate(images, size=pp.input_size, mode=mode, **kw)
        return (images - self._mean.to(images.dtype)) / self._std.to(images.dtype)

    def autograd_context(self) -> contextlib.AbstractContextManager:
        """The context ``forward`` runs the network in: with autograd on, math attention
        (``safe_attention``) and grouped convolutions with cheap second derivatives
        (``fast_double_backward``); with autograd off, nothing."""
        stack = contextlib.ExitStack()
        if torch.is_grad_enabled():
            if self.safe_attention:
                stack.enter_context(_sdpa_math())
            # The mode costs a Python call per op: only where there is a grouped conv.
            if self.fast_double_backward and any(
                isinstance(m, nn.Conv2d) and m.groups > 1 for m in self.net.modules()
            ):
                stack.enter_context(_DoubleBackwardMode())
        return stack

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        with self.autograd_context():
            return self.net(x)

    # -- identity --------------------------------------------------------------------------

    def _state_stamp(self) -> tuple:
        # Cheap staleness check: in-place updates (optimiser steps, load_state_dict, BN stats)
        # bump a tensor's _version, and .to()/replacement changes its storage pointer.
        return tuple((t.data_ptr(), t._version, str(t.dtype)) for t in self._state_tensors())

    def _state_tensors(self) -> Iterator[torch.Tensor]:
        for t in self.net.state_dict(keep_vars=True).values():
            if isinstance(t, torch.Tensor):
                yield t

    def fingerprint(self) -> str:
        """Content hash of the architecture class, the weights and the preprocessing.

        It is the cache key for results. Cached, and recomputed automatically when a weight
        tensor is modified in place or replaced (or after :meth:`invalidate_fingerprint`).

        Example:
            >>> import torch.nn as nn
            >>> m = HarmoniaModel(nn.Conv2d(3, 2, 1), "toy")
            >>> m.fingerprint() == m.fingerprint()
            True
        """
        stamp = self._state_stamp()
        if self._fingerprint is None or stamp != self._stamp:
            h = hashlib.blake2b(digest_size=16)
            h.update(json.dumps(self.preprocessing.to_json(), sort_keys=True).encode())
            h.update(type(self.net).__qualname__.encode())
            hash_state_dict(h, self.net.state_dict())
            self._fingerprint = h.hexdigest()
            self._stamp = stamp
        return self._fingerprint

    def invalidate_fingerprint(self) -> None:
        self._fingerprint = None

    def describe(self) -> dict[str, Any]:
        """JSON-able description (name, arch, source, preprocessing, fingerprint)."""
        return {
            "name": self.name,
            "arch": self.arch,
            "source": self.source,
            "preprocessing": self.preprocessing.to_json(),
            "num_classes": self.num_classes,
            "init_seed": self.init_seed,
            "fingerprint": self.fingerprint(),
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, num_classes={self.num_classes}"
