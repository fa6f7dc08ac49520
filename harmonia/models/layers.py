"""Finding a model's layers by the model's own module names (one helper for every hook user).

Grad-CAM, feature extraction and feature visualization all hook a layer the user names. The
names are those of ``named_modules()`` of the network: for a :class:`HarmoniaModel` the
network inside it (``blocks.6``), with the wrapper's ``net.`` prefix also accepted. A wrong
name fails with the closest real names (dots and underscores are a common mix-up).

Example:
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 3)))
    >>> resolve_layer(net, "1.1")[0]
    '1.1'
    >>> [name for name, _ in list_layers(net)]
    ['0', '1', '1.0', '1.1']
"""

from __future__ import annotations

import difflib
from typing import Iterator

import torch.nn as nn


class LayerNotFoundError(KeyError, ValueError):
    """No layer of that name in the model (a KeyError and a ValueError, for either kind of caller)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The network inside a HarmoniaModel (its ``.net``) and the prefix of its names in the model."""
    net = getattr(model, "net", None)
    return (net, "net.") if isinstance(net, nn.Module) else (model, "")


def list_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every named submodule of the network, in definition order."""
    net, _ = unwrap(model)
    for name, module in net.named_modules():
        if name:
            yield name, module


def layer_hint(model: nn.Module, name: str, n: int = 3) -> str:
    """'; did you mean a, b?' with the closest layer names, or a few top-level ones."""
    net, _ = unwrap(model)
    names = [k for k, _ in list_layers(model)]
    close = difflib.get_close_matches(name.replace("_", "."), names, n=n, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(close)}?"
    top = ", ".join(k for k, _ in net.named_children())
    return f"; top-level layers: {top} (`harmonia featviz layers MODEL` lists all)"


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """(name relative to the network, module) for a layer name or a submodule.

    Raises:
        LayerNotFoundError: no such layer; the message names the closest ones.
    """
    net, prefix = unwrap(model)
    if isinstance(layer, nn.Module):
        for name, module in net.named_modules():
            if module is layer:
                return name, module
        raise LayerNotFoundError(f"the layer {type(layer).__name__} passed is not a submodule of the model")
    name = str(layer).strip()
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    modules = dict(net.named_modules())
    if name and name in modules:
        return name, modules[name]
    raise LayerNotFoundError(f"no layer named {layer!r} in the model{layer_hint(model, name)}")
