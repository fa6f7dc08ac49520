"""Adversarial attacks measured in [0, 1] pixel space, with per-sample pass counts.

Call shape (all attacks): ``atk(model, images, labels, targets=None) -> AttackResult``.

- Minimal-norm (:class:`MinimalNormAttack`): :class:`FMN` and :class:`DDN` (L2, ours,
  early stopping per sample), :class:`FMNLinf` (Linf FMN) and :class:`PGDBisection2023` (the 2023 reference protocol).
- Fixed budget (:class:`FixedBudgetAttack`): :class:`PGDSphereL2` (3-step L2 PGD on the
  eps-sphere).

Example:
    >>> import torch, torch.nn as nn
    >>> from harmonia.attacks import FMN
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> x = torch.rand(5, 3, 2, 2)
    >>> res = FMN(steps=100)(net, x, net(x).argmax(1))
    >>> res.status.count("fooled")
    5
"""

from harmonia.attacks.base import (
    FOOLED,
    MISCLASSIFIED,
    NOT_FOOLED,
    Attack,
    AttackResult,
    FixedBudgetAttack,
    MinimalNormAttack,
    PassCounter,
    is_adversarial,
    margin,
)
from harmonia.attacks.ddn import DDN
from harmonia.attacks.fmn import FMN, FMNLinf
from harmonia.attacks.pgd import PGDBisection2023, PGDSphereL2, pgd_sphere
from harmonia.attacks.registry import ATTACKS, NORM_ATTACKS, attack_for_norm, create_attack, minimal_norm_attack

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "DDN",
    "FMN",
    "FMNLinf",
    "FOOLED",
    "FixedBudgetAttack",
    "MISCLASSIFIED",
    "MinimalNormAttack",
    "NORM_ATTACKS",
    "NOT_FOOLED",
    "PGDBisection2023",
    "PGDSphereL2",
    "PassCounter",
    "attack_for_norm",
    "create_attack",
    "is_adversarial",
    "margin",
    "minimal_norm_attack",
    "pgd_sphere",
]
