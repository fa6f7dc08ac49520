"""SVRT: the 23 binary visual-reasoning problems of Fleuret et al. (PNAS 2011), regenerated.

Written from the rule descriptions (the original generator is GPL and was not read). Each
sample is a 128 x 128 uint8 image, white background, shapes as 1 px black closed contours
(at most 8 shapes); ``meta`` lists every shape (``shape_seed`` and ``hole`` rebuild its
outline, ``anchors`` are its four anchor points; ``x``, ``y`` centre in px, ``scale`` outer
radius in px, ``rotation`` in radians, ``mirror``, ``role``) and the ``relation`` the rule is
about, so a test can check the rule from the geometry without looking at the pixels.

Sizes (outer radius = half the published size): normal W/12 (size W/6, hole W/64 -> hole
ratio 6/64), small W/24 (size W/12), big W/4 or 3W/8 (size W/2 or 3W/4; containers use hole
ratio 0.6 so that they have room inside). Shapes not in a relation keep >= 4 px apart;
"touching" outlines are pixel-adjacent; "separated" (problem 11) means >= W/12 apart.

Example:
    >>> from harmonia.challenges import create
    >>> gen = create("svrt", problem=1, seed=0, length=4)
    >>> s = gen[1]
    >>> s["image"].shape, s["label"], s["meta"]["relation"]["identical"]
    ((128, 128), 1, True)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from harmonia.challenges.base import CHALLENGES, Challenge
from harmonia.challenges.svrt_geometry import W, Canvas, Placed, Shape

R_NORMAL = W / 12
R_SMALL = W / 24
R_BIG = W / 4
R_HUGE = 3 * W / 8
HOLE = 6 / 64  # W/64 hole of a W/6 shape
HOLE_BIG = 0.6
SEP = 4.0  # px between shapes that are in no relation
FAR = 6.0  # px between shapes in the problems where touching is the rule
MAX_TRIES = 400

RULES: dict[int, str] = {
    1: "two shapes: identical (1) vs different (0)",
    2: "a small shape inside a big one: near its border (1) vs central, >= W/8 from it (0)",
    3: "four shapes: two separate touching pairs (1) vs three touching and one isolated (0)",
    4: "a small shape and a big one: small inside (1) vs outside (0)",
    5: "four shapes: two pairs of identical shapes (1) vs all different (0)",
    6: "two pairs of identical shapes: within-pair distances equal (1) vs different (0)",
    7: "six shapes: two triplets of identical shapes (1) vs three pairs (0)",
    8: "a big shape and a small one: the small is the big at half scale and inside it (1) "
       "vs the same outside or a different one inside (0)",
    9: "three aligned shapes, two small copies and the same shape 2x: big one at an end (1) vs in the middle (0)",
    10: "four identical shapes: on the corners of a square (1) vs at random positions (0)",
    11: "a big and a small shape: touching (1) vs separated by >= W/12 (0)",
    12: "two small and one big shape on a circle: the small ones together opposite the big (1) "
        "vs the big next to a small one (0)",
    13: "two identical big shapes each with an identical small one: same relative position (1) vs different (0)",
    14: "three identical shapes: aligned (1) vs not (0)",
    15: "four shapes on the corners of a square: identical (1) vs all different (0)",
    16: "six shapes mirrored across the vertical midline: reflected copies (1) vs unreflected copies (0)",
    17: "three identical shapes and a different one: the odd one at the centre of the circle through "
        "the three (1) vs elsewhere (0)",
    18: "six identical shapes in three pairs on rows: pairs symmetric about the vertical midline (1) "
        "vs at random x (0)",
    19: "two shapes at random scales (x1-4): the same up to scale (1) vs different (0)",
    20: "two shapes: one the mirror image of the other about the perpendicular bisector of their "
        "centres (1) vs different shapes (0)",
    21: "two shapes at random scale and rotation: the same up to scale and rotation (1) vs different (0)",
    22: "three aligned shapes: all identical (1) vs all different (0)",
    23: "one big and two small shapes: one small inside and one outside (1) vs both inside or both outside (0)",
}


class _Retry(Exception):
    """This configuration did not fit; draw another."""


def _need(value: Any) -> Any:
    if value is None or not value:
        raise _Retry
    return value


def _shape(rng: np.random.Generator, hole: float = HOLE) -> Shape:
    return Shape.random(rng, hole)


def _distinct(rng: np.random.Generator, n: int, hole: float = HOLE) -> list[Shape]:
    shapes: list[Shape] = []
    while len(shapes) < n:
        s = _shape(rng, hole)
        if all(s.seed != t.seed for t in shapes):
            shapes.append(s)
    return shapes


def _place(c: Canvas, rng: np.random.Generator, item: Placed, margin: float = SEP,
           extra: np.ndarray | None = None) -> int:
    forbid = c.forbidden(margin)
    if extra is not None:
        forbid |= extra
    return c.add(item, *_need(c.random_centre(rng, item, forbid)))


def _place_at(c: Canvas, item: Placed, x: float, y: float, margin: float = SEP,
              extra: np.ndarray | None = None) -> int:
    x, y = int(np.rint(x)), int(np.rint(y))
    forbid = c.forbidden(margin)
    if extra is not None:
        forbid |= extra
    _need(c.fits(item, x, y, forbid))
    return c.add(item, x, y)


def _others(c: Canvas, exclude: set[int]) -> list[int]:
    return [i for i in range(len(c.items)) if i not in exclude]


def _place_touching(c: Canvas, rng: np.random.Generator, item: Placed, target: int, margin: float = FAR,
                    keep_off: set[int] | None = None) -> int:
    """Outline pixel-adjacent to shape ``target``'s, >= ``margin`` from the others."""
    exempt = {target} | (keep_off or set())
    forbid = c.forbidden(margin, _others(c, exempt)) | c.forbidden(0.0, [target])
    if keep_off:
        forbid |= c.forbidden(0.0, sorted(keep_off))
    touch = c.forbidden(1.5, [target])
    return c.add(item, *_need(c.random_centre(rng, item, forbid, touch)))


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _line(c: Canvas, rng: np.random.Generator, items: list[Placed], gap: tuple[float, float] = (4.0, 16.0)) -> None:
    """Centres on one straight line, in the order given, with random gaps between outlines."""
    for _ in range(60):
        d = _unit(rng.random() * 2 * np.pi)
        steps = [items[i].scale + items[i + 1].scale + rng.uniform(*gap) for i in range(len(items) - 1)]
        t = np.concatenate([[0.0], np.cumsum(steps)])
        t -= t[-1] / 2
        centre = rng.uniform(W * 0.3, W * 0.7, size=2)
        pos = np.rint(centre + t[:, None] * d).astype(int)
        start = len(c.items)
        try:
            for it, (x, y) in zip(items, pos):
                _place_at(c, it, x, y)
            return
        except _Retry:
            del c.items[start:]
    raise _Retry


