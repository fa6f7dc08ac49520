"""What PathTracker and FeatureTracker share: smooth random trajectories and square drawing.

Trajectories (our construction from the published description): a random walk whose heading
turns, at each of its anchors, by an angle drawn in [0, 90) degrees with one sign per curve,
low-pass filtered by a rigidity of 0.95 (so the curvature changes slowly); 5 unit steps per
anchor. The whole curve is rescaled (one factor for both axes, so shapes are not distorted)
to fit the drawable window, reversed with probability 0.5, and a contiguous run of
``frames * speed`` points is taken with stride ``speed`` and floored to integer pixels. The
full curve always has at least ``FULL_CURVE_POINTS`` points, so ``speed`` really is how far a
dot moves per frame and longer videos really are longer paths.

Everything is vectorised over curves (numpy + one scipy IIR filter); no per-pixel loops.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import lfilter

RIGIDITY = 0.95
STEPS_PER_ANCHOR = 5
MAX_TURN = np.pi / 2  # per-anchor heading change is drawn in [0, 90) degrees
FULL_CURVE_POINTS = 256  # 64 frames x speed 4: the published protocol's longest run of points


def curve_anchors(frames: int, speed: int) -> int:
    """Anchors of a full curve for ``frames`` x ``speed`` points."""
    return -(-max(FULL_CURVE_POINTS, frames * speed) // STEPS_PER_ANCHOR)


def path_uniforms(rng: np.random.Generator, n_paths: int, frames: int, speed: int) -> np.ndarray:
    """Every random number ``n_paths`` curves need, in one draw (n_paths x (anchors + 6) uniforms)."""
    return rng.random((n_paths, curve_anchors(frames, speed) + 6))


def random_paths(rng: np.random.Generator, n_paths: int, frames: int, speed: int, window: int) -> np.ndarray:
    """``n_paths`` trajectories, int64 n_paths x frames x 2 (row, col), each in [0, window).

    Drawing is split in two so that many videos can be computed together: the uniforms per
    video (:func:`path_uniforms`, from that video's generator), then the maths for all of
    them at once (:func:`paths_from_uniforms`).

    The curve is piecewise straight (one heading per anchor), so only the anchors and the
    ``frames`` points taken are ever computed: point ``5 k + j`` of a curve is
    ``5 (s_0 + ... + s_{k-1}) + (j + 1) s_k`` for the unit steps ``s`` of its anchors, and its
    extent (for the rescaling) is reached at segment ends.

    Example:
        >>> p = random_paths(np.random.default_rng(0), 3, 64, 1, 27)
        >>> p.shape, int(p.min()) >= 0, int(p.max()) < 27
        ((3, 64, 2), True, True)
    """
    return paths_from_uniforms(path_uniforms(rng, n_paths, frames, speed), frames, speed, window)


def paths_from_uniforms(u: np.ndarray, frames: int, speed: int, window: int) -> np.ndarray:
    """The trajectories (n_paths x frames x 2) that the uniforms ``u`` of :func:`path_uniforms` define."""
    span = frames * speed
    n_anchors = curve_anchors(frames, speed)
    n_points = n_anchors * STEPS_PER_ANCHOR
    n_paths = u.shape[0]
    sign = np.where(u[:, :1] < 0.5, -1.0, 1.0)
    turn = u[:, 6:] * (MAX_TURN * sign)
    turn = lfilter([1.0 - RIGIDITY], [1.0, -RIGIDITY], turn, axis=1)  # damped: curvature changes slowly
    heading = u[:, 1:2] * (2 * np.pi) + np.cumsum(turn, axis=1)
    reverse = u[:, 4] < 0.5
    start = np.minimum((u[:, 5] * (n_points - span + 1)).astype(np.int64), n_points - span)
    idx = start[:, None] + np.arange(frames)[None, :] * speed  # points taken, on the (maybe reversed) curve
    idx = np.where(reverse[:, None], n_points - 1 - idx, idx)
    k, j = np.divmod(idx, STEPS_PER_ANCHOR)
    # Row and column separately: every reduction and gather runs along a contiguous last axis.
    coords, extents = [], []
    for unit in (np.sin(heading), np.cos(heading)):  # n_paths x anchors unit steps, row then col
        base = np.zeros_like(unit)
        np.cumsum(unit[:, :-1], axis=1, out=base[:, 1:])
        base *= STEPS_PER_ANCHOR  # where each anchor's segment starts
        first, last = base + unit, base + STEPS_PER_ANCHOR * unit  # the segments' end points
        lo = np.minimum(first.min(axis=1), last.min(axis=1))[:, None]
        hi = np.maximum(first.max(axis=1), last.max(axis=1))[:, None]
        coords.append(np.take_along_axis(base, k, axis=1) + (j + 1) * np.take_along_axis(unit, k, axis=1) - lo)
        extents.append(hi - lo)
    scale = (window - 1) / np.maximum(np.maximum(extents[0], extents[1]), 1e-9)  # one factor: no distortion
    out = np.empty((n_paths, frames, 2), np.int64)
    for axis in (0, 1):
        room = (window - 1) - extents[axis] * scale  # the short axis sits at a random place in the window
        picked = coords[axis] * scale + u[:, 2 + axis, None] * room
        out[..., axis] = np.clip(np.floor(picked), 0, window - 1)
    return out


def square_pixels(corners: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cols of ``size`` x ``size`` squares with top-left ``corners`` (... x 2): ... x size*size each."""
    d = np.arange(size)
    rows = corners[..., 0, None, None] + d[:, None]
    cols = corners[..., 1, None, None] + d[None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    shape = corners.shape[:-1] + (size * size,)
    return rows.reshape(shape), cols.reshape(shape)


@functools.lru_cache(maxsize=None)
def ring_offsets(size: int) -> np.ndarray:
    """(row, col) offsets, from the centre, of a hollow ``size`` x ``size`` square's border (odd size).

    Example:
        >>> len(ring_offsets(3)), len(ring_offsets(5))
        (8, 16)
    """
    h = size // 2
    d = np.arange(-h, h + 1)
    rr, cc = np.meshgrid(d, d, indexing="ij")
    border = (np.abs(rr) == h) | (np.abs(cc) == h)
    out = np.stack([rr[border], cc[border]], axis=1)
    out.flags.writeable = False  # cached and shared
    return out


def draw_markers(video: np.ndarray, start: np.ndarray, end: np.ndarray, size: int,
                 masks: np.ndarray | None = None) -> None:
    """Draw red start and blue end hollow squares (centres ``start``, ``end``: B x 2) in every frame.

    ``video`` is B x T x H x W x 3; ``masks`` (B x T x H x W), when given, get ids 1 and 2 there.
    """
    ring = ring_offsets(size)
    b = np.arange(len(video))[:, None]
    for value, centre, colour in ((1, start, (255, 0, 0)), (2, end, (0, 0, 255))):
        pix = centre[:, None, :] + ring[None]  # B x ring x 2
        video[b, :, pix[..., 0], pix[..., 1]] = np.asarray(colour, np.uint8)
        if masks is not None:
            masks[b, :, pix[..., 0], pix[..., 1]] = value


def check_choice(name: str, value: object, allowed: tuple) -> None:
    """A clear ValueError when a knob's value is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, allowed))}")


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; a clear ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)
