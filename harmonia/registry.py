"""One registry type and one ``"name:key=value,key=value"`` spec grammar for every pluggable kind.

A kind (challenges, built-in models and model sources, explainers, attacks; objectives and
measurements next) keeps one :class:`Registry`; an implementation registers itself with a
decorator (in its own module, so adding one is adding one file, or where the built-in ones are).

Example:
    >>> things = Registry("thing")
    >>> @things.register("box", aliases=("crate",))
    ... class Box:
    ...     def __init__(self, size: int = 1) -> None:
    ...         self.size = size
    >>> things.create("crate", size=3).size
    3
    >>> things.from_spec("box:size=5").size
    5
    >>> parse_spec("smoothgrad:n_samples=16,noise=0.1")
    ('smoothgrad', {'n_samples': 16, 'noise': 0.1})

A kind may let its leading settings be given by position, ``:``-separated, before the
``key=value`` ones (``channel:layer3.1:17,weight=2``): register with ``positional=(...)``.

    >>> @things.register("bag", positional=("size",))
    ... class Bag(Box):
    ...     pass
    >>> things.from_spec("bag:7").size
    7
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, 'none' -> None, a quoted text or anything else -> str.

    Example:
        >>> [parse_value(t) for t in ("3", "0.5", "off", "none", "'7'", "layer3.1")]
        [3, 0.5, False, None, '7', 'layer3.1']
    """
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]  # quoted: force a string ("'1'")
    return text


def parse_settings(text: str, spec: str | None = None) -> dict[str, Any]:
    """``"k=v,k=v"`` -> dict (values through :func:`parse_value`); duplicates and bare words refused.

    Example:
        >>> parse_settings("frames=64, speed=2")
        {'frames': 64, 'speed': 2}
    """
    where = f" in {spec!r}" if spec else ""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"bad setting {item!r}{where}; expected key=value")
        if key in out:
            raise ValueError(f"setting {key!r} given twice{where}")
        out[key] = parse_value(value.strip())
    return out


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,key=value"`` -> (name, settings)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty spec; expected 'name' or 'name:key=value,...'")
    name, _, rest = spec.strip().partition(":")
    return name.strip(), parse_settings(rest, spec)


def format_spec(name: str, settings: dict[str, Any] | None = None) -> str:
    """The inverse of :func:`parse_spec`: ``"name"`` or ``"name:key=value,..."``.

    Example:
        >>> format_spec("smoothgrad", {"n_samples": 16, "noise": 0.15})
        'smoothgrad:n_samples=16,noise=0.15'
        >>> parse_spec(format_spec("saliency", {"reducer": "max_abs"}))
        ('saliency', {'reducer': 'max_abs'})
    """
    items = ",".join(f"{k}={'none' if v is None else v}" for k, v in (settings or {}).items())
    return f"{name}:{items}" if items else name


def parse_spec_args(spec: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``"name:v1:v2,key=value,..."`` -> (name, [v1, v2], settings).

    Positional values come first, separated by ``:`` (or ``,``); a ``key=value`` value keeps
    its own colons (``arch=timm:resnet18``).

    Example:
        >>> parse_spec_args("channel:layer3.1:17,weight=2")
        ('channel', ['layer3.1', 17], {'weight': 2})
        >>> parse_spec_args("model:arch=timm:resnet18")
        ('model', [], {'arch': 'timm:resnet18'})
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty spec; expected 'name' or 'name:key=value,...'")
    name, _, rest = spec.strip().partition(":")
    args: list[Any] = []
    settings: list[str] = []
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        head = key.split(":")
        bare = head if not eq else head[:-1]
        if bare and settings:
            raise ValueError(f"positional value {bare[0]!r} after key=value settings in {spec!r}")
        args += [parse_value(v.strip()) for v in bare if v.strip()]
        if eq:
            settings.append(f"{head[-1]}={value}")
    return name.strip(), args, parse_settings(",".join(settings), spec)


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Named factories of one kind: ``register`` (decorator), ``create``, ``from_spec``, ``names``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}
        self._positional: dict[str, tuple[str, ...]] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (),
                 positional: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a class or factory under ``name`` (and ``aliases``); ``positional``
        names the settings a spec may give by position, in order."""
        key = _normalise(name)
        self._positional[key] = tuple(positional)

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._entries and self._entries[key] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = factory
            for alias in aliases:
                self._aliases[_normalise(alias)] = key
            return factory

        return decorate

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def resolve(self, name: str) -> str:
        """The registered name for ``name`` (case, ``-``/``_`` and aliases tolerated)."""
        key = _normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            close = difflib.get_close_matches(key, self.names(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}{hint} (available: {', '.join(self.names())})")
        return key

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``."""
        return self._entries[self.resolve(name)]

    def settings(self, name: str) -> list[str]:
        """The keyword settings ``create(name, ...)`` accepts."""
        factory = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
        return [p.name for p in inspect.signature(target).parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def create(self, name: str, **kwargs: Any) -> T:
        """Build ``name`` with ``kwargs``; an unknown setting is refused with the list of known ones."""
        key = self.resolve(name)
        known = self.settings(key)
        unknown = sorted(set(kwargs) - set(known))
        if unknown and not self.takes_any(key):
            raise UnknownSettingError(self.kind, key, unknown, known)
        return self._entries[key](**kwargs)

    def from_spec(self, spec: str, **defaults: Any) -> T:
        """Build from ``"name:key=value,..."``; ``defaults`` fill settings the spec leaves out."""
        name, args, kwargs = parse_spec_args(spec)
        key = self.resolve(name)
        order = self._positional.get(key, ())
        if len(args) > len(order):
            takes = f"takes {len(order)} positional value(s) ({', '.join(order)})" if order else "takes no positional values"
            raise ValueError(f"{self.kind} {key} {takes}; got {args!r} in {spec!r} (use key=value)")
        given = dict(zip(order, args))
        twice = sorted(set(given) & set(kwargs))
        if twice:
            raise ValueError(f"setting {twice[0]!r} given twice in {spec!r}")
        return self.create(key, **{**defaults, **given, **kwargs})

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(str(name))
        except ValueError:
            return False
        return True

    def takes_any(self, name: str) -> bool:
        """True when ``name``'s factory takes ``**kwargs`` (it checks its own settings then)."""
        factory = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Callable[..., T]:
        return self.get(name)


class UnknownSettingError(ValueError):
    """A setting the factory does not take; ``unknown`` and ``known`` name them.

    Example:
        >>> str(UnknownSettingError("attack", "fmn", ["stpes"], ["steps"]))
        "attack fmn has no setting 'stpes'; its settings: steps"
    """

    def __init__(self, kind: str, name: str, unknown: list[str], known: list[str]) -> None:
        self.kind, self.name, self.unknown, self.known = kind, name, list(unknown), list(known)
        super().__init__(f"{kind} {name} has no setting {', '.join(map(repr, self.unknown))}; "
                         f"its settings: {', '.join(self.known) or 'none'}")
