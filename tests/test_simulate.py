"""The simulated-ClickMe generator (SYNTHETIC data): determinism, shortcut statistics, maps."""

import numpy as np
import pytest
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.data import HarmoniaDataset, read_info
from harmonia.humans.blur import blur_maps
from harmonia.humans.simulate import (
    SPLITS, SimulationConfig, load_meta, plan_split, simulate_clickme, simulate_from_config,
)
from harmonia.humans.simulate_render import CUE_COLOURS, CUE_FRAME, render_sample

N_TRAIN, N_TEST, SIZE, SUBJECTS = 200, 100, 32, 4


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "data"
    return simulate_clickme(root, n_train=N_TRAIN, n_test=N_TEST, image_size=SIZE, n_subjects=SUBJECTS, seed=3,
                            progress=False)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    kw = dict(n_train=66, n_test=4, image_size=SIZE, n_subjects=3, progress=False)  # 66 > one blur chunk
    a = _files(simulate_clickme(tmp_path / "a", seed=7, **kw))
    b = _files(simulate_clickme(tmp_path / "b", seed=7, **kw))
    c = _files(simulate_clickme(tmp_path / "c", seed=8, **kw))
    assert a == b
    # The data set says how it was made: its stored config remakes it byte for byte.
    cfg = SimulationConfig.from_json(read_info(tmp_path / "a").extra["simulation"])
    assert _files(simulate_from_config(tmp_path / "again", cfg, progress=False)) == a
    assert a.keys() == c.keys()
    changed = [k for k in a if k.endswith((".png", ".npy")) and a[k] != c[k]]
    assert len(changed) == len([k for k in a if k.endswith((".png", ".npy"))])


def test_shortcut_agreement_per_split(sim):
    rates = {s: load_meta(sim, s)["shortcut_agrees"].mean() for s in SPLITS}
    assert abs(rates["train"] - 0.9) < 0.01 and abs(rates["test"] - 0.9) < 0.01
    assert rates["test_shortcut_broken"] == 0.0 and rates["test_no_cue"] == 0.0
    assert (load_meta(sim, "test_no_cue")["shortcut_class"] == -1).all()
    for s in SPLITS[:3]:
        m = load_meta(sim, s)
        assert np.array_equal(m["shortcut_agrees"] == 1, m["shortcut_class"] == m["label"])
        # Disagreeing cues are spread over the other classes, not stuck on one.
        wrong = m["shortcut_class"][m["shortcut_agrees"] == 0]
        assert len(np.unique(wrong)) >= 6


def _images_and_cue_boxes(sim, split, n=20):
    """The first n images of a split (H x W x 3, 0-255), their meta rows, and cue boxes."""
    ds, m = HarmoniaDataset(sim, split=split), load_meta(sim, split)
    for i in range(n):
        img = (ds[i]["image"].permute(1, 2, 0).numpy() * 255).round()
        yield i, img, m, (m["cue_x0"][i], m["cue_y0"][i], m["cue_x1"][i], m["cue_y1"][i])


