"""harmonia.neural: formats, readers, regressions vs scikit-learn, ceilings, and recovery of
a SYNTHETIC recording made from a known ground-truth network."""

import math

import numpy as np
import pytest
import torch
from scipy.io import savemat
from typer.testing import CliRunner

from harmonia.neural import (
    PLS,
    NeuralRecording,
    Ridge,
    extract_features,
    fold_score,
    ground_truth_model,
    kfold,
    leave_one_group_out,
    load_neural,
    load_recording,
    neural_predictivity,
    pairwise_neuron_ceiling,
    pearson_columns,
    read_arcaro,
    run_neural,
    save_recording,
    simulate_flat,
    simulate_spatial,
    spatial_benchmark,
    split_half_reliability,
    to_grid,
    write_arcaro_mat,
)
from harmonia.neural.regression import cross_validated_predictions
from harmonia.store import ResultStore


@pytest.fixture(scope="module")
def spatial_rec():
    return simulate_spatial(n_images=8, n_neurons=10, grid=(7, 7), layer="block3", reliability=0.8, seed=0)


@pytest.fixture(scope="module")
def flat_rec():
    return simulate_flat(n_stimuli=160, n_neurons=12, layer="block2", reliability=0.8, n_repeats=4, seed=0)


# -- formats and readers ---------------------------------------------------------------------


def test_own_format_round_trip(tmp_path, flat_rec):
    save_recording(flat_rec, tmp_path / "rec")
    back = load_recording(tmp_path / "rec")
    assert back.kind == "flat" and back.synthetic and back.meta["true_layer"] == "block2"
    np.testing.assert_array_equal(back.responses, flat_rec.responses)
    np.testing.assert_array_equal(back.repeats, flat_rec.repeats)
    np.testing.assert_allclose(back.images, flat_rec.images, atol=1e-6)  # 8-bit images survive PNG exactly
    assert back.stimulus_ids == flat_rec.stimulus_ids and back.neuroid_ids == flat_rec.neuroid_ids


def test_recording_validates_shapes():
    with pytest.raises(ValueError, match="responses"):
        NeuralRecording(np.zeros((2, 3, 4, 4)), np.zeros((3, 5)), ["a", "b"], list("abcde"))
    with pytest.raises(ValueError, match="repeats"):
        NeuralRecording(np.zeros((2, 3, 4, 4)), np.zeros((2, 1)), ["a", "b"], ["n"], repeats=np.zeros((1, 2, 1)))


def _tiny_mat(tmp_path, n_ch=4, n_img=2, nx=3, ny=2, T=20):
    from PIL import Image

    rf = np.random.default_rng(0).normal(size=(nx, ny, T, n_ch, n_img))
    (tmp_path / "stim").mkdir()
    names = np.empty((n_img, 1), dtype=object)
    for i in range(n_img):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "stim" / f"im{i}.png")
        names[i, 0] = f"im{i}"  # no extension, as some releases list them
    savemat(tmp_path / "d.mat", {"imageRF": rf, "UniqueNames": names})
    return rf


def test_published_layout_reader_window_axes_and_flip(tmp_path):
    rf = _tiny_mat(tmp_path)
    rec = read_arcaro(tmp_path / "d.mat", tmp_path / "stim", window=(5, 9))
    assert rec.kind == "spatial" and rec.responses.shape == (2, 4, 2, 3)  # image, channel, y, x
    expected = rf[:, :, 5:9].mean(2)  # x, y, channel, image
    for img, ch, y, x in [(0, 0, 0, 0), (1, 3, 1, 2), (0, 2, 1, 0)]:
        # flipped in x and y like the release's loader
        assert rec.responses[img, ch, y, x] == pytest.approx(expected[2 - x, 1 - y, ch, img], abs=1e-6)
    assert rec.stimulus_ids == ["im0", "im1"] and rec.images.shape == (2, 3, 8, 8)
    assert not rec.synthetic
    with pytest.raises(ValueError, match="window"):
        read_arcaro(tmp_path / "d.mat", tmp_path / "stim", window=(15, 30))


