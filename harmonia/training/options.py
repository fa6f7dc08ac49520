"""A training run's config from the options given (what ``harmonia train`` takes), for any caller.

:func:`config_from_options` lays the options given over the saved run's config when
resuming, else over a preset; :func:`parse_milestones` and :func:`parse_crop_scale` read
the text forms. Error messages name the CLI options, as the library's other option parsers do.

Example:
    >>> parse_milestones("30, 60,80"), parse_crop_scale("0.5"), parse_crop_scale(None)
    ([30.0, 60.0, 80.0], (0.5, 1.0), None)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harmonia.training.trainer import TrainConfig


def parse_milestones(text: str | None) -> list[float] | None:
    """``"30,60,80"`` (epochs) -> [30.0, 60.0, 80.0]; None stays None."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"--milestones must be comma-separated epochs like 30,60,80, got {text!r}") from None


def parse_crop_scale(text: str | None) -> tuple[float, float] | None:
    """``"MIN,MAX"`` -> (MIN, MAX); ``"MIN"`` -> (MIN, 1.0); None stays None."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        lo, hi = (float(parts[0]), float(parts[1])) if len(parts) == 2 else (float(parts[0]), 1.0)
    except ValueError:
        raise ValueError(f"--crop-scale must be 'MIN,MAX' like 0.08,1, got {text!r}") from None
    return lo, hi


def config_from_options(options: dict[str, Any], resume: bool) -> TrainConfig:
    """A TrainConfig from the options given (None: not given): over the saved run's config
    (``OUT/config.json``) when resuming one, else over the preset (default ``harmonizer``).

    Example:
        >>> config_from_options({"data": "d", "epochs": 2, "preset": "adamw", "lr": None}, resume=False).optimizer
        'adamw'
    """
    from harmonia.training.trainer import TrainConfig

    given = {k: v for k, v in options.items() if v is not None}
    out = Path(given.get("out_dir", TrainConfig.out_dir))
    saved = out / "config.json"
    if resume and saved.is_file():
        base = TrainConfig.from_json(json.loads(saved.read_text()))
        if "preset" in given and given["preset"] != base.preset:
            raise ValueError(f"{out} was trained with --preset {base.preset}; resume with that preset")
        given.pop("preset", None)
        data = base.to_json()
        data.update(given)
        config = TrainConfig.from_json(data)
    else:
        if "data" not in given:
            raise ValueError("--data is needed (a dataset directory in harmonia's format)")
        config = TrainConfig.from_preset(given.pop("preset", "harmonizer"), **given)
    config.resume = resume
    return config
