"""Attacks by name, with ``name:key=value,...`` specs for the command line.

The built-in attacks are registered here, in one place, on :data:`ATTACKS` (a
:class:`harmonia.registry.Registry`); another module adds one with the decorator::

    @ATTACKS.register("my_attack")
    class MyAttack(MinimalNormAttack): ...
"""

from __future__ import annotations

from harmonia.attacks.base import Attack, MinimalNormAttack
from harmonia.attacks.ddn import DDN
from harmonia.attacks.fmn import FMN, FMNLinf
from harmonia.attacks.pgd import PGDBisection2023, PGDSphereL2
from harmonia.registry import Registry, UnknownSettingError, parse_spec

ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("fmn")(FMN)
ATTACKS.register("fmn_linf")(FMNLinf)
ATTACKS.register("ddn")(DDN)
ATTACKS.register("pgd_bisection_2023")(PGDBisection2023)
ATTACKS.register("pgd_sphere_l2")(PGDSphereL2)

# The minimal-norm attacks by the norm they minimise (``harmonia attack --norm``).
NORM_ATTACKS: dict[str, set[str]] = {"l2": {"fmn", "ddn", "pgd_bisection_2023"}, "linf": {"fmn_linf"}}


def create_attack(spec: str) -> Attack:
    """An attack from ``"name"`` or ``"name:key=value,key=value"`` (:func:`harmonia.registry.parse_spec`).

    Example:
        >>> create_attack("fmn:steps=50").steps
        50
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty attack spec; valid attacks: {', '.join(ATTACKS)}")
    name, kwargs = parse_spec(spec)
    key = ATTACKS.resolve(name)
    try:
        return ATTACKS.create(key, **kwargs)
    except UnknownSettingError as e:
        raise ValueError(f"bad options for attack {key!r}: no option {', '.join(map(repr, e.unknown))}; "
                         f"its options: {', '.join(e.known)}") from None
    except TypeError as e:  # a required option left out (pgd_sphere_l2 needs eps)
        raise ValueError(f"bad options for attack {key!r}: {e}") from None


def attack_for_norm(spec: str, norm: str | None) -> str:
    """The attack spec that minimises ``norm``: fmn becomes fmn_linf for linf (and back); other mismatches are errors.

    Example:
        >>> attack_for_norm("fmn:steps=100", "linf"), attack_for_norm("ddn", None)
        ('fmn_linf:steps=100', 'ddn')
    """
    if norm is None:
        return spec
    name, sep, opts = spec.partition(":")
    name = ATTACKS.resolve(name) if name in ATTACKS else name.strip().replace("-", "_")
    norm = norm.lower()
    if norm not in NORM_ATTACKS:
        raise ValueError(f"unknown norm {norm!r}; valid: l2, linf")
    if norm == "linf" and name == "fmn":
        name = "fmn_linf"
    elif norm == "l2" and name == "fmn_linf":
        name = "fmn"
    if name not in NORM_ATTACKS[norm]:
        raise ValueError(f"attack {name!r} does not minimise the {norm} norm; {norm} attacks: "
                         f"{', '.join(sorted(NORM_ATTACKS[norm]))}")
    return name + sep + opts


def minimal_norm_attack(spec: str, norm: str | None = None) -> MinimalNormAttack:
    """The minimal-norm attack of ``spec`` for ``norm`` (see :func:`attack_for_norm`); a fixed-budget one is refused.

    A perturbation tolerance is the norm of the smallest perturbation that fools the model,
    which only a minimal-norm attack measures.

    Example:
        >>> minimal_norm_attack("fmn:steps=20", "linf").name
        'fmn_linf'
    """
    atk = create_attack(attack_for_norm(spec, norm))
    if not isinstance(atk, MinimalNormAttack):
        minimal = [n for n in ATTACKS if any(n in names for names in NORM_ATTACKS.values())]
        raise ValueError(f"{spec!r} is a fixed-budget attack; tolerance needs a minimal-norm one ({', '.join(minimal)})")
    return atk
