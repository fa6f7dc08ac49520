"""The interface every synthetic human-vs-DNN challenge shares, and its registry.

A challenge is a seeded, deterministic, indexable generator: ``gen[i]`` is a dict with the
sample's array (``video``: T x H x W x 3 uint8 for the trackers, ``image``: H x W uint8 for
SVRT, ...), its ``label`` (0/1) and its ``meta`` (what the sample was drawn from, so tests can
check pixels and rules against it). Sample ``i`` depends only on (seed, knobs, i): the same on
any machine, in any order, in any worker.

A new challenge is one module that subclasses :class:`Challenge` and registers itself::

    @CHALLENGES.register("mychallenge")
    class MyChallenge(Challenge):
        modality = "image"
        def __init__(self, seed: int = 0, size: int = 10) -> None: ...
        def sample(self, rng: np.random.Generator, label: int, index: int) -> dict: ...

Example:
    >>> import harmonia.challenges as hc
    >>> isinstance(hc.names(), list)
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harmonia.challenges._streams import sample_generators
from harmonia.registry import Registry

CHALLENGES: Registry["Challenge"] = Registry("challenge")


class Challenge:
    """Base class: seeding, balanced labels and indexing; subclasses draw one sample.

    Subclasses set ``modality`` (the key of the sample's array: ``"video"`` or ``"image"``),
    store their knobs in ``self.knobs`` (a JSON-serialisable dict, validated in ``__init__``
    with a clear ``ValueError`` for impossible settings) and implement :meth:`sample`.
    """

    modality: ClassVar[str] = "image"
    name: ClassVar[str] = "challenge"

    def __init__(self, seed: int = 0, length: int = 10_000, **knobs: Any) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.seed = int(seed)
        self.length = int(length)
        self.knobs: dict[str, Any] = dict(knobs)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index``: a function of (seed, index) only (``default_rng([seed, index])``;
        batched challenges make many at once with :func:`~harmonia.challenges._streams.sample_generators`)."""
        return np.random.default_rng([self.seed, int(index)])

    def label_of(self, index: int) -> int:
        """Balanced labels: even indices negative, odd positive."""
        return int(index) % 2

    def _index(self, index: int) -> int:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return int(index) % self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        out = self.sample(self.rng(index), self.label_of(index), index)
        out.setdefault("label", self.label_of(index))
        return out

    def samples(self, indices: list[int]) -> list[dict[str, Any]]:
        """``[gen[i] for i in indices]``; a subclass may draw them together (vectorised), same result.

        Example:
            >>> import harmonia.challenges as hc
            >>> g = hc.create("pathtracker", frames=32)
            >>> bool((g.samples([3, 4])[0]["video"] == g[3]["video"]).all())
            True
        """
        return [self[i] for i in indices]

    def sample(self, rng: np.random.Generator, label: int, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """What identifies this generator's samples: name, seed and knobs."""
        return {"challenge": self.name, "seed": self.seed, **self.knobs}

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.knobs.items())
        return f"{type(self).__name__}(seed={self.seed}, {knobs})"


class BatchedChallenge(Challenge):
    """A challenge drawn vectorised: subclasses implement :meth:`sample_batch` (each sample's random
    numbers from its own generator, so a batch equals drawing its samples one by one)."""

    def sample(self, rng: np.random.Generator, label: int, index: int) -> dict[str, Any]:
        return self.sample_batch([rng], [label])[0]

    def samples(self, indices: list[int]) -> list[dict[str, Any]]:
        idx = [self._index(i) for i in indices]
        return self.sample_batch(sample_generators(self.seed, idx), [self.label_of(i) for i in idx])

    def sample_batch(self, rngs: list[np.random.Generator], labels: list[int]) -> list[dict[str, Any]]:
        raise NotImplementedError


_SUPPORT_MODULES = {"base", "dataset", "writer"}


def discover() -> None:
    """Import every challenge module of this package, so each registers itself.

    Adding a challenge is adding one module to ``harmonia/challenges/``; nothing else to edit.
    """
    import importlib
    import pkgutil

    import harmonia.challenges as package

    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_") and mod.name not in _SUPPORT_MODULES:
            importlib.import_module(f"{package.__name__}.{mod.name}")


def create(name: str, seed: int = 0, **knobs: Any) -> Challenge:
    """A registered challenge by name: ``create("pathtracker", seed=0, frames=32)``."""
    discover()
    return CHALLENGES.create(name, seed=seed, **knobs)


def names() -> list[str]:
    """Names of the registered challenges."""
    discover()
    return CHALLENGES.names()
