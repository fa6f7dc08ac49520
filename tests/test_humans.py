"""Raw clicks -> maps, blur kernels, split-half ceilings and floors (harmonia.humans)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harmonia.humans.blur import blur_maps, disk_kernel, gaussian_kernel1d, native_blur_size
from harmonia.humans.ceiling import ceiling_for, dataset_ceiling, run_ceiling, split_half_ceiling
from harmonia.humans.clicks import (
    ClickFilter,
    ClickTable,
    clicks_to_dataset,
    geometry,
    image_id,
    load_click_table,
    process_clicks,
    subject_click_maps,
)

NO_FILTER = ClickFilter(min_catch_accuracy=None, drop_mobile=False, drop_duplicates=False, min_clicks=0,
                        max_clicks=None, min_subjects=1)


# ------------------------------------------------------------------------------- counts
def test_subject_click_maps_counts_bounds_and_trim():
    xs = [np.array([0, 1, 1, 4, -1, 2.7]), np.array([3, 3, 3])]
    ys = [np.array([0, 0, 0, 0, 1, 1.2]), np.array([4, 4, 2])]
    m = subject_click_maps(xs, ys, (5, 4))  # H=5, W=4: x=4 is out of bounds, so is x=-1
    assert m.shape == (2, 5, 4) and m.dtype == np.float32
    assert m[0, 0].tolist() == [1, 2, 0, 0] and m[0, 1, 2] == 1  # 2.7 floors to column 2
    assert m[0].sum() == 4 and m[1, 4, 3] == 2 and m[1, 2, 3] == 1
    trimmed = subject_click_maps(xs, ys, (5, 4), max_clicks=2)
    assert trimmed[0].sum() == 2 and trimmed[1].sum() == 2 and trimmed[1, 2, 3] == 0


# --------------------------------------------------------------------------------- blur
def _reference_blur(x, kernel2d, passes):
    y = x[:, None].double()
    for _ in range(passes):
        k = kernel2d.shape[-1]
        y = F.conv2d(F.pad(y, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)), kernel2d[None, None].double())
    return y[:, 0]


@pytest.mark.parametrize("size", [5, 6, 21])
def test_blur_matches_direct_same_convolutions(size):
    g = torch.Generator().manual_seed(size)
    x = (torch.rand(3, 30, 27, generator=g) < 0.05).double() * torch.rand(3, 30, 27, generator=g, dtype=torch.float64)
    disk = blur_maps(x, "disk", size)
    ref = _reference_blur(x, disk_kernel(size), passes=2)  # twice, truncated between passes
    assert torch.allclose(disk, ref, atol=1e-12)
    assert torch.equal(disk == 0, ref.abs() < 1e-14)  # unclicked regions stay exactly 0 (ties for ranks)
    g1 = gaussian_kernel1d(size, 2.0)
    gauss = blur_maps(x, "gaussian", size, sigma=2.0)
    assert torch.allclose(gauss, _reference_blur(x, torch.outer(g1, g1), passes=1), atol=1e-12)


def test_blur_types_kernels_and_native_size():
    m = np.zeros((2, 1, 40, 40), np.float32)
    m[..., 20, 20] = 3.0
    out = blur_maps(m, "disk", 9)
    assert isinstance(out, np.ndarray) and out.shape == m.shape and out.dtype == np.float32
    assert abs(out.sum() - 6.0) < 1e-4 and (out >= 0).all()
    assert blur_maps(m, "none") is m
    k = disk_kernel(21)
    assert abs(float(k.sum()) - 1) < 1e-12 and k[0, 0] == 0 and k[10, 0] > 0 and torch.equal(k, k.T)
    g = gaussian_kernel1d(22)  # the earlier pipeline's kernel: sigma sqrt(22)
    assert abs(float(g[10] / g[0]) - np.exp(0.5 * (10.5**2 - 0.5**2) / 22)) < 1e-9
    assert [native_blur_size(s) for s in (256, 500, 333, 64, 4000)] == [21, 41, 27, 5, 51]
    with pytest.raises(ValueError):
        blur_maps(m, "box")


# ------------------------------------------------------------------------------ tables
def _table_df():
    rows = [
        # image, user, xs, ys, catch, mobile
        ("a.png", "u1", [1, 2, 3], [1, 1, 1], 1.0, False),
        ("a.png", "u2", [4, 4], [2, 2], 0.9, False),  # fails catch
        ("a.png", "u3", [5, 6, 7], [3, 3, 3], 1.0, True),  # mobile
        ("a.png", "u1", [7, 7, 7], [7, 7, 7], 1.0, False),  # duplicate of u1/a (dropped, first kept)
        ("a.png", "u4", [2], [2], 1.0, False),  # too few clicks
        ("a.png", "u5", [0, 9, 1, 2], [0, 9, 1, 2], 1.0, False),  # 4 clicks, trimmed to 3
        ("b.png", "u1", [1, 1, 1], [1, 1, 1], 1.0, False),  # b has one subject: dropped
        ("zzz.png", "u1", [1, 1, 1], [1, 1, 1], 1.0, False),  # unknown image
    ]
    return pd.DataFrame(rows, columns=["image", "user", "x", "y", "catch_accuracy", "is_mobile"])


def test_load_click_table_csv_parquet_and_errors(tmp_path):
    df = _table_df()
    csv = tmp_path / "t.csv"
    df.assign(x=df.x.map(json.dumps), y=df.y.map(json.dumps)).to_csv(csv, index=False)
    pq = tmp_path / "t.parquet"
    df.to_parquet(pq)
    for t in (load_click_table(csv), load_click_table(pq)):
        assert len(t) == 8 and t.n_clicks.tolist() == [3, 2, 3, 3, 1, 4, 3, 3]
        assert t.x[:3].tolist() == [1, 2, 3] and t.mobile[2] and t.catch[1] == 0.9
    renamed = df.rename(columns={"image": "file", "x": "cx"})
    with pytest.raises(ValueError, match="no image column"):
        ClickTable.from_frame(renamed)
    t = ClickTable.from_frame(renamed, {"image": "file", "x": "cx"})
    assert t.image[0] == "a.png"
    bad = df.copy()
    bad.loc[3, "y"] = [1]
    with pytest.raises(ValueError, match="row 3"):
        ClickTable.from_frame(bad)
    with pytest.raises(ValueError, match="no catch-accuracy column"):
        process_clicks(df.drop(columns="catch_accuracy"), (10, 10), ClickFilter(), resize=None, crop=None)


def test_process_clicks_filters_and_maps():
    f = ClickFilter(min_catch_accuracy=0.95, min_clicks=1, max_clicks=3, min_subjects=2)
    sizes = {"a.png": (10, 10), "b.png": (10, 10)}
    cm = process_clicks(_table_df(), sizes, f, blur="disk", blur_size=3, resize=None, crop=None)
    r = cm.report
    assert r.dropped == {"image unknown or missing": 1, "catch accuracy": 1, "mobile": 1, "duplicate (user, image)": 1,
                         "<= 1 clicks": 1, "image below min_subjects": 1}
    assert (r.trials_in, r.images_in, r.trials_out, r.images_out, r.images_dropped, r.trials_trimmed) == (8, 3, 2, 1, 1, 1)
    assert cm.ids == ["a"] and cm.n_subjects == [2]
    subj = cm.subjects(0)
    want = subject_click_maps([np.array([1, 2, 3]), np.array([0, 9, 1])], [np.array([1, 1, 1]), np.array([0, 9, 1])], (10, 10))
    assert np.array_equal(subj, want)  # first trial of u1 kept; u5 trimmed to its first 3 clicks
    assert np.allclose(cm.maps[0], blur_maps(want.mean(0), "disk", 3), atol=1e-6)


def _naive_pipeline(df, sizes, f, resize, crop, blur_size):
    """Loop-based re-implementation used to check the vectorised one."""
    df = df[df.image.isin(list(sizes))]
    df = df[df.catch_accuracy >= f.min_catch_accuracy]
    df = df[~df.is_mobile]
    df = df[~df.duplicated(["user", "image"], keep="first")]
    df = df[df.x.map(len) > f.min_clicks]
    out = {}
    for name, grp in df.groupby("image"):
        if len(grp) < f.min_subjects:
            continue
        g = geometry(sizes[name], resize, crop)
        (h0, w0), (h1, w1) = g.native, g.resized
        full = np.zeros((len(grp), h1, w1))
        for s, (xs, ys) in enumerate(zip(grp.x, grp.y)):
            for x, y in list(zip(xs, ys))[: f.max_clicks]:
                if 0 <= x < w0 and 0 <= y < h0:
                    full[s, int((y + 0.5) * h1 / h0), int((x + 0.5) * w1 / w0)] += 1
        m = _reference_blur(torch.from_numpy(full.mean(0))[None], disk_kernel(blur_size), 2)[0].numpy()
        out[name] = (m[g.top : g.top + g.out[0], g.left : g.left + g.out[1]],
                     full[:, g.top : g.top + g.out[0], g.left : g.left + g.out[1]])
    return out


def test_process_clicks_matches_naive_loop_with_resize_and_crop():
    rng = np.random.default_rng(0)
    sizes = {f"im{i}.jpg": (int(rng.integers(20, 40)), int(rng.integers(20, 40))) for i in range(12)}
    rows = []
    for _ in range(400):
        name = f"im{rng.integers(0, 13)}.jpg"  # im12 has no size: dropped
        n = int(rng.integers(0, 12))
        rows.append((name, f"u{rng.integers(0, 60)}", rng.integers(-3, 42, n).tolist(), rng.integers(-3, 42, n).tolist(),
                     float(rng.choice([1.0, 0.9])), bool(rng.random() < 0.1)))
    df = pd.DataFrame(rows, columns=["image", "user", "x", "y", "catch_accuracy", "is_mobile"])
    f = ClickFilter(min_clicks=2, max_clicks=6, min_subjects=3)
    cm = process_clicks(df, sizes, f, resize=24, crop=(18, 20), blur_size=5)
    naive = _naive_pipeline(df, sizes, f, 24, (18, 20), 5)
    assert cm.names == sorted(naive) and len(cm) >= 5
    for i, name in enumerate(cm.names):
        m, subj = naive[name]
        assert cm.maps[i].shape == (18, 20)
        assert np.allclose(cm.maps[i], m, atol=1e-5)
        assert np.array_equal(cm.subjects(i), subj.astype(np.float32))


def test_geometry_and_ids():
    assert geometry((375, 500)) == geometry((375, 500), 256, 224)
    g = geometry((500, 375), 256, 224)
    assert g.resized == (341, 256) and g.out == (224, 224) and (g.top, g.left) == (58, 16)
    assert geometry((10, 12), None, None).out == (10, 12)
    with pytest.raises(ValueError, match="larger"):
        geometry((100, 100), 64, 80)
    assert image_id("cls/a b.JPEG") == "cls__a_b"


def test_clicks_to_dataset_round_trip(tmp_path):
    from harmonia.data import HarmoniaDataset

    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "cat" / "p1.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "p2.png")
    rows = []
    for u in range(4):
        rows.append(("cat/p1.png", f"u{u}", [5, 25, 45, 49], [5, 20, 35, 39], 1.0, False, 1))
        rows.append(("p2.png", f"u{u}", [1, 15, 28], [2, 15, 29], 1.0, False, 0))
    rows.append(("missing.png", "u0", [1, 2, 3], [1, 2, 3], 1.0, False, 0))
    df = pd.DataFrame(rows, columns=["image", "user", "x", "y", "catch_accuracy", "is_mobile", "label"])
    out = tmp_path / "ds"
    f = ClickFilter(min_clicks=1, min_subjects=2)
    report = clicks_to_dataset(df, tmp_path / "imgs", out, filter=f, resize=32, crop=24)
    assert report.images_out == 2 and report.dropped["image unknown or missing"] == 1
    ds = HarmoniaDataset(out, with_subjects=True)
    assert ds.ids == ["cat__p1", "p2"] and not ds.info.synthetic
    assert ds.info.extra["subjects_blur"] == {"method": "disk", "size": 3, "sigma": None}  # 21 * 32/256 -> 3
    item = ds[0]
    assert item["image"].shape == (3, 24, 24) and item["map"].shape == (24, 24) and item["label"] == 1
    assert item["subjects"].shape == (4, 24, 24)
    # p1 is 40 x 50 -> 32 x 40, crop 24 x 24 at (top 4, left 8): only (25, 20) -> resized (20, 16)
    # -> cropped column 12, row 12 stays; (5, 5), (45, 35) and (49, 39) fall outside the crop.
    assert item["subjects"].sum(dim=(1, 2)).tolist() == [1.0] * 4 and item["subjects"][0, 12, 12] == 1


def test_clicks_to_dataset_refuses_images_inside_the_split_it_replaces(tmp_path):
    # The images of a split that is rebuilt from its own clicks: the move on close would delete them.
    from harmonia.data import HarmoniaDataset

    rng = np.random.default_rng(0)
    rows = [("p1.png", f"u{u}", [1, 15, 28], [2, 15, 29], 1.0, False, 0) for u in range(3)]
    df = pd.DataFrame(rows, columns=["image", "user", "x", "y", "catch_accuracy", "is_mobile", "label"])
    (tmp_path / "imgs").mkdir()
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "p1.png")
    f = ClickFilter(min_clicks=1, min_subjects=2)
    clicks_to_dataset(df, tmp_path / "imgs", tmp_path / "ds", filter=f, resize=None, crop=None)
    inside = tmp_path / "ds" / "test" / "images"
    before = sorted(p.read_bytes() for p in inside.iterdir())
    with pytest.raises(FileExistsError, match="inside .*the split this would replace"):
        clicks_to_dataset(df.assign(image="p1.png"), inside, tmp_path / "ds", filter=f, resize=None, crop=None)
    assert sorted(p.read_bytes() for p in inside.iterdir()) == before  # nothing lost
    assert len(HarmoniaDataset(tmp_path / "ds")) == 1
    # another split of the same dataset may read them
    clicks_to_dataset(df, inside, tmp_path / "ds", split="again", filter=f, resize=None, crop=None)


# ---------------------------------------------------------------------------- ceilings
def _blob_subjects(rng, centre, n, size=48, rate=0.08):
    yy, xx = np.mgrid[:size, :size]
    density = rate * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 40.0)
    return (rng.random((n, size, size)) < density).astype(np.float32)


def test_ceiling_identical_subjects_is_one():
    rng = np.random.default_rng(0)
    one = _blob_subjects(rng, (20, 24), 1)
    subjects = np.repeat(one, 7, axis=0)
    assert split_half_ceiling(subjects, blur_size=5) == pytest.approx(1.0, abs=1e-9)
    assert split_half_ceiling(subjects, metric="dice", blur_size=5) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n,repeats", [(5, 3), (9, 2)])  # blur-then-average and average-then-blur paths
def test_split_half_matches_naive_description(n, repeats):
    from scipy.stats import spearmanr

    rng = np.random.default_rng(n)
    subjects = _blob_subjects(rng, (12, 14), n, size=28, rate=0.3)
    got = split_half_ceiling(subjects, blur_size=5, crop=24, repeats=repeats, seed=7)
    g = np.random.default_rng(7)
    m, scores = (n + 1) // 2, []
    for _ in range(repeats):  # shuffle, split, bootstrap each half to ceil(n/2), average, blur, crop, score
        perm = g.permutation(n)
        first, second = perm[: n // 2], perm[n // 2 :]
        halves = [subjects[h[g.integers(0, len(h), m)]].mean(0) for h in (first, second)]
        a, b = (_reference_blur(torch.from_numpy(h)[None], disk_kernel(5), 2)[0, 2:26, 2:26].float().numpy() for h in halves)
        scores.append(spearmanr(a.ravel(), b.ravel()).statistic)
    # Not bit-equal: FFT and direct convolution round differently, which can split a few
    # mathematically tied pixels; a wrong split, bootstrap or blur would be off by >> 1e-3.
    assert got == pytest.approx(np.mean(scores), abs=2e-4)


def test_ceiling_independent_noise_is_about_zero():
    rng = np.random.default_rng(1)
    data = {f"im{i}": rng.random((8, 32, 32)).astype(np.float32) for i in range(24)}
    res = dataset_ceiling(data, blur_size=3, crop=28, repeats=4)
    assert abs(res.ceiling.mean) < 0.05 and abs(res.floor.mean) < 0.05 and res.ceiling.n == 24
    # Without cropping, the zero-padded blur's dark rim is shared by both halves: a real, known bias.
    assert dataset_ceiling(data, blur_size=3, repeats=2).ceiling.mean > 0.2


def test_floor_below_ceiling_and_determinism():
    rng = np.random.default_rng(2)
    data = {f"im{i}": _blob_subjects(rng, rng.integers(8, 40, 2), int(rng.integers(6, 12))) for i in range(10)}
    res = dataset_ceiling(data, blur_size=7, repeats=5, seed=3, chunk_size=4)
    assert res.ceiling.mean > 0.5 and res.floor.mean < res.ceiling.mean - 0.3
    assert set(res.per_image) == set(data) and res.n_subjects["im0"] == len(data["im0"])
    again = dataset_ceiling(dict(reversed(list(data.items()))), blur_size=7, repeats=5, seed=3, chunk_size=4)
    assert again.per_image == res.per_image and again.per_image_floor == res.per_image_floor
    other = dataset_ceiling(data, blur_size=7, repeats=5, seed=4, chunk_size=4)
    assert other.per_image != res.per_image


def test_ceiling_needs_two_subjects_and_handles_nan():
    with pytest.raises(ValueError, match=">= 2"):
        split_half_ceiling(np.ones((1, 8, 8)))
    empty = {"a": np.zeros((4, 8, 8)), "b": np.zeros((4, 8, 8))}  # constant halves: Spearman NaN
    res = dataset_ceiling(empty, blur="none", repeats=2)
    assert res.ceiling.n == 0 and res.ceiling.n_nan == 2 and np.isnan(res.ceiling.mean)


def test_ceiling_store_cache_resume_and_ceiling_for(tmp_path):
    from harmonia.data import DatasetWriter, HarmoniaDataset
    from harmonia.store import ResultStore

    rng = np.random.default_rng(3)
    root = tmp_path / "ds"
    with DatasetWriter(root, "test", name="blobs", synthetic=True, description="SYNTHETIC") as w:
        for i in range(6):
            s = _blob_subjects(rng, rng.integers(10, 38, 2), 6)
            w.add(f"im{i}", np.zeros((48, 48, 3), np.uint8), s.mean(0), label=0, subjects=s)
    ds = HarmoniaDataset(root)
    store = ResultStore(tmp_path / "r.sqlite")
    first = run_ceiling(ds, store, repeats=3, chunk_size=3)
    assert not first.cached and store.get_run(first.key).status == "complete"
    assert store.get_run(first.key).aggregates["ceiling"]["n"] == 6
    assert run_ceiling(ds, store, repeats=3, chunk_size=3).cached
    # Interrupted run: drop one chunk's rows and mark partial; resuming recomputes them identically.
    key = first.key
    store._conn.execute("UPDATE runs SET status='partial' WHERE key=?", (key,))
    gone = sorted(first.result.per_image)[:1]
    store._conn.execute("DELETE FROM rows WHERE run_key=? AND item_id=?", (key, gone[0]))
    resumed = run_ceiling(ds, store, repeats=3, chunk_size=3)
    assert not resumed.cached and resumed.result.per_image == first.result.per_image
    # Evaluation's hook: the stored value for datasets with subjects, None without.
    assert ceiling_for(HarmoniaDataset(root, size=32), store=store, repeats=3, chunk_size=3) == pytest.approx(
        first.result.ceiling.mean)
    plain = tmp_path / "plain"
    with DatasetWriter(plain, "test", name="p", synthetic=True) as w:
        w.add("x", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.float32), label=0)
    assert ceiling_for(HarmoniaDataset(plain), store=store) is None


# --------------------------------------------------------------------------------- CLI
def test_cli_clicks_and_ceiling(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    rng = np.random.default_rng(4)
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"im{i}.png")
        cy, cx = rng.integers(8, 24, 2)
        for u in range(6):
            rows.append({"image_path": f"im{i}.png", "user_id": f"u{u}", "x": json.dumps((cx + rng.integers(-3, 4, 8)).tolist()),
                         "y": json.dumps((cy + rng.integers(-3, 4, 8)).tolist()), "acc": 1.0, "is_mobile": "False"})
    pd.DataFrame(rows).to_csv(tmp_path / "clicks.csv", index=False)
    runner = CliRunner()
    args = ["data", "clicks", str(tmp_path / "clicks.csv"), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "ds"),
            "--resize", "32", "--crop", "28", "--min-clicks", "2", "--min-subjects", "4"]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2 and "catch" in bad.output  # no catch column under the default names
    ok = runner.invoke(app, args + ["--col", "catch=acc"])
    assert ok.exit_code == 0, ok.output
    assert "wrote 4 images" in ok.output and "labels are -1" in ok.output
    store = str(tmp_path / "r.sqlite")
    res = runner.invoke(app, ["ceiling", "--data", str(tmp_path / "ds"), "--store", store, "--repeats", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "ceiling" in res.output and "floor" in res.output and "n=4" in res.output
    again = runner.invoke(app, ["ceiling", "--data", str(tmp_path / "ds"), "--store", store, "--repeats", "3", "--device", "cpu"])
    assert "(cached)" in again.output
    none = runner.invoke(app, ["ceiling", "--data", str(tmp_path / "nope")])
    assert none.exit_code == 2 and "error:" in none.output
