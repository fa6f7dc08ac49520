"""FeatureTracker (Muzellec, Linsley et al., ICLR 2025): track an object whose shape and colour change.

Like PathTracker (32 x 32 frames, 27 x 27 window, the same trajectories) with 32 frames and
10 distractors by default. Every object is a 5 x 5 grid whose 3 x 3 core starts as a random
non-empty binary pattern; the red start and blue end markers are 5 x 5 hollow squares around
an object's first / last position (the marker's centre is the object's centre, top-left + 2).
Label 1: the end marker is at the target's last position. Label 0: it is at the last position
of the distractor whose end is closest to the target's (but not on it), so negatives are hard.

Knobs:

- ``shapes``: ``none`` (shapes stay fixed), ``in`` (in distribution: birth-only Game-of-Life
  rule, an empty pixel with exactly 3 on neighbours turns on, none die), ``out`` (out of
  distribution: death-only, an on pixel with < 2 or > 3 on neighbours dies; an emptied shape
  is re-randomised).
- ``colors``: ``none`` (fixed green), ``in`` (hue rotates 1/64 of the cycle per frame inside
  [0, 180) degrees), ``out`` (the same inside [180, 360)), ``irregular`` (a speed drawn in
  U(0.02, 0.05) cycles per frame, every frame, inside [0, 180)). S = V = 1. The rotation is
  folded into its half circle (it turns back at the ends), so the hue changes smoothly and
  never jumps.

Training uses ``shapes=in, colors=in``; :data:`CONDITIONS` lists the test conditions.
Each sample also has ``masks``: uint8 T x 32 x 32 per-frame object ids (0 background, 1 start
marker, 2 end marker, 3 + k object k, later drawings on top) for the CV-RNN's synchrony loss.

Example:
    >>> import harmonia.challenges as hc
    >>> s = hc.create("featuretracker", seed=0)[0]
    >>> s["video"].shape, s["masks"].shape, s["meta"]["trajectories"].shape, s["label"]
    ((32, 32, 32, 3), (32, 32, 32), (11, 32, 2), 0)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from harmonia.challenges._tracking import (
    check_choice,
    check_int,
    draw_markers,
    path_uniforms,
    paths_from_uniforms,
    random_paths,
)
from harmonia.challenges._streams import spawned_generators
from harmonia.challenges.base import CHALLENGES, BatchedChallenge

SIZE = 32
WINDOW = SIZE - 5
OBJECT = 5
SHAPES = ("none", "in", "out")
COLORS = ("none", "in", "out", "irregular")
# The nine main conditions (shapes x none/in/out colours) and the three with irregular colours.
MAIN_CONDITIONS = tuple((s, c) for s in SHAPES for c in ("none", "in", "out"))
EXTRA_CONDITIONS = tuple((s, "irregular") for s in SHAPES)
CONDITIONS = MAIN_CONDITIONS + EXTRA_CONDITIONS
TRAIN_CONDITION = ("in", "in")
HUE_STEP = 360.0 / 64  # degrees per frame
IRREGULAR_SPEED = (0.02, 0.05)  # cycles per frame
GREEN_HUE = 120.0
HUE_RANGES = {"none": (GREEN_HUE, GREEN_HUE), "in": (0.0, 180.0), "out": (180.0, 360.0), "irregular": (0.0, 180.0)}
MIN_END_GAP = 1.0  # a negative's end marker is never on the target's end
RENDER_BLOCK = 4  # videos drawn together (their per-lit-cell temporaries fit in L2)


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Hues in degrees -> uint8 RGB (S = V = 1), vectorised: ``hue.shape + (3,)``.

    Example:
        >>> hue_to_rgb(np.array([0.0, 120.0, 240.0])).tolist()
        [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    """
    k = np.asarray(hue, float)[..., None] / 60.0 + np.array([5.0, 3.0, 1.0])
    if k.size and 0.0 <= k.min() and k.max() < 12.0:  # hues in [0, 360): k % 6 is k or k - 6, both exact
        np.subtract(k, 6.0, out=k, where=k >= 6.0)
    else:
        k %= 6.0
    f = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.round(f * 255).astype(np.uint8)


def _neighbours(grid: np.ndarray) -> np.ndarray:
    """On-neighbour counts (8-connected, zero outside) of ... x H x W bool grids."""
    h, w = grid.shape[-2:]
    p = np.zeros(grid.shape[:-2] + (h + 2, w + 2), np.int8)
    p[..., 1:-1, 1:-1] = grid
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]  # vertical sums of 3, then horizontal
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] - p[..., 1:-1, 1:-1]