def test_preset_channel_split_follows_release_description(tmp_path):
    from PIL import Image

    d = tmp_path / "George"
    (d / "natural_test").mkdir(parents=True)
    rf = np.zeros((2, 2, 200, 63, 1))
    rf[:, :, :, :, 0] = np.arange(63)[None, None, None, :]  # each channel's value is its 0-based index
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "natural_test" / "a.png")
    names = np.empty((1, 1), dtype=object)
    names[0, 0] = "a.png"
    savemat(d / "george_060118_data.mat", {"imageRF": rf, "UniqueNames": names})
    ml = load_neural(tmp_path, preset="george-ml")
    pl = load_neural(tmp_path, preset="george-pl")
    # 1-based channels 33-63 are central IT and 1-32 posterior IT
    assert ml.neuroid_ids[0] == "ch33" and ml.neuroid_ids[-1] == "ch63" and len(ml.neuroid_ids) == 31
    assert pl.neuroid_ids[0] == "ch1" and pl.neuroid_ids[-1] == "ch32" and len(pl.neuroid_ids) == 32
    assert ml.responses[0, 0, 0, 0] == 32 and pl.responses[0, -1, 0, 0] == 31


def test_simulated_mat_round_trip(tmp_path, spatial_rec):
    write_arcaro_mat(spatial_rec, tmp_path / "sim.mat", tmp_path / "stimuli", window=(90, 130))
    back = load_neural(tmp_path / "sim.mat", window=(90, 130))
    np.testing.assert_allclose(back.responses, spatial_rec.responses, atol=1e-5)
    np.testing.assert_allclose(back.images, spatial_rec.images, atol=1e-6)
    assert back.synthetic
    other = load_neural(tmp_path / "sim.mat", window=(0, 40))  # baseline noise, not the maps
    assert np.abs(other.responses - spatial_rec.responses).max() > 0.1


# -- regressions -------------------------------------------------------------------------------


def _xy(n=120, p=30, k=8, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, p)) * g.uniform(0.5, 3, size=p) + 2.0
    Y = X[:, :6] @ g.normal(size=(6, k)) + g.normal(size=(n, k)) + 5.0
    return X, Y


@pytest.mark.parametrize("scale", [False, True])
def test_pls_matches_sklearn_predictions(scale):
    from sklearn.cross_decomposition import PLSRegression

    X, Y = _xy()
    ours = PLS(n_components=10, scale=scale).fit(torch.tensor(X[:100]), torch.tensor(Y[:100]))
    ref = PLSRegression(n_components=10, scale=scale, max_iter=5000, tol=1e-15).fit(X[:100], Y[:100])
    np.testing.assert_allclose(ours.predict(torch.tensor(X[100:])).numpy(), ref.predict(X[100:]), atol=1e-6)


def test_pls_and_ridge_scores_match_sklearn_on_same_folds():
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.linear_model import Ridge as SkRidge

    X, Y = _xy(n=150, p=40, k=10, seed=1)
    folds = kfold(len(X), 5, seed=3)
    for ours, ref in [(PLS(n_components=25), PLSRegression(n_components=25, scale=False)), (Ridge(alpha=2.0), SkRidge(alpha=2.0))]:
        pred = cross_validated_predictions(torch.tensor(X), torch.tensor(Y), folds, ours)
        sk = np.zeros_like(Y)
        for test in folds:
            train = np.setdiff1d(np.arange(len(X)), test)
            sk[test] = ref.fit(X[train], Y[train]).predict(X[test])
        r_ours = fold_score(torch.stack([pearson_columns(pred[t], torch.tensor(Y[t])) for t in folds]))
        r_sk = fold_score(torch.stack([pearson_columns(torch.tensor(sk[t]), torch.tensor(Y[t])) for t in folds]))
        assert abs(r_ours - r_sk) < 1e-3, (type(ours).__name__, r_ours, r_sk)
        if isinstance(ours, Ridge):
            np.testing.assert_allclose(pred.numpy(), sk, atol=1e-8)


