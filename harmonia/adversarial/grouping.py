"""Class grouping for attacks: the 2025 animate / inanimate task.

The 2025 revision attacks a two-way decision, ImageNet classes 0-397 (animate) vs 398-999
(inanimate), each group's logit being the max of its classes' logits. Wrapping the model
keeps the attacks unchanged: they see a 2-class model.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

ANIMATE_INANIMATE: tuple[range, range] = (range(0, 398), range(398, 1000))
GROUPINGS: dict[str, tuple[range, ...]] = {"animate_inanimate": ANIMATE_INANIMATE}


def resolve_grouping(grouping: str | Sequence[Sequence[int]]) -> list[list[int]]:
    """Class groups from a grouping name (see GROUPINGS; '-' and '_' alike) or explicit groups.

    Example:
        >>> [len(g) for g in resolve_grouping("animate-inanimate")]
        [398, 602]
    """
    if isinstance(grouping, str):
        key = grouping.replace("-", "_").replace("/", "_")
        if key not in GROUPINGS:
            raise ValueError(f"unknown grouping {grouping!r}; valid: {', '.join(GROUPINGS)}")
        grouping = GROUPINGS[key]
    return [list(g) for g in grouping]


class GroupedLogits(nn.Module):
    """Logits of class groups (max over each group's classes) of a wrapped model.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3, 4))
        >>> GroupedLogits(net, [range(0, 2), range(2, 4)])(torch.rand(5, 3, 1, 1)).shape
        torch.Size([5, 2])
    """

    def __init__(self, model: nn.Module, groups: Sequence[Sequence[int]] = ANIMATE_INANIMATE) -> None:
        super().__init__()
        self.model = model
        self.groups = [list(g) for g in groups]
        if len(self.groups) < 2 or any(not g for g in self.groups):
            raise ValueError("need at least two non-empty groups")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.model(images)
        return torch.stack([z[:, g].amax(1) for g in self.groups], 1)

    def group_of(self, labels: torch.Tensor) -> torch.Tensor:
        """Group index of each class label (labels in no group raise)."""
        lut = torch.full((max(max(g) for g in self.groups) + 1,), -1, dtype=torch.long)
        for i, g in enumerate(self.groups):
            lut[g] = i
        lab = labels.cpu()
        if bool(((lab < 0) | (lab >= len(lut))).any()):
            raise ValueError(f"a label is outside the grouped classes 0-{len(lut) - 1}")
        out = lut[lab]
        if bool((out < 0).any()):
            raise ValueError("a label belongs to no group")
        return out.to(labels.device)
