"""PathTracker and FeatureTracker generators: labels, markers, pixels, rules, determinism, errors."""

import colorsys
import hashlib

import numpy as np
import pytest

import harmonia.challenges as hc
from harmonia.challenges._tracking import ring_offsets
from harmonia.challenges.featuretracker import CONDITIONS, HUE_RANGES, cores_from_codes, evolve_shapes, hue_to_rgb, step_shapes

GREEN, RED, BLUE = (0, 255, 0), (255, 0, 0), (0, 0, 255)


def ring(centre, size):
    return {(int(centre[0] + r), int(centre[1] + c)) for r, c in ring_offsets(size)}


def box(corner, size):
    return {(int(corner[0] + r), int(corner[1] + c)) for r in range(size) for c in range(size)}


def colour_at(frame, pixels):
    return {tuple(int(v) for v in frame[r, c]) for r, c in pixels}


@pytest.mark.parametrize("knobs", [dict(frames=32, distractors=14), dict(frames=64, distractors=0, speed=4)])
def test_pathtracker_labels_match_trajectories(knobs):
    gen = hc.create("pathtracker", seed=3, **knobs)
    labels = []
    for i in range(200):
        s = gen[i]
        m = s["meta"]
        traj = m["trajectories"]
        assert traj.shape == (2 + knobs["distractors"], knobs["frames"], 2)
        assert m["start_marker"] == tuple(traj[m["target"], 0])
        target_end, second_end = tuple(traj[m["target"], -1]), tuple(traj[m["second"], -1])
        if s["label"] == 1:
            assert m["end_marker"] == target_end
        else:
            assert m["end_marker"] != target_end and m["end_marker"] == second_end
        labels.append(s["label"])
    assert sum(labels) == 100  # balanced


def test_pathtracker_pixels_where_metadata_says():
    gen = hc.create("pathtracker", seed=1, frames=32, distractors=5)
    for i in range(20):
        s = gen[i]
        video, m = s["video"], s["meta"]
        assert video.shape == (32, 32, 32, 3) and video.dtype == np.uint8
        start, end = ring(m["start_marker"], 3), ring(m["end_marker"], 3)
        for t in range(32):
            frame = video[t]
            assert colour_at(frame, end) == {BLUE}  # markers in every frame (end drawn last)
            assert colour_at(frame, start - end) <= {RED}
            dots = set().union(*(box(p, 2) for p in m["trajectories"][:, t]))
            visible = dots - start - end
            assert colour_at(frame, visible) == {GREEN}
            lit = {tuple(p) for p in np.argwhere(frame.any(axis=-1))}
            assert lit == visible | start | end  # nothing else drawn
    # every object moves at some point of a 32-frame path
    moved = (np.abs(np.diff(m["trajectories"], axis=1)).sum(axis=(1, 2)) > 0)
    assert moved.all()


def test_pathtracker_speed_moves_dots_farther():
    def travel(speed):
        g = hc.create("pathtracker", seed=0, frames=32, distractors=0, speed=speed)
        return np.mean([np.abs(np.diff(g[i]["meta"]["trajectories"], axis=1)).sum() for i in range(20)])
    assert travel(4) > 2.5 * travel(1)


def test_determinism_and_independence_of_order():
    for name in ("pathtracker", "featuretracker"):
        a, b = hc.create(name, seed=5), hc.create(name, seed=5)
        late = b[7]["video"]
        assert np.array_equal(a[7]["video"], late)
        assert np.array_equal(a[7]["video"], b[7]["video"])
        assert not np.array_equal(hc.create(name, seed=6)[7]["video"], late)
    # same seed, same video on any machine (PCG64 streams and the float maths are platform-stable)
    digest = hashlib.sha256(hc.create("pathtracker", seed=0)[0]["video"].tobytes()).hexdigest()[:16]
    assert digest == PT_DIGEST


@pytest.mark.parametrize("name, knobs", [("pathtracker", {"distractors": 25}),
                                         ("featuretracker", {"shapes": "out", "colors": "irregular"})])
