"""Explainers by name, and the ``name:key=value,...`` spec strings the CLI takes.

The built-in explainers are registered here, in one place, on :data:`EXPLAINERS` (a
:class:`harmonia.registry.Registry`); another module adds one with the decorator::

    @EXPLAINERS.register("my_explainer", aliases=("mine",))
    class MyExplainer(Explainer): ...
"""

from __future__ import annotations

from typing import Any

from harmonia.attribution.base import Explainer
from harmonia.attribution.gradcam import GradCAM
from harmonia.attribution.gradients import InputXGradient, Saliency
from harmonia.attribution.integrated_gradients import IntegratedGradients
from harmonia.attribution.smoothgrad import SmoothGrad
from harmonia.registry import Registry

EXPLAINERS: Registry[Explainer] = Registry("explainer")
EXPLAINERS.register("saliency", aliases=("gradient",))(Saliency)
EXPLAINERS.register("input_x_gradient", aliases=("gradient_input", "inputxgradient"))(InputXGradient)
EXPLAINERS.register("smoothgrad", aliases=("smooth_grad",))(SmoothGrad)
EXPLAINERS.register("integrated_gradients", aliases=("ig",))(IntegratedGradients)
EXPLAINERS.register("gradcam", aliases=("grad_cam",))(GradCAM)


def list_explainers() -> list[str]:
    """Registry names of all explainers.

    Example:
        >>> list_explainers()
        ['saliency', 'input_x_gradient', 'smoothgrad', 'integrated_gradients', 'gradcam']
    """
    return EXPLAINERS.names()


def create_explainer(name: str, **kwargs: Any) -> Explainer:
    """An explainer by registry name (case, ``-`` vs ``_`` and a few aliases tolerated).

    ``create_explainer(**explainer.config())`` rebuilds an equivalent explainer.

    Example:
        >>> create_explainer("saliency", reducer="abs_mean")
        Saliency(reducer='abs_mean')
    """
    return EXPLAINERS.create(name, **kwargs)


def parse_explainer_spec(spec: str) -> Explainer:
    """An explainer from ``"name"`` or ``"name:key=value,key=value"`` (:func:`harmonia.registry.parse_spec`).

    Values are read as int, float, bool (true/false), None (none) or else string.

    Example:
        >>> parse_explainer_spec("smoothgrad:n_samples=16,noise=0.1").config()["n_samples"]
        16
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty explainer spec; available: {', '.join(EXPLAINERS)}")
    return EXPLAINERS.from_spec(spec)
