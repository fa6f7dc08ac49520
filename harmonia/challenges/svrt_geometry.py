"""SVRT shapes: random closed contours, their placement on a 128 x 128 canvas, and their drawing.

Written from the published description (Fleuret et al., PNAS 2011), not from its code: a
shape is four anchor points, one per quadrant, at a random radius between a hole and the
outer radius, joined by recursive midpoint displacement (the jump is uniform in a disc of
radius |p1 - p2| / 5, redrawn until inside the outer radius; a segment stops splitting below
0.25 px at the largest scale used). A shape is a pure function of its seed and hole, so
"identical" in a rule means "same seed, same scale, rotation and mirror".

Placement is exact rather than trial-and-error: for a shape's filled raster, one FFT
correlation with a canvas mask gives, for every integer centre at once, how many of its
pixels would land on forbidden pixels (other shapes grown by a margin, the outside of a
container, the canvas border), so a valid centre is drawn uniformly from all valid ones.

Example:
    >>> import numpy as np
    >>> shape = Shape.from_seed(7, hole=0.1)
    >>> item = Placed(shape, scale=10.0)
    >>> canvas = Canvas()
    >>> centre = canvas.random_centre(np.random.default_rng(0), item, canvas.forbidden())
    >>> index = canvas.add(item, *centre)
    >>> image = canvas.render()
    >>> image.shape, image.dtype, int(image.min()), int(image.max())
    ((128, 128), dtype('uint8'), 0, 255)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from scipy import ndimage, signal

W = 128  # canvas side, px
MAX_SCALE = 48.0  # the largest outer radius any problem uses, px: sets the outline's resolution
STEP = 0.25 / MAX_SCALE  # segments stop splitting below 0.25 px at MAX_SCALE


def _disc(rng: np.random.Generator, radius: np.ndarray) -> np.ndarray:
    """One point uniform in a disc of each radius, as an (n, 2) array of offsets."""
    r = radius * np.sqrt(rng.random(radius.shape))
    t = rng.random(radius.shape) * (2 * np.pi)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def outline(rng: np.random.Generator, hole: float) -> tuple[np.ndarray, np.ndarray]:
    """(anchors (4, 2), points (n, 2)): a closed contour inside the unit disc, vectorised per level.

    Example:
        >>> anchors, points = outline(np.random.default_rng(0), hole=0.1)
        >>> anchors.shape, bool(np.linalg.norm(points, axis=1).max() <= 1.0)
        ((4, 2), True)
    """
    angles = (np.arange(4) + rng.random(4)) * (np.pi / 2)
    radii = hole + (1.0 - hole) * rng.random(4)
    anchors = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    pts = anchors
    while True:
        nxt = np.roll(pts, -1, axis=0)
        length = np.linalg.norm(nxt - pts, axis=1)
        split = length >= STEP
        if not split.any():
            return anchors, pts
        mid = (pts[split] + nxt[split]) / 2
        reach = length[split] / 5
        new = mid + _disc(rng, reach)
        bad = np.einsum("ij,ij->i", new, new) > 1.0
        while bad.any():  # the midpoint is inside the unit disc, so this ends quickly
            new[bad] = mid[bad] + _disc(rng, reach[bad])
            bad = np.einsum("ij,ij->i", new, new) > 1.0
        where = np.arange(len(pts)) + np.concatenate([[0], np.cumsum(split)[:-1]])
        out = np.empty((len(pts) + int(split.sum()), 2))
        out[where] = pts
        out[where[split] + 1] = new
        pts = out


@dataclass(frozen=True)
class Shape:
    """A canonical outline (unit outer radius), reproducible from ``(seed, hole)``."""

    seed: int
    hole: float
    anchors: np.ndarray = field(repr=False, compare=False)
    points: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def from_seed(cls, seed: int, hole: float) -> "Shape":
        return _shape(int(seed), float(hole))

    @classmethod
    def random(cls, rng: np.random.Generator, hole: float) -> "Shape":
        return cls.from_seed(int(rng.integers(2**62)), hole)


@lru_cache(maxsize=512)
def _shape(seed: int, hole: float) -> Shape:
    anchors, points = outline(np.random.default_rng(seed), hole)
    anchors.flags.writeable = False
    points.flags.writeable = False
    return Shape(seed, hole, anchors, points)


def transform(points: np.ndarray, scale: float, rotation: float = 0.0, mirror: bool = False) -> np.ndarray:
    """Canonical points -> offsets in px: mirror (x -> -x) first, then rotate, then scale."""
    p = points * np.array([-1.0 if mirror else 1.0, 1.0])
    c, s = math.cos(rotation), math.sin(rotation)
    return (p @ np.array([[c, s], [-s, c]])) * scale


@dataclass
class Placed:
    """A shape with its scale (outer radius, px), rotation (rad), mirror flag and integer centre."""

    shape: Shape
    scale: float
    rotation: float = 0.0
    mirror: bool = False
    x: int = 0
    y: int = 0
    role: str = ""

    def copy(self, **changes: Any) -> "Placed":
        values = {k: getattr(self, k) for k in ("shape", "scale", "rotation", "mirror", "x", "y", "role")}
        return Placed(**{**values, **changes})

    @cached_property
    def offsets(self) -> np.ndarray:
        """Outline points relative to the centre, (n, 2) as (x, y) in px."""
        return transform(self.shape.points, self.scale, self.rotation, self.mirror)

    def points(self) -> np.ndarray:
        """Outline points in image coordinates (x, y)."""
        return self.offsets + np.array([self.x, self.y], dtype=float)

    @cached_property
    def half(self) -> int:
        """Half side of the local raster: every rounded point lies within it."""
        return int(np.ceil(np.abs(self.offsets).max())) + 1

    @cached_property
    def contour(self) -> np.ndarray:
        """The drawn outline as a local (2h+1)^2 bool raster, centre at (h, h).

        Rounding after an integer translation equals translating the rounded outline, so
        one local raster serves every integer centre.
        """
        h = self.half
        ij = np.rint(self.offsets).astype(np.int64) + h
        mask = np.zeros((2 * h + 1, 2 * h + 1), dtype=bool)
        mask[ij[:, 1], ij[:, 0]] = True
        return mask

    @cached_property
    def filled(self) -> np.ndarray:
        """The outline and everything it encloses (local raster)."""
        return ndimage.binary_fill_holes(self.contour)

    def meta(self) -> dict[str, Any]:
        """Everything needed to rebuild this shape without the image."""
        return {
            "role": self.role,
            "shape_seed": int(self.shape.seed),
            "hole": float(self.shape.hole),
            "anchors": np.round(self.shape.anchors, 6).tolist(),
            "x": int(self.x),
            "y": int(self.y),
            "scale": float(self.scale),
            "rotation": float(self.rotation),
            "mirror": bool(self.mirror),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Placed":
        shape = Shape.from_seed(meta["shape_seed"], meta["hole"])
        return cls(shape, meta["scale"], meta["rotation"], meta["mirror"], meta["x"], meta["y"], meta.get("role", ""))


def _paste(canvas: np.ndarray, local: np.ndarray, x: int, y: int) -> None:
    h = local.shape[0] // 2
    canvas[y - h:y + h + 1, x - h:x + h + 1] |= local


def _counts(mask: np.ndarray, local: np.ndarray, outside: bool) -> np.ndarray:
    """For every integer centre: how many True pixels of ``local`` land on True pixels of ``mask``."""
    h = local.shape[0] // 2
    padded = np.pad(mask, h, constant_values=outside).astype(np.float32)
    return signal.correlate(padded, local.astype(np.float32), mode="valid", method="fft")


class Canvas:
    """Shapes placed so far, masks to constrain the next one, and the drawing."""

    def __init__(self, size: int = W) -> None:
        self.size = size
        self.items: list[Placed] = []

    def _filled(self, which: list[int] | None = None) -> np.ndarray:
        out = np.zeros((self.size, self.size), dtype=bool)
        for i in range(len(self.items)) if which is None else which:
            it = self.items[i]
            _paste(out, it.filled, it.x, it.y)
        return out

    def forbidden(self, margin: float = 4.0, which: list[int] | None = None) -> np.ndarray:
        """Pixels within ``margin`` px of the filled shapes ``which`` (all by default)."""
        filled = self._filled(which)
        if not filled.any():
            return filled
        return ndimage.distance_transform_edt(~filled) <= margin

    def outside_of(self, index: int, margin: float) -> np.ndarray:
        """Pixels not at least ``margin`` px inside shape ``index``'s enclosed area."""
        inside = ndimage.distance_transform_edt(self._filled([index]))
        return inside <= margin

    def valid(self, item: Placed, forbid: np.ndarray, touch: np.ndarray | None = None,
              border: int = 1) -> np.ndarray:
        """Bool map of the centres where ``item`` avoids ``forbid`` (and meets ``touch``, if given)."""
        forbid = forbid.copy()
        if border:
            forbid[:border] = forbid[-border:] = True
            forbid[:, :border] = forbid[:, -border:] = True
        ok = _counts(forbid, item.filled, outside=True) < 0.5
        h = item.half + border  # the whole local box inside the canvas, so pasting never clips
        ok[:h] = ok[-h:] = False
        ok[:, :h] = ok[:, -h:] = False
        if touch is not None:
            ok &= _counts(touch, item.filled, outside=False) > 0.5
        return ok

    def fits(self, item: Placed, x: int, y: int, forbid: np.ndarray, border: int = 1) -> bool:
        """Whether ``item`` centred at (x, y) avoids ``forbid`` and stays ``border`` px inside."""
        h = item.half
        lo, hi = border, self.size - border
        if x - h < lo or y - h < lo or x + h >= hi or y + h >= hi:
            return False
        return not (forbid[y - h:y + h + 1, x - h:x + h + 1] & item.filled).any()

    @staticmethod
    def pick(rng: np.random.Generator, ok: np.ndarray) -> tuple[int, int] | None:
        """A uniformly drawn True cell of ``ok`` as (x, y), or None."""
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        y, x = divmod(int(idx[rng.integers(idx.size)]), ok.shape[1])
        return x, y

    def random_centre(self, rng: np.random.Generator, item: Placed, forbid: np.ndarray,
                      touch: np.ndarray | None = None) -> tuple[int, int] | None:
        return self.pick(rng, self.valid(item, forbid, touch))

    def add(self, item: Placed, x: int, y: int) -> int:
        item.x, item.y = int(x), int(y)
        self.items.append(item)
        return len(self.items) - 1

    def render(self) -> np.ndarray:
        """White background, each outline in black, 1 px wide."""
        ink = np.zeros((self.size, self.size), dtype=bool)
        for it in self.items:
            _paste(ink, it.contour, it.x, it.y)
        return np.where(ink, 0, 255).astype(np.uint8)


def render_meta(shapes: list[dict[str, Any]], size: int = W) -> np.ndarray:
    """Redraw an image from its shapes' metadata (tests compare it with the generated image)."""
    canvas = Canvas(size)
    for m in shapes:
        canvas.items.append(Placed.from_meta(m))
    return canvas.render()