def test_batched_draw_equals_one_by_one(name, knobs):
    gen = hc.create(name, seed=9, frames=32, **knobs)
    for i, s in zip([5, 2, 40, 41], gen.samples([5, 2, 40, 41])):
        one = gen[i]
        assert s["label"] == one["label"] and np.array_equal(s["video"], one["video"])
        for key, value in one["meta"].items():
            assert np.array_equal(np.asarray(s["meta"][key]), np.asarray(value)), key


PT_DIGEST = "1e7783d9034e1ca0"


# Digests of 8 videos (+ masks and trajectories) per setting, from the generators before they were
# sped up (commit 18752a8): any change to the random streams or the float maths changes them.
BATCH_DIGESTS = [
    ("pathtracker", {"frames": 64, "distractors": 14}, "d2de3324d77acebf"),
    ("pathtracker", {"frames": 128, "distractors": 25, "speed": 4}, "29dadd40481d43a3"),
    ("pathtracker", {"frames": 32, "distractors": 0, "speed": 2}, "27b3e7b71055935a"),
    ("featuretracker", {}, "59f1ca0ed8d29b98"),
    ("featuretracker", {"shapes": "out", "colors": "irregular"}, "8590274b148e1472"),
]


@pytest.mark.parametrize("name, knobs, expected", BATCH_DIGESTS)
def test_samples_are_pinned(name, knobs, expected):
    digest = hashlib.sha256()
    for s in hc.create(name, seed=1, **knobs).samples(list(range(8))):
        for a in (s["video"], s.get("masks", np.zeros(0)), s["meta"]["trajectories"]):
            digest.update(a.tobytes())
    assert digest.hexdigest()[:16] == expected


@pytest.mark.parametrize("name, knobs, message", [
    ("pathtracker", dict(frames=1), "frames must be"),
    ("pathtracker", dict(distractors=-1), "distractors must be"),
    ("pathtracker", dict(speed=0), "speed must be"),
    ("pathtracker", dict(frames=2.5), "frames must be an integer"),
    ("featuretracker", dict(distractors=0), "needs distractors >= 1"),
    ("featuretracker", dict(shapes="sideways"), "shapes='sideways' is not one of"),
    ("featuretracker", dict(colors="blue"), "colors='blue' is not one of"),
    ("pathtracker", dict(shapes="in"), "has no setting 'shapes'"),
])
def test_impossible_settings_are_refused(name, knobs, message):
    with pytest.raises(ValueError, match=message):
        hc.create(name, **knobs)


def test_featuretracker_labels_closest_endpoint_negatives():
    gen = hc.create("featuretracker", seed=2)
    for i in range(200):
        s = gen[i]
        m = s["meta"]
        centres = m["trajectories"][:, -1] + 2
        target_end = tuple(centres[m["target"]])
        assert m["start_marker"] == tuple(m["trajectories"][m["target"], 0] + 2)
        if s["label"] == 1:
            assert m["end_marker"] == target_end
        else:
            assert m["end_marker"] != target_end
            gaps = np.linalg.norm(centres - centres[m["target"]], axis=1)
            others = [k for k in range(len(centres)) if k != m["target"] and gaps[k] >= 1]
            assert m["lure"] in others and gaps[m["lure"]] == min(gaps[k] for k in others)  # ties: any
            assert m["end_marker"] == tuple(centres[m["lure"]])


@pytest.mark.parametrize("rule", ["none", "in", "out"])
def test_shape_lookup_equals_stepping_every_frame(rule):
    # the reference: step every frame with the rule, re-randomising an emptied shape from the video's generator
    frames, n_obj = 40, 12
    rngs, ref_rngs = ([np.random.default_rng([7, i]) for i in range(5)] for _ in range(2))
    got = evolve_shapes(rngs, n_obj, frames, rule)
    for b, rng in enumerate(ref_rngs):
        grid = cores_from_codes(rng.integers(1, 512, size=n_obj))
        for t in range(frames):
            if t:
                grid = step_shapes(grid, rule)
                empty = ~grid.any(axis=(1, 2))
                if empty.any():
                    grid[empty] = cores_from_codes(rng.integers(1, 512, size=int(empty.sum())))
            assert np.array_equal(got[b, t], grid), (b, t)


