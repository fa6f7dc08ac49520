"""Drawing of simulated-ClickMe images: texture backgrounds, a shared body, a class part, a cue.

Every image has the same ingredients, drawn with one ``numpy.random.Generator``:

* a background cut from one of the texture photos bundled with scikit-image (no download),
  randomly cropped, scaled, flipped and colour-jittered;
* a *body*: a slightly wobbly ellipse, the same shape family for every class, with random
  position, size, elongation, rotation, colour and shading;
* a *part*: a small shape on the body whose kind (disk, ring, triangle...) is the class;
  its position on the body, size, rotation and colour are random, so only its shape is
  diagnostic;
* a *cue*: a small square with a grey frame in a corner, away from the object, filled with
  a class-coded colour (the planted shortcut; which class it codes is decided by the caller),
  or with the frame's grey (``cue_class=None``: the square is there but codes nothing).

Coordinates: x is the column, y the row; a pixel (row i, column j) covers [j, j+1) x [i, i+1).
Boxes are ``(x0, y0, x1, y1)`` in pixels, end-exclusive.

Example:
    >>> import numpy as np
    >>> s = render_sample(np.random.default_rng(0), 64, part_class=2, cue_class=5)
    >>> s.image.shape, s.image.dtype, s.part_mask.shape
    ((64, 64, 3), dtype('uint8'), (64, 64))
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from harmonia.settings import SimulationConfig

# Texture photos shipped inside the scikit-image wheel (read from disk, never fetched).
TEXTURES = ("brick.png", "grass.png", "gravel.png", "coffee.png", "chelsea.png", "rocket.jpg")

# Class-specific part shapes, in the order classes use them; all fit in [-1, 1]^2.
PART_SHAPES = (
    "disk", "ring", "square", "triangle", "plus", "bar",
    "dots", "tee", "star", "frame", "halfdisk", "crescent",
)  # fmt: skip

# Cue fill colours (RGB in [0, 1]), one per class: saturated and far apart so the shortcut
# is easy to learn. The frame is mid grey for every class so only the fill codes the class.
CUE_COLOURS = (
    (1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.2, 1.0), (1.0, 1.0, 0.0),
    (0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
    (1.0, 0.5, 0.0), (0.5, 0.0, 1.0), (0.55, 0.3, 0.1), (1.0, 0.6, 0.75),
)  # fmt: skip
CUE_FRAME = (0.5, 0.5, 0.5)
MAX_CLASSES = len(PART_SHAPES)

_SUPERSAMPLE = 3  # 3 x 3 samples per pixel: anti-aliased edges without a rasteriser


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral triangle of circumradius 0.95: inside all three half-planes.
    inside = np.ones(u.shape, bool)
    for ang in (np.pi / 2 + np.pi, np.pi / 6, 5 * np.pi / 6):
        inside &= u * np.cos(ang) + v * np.sin(ang) <= 0.475
    return inside


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r, t = np.hypot(u, v), np.arctan2(v, u)
    return r <= 0.4 + 0.55 * ((1 + np.cos(5 * t)) / 2) ** 2


_SHAPE_FNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disk": lambda u, v: u * u + v * v <= 0.85**2,
    "ring": lambda u, v: (u * u + v * v <= 0.95**2) & (u * u + v * v >= 0.5**2),
    "square": lambda u, v: (np.abs(u) <= 0.75) & (np.abs(v) <= 0.75),
    "triangle": _triangle,
    "plus": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
    "bar": lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.32),
    "dots": lambda u, v: ((u - 0.52) ** 2 + v * v <= 0.42**2) | ((u + 0.52) ** 2 + v * v <= 0.42**2),
    "tee": lambda u, v: ((np.abs(u) <= 0.9) & (v >= 0.4) & (v <= 0.95)) | ((np.abs(u) <= 0.27) & (np.abs(v) <= 0.95)),
    "star": _star,
    "frame": lambda u, v: (np.maximum(np.abs(u), np.abs(v)) <= 0.85) & (np.maximum(np.abs(u), np.abs(v)) >= 0.45),
    "halfdisk": lambda u, v: (u * u + (v + 0.4) ** 2 <= 0.95**2) & (v >= -0.4),
    "crescent": lambda u, v: (u * u + v * v <= 0.9**2) & ((u - 0.45) ** 2 + v * v > 0.7**2),
}


@dataclass
class Sample:
    """One drawn image and what is known about it (ground truth for clicks and metadata)."""

    image: np.ndarray  # uint8 H x W x 3
    body_mask: np.ndarray  # float32 H x W coverage in [0, 1]
    part_mask: np.ndarray  # float32 H x W coverage in [0, 1]
    part_center: tuple[float, float]  # (x, y)
    part_radius: float  # half-size of the part in pixels
    object_box: tuple[int, int, int, int]
    part_box: tuple[int, int, int, int]
    cue_box: tuple[int, int, int, int]
    texture: str


@functools.lru_cache(maxsize=None)
def _texture(name: str) -> Image.Image:
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: texture photo missing from the scikit-image installation")
    with Image.open(path) as im:
        return im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    name = TEXTURES[rng.integers(len(TEXTURES))]
    tex = _texture(name)
    w, h = tex.size
    side = int(rng.integers(min(int(1.5 * size), min(w, h)), min(w, h, 4 * size) + 1))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = tex.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    arr = np.asarray(crop, np.float32) / 255.0
    if arr.ndim == 2:
        # Grey textures get a random tint: the same photo appears in many colours.
        tint = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.7), 1.0), np.float32)
        arr = arr[..., None] * tint
    else:
        # Colour photos: random channel gains and saturation (colour jitter).
        arr = arr * rng.uniform(0.75, 1.25, 3).astype(np.float32)
        grey = arr.mean(-1, keepdims=True)
        arr = grey + rng.uniform(0.3, 1.2) * (arr - grey)
    # Brightness / contrast jitter, with contrast kept moderate so the object stays visible.
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.5, 1.0) + rng.uniform(0.25, 0.7)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    if rng.random() < 0.5:
        arr = arr[::-1]
    return np.clip(arr, 0, 1), name


def _coverage(
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray], size: int, centre: tuple[float, float], reach: float
) -> np.ndarray:
    """Fraction of each pixel inside ``inside(x, y)`` (x, y in pixel units), by supersampling.

    Only the window of half-width ``reach`` around ``centre`` is evaluated (speed)."""
    s = _SUPERSAMPLE
    x0, x1 = max(int(centre[0] - reach), 0), min(int(np.ceil(centre[0] + reach)) + 1, size)
    y0, y1 = max(int(centre[1] - reach), 0), min(int(np.ceil(centre[1] + reach)) + 1, size)
    out = np.zeros((size, size), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    tx = x0 + (np.arange((x1 - x0) * s, dtype=np.float32) + 0.5) / s
    ty = y0 + (np.arange((y1 - y0) * s, dtype=np.float32) + 0.5) / s
    m = inside(tx[None, :], ty[:, None]).astype(np.float32)
    out[y0:y1, x0:x1] = m.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return out


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask >= 0.5)
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Body and part colours: random hues (no class information), clearly different values."""
    vb = rng.uniform(0.25, 0.95)
    body = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 0.9), vb)
    vp = rng.uniform(vb + 0.4, 1.0) if vb < 0.55 else rng.uniform(0.0, vb - 0.4)
    part = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), min(max(vp, 0.0), 1.0))
    return np.array(body, np.float32), np.array(part, np.float32)


