"""Settings objects: one small mixin for every dataclass of settings harmonia keeps.

A settings dataclass (the loss options, the ceiling settings, the neural read-out, the
simulation, the trainer) inherits :class:`Config` and gets, in one way everywhere:

- ``to_json()`` -> a JSON-able dict (tuples become lists, nested settings become dicts);
- ``from_json(obj)`` -> the object back (lists become tuples where the field's default is
  a tuple, nested settings rebuilt); unknown keys are refused with the list of known ones;
- ``validate()`` raising :class:`harmonia.errors.UserError` with one line naming the bad
  setting (subclasses write their checks in ``_checks``);
- ``default(name)`` -> a field's default, written once in the dataclass, so command-line
  options and wrapper functions read it instead of repeating it.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Blur(Config):
    ...     size: int = 5
    ...     sigma: tuple[float, float] = (1.0, 2.0)
    ...     def _checks(self):
    ...         return [(self.size >= 1, f"size must be >= 1, got {self.size}")]
    >>> Blur.from_json({"size": 3, "sigma": [0.5, 1.0]})
    Blur(size=3, sigma=(0.5, 1.0))
    >>> Blur.default("size"), Blur(size=3).to_json()
    (5, {'size': 3, 'sigma': [1.0, 2.0]})
    >>> Blur.from_json({"sise": 3})
    Traceback (most recent call last):
    ...
    harmonia.errors.UserError: unknown Blur setting 'sise' (known: size, sigma)
    >>> Blur(size=0).validate()
    Traceback (most recent call last):
    ...
    harmonia.errors.UserError: size must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, TypeVar

from harmonia.errors import UserError

C = TypeVar("C", bound="Config")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


class Config:
    """Mixin for a settings dataclass: JSON round trip, validation, refusal of unknown keys."""

    # -- defaults ------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """The settings' names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (a fresh one for ``default_factory`` fields)."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                raise UserError(f"{cls.__name__}.{name} has no default")
        cls.check_keys([name])
        raise AssertionError("unreachable")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default (fields without one are left out)."""
        out = {}
        for name in cls.field_names():
            try:
                out[name] = cls.default(name)
            except UserError:
                pass
        return out

    @classmethod
    def check_keys(cls, keys: Iterable[str], what: str | None = None) -> None:
        """Raise :class:`UserError` naming the first key that is not a field."""
        known = cls.field_names()
        for k in keys:
            if k not in known:
                raise UserError(f"unknown {what or cls.__name__} setting {k!r} (known: {', '.join(known)})")

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (field order kept)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls: type[C], obj: dict[str, Any]) -> C:
        """Inverse of :meth:`to_json`; unknown keys are refused (:class:`UserError`)."""
        if not isinstance(obj, dict):
            raise UserError(f"{cls.__name__} settings must be a JSON object, got {type(obj).__name__}")
        cls.check_keys(obj)
        kw: dict[str, Any] = {}
        defaults = cls.defaults()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in obj:
                continue
            value, default = obj[f.name], defaults.get(f.name)
            if isinstance(default, Config) and isinstance(value, dict):
                value = type(default).from_json(value)
            elif isinstance(default, tuple):
                value = _as_tuple(value)
            kw[f.name] = value
        return cls(**kw)

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (unknown names refused, like :meth:`from_json`)."""
        type(self).check_keys(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    # -- validation ----------------------------------------------------------------------------
    def _checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs; the first false condition's message is the error."""
        return []

    def validate(self: C) -> C:
        """Raise :class:`UserError` with the first failed check's message; returns ``self``."""
        for ok, message in self._checks():
            if not ok:
                raise UserError(message)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value.validate()
        return self
