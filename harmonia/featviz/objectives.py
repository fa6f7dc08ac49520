"""What a feature visualization maximises: class logits, channels, neurons, layers, directions.

An :class:`Objective` is a weighted sum of terms; ``+``, ``-`` and scalar ``*`` combine them
and each term keeps its own weight (a multiplier scales its own term, not the running sum).
Layer terms read the output of a module named as in the model's own ``named_modules()``
(``harmonia featviz layers MODEL`` lists them); ViT token outputs are read on their patch
grid (prefix tokens dropped), like every other hooked layer in harmonia.

Terms, per image (the optimisation averages them over the crops of a step):

- ``class:C``: the logit of class C (an index or an exact class name);
- ``channel:LAYER:C``: the mean over positions of channel C;
- ``neuron:LAYER:C`` (``,y=Y,x=X``; default the centre): channel C at one position;
- ``layer:LAYER``: the mean squared activation of the layer (DeepDream);
- ``direction:LAYER,file=V.npy`` (``cossim_pow=1``): per position, dot(a, v) * max(cos(a, v), 0)^p,
  averaged over positions.

A spec combines terms with `` + `` / `` - `` (spaces around) and ``W*`` weights, parsed once
through the one spec grammar (:mod:`harmonia.registry`).

Example:
    >>> o = parse_objective("class:967 - 0.5*channel:blocks.5:12")
    >>> o
    Objective('class:967 - 0.5*channel:blocks.5:12')
    >>> sorted(o.layers)
    ['blocks.5']
    >>> (2 * o).terms[1][0]
    -1.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from harmonia.models.layers import resolve_layer
from harmonia.neural.features import to_spatial
from harmonia.registry import Registry

LOGITS = ""  # the activation key of the model's output


@dataclass(frozen=True)
class Term:
    """One objective term: its kind, the layer it reads (``LOGITS`` for the output) and settings."""

    kind: str
    layer: str = LOGITS
    channel: int | str | None = None  # class index/name for "class"
    y: int | None = None
    x: int | None = None
    vector: tuple[float, ...] | None = None
    cossim_pow: float = 1.0

    def spec(self) -> str:
        if self.kind == "class":
            return f"class:{self.channel}"
        if self.kind == "layer":
            return f"layer:{self.layer}"
        if self.kind == "direction":
            return f"direction:{self.layer}" + (f",cossim_pow={self.cossim_pow:g}" if self.cossim_pow != 1.0 else "")
        pos = "" if self.y is None and self.x is None else f",y={self.y},x={self.x}"
        return f"{self.kind}:{self.layer}:{self.channel}{pos}"

    def value(self, act: torch.Tensor) -> torch.Tensor:
        """Per-row value (N,) from this term's activation."""
        if self.kind == "class":
            return act[:, int(self.channel)]  # type: ignore[arg-type]
        a = to_spatial(act) if act.ndim != 4 else act
        if a is None:
            if act.ndim == 2 and self.kind in ("channel", "neuron"):  # a pooled vector: the unit itself
                return act[:, int(self.channel)]  # type: ignore[arg-type]
            a = act.reshape(act.shape[0], act.shape[1], -1, 1) if act.ndim >= 2 else None
            if a is None:
                raise ValueError(f"{self.spec()}: layer output of shape {tuple(act.shape)} has no channels")
        n, c, h, w = a.shape
        if self.kind in ("channel", "neuron") and not 0 <= int(self.channel) < c:  # type: ignore[arg-type]
            raise ValueError(f"{self.spec()}: channel {self.channel} outside 0..{c - 1} of layer {self.layer!r}")
        if self.kind == "channel":
            return a[:, int(self.channel)].mean((1, 2))  # type: ignore[arg-type]
        if self.kind == "neuron":
            y = h // 2 if self.y is None else self.y
            x = w // 2 if self.x is None else self.x
            if not (-h <= y < h and -w <= x < w):
                raise ValueError(f"{self.spec()}: position ({y}, {x}) outside the {h} x {w} map of {self.layer!r}")
            return a[:, int(self.channel), y, x]  # type: ignore[arg-type]
        if self.kind == "layer":
            return a.pow(2).mean((1, 2, 3))
        if self.kind == "direction":
            v = torch.as_tensor(self.vector, dtype=a.dtype, device=a.device)
            if v.numel() != c:
                raise ValueError(f"{self.spec()}: direction has {v.numel()} values, layer {self.layer!r} has {c} channels")
            v = v.view(1, c, 1, 1)
            dot = (a * v).sum(1)
            cos = dot / (a.norm(dim=1) * v.norm()).clamp_min(1e-8)
            return (dot * cos.clamp_min(0).pow(self.cossim_pow)).mean((1, 2))
        raise ValueError(f"unknown objective kind {self.kind!r}")


