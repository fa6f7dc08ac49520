"""Adversarial alignment: minimal perturbations compared with human feature-importance maps.

Example:
    >>> import torch
    >>> from harmonia.adversarial import perturbation_map
    >>> perturbation_map(torch.ones(2, 3, 4, 4), "abs_mean").shape
    torch.Size([2, 4, 4])
"""

from harmonia.adversarial.alignment import (
    LEAST_LIKELY,
    SKIPPED,
    AdversarialAlignment,
    AdversarialResult,
    adversarial_alignment,
    aggregate_attack_rows,
    alignment_scores,
    parse_target,
    resolve_targets,
)
from harmonia.adversarial.figure import FooledFigures, save_attack_figure
from harmonia.adversarial.grouping import ANIMATE_INANIMATE, GROUPINGS, GroupedLogits, resolve_grouping
from harmonia.adversarial.maps import PERTURBATION_REDUCERS, perturbation_map

__all__ = [
    "ANIMATE_INANIMATE",
    "GROUPINGS",
    "LEAST_LIKELY",
    "SKIPPED",
    "AdversarialAlignment",
    "AdversarialResult",
    "FooledFigures",
    "GroupedLogits",
    "PERTURBATION_REDUCERS",
    "adversarial_alignment",
    "aggregate_attack_rows",
    "alignment_scores",
    "parse_target",
    "perturbation_map",
    "resolve_grouping",
    "resolve_targets",
    "save_attack_figure",
]