def step_shapes(grid: np.ndarray, rule: str) -> np.ndarray:
    """One frame of the shape rule on ... x 5 x 5 bool grids (``in``: birth-only, ``out``: death-only).

    Example:
        >>> g = np.zeros((5, 5), bool); g[1, 1] = g[1, 2] = g[2, 1] = True
        >>> int(step_shapes(g, "in").sum()), int(step_shapes(g, "out").sum())
        (4, 3)
    """
    n = _neighbours(grid)
    if rule == "in":
        return grid | (n == 3)
    if rule == "out":
        return grid & (n >= 2) & (n <= 3)
    return grid.copy()


def cores_from_codes(code: np.ndarray) -> np.ndarray:
    """... x 5 x 5 bool grids whose 3 x 3 cores are the bits of ``code`` (ints in [1, 512)).

    Example:
        >>> cores_from_codes(np.array([1 + 256])).astype(int)[0, 1:4, 1:4].tolist()
        [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    """
    bits = (code[..., None] >> np.arange(9)) & 1
    grid = np.zeros(code.shape + (OBJECT, OBJECT), bool)
    grid[..., 1:4, 1:4] = bits.reshape(code.shape + (3, 3)).astype(bool)
    return grid


NEVER = 1 << 30  # the death age of a shape that never empties


