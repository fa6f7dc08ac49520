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
PATH_BLOCK = 256  # curves computed together (a few hundred kB of temporaries: in L2)


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


@functools.lru_cache(maxsize=None)
def point_tables(n_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """For each point ``p`` of a curve with ``n_anchors`` anchors: its anchor ``p // 5`` and, as a
    float, its steps into that anchor's segment ``p % 5 + 1`` (lookups: cheaper than a divmod).

    Example:
        >>> [a.tolist()[4:7] for a in point_tables(2)]
        [[0, 1, 1], [5.0, 1.0, 2.0]]
    """
    anchor, step = np.divmod(np.arange(n_anchors * STEPS_PER_ANCHOR), STEPS_PER_ANCHOR)
    tables = anchor, (step + 1).astype(np.float64)
    for t in tables:
        t.flags.writeable = False  # cached and shared
    return tables


def paths_from_uniforms(u: np.ndarray, frames: int, speed: int, window: int) -> np.ndarray:
    """The trajectories (n_paths x frames x 2) that the uniforms ``u`` of :func:`path_uniforms` define.

    Computed in blocks of ``PATH_BLOCK`` curves (each curve on its own, so the same result):
    the temporaries stay in the cache and are reused by the allocator instead of being mapped
    fresh for every call.
    """
    if len(u) <= PATH_BLOCK:
        return _paths_block(u, frames, speed, window)
    return np.concatenate([_paths_block(u[i:i + PATH_BLOCK], frames, speed, window)
                           for i in range(0, len(u), PATH_BLOCK)])


def _paths_block(u: np.ndarray, frames: int, speed: int, window: int) -> np.ndarray:
    span = frames * speed
    n_anchors = curve_anchors(frames, speed)
    n_points = n_anchors * STEPS_PER_ANCHOR
    n_paths = u.shape[0]
    sign = np.where(u[:, :1] < 0.5, -1.0, 1.0)
    turn = u[:, 6:] * (MAX_TURN * sign)
    turn = lfilter([1.0 - RIGIDITY], [1.0, -RIGIDITY], turn, axis=1)  # damped: curvature changes slowly
    heading = np.cumsum(turn, axis=1, out=turn)
    heading += u[:, 1:2] * (2 * np.pi)
    # Row and column steps stacked (2 x n_paths x anchors): every reduction and gather below runs
    # once for both, along a contiguous last axis.
    unit = np.empty((2, n_paths, n_anchors))
    np.sin(heading, out=unit[0])
    np.cos(heading, out=unit[1])
    base = np.empty_like(unit)  # where each anchor's segment starts
    base[..., 0] = 0.0
    np.cumsum(unit[..., :-1], axis=-1, out=base[..., 1:])
    base *= STEPS_PER_ANCHOR
    ends = base + unit  # the segments' first points, then their last ones: the extent is reached there
    lo = ends.min(axis=-1)
    hi = ends.max(axis=-1)
    np.multiply(unit, STEPS_PER_ANCHOR, out=ends)
    ends += base
    np.minimum(lo, ends.min(axis=-1), out=lo)
    np.maximum(hi, ends.max(axis=-1), out=hi)
    extent = hi - lo  # 2 x n_paths
    # the points taken, on the (maybe reversed) curve: point 5 k + j is base_k + (j + 1) unit_k
    reverse = u[:, 4] < 0.5
    start = np.minimum((u[:, 5] * (n_points - span + 1)).astype(np.int64), n_points - span)
    idx = start[:, None] + np.arange(0, span, speed)
    np.subtract(n_points - 1, idx, out=idx, where=reverse[:, None])
    anchor_of, steps_of = point_tables(n_anchors)
    flat = np.empty((2,) + idx.shape, np.int64)  # flat index of each point's anchor in base and unit
    np.add(np.take(anchor_of, idx), np.arange(0, n_paths * n_anchors, n_anchors)[:, None], out=flat[0])
    np.add(flat[0], n_paths * n_anchors, out=flat[1])
    coords = np.take(base, flat)
    coords += np.take(steps_of, idx) * np.take(unit, flat)
    coords -= lo[..., None]
    scale = (window - 1) / np.maximum(np.maximum(extent[0], extent[1]), 1e-9)  # one factor: no distortion
    room = (window - 1) - extent * scale  # the short axis sits at a random place in the window
    room *= u[:, 2:4].T
    coords *= scale[:, None]
    coords += room[..., None]
    # floor then clip to [0, window - 1] equals clip then truncate
    np.clip(coords, 0, window - 1, out=coords)
    out = np.empty((n_paths, frames, 2), np.int64)
    out[..., 0] = coords[0]
    out[..., 1] = coords[1]
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

    ``video`` is a C-contiguous B x T x H x W x 3 uint8 array; the end marker is drawn over the
    start one. ``masks`` (C-contiguous B x T x H x W uint8), when given, get ids 1 and 2 there.

    Example:
        >>> v = np.zeros((1, 2, 8, 8, 3), np.uint8)
        >>> draw_markers(v, np.array([[2, 2]]), np.array([[5, 5]]), 3)
        >>> v[0, 1, 1, 1].tolist(), v[0, 1, 6, 5].tolist(), int(v[0, :, 2, 2].sum())
        ([255, 0, 0], [0, 0, 255], 0)
    """
    n, frames, height, width = video.shape[:4]
    pixels = video.view(np.dtype((np.void, 3))).reshape(-1)  # one 3-byte element per pixel: one write each
    ring = ring_offsets(size) @ np.array([width, 1])
    frame_starts = np.arange(n * frames).reshape(n, 1, frames) * (height * width)
    for value, centre, colour in ((1, start, (255, 0, 0)), (2, end, (0, 0, 255))):
        at = (centre @ np.array([width, 1]))[:, None] + ring  # B x ring, pixel index in a frame
        at = (at[..., None] + frame_starts).ravel()
        pixels[at] = np.array(colour, np.uint8).view(pixels.dtype)[0]
        if masks is not None:
            masks.reshape(-1)[at] = value


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
