"""SVRT: every problem's rule checked from the shapes' geometry (outline points), not the pixels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from matplotlib.path import Path as PolyPath
from scipy.spatial import cKDTree

from harmonia.challenges import create
from harmonia.challenges.svrt import PROBLEMS, circumcentre, min_altitude, square_error
from harmonia.challenges.svrt_geometry import W, Placed, render_meta

N_PER_PROBLEM = 200  # 100 per class, 4600 samples checked in all


def _items(meta):
    return [Placed.from_meta(m) for m in meta["shapes"]]


def _pts(a: Placed) -> np.ndarray:
    """The outline thinned to <= 0.2 px spacing (distances then err by <= 0.1 px), cached."""
    if not hasattr(a, "_test_pts"):
        p = a.points()
        step = max(1, int(0.2 / max(np.linalg.norm(np.diff(p, axis=0), axis=1).max(), 1e-9)))
        a._test_pts = p[::step]
        a._test_tree = cKDTree(a._test_pts)
        a._test_path = PolyPath(a._test_pts)
    return a._test_pts


def _gap(a: Placed, b: Placed) -> float:
    """Smallest distance between two outlines (px)."""
    _pts(b)
    d, _ = b._test_tree.query(_pts(a))
    return float(d.min())


def _inside(a: Placed, b: Placed) -> np.ndarray:
    """Which outline points of ``a`` lie inside the polygon of ``b``."""
    _pts(b)
    return b._test_path.contains_points(_pts(a))


def _same(a: Placed, b: Placed, transform: bool = True) -> bool:
    same_outline = a.shape.seed == b.shape.seed and a.shape.hole == b.shape.hole
    if not transform:
        return same_outline
    return same_outline and math.isclose(a.scale, b.scale) and math.isclose(a.rotation, b.rotation) \
        and a.mirror == b.mirror


def _centres(items) -> np.ndarray:
    return np.array([[it.x, it.y] for it in items], dtype=float)


def _identity_groups(items) -> list[int]:
    """Sizes of the groups of identical shapes, sorted."""
    groups: list[list[Placed]] = []
    for it in items:
        for g in groups:
            if _same(g[0], it):
                g.append(it)
                break
        else:
            groups.append([it])
    return sorted(len(g) for g in groups)


def _touch_components(items, touch: float = 3.0, apart: float = 4.0) -> list[int]:
    n = len(items)
    parent = list(range(n))
    for i, j in itertools.combinations(range(n), 2):
        g = _gap(items[i], items[j])
        assert g <= touch or g >= apart, f"ambiguous contact {g:.2f} px between {i} and {j}"
        if g <= touch:
            parent[find(parent, i)] = find(parent, j)
    sizes: dict[int, int] = {}
    for i in range(n):
        sizes[find(parent, i)] = sizes.get(find(parent, i), 0) + 1
    return sorted(sizes.values())


def find(parent, i):
    while parent[i] != i:
        i = parent[i]
    return i


def _check_rule(problem: int, label: int, items, rel) -> None:  # noqa: C901 (one branch per problem)
    c = _centres(items)
    if problem == 1:
        assert _same(items[0], items[1]) == bool(label)
    elif problem == 2:
        big, small = items
        assert _inside(small, big).all()
        g = _gap(small, big)
        assert (g <= 6.5) if label else (g >= W / 8 - 2), g
    elif problem == 3:
        assert _touch_components(items) == ([2, 2] if label else [1, 3])
    elif problem == 4:
        big, small = items
        inside = _inside(small, big)
        assert inside.all() if label else not inside.any()
    elif problem == 5:
        assert _identity_groups(items) == ([2, 2] if label else [1, 1, 1, 1])
    elif problem == 6:
        assert _identity_groups(items) == [2, 2]
        d1 = np.linalg.norm(c[0] - c[1])
        d2 = np.linalg.norm(c[2] - c[3])
        assert _same(items[0], items[1]) and _same(items[2], items[3])
        assert (abs(d1 - d2) <= 1.0) if label else (abs(d1 - d2) >= 8.0), (d1, d2)
    elif problem == 7:
        assert _identity_groups(items) == ([3, 3] if label else [2, 2, 2])
    elif problem == 8:
        big, small = items
        inside = _inside(small, big)
        same = _same(big, small, transform=False) and math.isclose(small.scale, big.scale / 2)
        is_inside = bool(inside.all())
        assert is_inside or not inside.any()
        assert (is_inside and same) == bool(label)
        assert rel["inside"] == is_inside and rel["same"] == same
    elif problem == 9:
        big = [it for it in items if it.role == "big"][0]
        smalls = [it for it in items if it.role == "small"]
        assert all(_same(big, s, transform=False) and math.isclose(big.scale, 2 * s.scale) for s in smalls)
        assert min_altitude(c) <= 1.6
        t = (c - c.mean(0)) @ (c[np.argmax(np.linalg.norm(c - c[0], axis=1))] - c[0])
        order = np.argsort(t)
        big_index = items.index(big)
        assert (order[1] != big_index) == bool(label)
    elif problem == 10:
        assert _identity_groups(items) == [4]
        err = square_error(c)
        assert (err <= 0.06) if label else (err >= 0.25), err
    elif problem == 11:
        big, small = items
        assert not _inside(small, big).any() or _gap(small, big) <= 3.0
        g = _gap(small, big)
        assert (g <= 3.0) if label else (g >= W / 12 - 1.0), g
    elif problem == 12:
        gaps = {(i, j): _gap(items[i], items[j]) for i, j in itertools.combinations(range(3), 2)}
        ranked = sorted(gaps, key=gaps.get)
        assert gaps[ranked[1]] - gaps[ranked[0]] >= 4.0, gaps
        smalls = tuple(i for i, it in enumerate(items) if it.role == "small")
        assert (ranked[0] == smalls) == bool(label)
    elif problem == 13:
        bigs = [i for i, it in enumerate(items) if it.role == "big"]
        smalls = [i for i, it in enumerate(items) if it.role == "small"]
        assert _same(items[bigs[0]], items[bigs[1]]) and _same(items[smalls[0]], items[smalls[1]])
        offsets = []
        for s in smalls:
            d = [np.linalg.norm(c[s] - c[b]) for b in bigs]
            assert abs(d[0] - d[1]) >= 8.0  # each small is clearly with one big
            offsets.append(c[s] - c[bigs[int(np.argmin(d))]])
        diff = np.linalg.norm(offsets[0] - offsets[1])
        assert (diff <= 0.5) if label else (diff >= 8.0), diff
    elif problem == 14:
        assert _identity_groups(items) == [3]
        h = min_altitude(c)
        assert (h <= 1.6) if label else (h >= 8.0), h
    elif problem == 15:
        assert square_error(c) <= 0.06
        assert _identity_groups(items) == ([4] if label else [1, 1, 1, 1])
    elif problem == 16:
        left = [it for it in items if it.x < W / 2]
        right = [it for it in items if it.x > W / 2]
        assert len(left) == len(right) == 3
        for a in left:
            b = [r for r in right if r.y == a.y and r.x == W - 1 - a.x and _same(a, r, transform=False)]
            assert len(b) == 1
            reflected = a.points() * np.array([-1, 1]) + np.array([W - 1, 0])
            d, _ = cKDTree(b[0].points()).query(reflected)
            assert (d.max() < 1e-6) == bool(label)  # class 1: the copy is the exact mirror image
            assert (b[0].mirror != a.mirror) == bool(label)
    elif problem == 17:
        groups = _identity_groups(items)
        assert groups == [1, 3]
        odd = [it for it in items if sum(_same(it, o) for o in items) == 1][0]
        three = _centres([it for it in items if it is not odd])
        d = np.linalg.norm(circumcentre(three) - np.array([odd.x, odd.y]))
        assert (d <= 1.0) if label else (d >= 10.0), d
    elif problem == 18:
        assert _identity_groups(items) == [6]
        rows: dict[int, list[int]] = {}
        for it in items:
            rows.setdefault(it.y, []).append(it.x)
        for i, j in rel["pairs"]:
            assert items[i].y == items[j].y
            s = items[i].x + items[j].x - (W - 1)
            assert (s == 0) if label else (abs(s) >= 8), s
    elif problem in (19, 21):
        a, b = items
        assert _same(a, b, transform=False) == bool(label)
        assert all(0.9 * (W / 24) * 0.999 <= it.scale <= 4 * 0.9 * (W / 24) * 1.001 for it in items)
    elif problem == 20:
        a, b = items
        u = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
        mid = (c[0] + c[1]) / 2
        p = a.points() - mid
        reflected = p - 2 * (p @ u)[:, None] * u + mid  # across the perpendicular bisector
        d, _ = cKDTree(b.points()).query(reflected)
        assert (d.max() < 1e-6) == bool(label), d.max()
        assert _same(a, b, transform=False) == bool(label)
    elif problem == 22:
        assert min_altitude(c) <= 1.6
        assert _identity_groups(items) == ([3] if label else [1, 1, 1])
    elif problem == 23:
        big = items[0]
        n_in = 0
        for s in items[1:]:
            inside = _inside(s, big)
            assert inside.all() or not inside.any()
            n_in += int(inside.all())
        assert (n_in == 1) == bool(label) and n_in == rel["n_inside"]
    else:  # pragma: no cover
        raise AssertionError(problem)


def _touching_pairs(problem: int, label: int, items) -> set[tuple[int, int]]:
    if problem == 3:
        return {(i, j) for i, j in itertools.combinations(range(len(items)), 2)
                if _gap(items[i], items[j]) <= 3.0}
    if problem == 11 and label:
        return {(0, 1)}
    return set()


def _check_no_overlap(problem: int, label: int, items) -> None:
    touching = _touching_pairs(problem, label, items)
    for i, j in itertools.combinations(range(len(items)), 2):
        a, b = items[i], items[j]
        a_in_b, b_in_a = _inside(a, b), _inside(b, a)
        if a_in_b.all() or b_in_a.all():  # nested: the outlines must not meet
            assert _gap(a, b) >= 1.0, (i, j)
            continue
        tol = 0.75 if (i, j) in touching else 0.0
        for pts, other in ((_pts(a)[a_in_b], b), (_pts(b)[b_in_a], a)):
            if len(pts):  # a point inside the other shape only within rounding of its outline
                d, _ = other._test_tree.query(pts)
                assert d.max() <= tol + 1e-9, (i, j, d.max())
        if (i, j) not in touching:
            assert _gap(a, b) >= 1.0, (i, j, _gap(a, b))


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_rule_holds_for_both_classes(problem):
    gen = create("svrt", problem=problem, seed=3, length=N_PER_PROBLEM)
    labels = []
    for i in range(N_PER_PROBLEM):
        s = gen[i]
        image, label, meta = s["image"], s["label"], s["meta"]
        labels.append(label)
        assert image.shape == (W, W) and image.dtype == np.uint8
        assert set(np.unique(image)) <= {0, 255} and (image == 255).mean() > 0.8  # white background
        assert 2 <= len(meta["shapes"]) <= 8
        np.testing.assert_array_equal(render_meta(meta["shapes"]), image)  # the meta is the image
        items = _items(meta)
        _check_rule(problem, label, items, meta["relation"])
        _check_no_overlap(problem, label, items)
    assert sum(labels) == N_PER_PROBLEM // 2  # balanced


def test_a_wrong_rule_check_fails():
    """The checks can fail: problem 1's class-0 images do not pass as class 1."""
    gen = create("svrt", problem=1, seed=0, length=10)
    s = gen[0]
    with pytest.raises(AssertionError):
        _check_rule(1, 1, _items(s["meta"]), s["meta"]["relation"])


