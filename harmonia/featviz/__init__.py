"""Feature visualization: MACO (phase-only, fixed natural-image magnitude), the Fourier (Lucid)
baseline and feature accentuation, K objectives per batch, with transparency maps and scores.

Example:
    >>> from harmonia.featviz import maco, parse_objective
    >>> parse_objective("class:967")
    Objective('class:967')
"""

from harmonia.featviz.augment import Augmentation
from harmonia.featviz.objectives import (
    OBJECTIVES,
    Objective,
    Term,
    channel,
    class_logit,
    direction,
    layer,
    neuron,
    parse_objective,
    parse_objectives,
)
from harmonia.featviz.optimize import FeatvizResult, accentuate, fourier, maco, visualize
from harmonia.featviz.params import AccentuationImage, FourierImage, MacoImage
from harmonia.featviz.spectrum import compute_spectrum, default_spectrum_path, load_spectrum, save_spectrum

__all__ = [
    "OBJECTIVES",
    "AccentuationImage",
    "Augmentation",
    "FeatvizResult",
    "FourierImage",
    "MacoImage",
    "Objective",
    "Term",
    "accentuate",
    "channel",
    "class_logit",
    "compute_spectrum",
    "default_spectrum_path",
    "direction",
    "fourier",
    "layer",
    "load_spectrum",
    "maco",
    "neuron",
    "parse_objective",
    "parse_objectives",
    "save_spectrum",
    "visualize",
]
