"""Attacks by name, with ``name:key=value,...`` specs for the command line."""

from __future__ import annotations

from typing import Any

from harmonia.attacks.base import Attack
from harmonia.attacks.ddn import DDN
from harmonia.attacks.fmn import FMN, FMNLinf
from harmonia.attacks.pgd import PGDBisection2023, PGDSphereL2

ATTACKS: dict[str, type[Attack]] = {
    "fmn": FMN,
    "fmn_linf": FMNLinf,
    "ddn": DDN,
    "pgd_bisection_2023": PGDBisection2023,
    "pgd_sphere_l2": PGDSphereL2,
}


def _value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):  # bool("false") would be True
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def create_attack(spec: str) -> Attack:
    """An attack from ``"name"`` or ``"name:key=value,key=value"``.

    Example:
        >>> create_attack("fmn:steps=50").steps
        50
    """
    name, _, args = spec.partition(":")
    name = name.strip().replace("-", "_")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}")
    kw: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, eq, val = part.partition("=")
        if not eq:
            raise ValueError(f"bad attack option {part!r} in {spec!r} (expected key=value)")
        kw[key.strip()] = _value(val.strip())
    try:
        return ATTACKS[name](**kw)
    except TypeError as e:
        raise ValueError(f"bad options for attack {name!r}: {e}") from None
