import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from harmonia.attribution import GradCAM, Saliency
from harmonia.data import HarmoniaDataset
from harmonia.evaluation import Ceiling, evaluate, resolve_ceiling
from harmonia.metrics import CLICKME_CEILING
from harmonia.store import ResultStore


def test_scores_match_a_direct_computation(tiny_model, tiny_dataset):
    ds = HarmoniaDataset(tiny_dataset)
    res = evaluate(tiny_model, ds, Saliency(reducer="max_abs"), batch_size=4, ceiling=0.5)
    assert len(res.rows) == len(ds)
    # recompute image 0 by hand: |d logit_label / dx| max over channels, Spearman with scipy
    item = ds[0]
    x = item["image"][None].clone().requires_grad_(True)
    tiny_model(x)[0, item["label"]].backward()
    m = x.grad[0].abs().amax(0).numpy().ravel()
    expected = spearmanr(m, item["map"].numpy().ravel()).statistic
    row = next(r for r in res.rows if r["image_id"] == item["id"])
    assert row["spearman"] == pytest.approx(expected, abs=1e-6)
    # the constant human map gives NaN, counted, not zeroed
    a = res.aggregates
    assert a["spearman"]["n_nan"] == 1 and a["spearman"]["n"] == len(ds) - 1
    finite = [r["spearman"] for r in res.rows if not math.isnan(r["spearman"])]
    assert a["spearman"]["mean"] == pytest.approx(np.mean(finite))
    assert a["alignment"] == pytest.approx(a["spearman"]["mean"] / 0.5)
    assert a["accuracy"] == pytest.approx(np.mean([r["correct"] for r in res.rows]))