@dataclass(frozen=True)
class Objective:
    """A weighted sum of :class:`Term` s; ``o(acts)`` -> per-row values."""

    terms: tuple[tuple[float, Term], ...]
    name: str = field(default="", compare=False)

    @property
    def layers(self) -> set[str]:
        """The module names this objective reads (the logits excluded)."""
        return {t.layer for _, t in self.terms if t.layer != LOGITS}

    def spec(self) -> str:
        parts = []
        for i, (w, t) in enumerate(self.terms):
            sign = "-" if w < 0 else "+"
            mag = abs(w)
            body = t.spec() if mag == 1 else f"{mag:g}*{t.spec()}"
            parts.append(body if i == 0 and sign == "+" else (f"-{body}" if i == 0 else f"{sign} {body}"))
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Objective({self.name or self.spec()!r})"

    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __neg__(self) -> "Objective":
        return Objective(tuple((-w, t) for w, t in self.terms))

    def __sub__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, k: float) -> "Objective":
        if isinstance(k, Objective) or not isinstance(k, (int, float)):
            return NotImplemented
        return Objective(tuple((float(k) * w, t) for w, t in self.terms))

    __rmul__ = __mul__

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for w, t in self.terms:
            v = w * t.value(acts[t.layer])
            total = v if total is None else total + v
        assert total is not None
        return total

    def bind(self, model: nn.Module) -> "Objective":
        """Check layer names and classes against ``model``; class names become indices.

        Raises:
            KeyError: an unknown layer (the message names the closest ones).
            ValueError: an unknown class name or an index outside the model's classes.
        """
        names = getattr(model, "class_names", None)
        n = getattr(model, "num_classes", None)
        terms = []
        for w, t in self.terms:
            if t.kind == "class":
                c = t.channel
                if isinstance(c, str):
                    if not names or c not in names:
                        import difflib

                        close = difflib.get_close_matches(c, list(names or []), n=3)
                        hint = f"; did you mean {', '.join(close)}?" if close else ""
                        raise ValueError(f"unknown class {c!r}{hint} (give a class index or an exact class name)")
                    c = names.index(c)
                if n is not None and not 0 <= int(c) < n:  # type: ignore[arg-type]
                    raise ValueError(f"class {c} outside 0..{n - 1} of the model")
                t = replace(t, channel=int(c))  # type: ignore[arg-type]
            else:
                t = replace(t, layer=resolve_layer(model, t.layer)[0])
            terms.append((w, t))
        return Objective(tuple(terms), self.name)


OBJECTIVES: Registry[Objective] = Registry("objective")


def _one(term: Term, weight: float = 1.0) -> Objective:
    return Objective(((float(weight), term),))


@OBJECTIVES.register("class", aliases=("logit",), positional=("index",))
def class_logit(index: int | str, weight: float = 1.0) -> Objective:
    """The logit of a class (index, or an exact class name of the model)."""
    return _one(Term("class", LOGITS, index), weight)


@OBJECTIVES.register("channel", positional=("layer", "channel"))
def channel(layer: str, channel: int, weight: float = 1.0) -> Objective:
    """The mean activation of one channel of ``layer``."""
    return _one(Term("channel", str(layer), int(channel)), weight)


@OBJECTIVES.register("neuron", positional=("layer", "channel"))
def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None, weight: float = 1.0) -> Objective:
    """One channel of ``layer`` at one position (default: the centre of its map)."""
    return _one(Term("neuron", str(layer), int(channel), y=y, x=x), weight)


@OBJECTIVES.register("layer", aliases=("deepdream",), positional=("layer",))
def layer(layer: str, weight: float = 1.0) -> Objective:
    """The mean squared activation of ``layer``."""
    return _one(Term("layer", str(layer)), weight)


@OBJECTIVES.register("direction", positional=("layer",))
def direction(layer: str, vector: Sequence[float] | np.ndarray | torch.Tensor | None = None,
              file: str | None = None, cossim_pow: float = 1.0, weight: float = 1.0) -> Objective:
    """A direction in ``layer``'s channel space (``vector``, or a ``.npy`` ``file`` of C values)."""
    if (vector is None) == (file is None):
        raise ValueError("a direction objective needs exactly one of vector= or file= (a .npy of C values)")
    if file is not None:
        vector = np.load(file, allow_pickle=False)
    v = np.asarray(vector.detach().cpu() if isinstance(vector, torch.Tensor) else vector, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all() or not np.any(v):
        raise ValueError("a direction must be a non-zero finite vector")
    return _one(Term("direction", str(layer), vector=tuple(float(x) for x in v), cossim_pow=float(cossim_pow)), weight)


_OPERATOR = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^\s*(-?[0-9.eE+-]+)\s*\*\s*(.+)$")


def parse_objective(spec: str | Objective) -> Objective:
    """An objective from a spec such as ``class:967``, ``channel:blocks.5:12``,
    ``2*class:967 - layer:blocks.6`` (operators with spaces around them).

    Raises:
        ValueError: malformed spec or unknown kind (the message lists the kinds).
    """
    if isinstance(spec, Objective):
        return spec
    text = str(spec).strip()
    if not text:
        raise ValueError("empty objective spec; e.g. 'class:967' or 'channel:blocks.5:12'")
    pieces = _OPERATOR.split(text)
    signs, bodies = ["+"] + pieces[1::2], pieces[0::2]
    total: Objective | None = None
    for sign, body in zip(signs, bodies):
        weight = 1.0
        m = _WEIGHT.match(body)
        if m:
            try:
                weight = float(m.group(1))
            except ValueError:
                raise ValueError(f"bad weight {m.group(1)!r} in objective {text!r}") from None
            body = m.group(2)
        try:
            term = OBJECTIVES.from_spec(body.strip())
        except TypeError as e:  # a missing positional value
            raise ValueError(f"objective {body.strip()!r}: {e}; e.g. 'class:967', 'channel:LAYER:C', 'neuron:LAYER:C', "
                             "'layer:LAYER', 'direction:LAYER,file=V.npy'") from None
        term = term * (weight if sign == "+" else -weight)
        total = term if total is None else total + term
    assert total is not None
    return Objective(total.terms, text)


def parse_objectives(specs: Sequence[str | Objective] | str | Objective) -> list[Objective]:
    """One objective or a list of them -> a list (one image each)."""
    if isinstance(specs, (str, Objective)):
        specs = [specs]
    out = [parse_objective(s) for s in specs]
    if not out:
        raise ValueError("no objective given")
    return out


def objective_layers(objectives: Sequence[Objective]) -> list[str]:
    """The union of the layers ``objectives`` read, sorted."""
    return sorted(set().union(*(o.layers for o in objectives)))