def test_the_image_shows_the_recorded_cue_away_from_the_object(sim):
    for i, img, m, (x0, y0, x1, y1) in _images_and_cue_boxes(sim, "test_shortcut_broken"):
        centre = img[(y0 + y1) // 2, (x0 + x1) // 2]
        assert np.abs(centre - np.array(CUE_COLOURS[m["shortcut_class"][i]]) * 255).max() <= 1
        ox0, oy0, ox1, oy1 = m["object_x0"][i], m["object_y0"][i], m["object_x1"][i], m["object_y1"][i]
        assert x1 <= ox0 or ox1 <= x0 or y1 <= oy0 or oy1 <= y0  # boxes do not overlap
        assert ox0 <= m["part_x0"][i] and m["part_x1"][i] <= ox1 and oy0 <= m["part_y0"][i] and m["part_y1"][i] <= oy1


def test_no_cue_split_shows_a_plain_grey_square(sim):
    for _, img, _, (x0, y0, x1, y1) in _images_and_cue_boxes(sim, "test_no_cue"):
        assert np.abs(img[y0:y1, x0:x1] - np.array(CUE_FRAME) * 255).max() <= 1


def test_labels_are_balanced(sim):
    for s in SPLITS:
        counts = np.bincount(HarmoniaDataset(sim, split=s).labels, minlength=8)
        assert counts.max() - counts.min() <= 1, (s, counts)


def test_human_maps_peak_on_the_diagnostic_part(sim):
    ds = HarmoniaDataset(sim, split="test", with_subjects=True)
    m = load_meta(sim, "test")
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    inside, share, peak_on_part, d_map, d_obj = [], [], [], [], []
    for i in range(len(ds)):
        item = ds[i]
        hmap, subj = item["map"].numpy(), item["subjects"].numpy()
        assert hmap.shape == (SIZE, SIZE) and subj.shape == (SUBJECTS, SIZE, SIZE)
        assert (hmap >= 0).all() and hmap.sum() > 0 and (subj >= 0).all()
        assert subj.sum() == m["n_clicks"][i]  # raw counts, one per in-bounds click
        x0, y0, x1, y1 = m["part_x0"][i], m["part_y0"][i], m["part_x1"][i], m["part_y1"][i]
        inside.append(hmap[y0:y1, x0:x1].sum() / hmap.sum())
        share.append((x1 - x0) * (y1 - y0) / SIZE**2)
        py, px = np.unravel_index(hmap.argmax(), hmap.shape)
        peak_on_part.append(x0 - 1 <= px <= x1 and y0 - 1 <= py <= y1)
        # Centre of mass of the map vs the part centre, relative to the object centre's distance:
        # clicks spread evenly over the object would give about 1.
        cx, cy = (hmap * xx).sum() / hmap.sum(), (hmap * yy).sum() / hmap.sum()
        d_map.append(np.hypot(cx - m["part_cx"][i], cy - m["part_cy"][i]))
        ox, oy = (m["object_x0"][i] + m["object_x1"][i]) / 2, (m["object_y0"][i] + m["object_y1"][i]) / 2
        d_obj.append(np.hypot(ox - m["part_cx"][i], oy - m["part_cy"][i]))
    assert np.mean(inside) > 5 * np.mean(share)
    assert np.mean(inside) < 0.9  # noisy participants: some mass elsewhere
    assert np.mean(peak_on_part) > 0.65
    assert np.mean(d_map) < 0.8 * np.mean(d_obj)


def test_map_is_the_blurred_mean_of_the_subject_maps(sim):
    info = read_info(sim)
    size = info.extra["subjects_blur"]["size"]
    ds = HarmoniaDataset(sim, split="test", with_subjects=True)
    for i in range(3):
        item = ds[i]
        expected = blur_maps(item["subjects"].numpy().mean(0), "disk", size=size)
        np.testing.assert_allclose(item["map"].numpy(), expected, rtol=1e-5, atol=1e-7)


def test_subjects_only_on_test_splits_by_default(sim):
    assert not HarmoniaDataset(sim, split="train").has_subjects
    assert HarmoniaDataset(sim, split="test").has_subjects
    assert HarmoniaDataset(sim, split="test_shortcut_broken").has_subjects


def test_dataset_says_it_is_synthetic(sim):
    info = read_info(sim)
    assert info.synthetic is True
    assert "SYNTHETIC" in info.description and "SIMULATED" in info.description
    assert sorted(info.splits) == sorted(SPLITS)
    cfg = info.extra["simulation"]
    assert (cfg["n_train"], cfg["n_test"], cfg["image_size"], cfg["seed"]) == (N_TRAIN, N_TEST, SIZE, 3)
    assert info.classes == ["disk", "ring", "square", "triangle", "plus", "bar", "dots", "tee"]


def test_plan_split_exact_rates():
    labels, cues = plan_split(np.random.default_rng(0), 1000, 8, 0.9, broken=False)
    assert (labels == cues).sum() == 900 and np.bincount(labels).tolist() == [125] * 8
    labels, cues = plan_split(np.random.default_rng(0), 1000, 8, 0.9, broken=True)
    assert (labels == cues).sum() == 0 and set(np.unique(cues)) == set(range(8))


def test_classes_differ_only_by_the_part():
    # Same random stream, different class: the same picture except for the part's shape.
    a = render_sample(np.random.default_rng(5), 64, part_class=0, cue_class=0)
    b = render_sample(np.random.default_rng(5), 64, part_class=2, cue_class=0)
    diff = np.abs(a.image.astype(int) - b.image.astype(int)).max(-1) > 0
    x0, y0, x1, y1 = a.part_box
    assert diff.any() and not diff[: max(y0 - 1, 0)].any() and not diff[y1 + 1 :].any()
    assert a.object_box == b.object_box and not np.array_equal(a.part_mask, b.part_mask)


def test_part_radius_sets_the_part_size():
    small = render_sample(np.random.default_rng(5), 64, part_class=0, cue_class=0)
    big = render_sample(np.random.default_rng(5), 64, part_class=0, cue_class=0, part_radius=(8.0, 8.0))
    assert 4.5 <= small.part_radius <= 6.0 and big.part_radius == 8.0
    assert big.part_mask.sum() > 1.5 * small.part_mask.sum()


@pytest.mark.parametrize(
    "kw, error",
    [({"n_classes": 1}, "n_classes"), ({"n_classes": 13}, "n_classes"), ({"shortcut_rate": 1.5}, "shortcut_rate"),
     ({"image_size": 16}, "image_size"), ({"n_subjects": 0}, "n_subjects"), ({"part_radius": (6, 5)}, "part_radius"),
     ({"part_radius": (0, 5)}, "part_radius"), ({"part_radius": (8, 12)}, "part_radius")],
)
def test_bad_settings_are_refused(tmp_path, kw, error):
    with pytest.raises(ValueError, match=error):
        simulate_clickme(tmp_path / "x", n_train=2, n_test=2, progress=False, **kw)


def test_existing_folders_are_protected(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        simulate_clickme(other, n_train=2, n_test=2, image_size=SIZE, progress=False)
    with pytest.raises(FileExistsError, match="refusing"):
        simulate_clickme(other, n_train=2, n_test=2, image_size=SIZE, progress=False, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    root = simulate_clickme(tmp_path / "ds", n_train=4, n_test=2, image_size=SIZE, n_subjects=2, progress=False)
    simulate_clickme(root, n_train=2, n_test=2, image_size=SIZE, n_subjects=2, progress=False, overwrite=True)
    assert len(HarmoniaDataset(root, split="train")) == 2


def test_cli_writes_the_dataset_and_says_synthetic(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sim"
    r = runner.invoke(app, ["data", "simulate", "--out", str(out), "--n-train", "6", "--n-test", "4",
                            "--image-size", "32", "--classes", "3", "--subjects", "2", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output
    info = read_info(out)
    assert info.synthetic and info.classes == ["disk", "ring", "square"]
    assert len(HarmoniaDataset(out, split="test_shortcut_broken")) == 4
    r = runner.invoke(app, ["data", "simulate", "--out", str(out), "--n-train", "6"])
    flat = " ".join(r.output.split())  # rich wraps long lines
    assert r.exit_code == 2 and flat.startswith("error:") and "not empty" in flat and "--overwrite" in flat
    r = runner.invoke(app, ["data", "simulate", "--help"])
    assert r.exit_code == 0 and "SYNTHETIC" in r.output and "harmonia data simulate --out" in r.output