def test_cache_hit_and_content_keys(tiny_model, tiny_dataset, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    ds = HarmoniaDataset(tiny_dataset)
    first = evaluate(tiny_model, ds, store=store, batch_size=4)
    again = evaluate(tiny_model, ds, store=store, batch_size=4)
    assert not first.cached and again.cached and again.key == first.key
    assert [r["spearman"] for r in again.rows] == pytest.approx([r["spearman"] for r in first.rows], nan_ok=True)
    # a different input size, different weights, another explainer or resized data: new keys
    tiny_model.preprocessing = type(tiny_model.preprocessing)(input_size=(48, 48))
    tiny_model.invalidate_fingerprint()
    assert evaluate(tiny_model, ds, store=store, batch_size=4).key != first.key
    with torch.no_grad():
        tiny_model.net.head[2].bias.add_(1.0)
    tiny_model.invalidate_fingerprint()
    k3 = evaluate(tiny_model, ds, store=store, batch_size=4).key
    assert k3 != first.key
    assert evaluate(tiny_model, ds, GradCAM(), store=store, batch_size=4).key != k3
    assert evaluate(tiny_model, HarmoniaDataset(tiny_dataset, size=16), store=store, batch_size=4).key != k3


def test_data_change_is_a_new_key(tiny_model, tiny_dataset, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    k1 = evaluate(tiny_model, HarmoniaDataset(tiny_dataset), store=store).key
    p = tiny_dataset / "test" / "maps" / "im000.npy"
    np.save(p, np.load(p) * 2 + 1)
    assert evaluate(tiny_model, HarmoniaDataset(tiny_dataset), store=store).key != k1


def test_interrupted_run_resumes(tiny_model, tiny_dataset, tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    ds = HarmoniaDataset(tiny_dataset)
    calls = []

    def crash_after_first_batch(done, total):
        calls.append(done)
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny_model, ds, store=store, batch_size=4, progress=crash_after_first_batch)
    key = store.runs()[0].key
    assert store.get_run(key).status == "partial" and len(store.done_ids(key)) == 4
    seen = []
    resumed = evaluate(tiny_model, ds, store=store, batch_size=4, progress=lambda d, t: seen.append(d))
    assert seen[0] == 4 and seen[-1] == len(ds)  # started from the committed images
    fresh = evaluate(tiny_model, ds, batch_size=4)
    by_id = {r["image_id"]: r["spearman"] for r in fresh.rows}
    assert {r["image_id"]: r["spearman"] for r in resumed.rows} == pytest.approx(by_id, nan_ok=True)


def test_predicted_targets_and_bad_mode(tiny_model, tiny_dataset):
    ds = HarmoniaDataset(tiny_dataset)
    res = evaluate(tiny_model, ds, targets="predicted")
    assert all(r["target"] == r["pred"] for r in res.rows)
    with pytest.raises(ValueError, match="targets"):
        evaluate(tiny_model, ds, targets="nope")


def test_ceiling_resolution(tiny_dataset, tmp_path):
    from tests.conftest import write_tiny_dataset

    ds = HarmoniaDataset(tiny_dataset)
    assert resolve_ceiling(ds, "auto").value == CLICKME_CEILING
    assert resolve_ceiling(ds, "0.5") == Ceiling(0.5, "user")
    assert resolve_ceiling(ds, "none") is None
    with pytest.raises(ValueError, match="ceiling"):
        resolve_ceiling(ds, "high")
    subj = HarmoniaDataset(write_tiny_dataset(tmp_path / "s", n=6, subjects=4))
    c = resolve_ceiling(subj, "auto")
    assert "computed" in c.source and 0.5 < c.value <= 1.0


def test_human_stats_cache_is_reused_and_invalidated(tiny_model, tiny_dataset, tmp_path):
    from harmonia.metrics import MapScorer, MapStatsCache

    store = ResultStore(tmp_path / "r.sqlite")
    cache = MapStatsCache()
    ds = HarmoniaDataset(tiny_dataset)
    plain = evaluate(tiny_model, ds, batch_size=4, human_cache=False)
    first = evaluate(tiny_model, ds, store=store, batch_size=4, human_cache=cache)
    assert len(cache) == len(ds) and cache.hits == 0
    # another model on the same data reuses the human statistics; scores are unchanged
    again = evaluate(tiny_model, ds, store=store, batch_size=4, human_cache=cache, recompute=True)
    assert cache.hits == 3 and len(cache) == len(ds)
    by_id = {r["image_id"]: r["spearman"] for r in plain.rows}
    for res in (first, again):
        assert {r["image_id"]: r["spearman"] for r in res.rows} == pytest.approx(by_id, nan_ok=True, abs=0)
        assert {r["image_id"]: r["dice"] for r in res.rows} == pytest.approx(
            {r["image_id"]: r["dice"] for r in plain.rows}, nan_ok=True, abs=0)
    # other scorer settings (map preparation), other reading settings, changed data: new entries
    evaluate(tiny_model, ds, scorer=MapScorer(blur_sigma=1.0), store=store, batch_size=4, human_cache=cache)
    assert len(cache) == 2 * len(ds)
    evaluate(tiny_model, HarmoniaDataset(tiny_dataset, size=16), store=store, batch_size=4, human_cache=cache)
    assert len(cache) == 3 * len(ds)
    p = tiny_dataset / "test" / "maps" / "im001.npy"
    np.save(p, np.load(p)[::-1].copy())  # the same values elsewhere: other ranks
    changed = evaluate(tiny_model, HarmoniaDataset(tiny_dataset), store=store, batch_size=4, human_cache=cache)
    assert len(cache) == 4 * len(ds)
    fresh = evaluate(tiny_model, HarmoniaDataset(tiny_dataset), batch_size=4, human_cache=False)
    assert [r["spearman"] for r in changed.rows] == pytest.approx([r["spearman"] for r in fresh.rows], nan_ok=True, abs=0)
    # without a store there is no content fingerprint: the cache is not used at all
    n = len(cache)
    evaluate(tiny_model, ds, batch_size=4, human_cache=cache)
    assert len(cache) == n


def test_clickme_uint8_output_evaluates_like_float32(tiny_model, tmp_path):
    from harmonia.data import ClickMeDataset, ClickMeIndexedDataset, ClickMePreprocess
    from tests.test_clickme import _write_harmonization

    _write_harmonization(tmp_path / "val-0.tfrecords", 3)  # labels 0..2: the tiny model's classes
    _write_harmonization(tmp_path / "val-1.tfrecords", 3, seed=1)
    pre = ClickMePreprocess(image_size=32, blur_resolution=16)
    ref = evaluate(tiny_model, ClickMeIndexedDataset(tmp_path, preprocess=pre), batch_size=4)
    fast = evaluate(tiny_model, ClickMeIndexedDataset(tmp_path, preprocess=pre, output="uint8"), batch_size=4)
    assert len(fast.rows) == 6
    for m in ("spearman", "dice", "iou"):
        assert [r[m] for r in fast.rows] == pytest.approx([r[m] for r in ref.rows], abs=1e-5, nan_ok=True)
    assert [r["pred"] for r in fast.rows] == [r["pred"] for r in ref.rows]
    assert ClickMeDataset(tmp_path, output="uint8").config()["output"] == "uint8"