def test_ridge_dual_form_matches_primal():
    X, Y = _xy(n=20, p=50, k=3)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    dual = Ridge(alpha=0.5).fit(Xt[:15], Yt[:15]).predict(Xt[15:])
    Xc = Xt[:15] - Xt[:15].mean(0)
    beta = torch.linalg.solve(Xc.T @ Xc + 0.5 * torch.eye(50, dtype=Xt.dtype), Xc.T @ (Yt[:15] - Yt[:15].mean(0)))
    np.testing.assert_allclose(dual.numpy(), ((Xt[15:] - Xt[:15].mean(0)) @ beta + Yt[:15].mean(0)).numpy(), atol=1e-8)


def test_folds_pearson_and_median():
    assert [f.tolist() for f in leave_one_group_out([1, 0, 1])] == [[1], [0, 2]]
    assert sorted(np.concatenate(kfold(11, 4, seed=2)).tolist()) == list(range(11))
    const = pearson_columns(torch.ones(5, 1, dtype=torch.float64), torch.arange(5.0, dtype=torch.float64)[:, None])
    assert torch.isnan(const).all()  # no variance is NaN, never 0
    assert fold_score(torch.tensor([[0.2, 0.4, float("nan")]], dtype=torch.float64)) == pytest.approx(0.3)


# -- ceilings ----------------------------------------------------------------------------------


def test_split_half_recovers_designed_reliability(flat_rec):
    rel = np.median(split_half_reliability(flat_rec.repeats))
    assert rel == pytest.approx(0.8, abs=0.05)


def test_pairwise_ceiling_uses_every_channel():
    m = np.random.default_rng(0).normal(size=(3, 5, 6, 6))
    m[:, 4] = 2 * m[:, 1] + 1  # only the *last* channel duplicates another: the release's loop misses it
    assert pairwise_neuron_ceiling(m) == pytest.approx(1.0)
    assert pairwise_neuron_ceiling(m[:, :4]) < 0.9


# -- features ----------------------------------------------------------------------------------


def test_one_forward_per_batch_and_projection():
    model = ground_truth_model(0)
    calls = []
    h = model.net.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(10, 3, 32, 32)
    f = extract_features(model, x, ["block1", "block2", "block3"], mode="flat", projection=50, batch_size=4)
    h.remove()
    assert len(calls) == 3  # ceil(10 / 4) forwards for all layers together
    assert {k: tuple(v.shape) for k, v in f.items()} == {"block1": (10, 50), "block2": (10, 50), "block3": (10, 50)}
    g = extract_features(model, x, ["block2"], mode="flat", projection=50, batch_size=7)
    torch.testing.assert_close(g["block2"], f["block2"], atol=1e-4, rtol=1e-4)  # fixed projection, batch-independent
    with pytest.raises(KeyError, match="nope"):
        extract_features(model, x, ["nope"])


def test_to_grid_groups_channels_and_block_averages():
    a = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    g = to_grid(a, (2, 2), max_channels=2)
    assert g.shape == (2, 2, 2, 2)
    assert g[0, 0, 0, 0] == pytest.approx(a[0, :2, :2, :2].mean().item())


# -- recovery on SYNTHETIC recordings ---------------------------------------------------------


def test_spatial_benchmark_ranks_true_layer_and_beats_unrelated_network(spatial_rec):
    true = spatial_benchmark(ground_truth_model(0), spatial_rec, n_components=10)
    other = spatial_benchmark(ground_truth_model(7), spatial_rec, n_components=10)
    scores = {l.layer: l.score for l in true.layers}
    assert max(scores, key=scores.get) == "block3"
    assert true.best.score > other.best.score + 0.1
    assert true.best.map_spearman > other.best.map_spearman
    assert true.ceiling == pytest.approx(pairwise_neuron_ceiling(spatial_rec.responses))
    assert true.best.ceiled == pytest.approx(true.best.score / true.ceiling)


