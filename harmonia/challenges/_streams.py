"""The random generators of many samples at once, vectorised: ``default_rng([seed, i])`` and its children.

Every challenge sample draws from its own generator (``Challenge.rng``), and FeatureTracker
from three children spawned from it (so every condition of a sample shares its trajectories).
numpy builds each one by one (a ``SeedSequence``, its hash, a ``PCG64``): about 10 us a
generator, more than drawing a whole video's trajectories. Here the seeds are hashed for all
samples together with numpy's published ``SeedSequence``
algorithm (O'Neill's ``seed_seq`` variant: pool of four 32-bit words, the same constants), and
each ``PCG64`` is seeded from its precomputed words: the same generators, bit for bit
(``tests/test_streams.py`` checks them against numpy's own), several times faster.
Seeds or indices of 2**32 and more take numpy's own path, and so does everything if a numpy
release ever seeds differently (checked once per process against numpy's own ``spawn``).
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.random.bit_generator import ISeedSequence

POOL = 4  # numpy's default pool size, in 32-bit words
INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875  # entropy mixing
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED  # state generation
MIX_L, MIX_R = 0xCA01F9DD, 0x4973F715
SHIFT = 16
WORD = 1 << 32


def sample_generators(seed: int, indices: list[int]) -> list[np.random.Generator]:
    """For each index ``i``: ``np.random.default_rng([seed, i])`` (a sample's generator), the same generators.

    Example:
        >>> a = sample_generators(0, [5, 9])[1].random()
        >>> a == np.random.default_rng([0, 9]).random()
        True
    """
    if not _fits(seed, indices):
        return [np.random.default_rng([seed, i]) for i in indices]
    return [gens[0] for gens in _hashed_generators(seed, indices, None)]


def spawned_generators(seed: int, indices: list[int], n: int) -> list[list[np.random.Generator]]:
    """For each index ``i``: ``np.random.default_rng([seed, i]).spawn(n)``, the same generators.

    Example:
        >>> a = spawned_generators(0, [5, 9], 3)[1][2].random()
        >>> a == np.random.default_rng([0, 9]).spawn(3)[2].random()
        True
    """
    if not _fits(seed, indices):
        return [np.random.default_rng([seed, i]).spawn(n) for i in indices]
    return _hashed_generators(seed, indices, n)


def _fits(seed: int, indices: list[int]) -> bool:
    """Whether the vectorised path applies: one 32-bit word each, and numpy seeds as it does here."""
    return bool(indices) and 0 <= seed < WORD and 0 <= min(indices) and max(indices) < WORD and _agrees_with_numpy()


@functools.lru_cache(maxsize=None)
def _agrees_with_numpy() -> bool:
    """Whether the hashing here gives numpy's own generators (a few seeds, indices and spawn keys)."""
    seed, indices = 2**32 - 1, [0, 1, 2**31 + 7]
    ours = [g for gens in _hashed_generators(seed, indices, 3) + _hashed_generators(seed, indices, None) for g in gens]
    theirs = [g for i in indices for g in np.random.default_rng([seed, i]).spawn(3)]
    theirs += [np.random.default_rng([seed, i]) for i in indices]
    return [g.bit_generator.state for g in ours] == [g.bit_generator.state for g in theirs]


def _hashed_generators(seed: int, indices: list[int], n: int | None) -> list[list[np.random.Generator]]:
    """Per index, its ``n`` children, or (``n`` None) a list holding the sample's generator itself."""
    idx = np.asarray(indices, np.uint32)
    # the assembled entropy: [seed, index], padded to the pool and followed by the spawn key for a child
    k = 1 if n is None else n
    entropy = np.zeros((POOL if n is None else POOL + 1, len(idx), k), np.uint32)
    entropy[0] = seed
    entropy[1] = idx[:, None]
    if n is not None:
        entropy[POOL] = np.arange(n, dtype=np.uint32)
    words = _generate_state(_mix_entropy(entropy))  # 8 x samples x k: the four uint64 of PCG64's seed
    # samples x k x 4 uint64: pairs of words read little-endian, as numpy does
    seeds = np.ascontiguousarray(words.transpose(1, 2, 0), dtype="<u4").view("<u8").astype(np.uint64)
    return [[np.random.Generator(np.random.PCG64(_Words(seeds[s, c]))) for c in range(k)] for s in range(len(idx))]


class _Words(ISeedSequence):
    """A seed sequence whose state is already computed (what ``PCG64`` asks of it)."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray) -> None:
        self.words = words

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        if n_words != len(self.words) or np.dtype(dtype) != np.uint64:
            raise ValueError("precomputed seed words: only PCG64's own request can be answered")
        return self.words


@functools.lru_cache(maxsize=None)
def _hash_constants(init: int, mult: int, count: int) -> tuple[tuple[int, int], ...]:
    """The (xor, multiply) constant pair of each of ``count`` hash steps (they do not depend on the data)."""
    pairs, h = [], init
    for _ in range(count):
        nxt = (h * mult) % WORD
        pairs.append((h, nxt))
        h = nxt
    return tuple(pairs)


def _hash(value: np.ndarray, xor: int, mult: int) -> np.ndarray:
    value = (value ^ np.uint32(xor)) * np.uint32(mult)
    return value ^ (value >> np.uint32(SHIFT))


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = x * np.uint32(MIX_L) - y * np.uint32(MIX_R)
    return out ^ (out >> np.uint32(SHIFT))


def _mix_entropy(entropy: np.ndarray) -> np.ndarray:
    """The pool (POOL x ...) of entropy words (words x ...): hash them in, mix every word into every other."""
    extra = len(entropy) - POOL
    consts = iter(_hash_constants(INIT_A, MULT_A, POOL + POOL * (POOL - 1) + extra * POOL))
    pool = [_hash(entropy[i], *next(consts)) for i in range(POOL)]
    for src in range(POOL):
        for dst in range(POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hash(pool[src], *next(consts)))
    for src in range(POOL, len(entropy)):
        for dst in range(POOL):
            pool[dst] = _mix(pool[dst], _hash(entropy[src], *next(consts)))
    return np.stack(pool)


def _generate_state(pool: np.ndarray) -> np.ndarray:
    """Eight 32-bit state words (8 x ...) from the pool, cycling through it."""
    consts = _hash_constants(INIT_B, MULT_B, 8)
    return np.stack([_hash(pool[i % POOL], *consts[i]) for i in range(8)])
