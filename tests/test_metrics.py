"""harmonia.metrics against numpy / scipy references (no hard-coded expected scores)."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from harmonia.metrics import (
    CLICKME_CEILING,
    MapScorer,
    Summary,
    dice_top,
    downsample,
    gaussian_blur,
    gaussian_kernel2d,
    iou_top,
    normalize,
    prepare_maps,
    rank_average,
    spearman,
    summarize,
    top_mask,
)


def scipy_spearman(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning for the constant rows
        for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
            out.append(stats.spearmanr(x, y).statistic)
    return np.asarray(out, dtype=np.float64)


def assert_same(ours: torch.Tensor, ref: np.ndarray, atol: float = 1e-6) -> None:
    ours = ours.cpu().numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, atol=atol, rtol=0, equal_nan=True)


def quantised(rng, shape, levels):
    """Smooth noise rounded to a few levels: large tie groups, like real saliency/click maps."""
    x = ndimage.gaussian_filter(rng.random(shape), sigma=(0,) + (2,) * (len(shape) - 1))
    x = (x - x.min()) / (x.max() - x.min())
    return np.round(x * (levels - 1))


# ---------------------------------------------------------------- ranks and Spearman


@pytest.mark.parametrize("kind", ["random", "ties", "ints"])
def test_rank_average_matches_scipy(kind):
    rng = np.random.default_rng(0)
    if kind == "random":
        x = rng.standard_normal((6, 101))
    elif kind == "ties":
        x = quantised(rng, (6, 101), levels=4)
    else:
        x = rng.integers(0, 3, (6, 101))
    ours = rank_average(torch.as_tensor(x))
    ref = stats.rankdata(x, method="average", axis=1)
    assert ours.dtype == torch.float64
    np.testing.assert_array_equal(ours.numpy(), ref)


def test_rank_average_constant_and_single_column():
    x = torch.tensor([[5.0, 5.0, 5.0], [1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(rank_average(x).numpy(), stats.rankdata(x.numpy(), axis=1))
    np.testing.assert_array_equal(rank_average(torch.ones(3, 1)).numpy(), np.ones((3, 1)))
    with pytest.raises(ValueError):
        rank_average(torch.ones(2, 3, 4))


def test_ranks_with_signed_zeros_negatives_and_float64():
    # -0.0 == 0.0 must tie (the CPU integer-key fast path must not split them).
    rng = np.random.default_rng(14)
    x = rng.choice([0.0, -0.0, 1.0, 2.5], size=(4, 40))
    np.testing.assert_array_equal(rank_average(torch.as_tensor(x)).numpy(), stats.rankdata(x, axis=1))
    x32 = torch.as_tensor(x, dtype=torch.float32)
    np.testing.assert_array_equal(rank_average(x32).numpy(), stats.rankdata(x32.numpy(), axis=1))
    y = rng.random((4, 40))
    assert_same(spearman(x, y), scipy_spearman(x, y))
    assert_same(spearman(x32, torch.as_tensor(y, dtype=torch.float32)), scipy_spearman(x32.numpy(), y.astype(np.float32)))
    # Mixed signs (generic float sort) with a NaN in one row.
    z = np.round(rng.standard_normal((3, 60)), 1)
    w = rng.standard_normal((3, 60))
    z[2, 5] = np.nan
    ours = spearman(z, w)
    assert math.isnan(float(ours[2]))
    assert_same(ours[:2], scipy_spearman(z[:2], w[:2]))


def test_spearman_random_and_tied_2d_maps():
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 12, 15)), rng.random((5, 12, 15))
    assert_same(spearman(torch.as_tensor(a), torch.as_tensor(b)), scipy_spearman(a, b))
    qa, qb = quantised(rng, (5, 20, 20), 3), quantised(rng, (5, 20, 20), 5)
    assert_same(spearman(torch.as_tensor(qa), torch.as_tensor(qb)), scipy_spearman(qa, qb))
    # Many exact zeros on one side, continuous values on the other.
    za = np.where(rng.random((5, 300)) < 0.8, 0.0, rng.random((5, 300)))
    zb = rng.random((5, 300))
    assert_same(spearman(za, zb), scipy_spearman(za, zb))


def test_spearman_partially_and_fully_constant_give_nan():
    rng = np.random.default_rng(2)
    a, b = quantised(rng, (6, 10, 10), 4), rng.random((6, 10, 10))
    a[1] = 0.0  # constant on the model side
    b[3] = 7.0  # constant on the human side
    a[5] = 2.0
    b[5] = 2.0  # both constant
    ours = spearman(torch.as_tensor(a), torch.as_tensor(b))
    ref = scipy_spearman(a, b)
    assert_same(ours, ref)
    assert torch.isnan(ours[[1, 3, 5]]).all() and not torch.isnan(ours[[0, 2, 4]]).any()
    assert torch.isnan(spearman(torch.ones(3, 4, 4), torch.zeros(3, 4, 4))).all()


def test_spearman_nan_input_gives_nan_for_that_pair_only():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 50)), rng.random((3, 50))
    a[1, 7] = np.nan
    ours = spearman(a, b)
    assert math.isnan(float(ours[1]))
    assert_same(ours[[0, 2]], scipy_spearman(a[[0, 2]], b[[0, 2]]))


def test_spearman_float32_numpy_1d_and_chunks():
    rng = np.random.default_rng(4)
    a = quantised(rng, (7, 16, 16), 6).astype(np.float32)
    b = (rng.random((7, 16, 16)) * 4).round().astype(np.float32)
    ref = scipy_spearman(a, b)
    ours32 = spearman(torch.from_numpy(a), torch.from_numpy(b))
    assert ours32.dtype == torch.float64 and ours32.shape == (7,)
    assert_same(ours32, ref)
    assert_same(spearman(a, b), ref)  # numpy in
    assert_same(spearman(torch.from_numpy(a).half(), torch.from_numpy(b)), ref)  # exact: small ints
    # Tiny chunks (one row per chunk) give the same answer as one chunk.
    assert_same(spearman(a, b, chunk_elements=1), ref)
    # A 1-D pair is one map.
    assert_same(spearman(a[0].ravel(), b[0].ravel()), ref[:1])


def test_spearman_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        spearman(torch.rand(2, 8, 8), torch.rand(2, 8, 9))
    with pytest.raises(ValueError, match="shape"):
        spearman(torch.rand(3, 10), torch.rand(2, 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_spearman_cuda_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = quantised(rng, (4, 32, 32), 5), rng.random((4, 32, 32))
    a[2] = 1.0
    ours = spearman(torch.as_tensor(a, device="cuda").float(), torch.as_tensor(b, device="cuda").float())
    assert ours.device.type == "cuda"
    assert_same(ours, scipy_spearman(a.astype(np.float32), b.astype(np.float32)))


# ---------------------------------------------------------------- top-q overlap


def numpy_overlap(a, b, q):
    dice, iou = [], []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        ma, mb = x > np.percentile(x, 100 * q), y > np.percentile(y, 100 * q)
        inter, union, total = (ma & mb).sum(), (ma | mb).sum(), ma.sum() + mb.sum()
        defined = ma.any() and mb.any()  # an empty mask (constant map) has no top pixels
        dice.append(2 * inter / total if defined else np.nan)
        iou.append(inter / union if defined else np.nan)
    return np.array(dice, dtype=np.float64), np.array(iou, dtype=np.float64)


@pytest.mark.parametrize("q", [0.9, 0.75, 0.5])
def test_top_mask_matches_numpy_percentile(q):
    rng = np.random.default_rng(6)
    maps = np.concatenate([rng.random((3, 13, 11)), quantised(rng, (3, 13, 11), 4)])
    ours = top_mask(torch.as_tensor(maps), q).numpy()
    ref = np.stack([m > np.quantile(m, q) for m in maps])
    np.testing.assert_array_equal(ours, ref)
    if q == 0.9:
        ref90 = np.stack([m > np.percentile(m, 90) for m in maps])
        np.testing.assert_array_equal(top_mask(torch.as_tensor(maps)).numpy(), ref90)


def test_dice_iou_match_numpy_reference():
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.random((4, 20, 20)), quantised(rng, (4, 20, 20), 5)]).astype(np.float32)
    b = np.concatenate([a[:2] + 0.3 * rng.random((2, 20, 20)), rng.random((6, 20, 20))]).astype(np.float32)
    a[6] = 1.0  # constant vs non-constant: one empty mask -> NaN (not a misleading 0)
    a[7] = 1.0
    b[7] = 3.0  # both constant: both masks empty -> NaN
    ref_dice, ref_iou = numpy_overlap(a.astype(np.float64), b.astype(np.float64), 0.9)
    assert_same(dice_top(torch.from_numpy(a), torch.from_numpy(b)), ref_dice, atol=1e-12)
    assert_same(iou_top(torch.from_numpy(a), torch.from_numpy(b)), ref_iou, atol=1e-12)
    assert math.isnan(float(dice_top(a, b)[6])) and math.isnan(float(iou_top(a, b)[7]))
    with pytest.raises(ValueError, match="shape"):
        dice_top(a, b[:, :10])


# ---------------------------------------------------------------- aggregates


def test_summarize_ignores_and_counts_nans():
    v = np.array([0.1, np.nan, 0.5, 0.3, np.nan, -0.2])
    s = summarize(torch.as_tensor(v))
    kept = v[~np.isnan(v)]
    assert isinstance(s, Summary) and s.n == 4 and s.n_nan == 2
    assert s.mean == pytest.approx(np.nanmean(v))
    assert s.std == pytest.approx(np.std(kept, ddof=1))
    assert s.sem == pytest.approx(stats.sem(kept))
    d = s.to_dict()
    assert set(d) == {"mean", "std", "sem", "n", "n_nan"} and d["n_nan"] == 2
    json.dumps(d)


def test_summarize_all_nan_and_single_value():
    s = summarize([float("nan")] * 3)
    assert math.isnan(s.mean) and s.n == 0 and s.n_nan == 3  # NaN, not 0
    one = summarize([0.25])
    assert one.mean == 0.25 and math.isnan(one.std) and one.n == 1
    empty = summarize([])
    assert math.isnan(empty.mean) and empty.n == 0 and empty.n_nan == 0


def test_normalize_and_ceiling():
    assert CLICKME_CEILING == pytest.approx(0.6575315343478081, abs=1e-5)
    assert normalize(0.3, CLICKME_CEILING) == pytest.approx(0.3 / 0.65753)
    t = normalize(torch.tensor([0.1, float("nan")]), 0.5)
    assert t[0] == pytest.approx(0.2) and torch.isnan(t[1])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            normalize(0.3, bad)


# ---------------------------------------------------------------- blur and down-sampling


def test_gaussian_kernel_matches_scipy_and_release_grid():
    # scipy's gaussian_filter of a delta (radius r) is its normalised kernel.
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    ref = ndimage.gaussian_filter(delta, 1.3, mode="constant", truncate=4 / 1.3)
    np.testing.assert_allclose(gaussian_kernel2d(9, 1.3).numpy(), ref, atol=1e-12)
    assert gaussian_kernel2d(10, 2.0).sum().item() == pytest.approx(1.0)
    # Odd sizes: both grids agree; size 10 in the release grid peaks at row 4, column 5.
    torch.testing.assert_close(gaussian_kernel2d(7, 2.0, grid="release"), gaussian_kernel2d(7, 2.0))
    k = gaussian_kernel2d(10, 3.0, grid="release")
    assert divmod(int(k.argmax()), 10) == (4, 5)
    k_centred = gaussian_kernel2d(10, 3.0)
    torch.testing.assert_close(k_centred, k_centred.flip(0).flip(1))


@pytest.mark.parametrize("sigma,size", [(1.5, 24), (4.0, 8)])
def test_reflect_blur_matches_scipy_and_preserves_mass(sigma, size):
    rng = np.random.default_rng(8)
    maps = rng.random((3, size, size + 3))
    ours = gaussian_blur(torch.as_tensor(maps), sigma)
    r = math.ceil(3 * sigma)  # default kernel 2r+1; (4.0, 8) pads 12 > 8: multiple folds
    ref = np.stack([ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=r / sigma) for m in maps])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(ours.sum((1, 2)).numpy(), maps.sum((1, 2)), rtol=1e-12)
    # float32 in, float32 out, mass still preserved to float precision.
    out32 = gaussian_blur(torch.as_tensor(maps, dtype=torch.float32), sigma)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.sum((1, 2)).numpy(), maps.sum((1, 2)), rtol=1e-5)


def test_zero_padding_blur_matches_scipy_constant_mode():
    rng = np.random.default_rng(9)
    maps = rng.random((2, 15, 12))
    ours = gaussian_blur(torch.as_tensor(maps), 1.0, kernel_size=5, padding="zeros")
    ref = np.stack([ndimage.gaussian_filter(m, 1.0, mode="constant", truncate=2.0) for m in maps])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(torch.as_tensor(maps), 1.0, kernel_size=4, padding="reflect")
    with pytest.raises(ValueError, match="padding"):
        gaussian_blur(torch.as_tensor(maps), 1.0, padding="wrap")


@pytest.mark.parametrize("k", [4, 10, 5])
def test_tf_same_padding_offsets_on_a_delta(k):
    h, r, c = 20, 9, 11
    delta = torch.zeros(1, h, h, dtype=torch.float64)
    delta[0, r, c] = 1.0
    out = gaussian_blur(delta, sigma=3.0, kernel_size=k, padding="tf_same", grid="release")[0]
    before, after = (k - 1) // 2, k // 2
    rows, cols = torch.nonzero(out, as_tuple=True)
    # Cross-correlation: the delta at p reaches outputs p - after .. p + before.
    assert (int(rows.min()), int(rows.max())) == (r - after, r + before)
    assert (int(cols.min()), int(cols.max())) == (c - after, c + before)
    kernel = gaussian_kernel2d(k, 3.0, grid="release")
    # out[p - u + before] = kernel[u]: the window is the kernel flipped.
    window = out[r - after:r + before + 1, c - after:c + before + 1]
    torch.testing.assert_close(window, kernel.flip(0).flip(1))
    # Zero-padding SAME reference: scipy correlate with the even kernel's origin shifted.
    rng = np.random.default_rng(10)
    m = rng.random((h, h + 1))
    shift = -1 if k % 2 == 0 else 0  # scipy centres an even kernel at k//2; TF at (k-1)//2
    ref = ndimage.correlate(m, kernel.numpy(), mode="constant", origin=shift)
    ours = gaussian_blur(torch.as_tensor(m)[None], 3.0, kernel_size=k, padding="tf_same", grid="release")[0]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_downsample_and_prepare_maps():
    rng = np.random.default_rng(11)
    maps = rng.random((2, 16, 24))
    ref = maps.reshape(2, 4, 4, 6, 4).mean((2, 4))
    np.testing.assert_allclose(downsample(torch.as_tensor(maps), 4).numpy(), ref, atol=1e-12)
    assert downsample(torch.as_tensor(maps), 5).shape == (2, 4, 5)  # ceil(16/5), ceil(24/5)
    assert torch.equal(downsample(torch.as_tensor(maps), 1), torch.as_tensor(maps))
    with pytest.raises(ValueError):
        downsample(torch.as_tensor(maps), 0)
    both = prepare_maps(maps, blur_sigma=1.0, downsample_factor=2)
    torch.testing.assert_close(both, downsample(gaussian_blur(torch.as_tensor(maps), 1.0), 2))
    torch.testing.assert_close(prepare_maps(maps), torch.as_tensor(maps))


# ---------------------------------------------------------------- scorer


def test_scorer_shapes_values_and_config():
    rng = np.random.default_rng(12)
    model = torch.as_tensor(rng.random((5, 24, 24)), dtype=torch.float32)
    human = torch.as_tensor(quantised(rng, (5, 24, 24), 6), dtype=torch.float32)
    human[2] = 0.0
    scores = MapScorer()(model, human)
    assert set(scores) == {"spearman", "dice", "iou"}
    assert all(v.shape == (5,) for v in scores.values())
    assert_same(scores["spearman"], scipy_spearman(model.numpy(), human.numpy()))
    ref_dice, ref_iou = numpy_overlap(model.double().numpy(), human.double().numpy(), 0.9)
    assert_same(scores["dice"], ref_dice, atol=1e-12)
    assert_same(scores["iou"], ref_iou, atol=1e-12)

    s = MapScorer(metrics=("spearman",), blur_sigma=1.0, downsample=2)
    prepared = prepare_maps(model, 1.0, 2), prepare_maps(human, 1.0, 2)
    torch.testing.assert_close(s(model, human)["spearman"], spearman(*prepared), equal_nan=True)
    cfg = s.config()
    assert json.loads(json.dumps(cfg)) == cfg and cfg["blur_sigma"] == 1.0
    assert MapScorer().config() != cfg


def test_scorer_resizes_model_maps_to_human_size():
    rng = np.random.default_rng(13)
    human = torch.as_tensor(rng.random((3, 16, 16)), dtype=torch.float32)
    small = torch.nn.functional.avg_pool2d(human[:, None], 2)[:, 0]  # 8 x 8
    scores = MapScorer(metrics=("spearman",))(small, human)["spearman"]
    assert scores.shape == (3,)
    up = torch.nn.functional.interpolate(small[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(scores, spearman(up, human))
    big = torch.nn.functional.interpolate(human[:, None], size=(32, 32), mode="nearest")[:, 0]
    assert MapScorer(metrics=("spearman",))(big, human)["spearman"].shape == (3,)
    with pytest.raises(ValueError, match="batch"):
        MapScorer()(torch.rand(2, 8, 8), torch.rand(3, 8, 8))


def test_scorer_unknown_metric_lists_valid_ones():
    with pytest.raises(ValueError, match="spearman, dice, iou"):
        MapScorer(metrics=("spearman", "auc"))
    with pytest.raises(ValueError):
        MapScorer(blur_sigma=-1.0)


# ---------------------------------------------------------------- statistics shared by the scores


@pytest.mark.parametrize("kind", ["random", "ties", "constant_nan", "negative_float64"])
def test_scores_from_stats_equal_direct_scores(kind):
    from harmonia.metrics import map_stats, overlap_from_stats, overlap_top, spearman_from_stats

    rng = np.random.default_rng(3)
    if kind == "random":
        a, b = rng.random((5, 20, 20)), rng.random((5, 20, 20))
    elif kind == "ties":
        a, b = quantised(rng, (5, 20, 20), 4), quantised(rng, (5, 20, 20), 6)
    elif kind == "constant_nan":
        a, b = quantised(rng, (5, 20, 20), 4), rng.random((5, 20, 20))
        a[1], b[2, 3, 4] = 2.0, np.nan
    else:
        a, b = rng.standard_normal((5, 20, 20)), rng.standard_normal((5, 20, 20))
        a[0, 0, 0] = -0.0
    dtype = torch.float64 if kind == "negative_float64" else torch.float32
    ta, tb = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
    sa, sb = map_stats(ta, q=0.9), map_stats(tb, q=0.9)
    # bit-identical to the direct functions, also after compaction (float32 ranks) and chunking
    for s in (sb, sb.compact(), map_stats(tb, q=0.9, chunk_elements=500)):
        torch.testing.assert_close(spearman_from_stats(sa, s), spearman(ta, tb), rtol=0, atol=0, equal_nan=True)
        for ours, ref in zip(overlap_from_stats(sa, s), overlap_top(ta, tb, 0.9)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)
    assert_same(spearman_from_stats(sa, sb), scipy_spearman(a, b))
    np.testing.assert_array_equal(sa.mask.view(5, 20, 20).numpy(), top_mask(ta, 0.9).numpy())


def test_scorer_with_precomputed_human_stats_is_identical():
    rng = np.random.default_rng(4)
    model, human = torch.rand(4, 32, 32), torch.tensor(quantised(rng, (4, 16, 16), 5), dtype=torch.float32)
    for scorer in (MapScorer(), MapScorer(metrics=("spearman",)), MapScorer(metrics=("iou",), q=0.8),
                   MapScorer(blur_sigma=1.0, downsample=2)):
        direct = scorer(model, human)
        cached = scorer(model, human, human_stats=scorer.human_stats(human).compact())
        assert list(cached) == list(scorer.metrics)
        for m in scorer.metrics:
            torch.testing.assert_close(cached[m], direct[m], rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="rows"):
        MapScorer()(model, human, human_stats=MapScorer().human_stats(human[:2]))


def test_map_stats_cache_scopes_budget_and_clear():
    from harmonia.metrics import MapStatsCache, map_stats

    maps = torch.rand(3, 8, 8)
    stats = map_stats(maps, q=0.9)
    row_bytes = stats.compact().row(0).nbytes
    cache = MapStatsCache(max_bytes=2 * row_bytes)  # room for two rows only
    cache.put("s1", ["a", "b", "c"], stats)
    assert len(cache) == 2 and cache.get("s1", ["c"]) is None  # full: the third row was not stored
    got = cache.get("s1", ["b", "a"])
    torch.testing.assert_close(got.centred.double(), stats.centred[[1, 0]], rtol=0, atol=0)
    assert torch.equal(got.mask, stats.mask[[1, 0]])
    assert cache.get("s2", ["a"]) is None  # another scope (other data or settings) never hits
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("s1", ["a"]) is None
    with pytest.raises(ValueError, match="ids"):
        cache.put("s1", ["a"], stats)


def test_sort_rows_threaded_path_equals_torch_sort():
    from harmonia.metrics.spearman import _sort_rows

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        keys = torch.randint(0, 1000, (7, 224 * 224), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
        values, order = _sort_rows(keys)  # 7 x 50176 > 2**18 elements: row blocks sorted in two threads
        ref = torch.sort(keys, dim=1).values
        assert torch.equal(values, ref.long()) and torch.equal(keys.gather(1, order), ref)
    finally:
        torch.set_num_threads(before)
