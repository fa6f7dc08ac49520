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

import numpy as np
from scipy.signal import lfilter

RIGIDITY = 0.95
STEPS_PER_ANCHOR = 5
MAX_TURN = np.pi / 2  # per-anchor heading change is drawn in [0, 90) degrees
FULL_CURVE_POINTS = 256  # 64 frames x speed 4: the published protocol's longest run of points


def random_paths(rng: np.random.Generator, n_paths: int, frames: int, speed: int, window: int) -> np.ndarray:
    """``n_paths`` trajectories, int64 n_paths x frames x 2 (row, col), each in [0, window).

    Example:
        >>> p = random_paths(np.random.default_rng(0), 3, 64, 1, 27)
        >>> p.shape, int(p.min()) >= 0, int(p.max()) < 27
        ((3, 64, 2), True, True)
    """
    span = frames * speed
    n_points = max(FULL_CURVE_POINTS, span)
    n_anchors = -(-n_points // STEPS_PER_ANCHOR)
    sign = rng.choice(np.array([-1.0, 1.0]), size=(n_paths, 1))
    turn = rng.uniform(0.0, MAX_TURN, size=(n_paths, n_anchors)) * sign
    turn = lfilter([1.0 - RIGIDITY], [1.0, -RIGIDITY], turn, axis=1)  # damped: curvature changes slowly
    heading = rng.uniform(0.0, 2 * np.pi, size=(n_paths, 1)) + np.cumsum(turn, axis=1)
    heading = np.repeat(heading, STEPS_PER_ANCHOR, axis=1)[:, :n_points]
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=-1)
    curve = np.cumsum(steps, axis=1)  # n_paths x n_points x 2
    lo, hi = curve.min(axis=1, keepdims=True), curve.max(axis=1, keepdims=True)
    extent = hi - lo
    scale = (window - 1) / np.maximum(extent.max(axis=2, keepdims=True), 1e-9)
    curve = (curve - lo) * scale
    # centre the short axis at a random place in the window (the long axis spans it)
    room = (window - 1) - extent * scale
    curve = curve + rng.uniform(0.0, 1.0, size=(n_paths, 1, 2)) * room
    reverse = rng.random(n_paths) < 0.5
    curve[reverse] = curve[reverse, ::-1]
    start = rng.integers(0, n_points - span + 1, size=n_paths)
    take = start[:, None] + np.arange(frames)[None, :] * speed
    picked = np.take_along_axis(curve, take[:, :, None], axis=1)
    return np.clip(np.floor(picked), 0, window - 1).astype(np.int64)


def square_pixels(corners: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cols of ``size`` x ``size`` squares with top-left ``corners`` (... x 2): ... x size*size each."""
    d = np.arange(size)
    rows = corners[..., 0, None, None] + d[:, None]
    cols = corners[..., 1, None, None] + d[None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    shape = corners.shape[:-1] + (size * size,)
    return rows.reshape(shape), cols.reshape(shape)


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
    return np.stack([rr[border], cc[border]], axis=1)


def draw_markers(video: np.ndarray, start: np.ndarray, end: np.ndarray, size: int) -> None:
    """Draw the red start and blue end hollow squares (centres ``start``, ``end``) in every frame."""
    ring = ring_offsets(size)
    for centre, colour in ((start, (255, 0, 0)), (end, (0, 0, 255))):
        pix = centre[None, :] + ring
        video[:, pix[:, 0], pix[:, 1]] = np.asarray(colour, np.uint8)


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