@pytest.mark.parametrize("shapes, colors", CONDITIONS)
def test_featuretracker_rules_hues_and_pixels(shapes, colors):
    gen = hc.create("featuretracker", seed=4, shapes=shapes, colors=colors)
    for i in range(6):
        s = gen[i]
        m, video, masks = s["meta"], s["video"], s["masks"]
        grids, hues = m["shapes"], m["hues"]
        for t in range(grids.shape[1] - 1):
            a, b = grids[:, t], grids[:, t + 1]
            if shapes == "in":
                assert (b >= a).all()  # birth-only never removes a pixel
            elif shapes == "none":
                assert (b == a).all()
            else:
                emptied = ~step_shapes(a, "out").any(axis=(1, 2))
                assert (b[~emptied] <= a[~emptied]).all()  # death-only never adds one...
                assert b[emptied].any(axis=(1, 2)).all()  # ...except re-randomising an emptied shape
        lo, hi = HUE_RANGES[colors]
        assert ((hues >= lo) & (hues <= hi)).all() and (lo == hi or (hues < hi).all())
        for t in (0, 15, 31):
            all_on = set()
            for k in range(len(grids)):
                on = {(int(m["trajectories"][k, t, 0] + r), int(m["trajectories"][k, t, 1] + c))
                      for r, c in np.argwhere(grids[k, t])}
                all_on |= on
                visible = {tuple(p) for p in np.argwhere(masks[t] == 3 + k)}
                assert visible <= on  # drawn only where its shape is on (others may hide it)
                if not visible:
                    continue
                rgb = colour_at(video[t], visible)
                assert rgb == {tuple(hue_to_rgb(np.array(hues[k, t])).tolist())}
                if colors != "none":
                    h = colorsys.rgb_to_hsv(*(v / 255 for v in rgb.pop()))[0] * 360
                    assert lo - 1 <= h <= hi + 1
            markers = ring(m["start_marker"], 5) | ring(m["end_marker"], 5)
            objects = {tuple(p) for p in np.argwhere(masks[t] >= 3)}
            assert objects == all_on - markers
            lit = {tuple(p) for p in np.argwhere(video[t].any(axis=-1))}
            assert lit == objects | markers  # nothing else drawn
            assert colour_at(video[t], ring(m["end_marker"], 5)) == {BLUE}
            assert (masks[t] == 2).sum() == 16


def test_featuretracker_conditions_share_paths():
    a = hc.create("featuretracker", seed=0, shapes="in", colors="in")[5]["meta"]
    b = hc.create("featuretracker", seed=0, shapes="out", colors="irregular")[5]["meta"]
    assert np.array_equal(a["trajectories"], b["trajectories"])
    assert np.array_equal(a["shapes"][:, 0], b["shapes"][:, 0])


def test_names_lists_the_trackers():
    assert {"pathtracker", "featuretracker"} <= set(hc.names())


def test_target_mask_covers_the_target_dot():
    from harmonia.challenges.dataset import ChallengeDataset

    assert "target_mask" not in ChallengeDataset(hc.create("pathtracker", frames=4), 2)[0]  # built only when asked for
    with pytest.raises(ValueError, match="no tracking target"):
        ChallengeDataset(hc.create("svrt", problem=1), 2, target_masks=True)
    ds = ChallengeDataset(hc.create("pathtracker", seed=3, frames=16, distractors=5), 24, target_masks=True)
    for i in range(24):
        item, sample = ds[i], ds.gen[i]
        mask = item["target_mask"].numpy().astype(bool)
        assert mask.shape == (16, 32, 32) and (mask.sum(axis=(1, 2)) == 4).all()
        video = sample["video"]
        green = (video == (0, 255, 0)).all(-1)
        marker = (video == (255, 0, 0)).all(-1) | (video == (0, 0, 255)).all(-1)
        assert (green | marker)[mask].all()  # the target's dot, or a marker drawn over it
        start = sample["meta"]["start_marker"]
        assert mask[0, start[0], start[1]]  # the target starts in the start marker