def test_deterministic_and_seeded():
    a = create("svrt", problem=9, seed=5, length=20)
    b = create("svrt", problem=9, seed=5, length=20)
    for i in (7, 3, 7):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        assert a[i]["meta"] == b[i]["meta"]
    c = create("svrt", problem=9, seed=6, length=20)
    assert not np.array_equal(a[3]["image"], c[3]["image"])


def test_bad_problem_is_refused():
    with pytest.raises(ValueError, match="1..23"):
        create("svrt", problem=24)


def test_svrt_through_the_shared_dataset_writer_and_cli(tmp_path):
    from typer.testing import CliRunner

    from harmonia.challenges.dataset import ChallengeDataset
    from harmonia.challenges.writer import ChallengeFolder, write_challenge
    from harmonia.cli.main import app

    gen = create("svrt", problem=4, seed=0, length=6)
    item = ChallengeDataset(gen, length=6)[1]
    assert tuple(item["image"].shape) == (1, W, W) and int(item["label"]) == 1
    root = write_challenge(gen, tmp_path / "w", n=6)
    folder = ChallengeFolder(root, "train")
    assert folder.info.synthetic and len(folder) == 6
    np.testing.assert_array_equal(folder[3]["image"], gen[3]["image"])
    r = CliRunner().invoke(app, ["data", "challenge", "svrt", "--problem", "9", "--n", "4", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0 and "SYNTHETIC" in r.output, r.output
    assert len(ChallengeFolder(tmp_path / "c", "train")) == 4


@pytest.mark.parametrize("module", ["svrt", "svrt_geometry", "svrt_baselines"])
def test_docstring_examples(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(f"harmonia.challenges.{module}"))
    assert res.failed == 0 and res.attempted > 0