PART_RADIUS = SimulationConfig.part_radius  # half-size range of the part, pixels at 64 px (scales with the image)


def check_part_radius(part_radius: tuple[float, float]) -> None:
    """Raise ValueError unless ``part_radius`` is a range 0 < lo <= hi <= 10 (pixels at 64 px).

    Example:
        >>> check_part_radius((7.0, 9.0))
    """
    lo, hi = part_radius
    if not 0 < lo <= hi <= 10:
        raise ValueError(f"part_radius must be a range 0 < lo <= hi <= 10 (pixels at 64 px), got {part_radius}")


def render_sample(
    rng: np.random.Generator,
    size: int,
    part_class: int,
    cue_class: int | None,
    part_radius: tuple[float, float] = PART_RADIUS,
) -> Sample:
    """Draw one image whose part shape is ``part_class`` and whose corner cue codes ``cue_class``.

    ``cue_class=None`` fills the cue square with its frame's grey: same image layout, no
    class information outside the part.

    ``part_radius``: range of the part's half-size in pixels at 64 px (drawn uniformly, scaled
    with ``size``); larger parts make the class evidence easier to learn.

    Example:
        >>> import numpy as np
        >>> s = render_sample(np.random.default_rng(1), 32, part_class=0, cue_class=0)
        >>> bool(s.part_mask.sum() > 0), s.cue_box[2] - s.cue_box[0] > 0
        (True, True)
    """
    if not 0 <= part_class < MAX_CLASSES or not (cue_class is None or 0 <= cue_class < MAX_CLASSES):
        raise ValueError(f"class indices must be in [0, {MAX_CLASSES})")
    check_part_radius(part_radius)
    f = size / 64.0  # all sizes are designed at 64 px and scale with the image
    img, texture = _background(rng, size)

    # Cue: pixel-aligned framed square in a random corner, a few pixels in from the edge.
    cue = max(4, round(6 * f))
    frame = max(1, round(f))
    margin = int(rng.integers(max(1, round(f)), max(2, round(4 * f)) + 1))
    corner = int(rng.integers(4))
    cx0 = margin if corner in (0, 2) else size - margin - cue
    cy0 = margin if corner in (0, 1) else size - margin - cue
    cue_box = (cx0, cy0, cx0 + cue, cy0 + cue)

    # Part and body sizes: independent of class, so size carries no label information.
    rp = rng.uniform(*part_radius) * f
    wob_k = np.array([3, 4, 5])
    wob_a = rng.uniform(0, 0.05, 3)
    wob_p = rng.uniform(0, 2 * np.pi, 3)
    theta = rng.uniform(0, np.pi)
    scale = 1.0
    b0 = rng.uniform(9.0, 12.5) * f
    elong = rng.uniform(1.0, 1.5)
    for attempt in range(200):
        if attempt and attempt % 25 == 0:
            scale *= 0.9  # crowded: shrink the body a little and try again
        b = max(b0 * scale, 1.45 * rp)
        a = b * elong
        reach = a * (1 + wob_a.sum()) + 1.0
        lo, hi = reach, size - reach
        if hi <= lo:
            continue
        ox, oy = rng.uniform(lo, hi, 2)
        # Keep the object clear of the cue (closest point of the cue box further than reach + gap).
        dx = max(cue_box[0] - ox, 0.0, ox - cue_box[2])
        dy = max(cue_box[1] - oy, 0.0, oy - cue_box[3])
        if np.hypot(dx, dy) > reach + 2 * f:
            break
    else:
        raise ValueError(f"image size {size} is too small to place an object away from the cue")

    ct, st = np.cos(theta), np.sin(theta)

    def body_inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = ((x - ox) * ct + (y - oy) * st) / a
        v = (-(x - ox) * st + (y - oy) * ct) / b
        rho = np.hypot(u, v)
        # Wobbly edge 1 + sum_k w_k cos(k * angle + p_k), via powers of the unit complex number.
        z = (u + 1j * v) / np.maximum(rho, 1e-6)
        edge = 1.0
        for k, w, p in zip(wob_k, wob_a, wob_p):
            edge = edge + w * (np.exp(1j * p) * z**k).real
        return rho <= edge

    # Part centre: uniform over an inner ellipse, so the whole part lies on the body.
    r_in = np.sqrt(rng.random()) * 0.9
    phi = rng.uniform(0, 2 * np.pi)
    ai, bi = max(a - 1.2 * rp, 0.0), max(b - 1.2 * rp, 0.0)
    lu, lv = r_in * ai * np.cos(phi), r_in * bi * np.sin(phi)
    px, py = ox + lu * ct - lv * st, oy + lu * st + lv * ct
    psi = rng.uniform(0, 2 * np.pi)
    cp, sp = np.cos(psi), np.sin(psi)
    shape_fn = _SHAPE_FNS[PART_SHAPES[part_class]]

    def part_inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = ((x - px) * cp + (y - py) * sp) / rp
        v = (-(x - px) * sp + (y - py) * cp) / rp
        return shape_fn(u, v)

    body_mask = _coverage(body_inside, size, (ox, oy), reach)
    part_mask = _coverage(part_inside, size, (px, py), 1.5 * rp) * (body_mask > 0)
    body_col, part_col = _contrasting_colours(rng)

    # Body shading: a soft linear gradient in a random direction (light from one side).
    g = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    shade = 1 + 0.25 * (((xx - ox) * np.cos(g) + (yy - oy) * np.sin(g)) / max(a, 1.0)).clip(-1, 1)
    body_rgb = np.clip(body_col * shade[..., None], 0, 1)
    img = img * (1 - body_mask[..., None]) + body_rgb * body_mask[..., None]
    img = img * (1 - part_mask[..., None]) + part_col * part_mask[..., None]
    # Fine sensor-like noise so flat regions are not perfectly flat.
    img = img + rng.normal(0, 0.015, img.shape).astype(np.float32)

    x0, y0, x1, y1 = cue_box
    img[y0:y1, x0:x1] = CUE_FRAME
    img[y0 + frame : y1 - frame, x0 + frame : x1 - frame] = CUE_FRAME if cue_class is None else CUE_COLOURS[cue_class]

    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return Sample(
        image=image,
        body_mask=body_mask,
        part_mask=part_mask,
        part_center=(float(px), float(py)),
        part_radius=float(rp),
        object_box=_box(body_mask),
        part_box=_box(part_mask),
        cue_box=cue_box,
        texture=texture,
    )