@functools.lru_cache(maxsize=None)
def shape_table(rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Every shape a core can become under ``rule``, so videos look their shapes up instead of stepping them.

    Returns ``grids`` (512 x K x 5 x 5 bool: row ``code`` as in :func:`cores_from_codes`, column
    ``age``; the last column is the fixed point every code reaches within K - 1 steps) and each
    code's age at which it empties (``NEVER`` if it does not).

    Example:
        >>> grids, dies = shape_table("out")
        >>> grids.shape[0], int(dies[1]), int(dies[511]), bool(dies[27] == NEVER)  # a pixel, a full core, a 2 x 2 block
        (512, 1, 2, True)
    """
    steps = [cores_from_codes(np.arange(512))]  # code 0 (empty) is never drawn
    while not np.array_equal(nxt := step_shapes(steps[-1], rule), steps[-1]):
        steps.append(nxt)
    grids = np.stack(steps, axis=1)
    empty = ~grids.any(axis=(2, 3))
    dies = np.where(empty.any(axis=1), empty.argmax(axis=1), NEVER)
    for a in (grids, dies):
        a.flags.writeable = False  # cached and shared
    return grids, dies


def evolve_shapes(rngs: list[np.random.Generator], n_obj: int, frames: int, rule: str) -> np.ndarray:
    """Every object's 5 x 5 shape in every frame, videos x frames x objects x 5 x 5 bool.

    Each object starts as a random core (a code in [1, 512), from its video's generator) and
    follows ``rule`` frame by frame; a shape that empties is re-randomised in that frame (the
    codes of one frame drawn together, in object order). The same as stepping every frame with
    :func:`step_shapes`, read from :func:`shape_table`.

    Example:
        >>> g = evolve_shapes([np.random.default_rng(0)], 3, 8, "in")
        >>> g.shape, bool((g[:, 1:] >= g[:, :-1]).all())  # birth-only: no pixel ever turns off
        ((1, 8, 3, 5, 5), True)
    """
    table, dies_at = shape_table(rule)
    code = np.stack([r.integers(1, 512, size=n_obj) for r in rngs])
    codes = np.repeat(code[:, None], frames, axis=1)  # videos x frames x objects
    born = np.zeros_like(codes)
    dies = dies_at[code]  # the frame each object's current shape empties in
    while (t := int(dies.min())) < frames:
        hit = dies == t
        for b in np.flatnonzero(hit.any(axis=1)):
            new = rngs[b].integers(1, 512, size=int(hit[b].sum()))
            codes[b][t:, hit[b]] = new
            born[b][t:, hit[b]] = t
            dies[b, hit[b]] = t + dies_at[new]
    age = np.minimum(np.arange(frames)[:, None] - born, table.shape[1] - 1)
    return table[codes, age]


def hue_uniforms(rng: np.random.Generator, n: int, frames: int, colors: str) -> np.ndarray:
    """The uniforms one video's hues need: n x 1 start phases, then n x (frames - 1) speeds if irregular."""
    return rng.random((n, frames if colors == "irregular" else 1))


def hue_paths_from_uniforms(u: list[np.ndarray], frames: int, colors: str) -> np.ndarray:
    """Hues in degrees, videos x objects x frames, following the ``colors`` rule (module docstring)."""
    u_all = np.stack(u)  # videos x objects x (1 or frames)
    if colors == "none":
        return np.full(u_all.shape[:2] + (frames,), GREEN_HUE)
    lo, hi = HUE_RANGES[colors]
    width = hi - lo
    if colors == "irregular":
        low, high = IRREGULAR_SPEED
        speed = (low + (high - low) * u_all[..., 1:]) * 360.0
        travel = np.concatenate([np.zeros(u_all.shape[:2] + (1,)), np.cumsum(speed, axis=-1)], axis=-1)
    else:
        travel = np.arange(frames) * HUE_STEP
    phase = (u_all[..., :1] * 2 * width + travel) % (2 * width)
    folded = np.where(phase < width, phase, 2 * width - phase)  # back and forth inside the range
    return lo + np.minimum(folded, np.nextafter(width, 0))


def hue_paths(rng: np.random.Generator, n: int, frames: int, colors: str) -> np.ndarray:
    """Hues in degrees, n x frames, for one video.

    Example:
        >>> h = hue_paths(np.random.default_rng(0), 2, 32, "out")
        >>> h.shape, bool((h >= 180).all() and (h < 360).all())
        ((2, 32), True)
    """
    return hue_paths_from_uniforms([hue_uniforms(rng, n, frames, colors)], frames, colors)[0]


@CHALLENGES.register("featuretracker", aliases=("feature_tracker", "ft"))
class FeatureTracker(BatchedChallenge):
    """FeatureTracker videos; knobs ``frames`` (32), ``distractors`` (10), ``speed`` (1),
    ``shapes`` (none / in / out) and ``colors`` (none / in / out / irregular); default in distribution.

    ``gen[i]``: ``video`` (T x 32 x 32 x 3 uint8), ``masks`` (T x 32 x 32 uint8), ``label``,
    ``meta``: ``trajectories`` (objects x T x 2 top-left (row, col)), ``target``, ``lure`` (the
    closest-ending distractor), ``start_marker`` / ``end_marker`` (centres), ``shapes``
    (objects x T x 5 x 5 bool), ``hues`` (objects x T degrees) and ``condition``.
    """

    modality = "video"
    object_size = OBJECT  # trajectories hold each object's top-left pixel
    name = "featuretracker"

    def __init__(self, seed: int = 0, frames: int = 32, distractors: int = 10, speed: int = 1,
                 shapes: str = "in", colors: str = "in", length: int = 100_000) -> None:
        frames = check_int("frames", frames, 2, 1024)
        distractors = check_int("distractors", distractors, 1, 200) if distractors != 0 else None
        if distractors is None:
            raise ValueError("featuretracker needs distractors >= 1: a negative puts the end marker on a distractor")
        speed = check_int("speed", speed, 1, 16)
        check_choice("shapes", shapes, SHAPES)
        check_choice("colors", colors, COLORS)
        super().__init__(seed=seed, length=length, frames=frames, distractors=distractors, speed=speed,
                         shapes=shapes, colors=colors)
        self.frames, self.distractors, self.speed, self.shapes, self.colors = frames, distractors, speed, shapes, colors

    # One stream each for paths, shapes and hues, spawned from the sample's generator: every
    # condition of a seed and index has the same trajectories and first shapes, so conditions
    # differ only in what they change.
    def sample_batch(self, rngs: list[np.random.Generator], labels: list[int]) -> list[dict[str, Any]]:
        """Videos for several generators at once (each video's random numbers from its own generator)."""
        return self._draw([r.spawn(3) for r in rngs], labels)

    def samples(self, indices: list[int]) -> list[dict[str, Any]]:
        idx = [self._index(i) for i in indices]  # the same streams as spawning each self.rng(i), made together
        return self._draw(spawned_generators(self.seed, idx, 3), [self.label_of(i) for i in idx])

    def _draw(self, streams: list[list[np.random.Generator]], labels: list[int]) -> list[dict[str, Any]]:
        n, n_obj, frames = len(streams), 1 + self.distractors, self.frames
        path_rngs, shape_rngs, hue_rngs = zip(*streams)
        u = np.stack([path_uniforms(r, n_obj, frames, self.speed) for r in path_rngs])
        paths = paths_from_uniforms(u.reshape(n * n_obj, -1), frames, self.speed, WINDOW).reshape(n, n_obj, frames, 2)
        gaps = np.linalg.norm((paths[:, 1:, -1] - paths[:, :1, -1]).astype(float), axis=2)
        for b in np.flatnonzero(~(gaps >= MIN_END_GAP).any(axis=1)):  # every distractor ends on the target: redraw
            for _ in range(1000):
                paths[b] = random_paths(path_rngs[b], n_obj, frames, self.speed, WINDOW)
                gaps[b] = np.linalg.norm((paths[b, 1:, -1] - paths[b, :1, -1]).astype(float), axis=1)
                if (gaps[b] >= MIN_END_GAP).any():
                    break
            else:  # pragma: no cover
                raise RuntimeError("every distractor ends on the target")
        lure = 1 + np.argmin(np.where(gaps >= MIN_END_GAP, gaps, np.inf), axis=1)
        order = np.stack([r.permutation(n_obj) for r in path_rngs])
        paths = paths[np.arange(n)[:, None], order]
        target, lure = np.argmax(order == 0, axis=1), np.argmax(order == lure[:, None], axis=1)

        grids = evolve_shapes(shape_rngs, n_obj, frames, self.shapes)  # frame-major: video, frame, object
        hues = hue_paths_from_uniforms([hue_uniforms(r, n_obj, frames, self.colors) for r in hue_rngs], frames, self.colors)

        # One fancy write per lit cell into the video (a 3-byte element per pixel) and one into the
        # masks, in (video, frame, object) order: numpy keeps the last write of a repeated index,
        # so later objects are drawn on top. A few videos at a time: the per-lit-cell temporaries
        # stay small (reused by the allocator, not mapped fresh for every chunk).
        video = np.zeros((n, frames, SIZE, SIZE, 3), np.uint8)
        masks = np.zeros((n, frames, SIZE, SIZE), np.uint8)
        pixel = np.dtype((np.void, 3))
        colour = hue_to_rgb(np.ascontiguousarray(hues.transpose(0, 2, 1))).view(pixel).reshape(n, -1)
        ids = np.tile(np.arange(3, 3 + n_obj, dtype=np.uint8), RENDER_BLOCK * frames)  # per (video, frame, object)
        # flat pixel index of each object's top-left corner per (video, frame, object), plus each lit cell's offset
        by_frame = paths.transpose(0, 2, 1, 3)
        corner = by_frame[..., 0] * SIZE + by_frame[..., 1]
        corner += (np.arange(n * frames) * (SIZE * SIZE)).reshape(n, frames, 1)
        corner = corner.reshape(n, -1)
        cell = (np.arange(OBJECT)[:, None] * SIZE + np.arange(OBJECT)).ravel()
        pixels, mask_pixels = video.view(pixel).reshape(-1), masks.reshape(-1)
        for v in range(0, n, RENDER_BLOCK):
            lit = np.flatnonzero(grids[v:v + RENDER_BLOCK])
            owner = lit // (OBJECT * OBJECT)  # (video, frame, object) in the block, flat
            at = corner[v:v + RENDER_BLOCK].reshape(-1)[owner] + cell[lit - owner * (OBJECT * OBJECT)]
            per_owner = np.bincount(owner, minlength=corner[v:v + RENDER_BLOCK].size)  # repeating beats gathering
            pixels[at] = np.repeat(colour[v:v + RENDER_BLOCK].reshape(-1), per_owner)
            mask_pixels[at] = np.repeat(ids[:len(per_owner)], per_owner)
        b = np.arange(n)
        centre = paths + OBJECT // 2
        start = centre[b, target, 0]
        end = np.where(np.asarray(labels)[:, None] == 1, centre[b, target, -1], centre[b, lure, -1])
        draw_markers(video, start, end, OBJECT, masks)  # red start (id 1), blue end (id 2)
        shapes = grids.transpose(0, 2, 1, 3, 4)  # objects x T per video, as the metadata says
        condition = f"shapes={self.shapes},colors={self.colors}"
        return [{"video": video[k], "masks": masks[k], "label": int(labels[k]), "meta": {
            "trajectories": paths[k], "target": int(target[k]), "lure": int(lure[k]),
            "start_marker": (int(start[k, 0]), int(start[k, 1])), "end_marker": (int(end[k, 0]), int(end[k, 1])),
            "shapes": shapes[k], "hues": hues[k], "condition": condition}} for k in range(n)]