def test_predictivity_ranks_true_layer_and_recovers_ceiling(flat_rec):
    kw = dict(regression="ridge", alpha=0.01, pool=2, folds=4)
    true = neural_predictivity(ground_truth_model(0), flat_rec, **kw)
    other = neural_predictivity(ground_truth_model(7), flat_rec, **kw)
    assert true.best.layer == "block2"
    assert true.ceiling == pytest.approx(math.sqrt(0.8), abs=0.03)
    assert true.best.ceiled > 0.85  # a perfect read-out of the true layer reaches the noise ceiling
    assert true.best.score > other.best.score + 0.05
    pls = neural_predictivity(ground_truth_model(0), flat_rec, regression="pls", n_components=25, pool=2, folds=4)
    assert pls.best.layer == "block2"


def test_scores_are_deterministic_and_cached(tmp_path, spatial_rec):
    store = ResultStore(tmp_path / "r.sqlite")
    a, cached_a = run_neural(ground_truth_model(0), spatial_rec, store=store, n_components=5)
    b, cached_b = run_neural(ground_truth_model(0), spatial_rec, store=store, n_components=5)
    c, _ = run_neural(ground_truth_model(0), spatial_rec, n_components=5)
    assert (cached_a, cached_b) == (False, True)
    assert [l.score for l in a.layers] == pytest.approx([l.score for l in b.layers], abs=1e-12)
    assert [l.score for l in a.layers] == [l.score for l in c.layers]
    run = store.runs(kind="neural")[0]
    assert run.aggregates["best_layer"] == "block3" and run.meta["synthetic"] and run.n_rows == 4


# -- command line ------------------------------------------------------------------------------