def _square(rng: np.random.Generator, lo: float = 28.0, hi: float = 44.0) -> np.ndarray:
    """Four corners of a random square (half-diagonal in [lo, hi] px), rounded to pixels."""
    rho = rng.uniform(lo, hi)
    phi = rng.random() * (np.pi / 2)
    centre = rng.uniform(rho + 8, W - 1 - rho - 8, size=2) if rho + 8 < W - 1 - rho - 8 else np.full(2, W / 2)
    return np.rint(centre + rho * np.stack([_unit(phi + k * np.pi / 2) for k in range(4)])).astype(int)


def square_error(points: np.ndarray) -> float:
    """How far four points are from a square: max deviation of sides and diagonals / side (0 = square).

    Example:
        >>> square_error(np.array([[0, 0], [10, 0], [10, 10], [0, 10]]))
        0.0
    """
    p = np.asarray(points, dtype=float)
    d = np.sort([np.linalg.norm(p[i] - p[j]) for i in range(4) for j in range(i + 1, 4)])
    a = d[:4].mean()
    return float(max(np.abs(d[:4] - a).max(), np.abs(d[4:] - a * math.sqrt(2)).max()) / a)


def min_altitude(points: np.ndarray) -> float:
    """The smallest altitude of the triangle of three points: 0 when they are aligned (px).

    Example:
        >>> min_altitude(np.array([[0, 0], [5, 0], [10, 0]]))
        0.0
    """
    p = np.asarray(points, dtype=float)
    u, v = p[1] - p[0], p[2] - p[0]
    area2 = abs(u[0] * v[1] - u[1] * v[0])
    longest = max(np.linalg.norm(u), np.linalg.norm(v), np.linalg.norm(p[2] - p[1]))
    return float(area2 / longest) if longest > 0 else 0.0


def circumcentre(points: np.ndarray) -> np.ndarray:
    """Centre of the circle through three points.

    Example:
        >>> circumcentre(np.array([[0, 0], [2, 0], [0, 2]])).round(6).tolist()
        [1.0, 1.0]
    """
    (ax, ay), (bx, by), (cx, cy) = np.asarray(points, dtype=float)
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
    uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
    return np.array([ux, uy])


# --- the problems: each fills the canvas for its label and returns the relation --------------

Relation = dict[str, Any]


def _p1(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.8, 1.2)
    a, b = _distinct(rng, 2)
    for s in (a, a if label else b):
        _place(c, rng, Placed(s, scale))
    return {"identical": bool(label)}


def _p2(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    big = Placed(_shape(rng, HOLE_BIG), R_HUGE, role="big")
    i = _place(c, rng, big)
    small = Placed(_shape(rng), R_SMALL, role="small")
    near = c.valid(small, c.outside_of(i, 2.5)) & ~c.valid(small, c.outside_of(i, 5.0))
    central = c.valid(small, c.outside_of(i, W / 8))
    _need(near.any() and central.any())  # both classes possible for this big shape
    c.add(small, *c.pick(rng, near if label else central))
    return {"inside": True, "near_border": bool(label), "near_px": 5.0, "central_px": W / 8}


def _p3(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.8, 1.0)
    items = [Placed(s, scale) for s in _distinct(rng, 4)]
    _place(c, rng, items[0], FAR)
    _place_touching(c, rng, items[1], 0)
    if label:
        _place(c, rng, items[2], FAR)
        _place_touching(c, rng, items[3], 2)
    else:
        _place_touching(c, rng, items[2], 1)  # a chain 0-1-2
        _place(c, rng, items[3], FAR)
    return {"groups": [[0, 1], [2, 3]] if label else [[0, 1, 2], [3]]}


def _p4(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    i = _place(c, rng, Placed(_shape(rng, HOLE_BIG), R_BIG, role="big"))
    small = Placed(_shape(rng), R_SMALL, role="small")
    inside = c.valid(small, c.outside_of(i, 3.0))
    outside = c.valid(small, c.forbidden(SEP))
    _need(inside.any() and outside.any())
    c.add(small, *c.pick(rng, inside if label else outside))
    return {"inside": bool(label)}


def _p5(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.8, 1.0)
    s = _distinct(rng, 4)
    shapes = [s[0], s[0], s[1], s[1]] if label else s
    for sh in shapes:
        _place(c, rng, Placed(sh, scale))
    return {"groups": [[0, 1], [2, 3]] if label else [[0], [1], [2], [3]]}


def _ring(size: int, centre: tuple[int, int], radius: float, width: float = 0.5) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(xx - centre[0], yy - centre[1])
    return np.abs(d - radius) <= width


def _p6(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.7, 0.9)
    a, b = _distinct(rng, 2)
    d1 = rng.uniform(28.0, 64.0)
    if label:
        d2 = d1
    else:
        d2 = rng.uniform(28.0, 64.0)
        _need(abs(d2 - d1) >= 10.0)
    dist = []
    for shape, d in ((a, d1), (b, d2)):
        first = Placed(shape, scale)
        _place(c, rng, first)
        second = Placed(shape, scale)
        ring = _ring(W, (first.x, first.y), d)
        ok = c.valid(second, c.forbidden(SEP)) & ring
        c.add(second, *_need(c.pick(rng, ok)))
        dist.append(float(math.hypot(second.x - first.x, second.y - first.y)))
    return {"pairs": [[0, 1], [2, 3]], "distances": dist, "equal": bool(label)}


def _p7(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.65, 0.8)
    s = _distinct(rng, 3)
    shapes = [s[0]] * 3 + [s[1]] * 3 if label else [s[0]] * 2 + [s[1]] * 2 + [s[2]] * 2
    for sh in shapes:
        _place(c, rng, Placed(sh, scale))
    return {"groups": [[0, 1, 2], [3, 4, 5]] if label else [[0, 1], [2, 3], [4, 5]]}


def _p8(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    shape = _shape(rng, HOLE_BIG)
    i = _place(c, rng, Placed(shape, R_BIG, role="big"))
    copy = Placed(shape, R_BIG / 2, role="small")
    inside = c.valid(copy, c.outside_of(i, 3.0))
    outside = c.valid(copy, c.forbidden(SEP))
    _need(inside.any() and outside.any())
    case = "same_inside" if label else ("same_outside" if rng.random() < 0.5 else "different_inside")
    if case == "same_inside":
        c.add(copy, *c.pick(rng, inside))
    elif case == "same_outside":
        c.add(copy, *c.pick(rng, outside))
    else:
        other = Placed(_distinct(rng, 1, HOLE_BIG)[0], R_BIG / 2, role="small")
        _need(other.shape.seed != shape.seed)
        c.add(other, *_need(c.pick(rng, c.valid(other, c.outside_of(i, 3.0)))))
    return {"case": case, "inside": case != "same_outside", "same": case != "different_inside"}


def _p9(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    shape = _shape(rng)
    r = R_SMALL * rng.uniform(1.1, 1.4)
    small = [Placed(shape, r, role="small"), Placed(shape, r, role="small")]
    big = Placed(shape, 2 * r, role="big")
    if label:
        order = [big, *small] if rng.random() < 0.5 else [*small, big]
    else:
        order = [small[0], big, small[1]]
    _line(c, rng, order)
    return {"big_position": "end" if label else "middle"}


def _p10(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    shape = _shape(rng)
    scale = R_NORMAL * rng.uniform(0.7, 0.9)
    if label:
        for x, y in _square(rng):
            _place_at(c, Placed(shape, scale), x, y)
    else:
        for _ in range(4):
            _place(c, rng, Placed(shape, scale))
        _need(square_error(np.array([[it.x, it.y] for it in c.items])) >= 0.25)
    return {"square": bool(label)}


def _p11(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    i = _place(c, rng, Placed(_shape(rng), W / 6, role="big"))
    small = Placed(_shape(rng), R_SMALL, role="small")
    if label:
        _place_touching(c, rng, small, i)
    else:
        _place(c, rng, small, margin=W / 12 + 0.5)
    return {"touching": bool(label), "separated_px": W / 12}


def _p12(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    shape_a, shape_b, shape_big = _distinct(rng, 3)
    rs = R_SMALL * rng.uniform(1.2, 1.5)
    items = [Placed(shape_a, rs, role="small"), Placed(shape_b, rs, role="small"),
             Placed(shape_big, 2 * rs, role="big")]
    rho = rng.uniform(30.0, 42.0)
    centre = rng.uniform(rho + 2 * rs + 2, W - 1 - rho - 2 * rs - 2, size=2)
    # the close pair: (small, small) for class 1, (small, big) for class 0; the third opposite
    first, second, third = (0, 1, 2) if label else (0, 2, 1)
    chord = items[first].scale + items[second].scale + rng.uniform(3.0, 8.0)
    _need(chord < 2 * rho)
    delta = 2 * math.asin(chord / (2 * rho))
    theta = rng.random() * 2 * np.pi
    angles = {first: theta, second: theta + delta, third: theta + delta / 2 + np.pi}
    for k in range(3):
        x, y = centre + rho * _unit(angles[k])
        _place_at(c, items[k], x, y)
    return {"close_pair": sorted([first, second]), "smalls_together": bool(label)}


def _p13(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    big_shape, small_shape = _distinct(rng, 2)
    rb, rs = W / 8, R_SMALL
    reach = rb + rs + rng.uniform(5.0, 8.0)
    a1 = rng.random() * 2 * np.pi
    a2 = a1 if label else a1 + rng.uniform(np.pi / 3, 5 * np.pi / 3)
    v1, v2 = (np.rint(reach * _unit(a)).astype(int) for a in (a1, a2))
    offsets = []
    for v in (v1, v2):
        big = Placed(big_shape, rb, role="big")
        small = Placed(small_shape, rs, role="small")
        _place(c, rng, big, margin=2 * rs + 12)
        _place_at(c, small, big.x + v[0], big.y + v[1])
        offsets.append([int(v[0]), int(v[1])])
    b1, s1, b2, s2 = (np.array([it.x, it.y]) for it in c.items)
    for s, own, other in ((s1, b1, b2), (s2, b2, b1)):  # each small clearly goes with its own big
        _need(np.linalg.norm(s - other) >= np.linalg.norm(s - own) + 10.0)
    return {"pairs": [[0, 1], [2, 3]], "offsets": offsets, "same_offset": bool(label)}


def _p14(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    shape = _shape(rng)
    scale = R_NORMAL * rng.uniform(0.7, 0.9)
    items = [Placed(shape, scale) for _ in range(3)]
    if label:
        _line(c, rng, items)
    else:
        for it in items:
            _place(c, rng, it)
        _need(min_altitude(np.array([[it.x, it.y] for it in items])) >= 8.0)
    return {"aligned": bool(label)}


def _p15(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.7, 0.9)
    s = _distinct(rng, 4)
    shapes = [s[0]] * 4 if label else s
    for sh, (x, y) in zip(shapes, _square(rng)):
        _place_at(c, Placed(sh, scale), x, y)
    return {"identical": bool(label)}


def _p16(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.7, 0.9)
    right_half = np.zeros((W, W), dtype=bool)
    right_half[:, W // 2 - 3:] = True
    left = [Placed(s, scale, role="left") for s in _distinct(rng, 3)]
    for it in left:
        _place(c, rng, it, extra=right_half)
    for it in left:
        copy = it.copy(mirror=bool(label), role="right")
        _place_at(c, copy, W - 1 - it.x, it.y)
    return {"pairs": [[0, 3], [1, 4], [2, 5]], "reflected": bool(label)}


def _p17(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    same, odd = _distinct(rng, 2)
    scale = R_NORMAL * rng.uniform(0.6, 0.75)
    rho = rng.uniform(26.0, 44.0)
    centre = rng.uniform(rho + scale + 2, W - 1 - rho - scale - 2, size=2)
    gaps = rng.dirichlet(np.ones(3)) * (2 * np.pi - 3 * np.pi / 3) + np.pi / 3  # each arc >= 60 deg
    angles = rng.random() * 2 * np.pi + np.concatenate([[0.0], np.cumsum(gaps)[:2]])
    for a in angles:
        x, y = centre + rho * _unit(a)
        _place_at(c, Placed(same, scale, role="same"), x, y)
    cc = circumcentre(np.array([[it.x, it.y] for it in c.items]))
    odd_item = Placed(odd, scale, role="odd")
    if label:
        _place_at(c, odd_item, *cc)
    else:
        yy, xx = np.mgrid[:W, :W]
        away = np.hypot(xx - cc[0], yy - cc[1]) < 12.0
        _place(c, rng, odd_item, extra=away)
    return {"odd": 3, "at_centre": bool(label)}


def _p18(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    shape = _shape(rng)
    scale = R_NORMAL * rng.uniform(0.6, 0.75)
    lo, hi = int(scale) + 3, W - int(scale) - 4
    for _ in range(3):
        for _ in range(40):
            y = int(rng.integers(lo, hi))
            x1 = int(rng.integers(lo, W // 2 - int(scale) - 2))
            x2 = W - 1 - x1 if label else int(rng.integers(lo, hi))
            if not label and abs(x1 + x2 - (W - 1)) < 8:
                continue
            start = len(c.items)
            try:
                _place_at(c, Placed(shape, scale), x1, y)
                _place_at(c, Placed(shape, scale), x2, y)
                break
            except _Retry:
                del c.items[start:]
        else:
            raise _Retry
    return {"pairs": [[0, 1], [2, 3], [4, 5]], "symmetric": bool(label)}


def _p19(c: Canvas, rng: np.random.Generator, label: int, rotate: bool = False) -> Relation:
    a, b = _distinct(rng, 2)
    base = R_SMALL * 0.9
    for s in (a, a if label else b):
        rot = rng.random() * 2 * np.pi if rotate else 0.0
        _place(c, rng, Placed(s, base * rng.uniform(1.0, 4.0), rotation=rot))
    return {"same_shape": bool(label)}


def _p20(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    a, b = _distinct(rng, 2)
    scale = R_NORMAL * rng.uniform(0.8, 1.1)
    first = Placed(a, scale)
    _place(c, rng, first)
    second = Placed(a if label else b, scale, mirror=True)
    forbid = c.forbidden(SEP)
    # the second centre decides the bisector, hence its rotation: find a centre where it fits
    cand = np.flatnonzero(c.valid(second, forbid))
    _need(cand.size)
    for k in rng.permutation(cand)[:30]:
        y, x = divmod(int(k), W)
        alpha = math.atan2(y - first.y, x - first.x) + np.pi / 2
        trial = second.copy(rotation=float((2 * alpha + np.pi - first.rotation) % (2 * np.pi)))
        if c.fits(trial, x, y, forbid):
            c.add(trial, x, y)
            return {"mirrored": bool(label)}
    raise _Retry


def _p21(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    return _p19(c, rng, label, rotate=True)


def _p22(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    scale = R_NORMAL * rng.uniform(0.7, 0.9)
    s = _distinct(rng, 3)
    _line(c, rng, [Placed(sh, scale) for sh in ([s[0]] * 3 if label else s)])
    return {"identical": bool(label)}


def _p23(c: Canvas, rng: np.random.Generator, label: int) -> Relation:
    i = _place(c, rng, Placed(_shape(rng, HOLE_BIG), R_BIG, role="big"))
    n_inside = 1 if label else (0 if rng.random() < 0.5 else 2)
    for k, shape in enumerate(_distinct(rng, 2)):
        small = Placed(shape, R_SMALL, role="small")
        others = c.forbidden(SEP, [j for j in range(len(c.items)) if j != i])
        where = (c.outside_of(i, 3.0) if k < n_inside else c.forbidden(SEP, [i])) | others
        c.add(small, *_need(c.random_centre(rng, small, where)))
    return {"inside": [k < n_inside for k in range(2)], "n_inside": n_inside}


PROBLEMS: dict[int, Callable[[Canvas, np.random.Generator, int], Relation]] = {
    k: globals()[f"_p{k}"] for k in range(1, 24)
}


@CHALLENGES.register("svrt")
class SVRT(Challenge):
    """One SVRT problem as a seeded generator: ``gen[i]`` -> image, label, meta (shapes + relation)."""

    modality = "image"
    name = "svrt"

    def __init__(self, seed: int = 0, problem: int = 1, length: int = 10_000) -> None:
        if int(problem) not in PROBLEMS:
            raise ValueError(f"SVRT problem must be 1..23, got {problem}")
        super().__init__(seed=seed, length=length, problem=int(problem))
        self.problem = int(problem)

    def sample(self, rng: np.random.Generator, label: int, index: int) -> dict[str, Any]:
        draw = PROBLEMS[self.problem]
        for _ in range(MAX_TRIES):
            canvas = Canvas(W)
            try:
                relation = draw(canvas, rng, label)
            except _Retry:
                continue
            meta = {"problem": self.problem, "rule": RULES[self.problem],
                    "shapes": [it.meta() for it in canvas.items], "relation": relation}
            return {"image": canvas.render(), "label": int(label), "meta": meta}
        raise RuntimeError(f"SVRT problem {self.problem}: no valid layout in {MAX_TRIES} tries (index {index})")