def test_cli_simulates_scores_and_rejects_bad_input(tmp_path):
    from harmonia.cli.main import app

    runner = CliRunner()
    sim = tmp_path / "sim"
    assert runner.invoke(app, ["neural", "--make-sim", str(sim)]).exit_code == 0
    r = runner.invoke(app, ["neural", "-m", "simulated:0", "--data", str(sim / "spatial" / "sim_data.mat"),
                            "--components", "10", "--store", str(tmp_path / "s.sqlite"), "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    assert "* block3" in r.output and "SYNTHETIC" in r.output and (tmp_path / "p.png").stat().st_size > 1000
    r = runner.invoke(app, ["neural", "-m", "simulated:0", "--data", str(sim / "flat"), "--regression", "ridge",
                            "--alpha", "0.01", "--pool", "2", "--store", str(tmp_path / "s.sqlite"), "--plot", str(tmp_path / "q.png")])
    assert r.exit_code == 0, r.output
    assert "* block2" in r.output
    bad = runner.invoke(app, ["neural", "-m", "simulated:0", "--data", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "error:" in bad.output
    bad = runner.invoke(app, ["neural", "-m", "simulated:0", "--data", str(sim / "flat"), "--regression", "lasso"])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_count_sketch_projection_for_wide_layers_is_fixed_and_preserves_geometry():
    from harmonia.neural.features import _Projector

    x = torch.randn(30, 20000, generator=torch.Generator().manual_seed(0))
    a, b = _Projector(512, seed=3, dense_limit=10), _Projector(512, seed=3, dense_limit=10)
    ya = a("layer", x)
    assert not a.is_dense(20000) and not a.mats  # a sketch, re-drawn per batch, not a 20000 x 512 matrix
    torch.testing.assert_close(ya, b("layer", x))  # same seed and name, same projection (fresh object)
    gram_x, gram_y = (x @ x.T).flatten(), (ya @ ya.T).flatten()
    assert torch.corrcoef(torch.stack([gram_x, gram_y]))[0, 1] > 0.8


def test_default_layers_of_timm_and_plain_nets():
    import timm

    from harmonia.neural import default_layers
    from harmonia.neural.simulate import GroundTruthNet

    assert default_layers(timm.create_model("resnet10t", pretrained=False))[-4:] == ["layer1", "layer2", "layer3", "layer4"]
    assert default_layers(GroundTruthNet()) == ["block1", "block2", "block3", "block4"]


@pytest.mark.parametrize("module", ["brainscore", "ceiling", "data", "features", "reduce", "regression", "run", "score", "simulate"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(f"harmonia.neural.{module}"))
    assert res.failed == 0 and res.attempted > 0


def test_spatial_repeats_give_split_half_reliability():
    rec = simulate_spatial(n_images=6, n_neurons=6, grid=(7, 7), layer="block2", reliability=0.7, n_repeats=4, seed=1)
    assert rec.repeats.shape == (4, 6, 6, 7, 7)
    res = spatial_benchmark(ground_truth_model(0), rec, layers=["block2"], n_components=5)
    assert res.reliability == pytest.approx(0.7, abs=0.06)
    assert math.isnan(spatial_benchmark(ground_truth_model(0), simulate_spatial(n_images=3, n_neurons=2, grid=(5, 5)),
                                        layers=["block2"], n_components=2).reliability)


# -- Brain-Score public assemblies (netCDF-4, brainio's NeuroidAssembly layout) -------------------


def _write_brainio_assembly(path, data, presentation, neuroid, time_bins=None, attrs=None, dims=None, var="data"):
    """Write ``data`` exactly as brainio's write_netcdf does: MultiIndex per dim, reset_index
    (levels become plain coordinate variables), dataset variable 'data', zlib level 1."""
    import xarray as xr

    dims = dims or ["neuroid", "presentation"] + (["time_bin"] if time_bins is not None else [])
    coords = {k: ("presentation", v) for k, v in presentation.items()}
    coords.update({k: ("neuroid", v) for k, v in neuroid.items()})
    if time_bins is not None:
        coords.update(time_bin_start=("time_bin", [a for a, _ in time_bins]), time_bin_end=("time_bin", [b for _, b in time_bins]))
    da = xr.DataArray(data, dims=dims, coords=coords)
    index = {"presentation": list(presentation), "neuroid": list(neuroid)}
    if time_bins is not None:
        index["time_bin"] = ["time_bin_start", "time_bin_end"]
    da = da.set_index(**{d: v for d, v in index.items() if d in dims})
    if len(presentation) > 1:
        assert isinstance(da.indexes["presentation"], __import__("pandas").MultiIndex)  # the multi-index brainio holds
    da = da.reset_index(list(da.indexes))
    ds = da.to_dataset(name=var)
    ds.attrs.update({"identifier": "test.Toy2020", "stimulus_set_identifier": "test.toy", **(attrs or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf", encoding={v: {"zlib": True, "complevel": 1} for v in ds.variables})


def _stimulus_set(folder, ids, zipped=True, id_col="stimulus_id", stem="image_test_toy"):
    import io
    import zipfile

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = [f"{s}.png" for s in ids]
    blobs = {}
    for i, f in enumerate(files):
        buf = io.BytesIO()
        Image.fromarray(np.full((6, 6, 3), 30 * i, np.uint8)).save(buf, format="PNG")
        blobs[f] = buf.getvalue()
    if zipped:
        with zipfile.ZipFile(folder / f"{stem}.zip", "w") as zf:
            for f, b in blobs.items():
                zf.writestr(f, b)
    else:
        for f, b in blobs.items():
            (folder / f).write_bytes(b)
    (folder / f"{stem}.csv").write_text(f"{id_col},filename,object_name\n" + "".join(f"{s},{f},obj\n" for s, f in zip(ids, files)))


@pytest.fixture
def brainio_files(tmp_path):
    """4 stimuli x 3 repetitions (shuffled presentation order), 5 neuroids (2 V4, 3 IT), 3 time bins."""
    rng = np.random.default_rng(0)
    stim = ["s3", "s1", "s2", "s0"]  # order of first presentation
    pres = [(s, r) for r in (2, 0, 1) for s in stim]  # repetitions written out of order
    data = rng.normal(size=(5, len(pres), 3)).astype(np.float32)  # neuroid, presentation, time_bin
    nc = tmp_path / "assy_test_Toy2020" / "assy_test_Toy2020.nc"
    _write_brainio_assembly(
        nc, data,
        {"stimulus_id": [s for s, _ in pres], "repetition": [r for _, r in pres], "object_name": ["obj"] * len(pres)},
        {"neuroid_id": [f"n{i}" for i in range(5)], "region": ["V4", "V4", "IT", "IT", "IT"], "animal": ["a", "b", "a", "b", "a"]},
        time_bins=[(70, 90), (90, 110), (110, 130)],
    )
    _stimulus_set(tmp_path / "image_test_toy", sorted(stim))  # brainio's cache: a sibling folder with CSV + zip
    return nc, data, pres, stim


def test_brainscore_assembly_region_window_repetitions(brainio_files):
    nc, data, pres, stim = brainio_files
    rec = load_neural(nc, region="IT", window=(90, 130))
    assert rec.kind == "flat" and rec.stimulus_ids == stim and rec.neuroid_ids == ["n2", "n3", "n4"]
    windowed = data[2:, :, 1:3].mean(-1)  # IT neuroids, bins 90-110 and 110-130
    for i, s in enumerate(stim):
        cols = [j for j, (ps, _) in enumerate(pres) if ps == s]
        np.testing.assert_allclose(rec.responses[i], windowed[:, cols].mean(1), atol=1e-6)
        for r in range(3):  # repeats ordered by the repetition coord, not by file order
            j = pres.index((s, r))
            np.testing.assert_allclose(rec.repeats[r, i], windowed[:, j], atol=1e-6)
    assert rec.images.shape == (4, 3, 6, 6)
    assert rec.images[0, 0, 0, 0] == pytest.approx(30 * 3 / 255)  # s3 is the 4th file of the stimulus set
    assert rec.name == "test.Toy2020" and rec.meta["time_bins"] == [1, 2] and not rec.synthetic
    every = load_neural(nc)  # no region / window: all neuroids, all bins
    assert every.responses.shape == (4, 5)
    np.testing.assert_allclose(every.responses[0], data[:, [pres.index(("s3", r)) for r in range(3)]].mean((1, 2)), atol=1e-6)


def test_brainscore_legacy_image_id_folder_stimuli_and_no_time_bin(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(6, 2)  # presentation x neuroid, no time_bin
    _write_brainio_assembly(tmp_path / "a.nc", data, {"image_id": ["x", "y", "z"] * 2, "repetition": [0] * 3 + [1] * 3},
                            {"neuroid_id": ["u", "v"], "region": ["IT", "IT"]}, dims=["presentation", "neuroid"])
    _stimulus_set(tmp_path / "stim", ["z", "y", "x"], zipped=False, id_col="image_id", stem="legacy")
    rec = load_neural(tmp_path / "a.nc", stimuli=tmp_path / "stim" / "legacy.csv", region="IT")
    np.testing.assert_allclose(rec.responses, (data[:3] + data[3:]) / 2)
    assert rec.stimulus_ids == ["x", "y", "z"] and rec.repeats.shape == (2, 3, 2)
    with pytest.raises(ValueError, match="no time_bin"):
        load_neural(tmp_path / "a.nc", stimuli=tmp_path / "stim", window=(70, 170))
    assert load_neural(tmp_path / "a.nc", stimuli=tmp_path / "stim").neuroid_ids == ["u", "v"]  # the folder's CSV


def test_brainscore_reader_errors(tmp_path, brainio_files):
    nc, data, pres, stim = brainio_files
    with pytest.raises(ValueError, match="no neuroid in region 'V1'.*IT"):
        load_neural(nc, region="V1")
    with pytest.raises(ValueError, match="no time bin lies within 200-300 ms; bins: 70-90"):
        load_neural(nc, window=(200, 300))
    bad = tmp_path / "elsewhere" / "bad"  # no stimulus set in a sibling folder
    _write_brainio_assembly(bad / "nostim.nc", np.zeros((2, 3), np.float32), {"object_name": ["a", "b", "c"], "repetition": [0, 0, 0]},
                            {"neuroid_id": ["u", "v"], "region": ["IT", "IT"]})
    with pytest.raises(KeyError, match="stimulus_id.*object_name"):
        load_neural(bad / "nostim.nc")
    import xarray as xr

    xr.Dataset({"data": (("stimulus", "cell"), np.zeros((2, 2)))}).to_netcdf(bad / "dims.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="presentation x neuroid"):
        load_neural(bad / "dims.nc")
    _write_brainio_assembly(bad / "ok.nc", np.zeros((2, 3), np.float32), {"stimulus_id": ["a", "b", "c"], "repetition": [0, 0, 0]},
                            {"neuroid_id": ["u", "v"], "region": ["IT", "IT"]})
    with pytest.raises(FileNotFoundError, match="no StimulusSet CSV next to"):
        load_neural(bad / "ok.nc")
    _stimulus_set(tmp_path / "s2", ["a", "b"], zipped=False, stem="s")
    with pytest.raises(KeyError, match="1 of the assembly's 3 stimuli.*'c'"):
        load_neural(bad / "ok.nc", stimuli=tmp_path / "s2")
    _stimulus_set(tmp_path / "s3", ["a", "b", "c"], zipped=False, stem="s")
    (tmp_path / "s3" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="'b.png'"):
        load_neural(bad / "ok.nc", stimuli=tmp_path / "s3" / "s.csv")
    (bad / "junk.nc").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a netCDF-4"):
        load_neural(bad / "junk.nc")


def test_brainscore_cli_finds_stimuli_and_scores(tmp_path, flat_rec):
    from harmonia.cli.main import app
    from harmonia.neural import write_brainscore_assembly

    nc = tmp_path / "assy_x" / "assy_x.nc"
    write_brainscore_assembly(flat_rec, nc, region="IT")
    back = load_neural(nc, region="IT", window=(70, 170))
    np.testing.assert_allclose(back.responses, flat_rec.responses, atol=1e-5)  # repetitions averaged back
    np.testing.assert_array_equal(back.repeats, flat_rec.repeats)
    assert back.synthetic
    common = ["neural", "-m", "simulated:0", "--data", str(nc), "--store", str(tmp_path / "s.sqlite"), "--plot", str(tmp_path / "p.png")]
    r = CliRunner().invoke(app, common + ["--region", "IT", "--window", "70,170", "--pool", "2", "--regression", "ridge",
                                          "--alpha", "cv:0.001,0.01,0.1", "--reduce", "pca:40"])
    assert r.exit_code == 0, r.output
    assert "* block2" in r.output and "SYNTHETIC" in r.output
    for extra, msg in [(["--region", "V1"], "no neuroid in region"), (["--window", "0,50"], "no time bin"),
                       (["--reduce", "pca:x"], "--reduce"), (["--alpha", "cv:a"], "--alpha"),
                       (["--stimuli", str(tmp_path / "none.csv")], "not found")]:
        bad = CliRunner().invoke(app, common + extra)
        assert bad.exit_code == 2 and "error:" in bad.output and msg in " ".join(bad.output.split()), (extra, bad.output)


# -- PCA and cross-validated ridge ---------------------------------------------------------------


@pytest.mark.parametrize("n,p", [(40, 120), (120, 25)])  # Gram (n <= p) and covariance paths
def test_pca_matches_sklearn_up_to_sign(n, p):
    from sklearn.decomposition import PCA as SkPCA

    from harmonia.neural import PCA

    g = np.random.default_rng(0)
    X = g.normal(size=(n, p)) @ g.normal(size=(p, p)) + 3.0
    new = g.normal(size=(9, p)) @ g.normal(size=(p, p))
    ours = PCA(15).fit(torch.tensor(X))
    ref = SkPCA(15).fit(X)
    a, b = ours.transform(torch.tensor(new)).numpy(), ref.transform(new)
    np.testing.assert_allclose(a, b * np.sign((a * b).sum(0)), atol=1e-8)
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=1e-8)
    again = PCA(15).fit(torch.tensor(X)).transform(torch.tensor(new)).numpy()
    np.testing.assert_array_equal(a, again)  # deterministic signs


def test_predictivity_with_pca_fitted_on_stimuli_or_separate_images(flat_rec):
    from harmonia.neural.simulate import synthetic_images

    kw = dict(regression="ridge", alpha=0.01, pool=2, folds=4, layers=["block1", "block2", "block3"])
    res = neural_predictivity(ground_truth_model(0), flat_rec, pca=60, **kw)
    assert res.best.layer == "block2" and all(l.n_features == 60 for l in res.layers)
    assert res.settings["pca"] == 60 and res.settings["pca_fit"] == "stimuli"
    other = synthetic_images(100, seed=5)
    sep = neural_predictivity(ground_truth_model(0), flat_rec, pca=60, pca_images=other, **kw)
    assert sep.best.layer == "block2" and sep.settings["pca_fit"] == "100 separate images"
    assert [l.score for l in sep.layers] != [l.score for l in res.layers]
    # responses never enter the PCA: permuting them leaves the reduced features, hence the fit basis, unchanged
    feats = extract_features(ground_truth_model(0), torch.from_numpy(flat_rec.images), ["block2"], pool=2)
    from harmonia.neural import pca_reduce

    z1 = pca_reduce(dict(feats), 10)["block2"]
    z2 = pca_reduce(dict(feats), 10, fit={"block2": feats["block2"]})["block2"]
    torch.testing.assert_close(z1, z2)


def test_ridge_cv_matches_brute_force_sklearn_grid_search():
    from sklearn.linear_model import Ridge as SkRidge

    from harmonia.neural import RidgeCV
    from harmonia.neural.regression import ridge_path_mse

    alphas = [1e-3, 1e-1, 1.0, 10.0, 100.0, 1e4]
    for n, p in [(90, 20), (60, 150)]:  # primal and dual paths
        X, Y = _xy(n=n, p=p, k=5, seed=2)
        Y = Y + 8.0 * np.random.default_rng(3).normal(size=Y.shape)  # noisy: a middle alpha wins
        inner = kfold(n, 5, seed=0)
        brute = []
        for a in alphas:
            mse = []
            for test in inner:
                train = np.setdiff1d(np.arange(n), test)
                pred = SkRidge(alpha=a).fit(X[train], Y[train]).predict(X[test])
                mse.append(((pred - Y[test]) ** 2).mean())
            brute.append(np.mean(mse))
        np.testing.assert_allclose(ridge_path_mse(torch.tensor(X), torch.tensor(Y), inner, alphas).numpy(), brute, rtol=1e-8)
        m = RidgeCV(alphas=alphas).fit(torch.tensor(X), torch.tensor(Y))
        assert m.alpha_ == alphas[int(np.argmin(brute))]
        np.testing.assert_allclose(m.predict(torch.tensor(X[:5])).numpy(),
                                   SkRidge(alpha=m.alpha_).fit(X, Y).predict(X[:5]), atol=1e-8)


def test_ridge_cv_is_nested_inside_outer_folds():
    from harmonia.neural import RidgeCV

    X, Y = _xy(n=100, p=30, k=4, seed=4)
    outer = kfold(100, 4, seed=1)
    ours = cross_validated_predictions(torch.tensor(X), torch.tensor(Y), outer, RidgeCV(alphas=(0.01, 1.0, 100.0)))
    for test in outer:  # each outer fold's alpha is chosen on its training rows only
        train = np.setdiff1d(np.arange(100), test)
        inner = RidgeCV(alphas=(0.01, 1.0, 100.0)).fit(torch.tensor(X[train]), torch.tensor(Y[train]))
        np.testing.assert_allclose(ours[test].numpy(), inner.predict(torch.tensor(X[test])).numpy(), atol=1e-10)


def test_ridge_cv_blocks_keep_images_together_in_spatial_benchmark(spatial_rec):
    from harmonia.neural import RidgeCV
    from harmonia.neural.regression import ridge_path_mse

    X, Y = _xy(n=40, p=12, k=3, seed=5)
    alphas = (0.01, 1.0, 100.0, 1e4)
    m = RidgeCV(alphas=alphas, block=5).fit(torch.tensor(X), torch.tensor(Y))
    blocks = kfold(8, 5, seed=0)  # 8 blocks of 5 consecutive rows, split like images
    folds = [np.concatenate([np.arange(b * 5, b * 5 + 5) for b in f]) for f in blocks]
    torch.testing.assert_close(m.cv_mse, ridge_path_mse(torch.tensor(X), torch.tensor(Y), folds, alphas))
    res = spatial_benchmark(ground_truth_model(0), spatial_rec, regression="ridge", alphas=[0.1, 10.0, 1000.0])
    assert res.best.layer == "block3" and res.settings["alphas"] == [0.1, 10.0, 1000.0]
