"""SVRT baselines: the models, one cell of a curve (cached), the taxonomy, the CLI."""

from __future__ import annotations

import pytest
import torch

from harmonia.challenges.svrt_baselines import (
    SAME_DIFFERENT, SPATIAL, SVRT_MODELS, FeatureAttention, SpatialAttention, efficiency_curves, taxonomy,
    taxonomy_png, train_cell,
)
from harmonia.store import ResultStore


def test_taxonomy_covers_the_23_problems_once():
    assert sorted(SAME_DIFFERENT + SPATIAL) == list(range(1, 24))


@pytest.mark.parametrize("spec,module", [("resnet:width=8", None), ("resnet_sa:width=8", SpatialAttention),
                                         ("resnet_fba:width=8", FeatureAttention)])
def test_models_random_init_with_attention_after_each_stage(spec, module):
    torch.manual_seed(0)
    net = SVRT_MODELS.from_spec(spec)
    found = [m for m in net.modules() if isinstance(m, (SpatialAttention, FeatureAttention))]
    assert len(found) == (0 if module is None else 4) and all(isinstance(m, module) for m in found)
    x = torch.rand(3, 1, 128, 128)
    out = net(x)
    assert out.shape == (3,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_bad_model_settings_are_refused():
    with pytest.raises(ValueError, match="attention"):
        SVRT_MODELS.from_spec("resnet:attention=global")
    with pytest.raises(ValueError, match="no setting"):
        SVRT_MODELS.from_spec("resnet_sa:attention=feature")


def test_a_curve_cell_learns_a_spatial_problem_and_is_cached(tmp_path):
    torch.set_num_threads(1)
    store = ResultStore(tmp_path / "r.sqlite")
    kw = dict(n_test=64, epochs=6, batch_size=16, lr=3e-3, seed=0)
    rows = efficiency_curves([4], ["resnet:width=8,downsample=2"], [160], store=store, **kw)
    assert rows[0]["cached"] is False and 0.0 <= rows[0]["test_accuracy"] <= 1.0
    assert rows[0]["train_accuracy"] > 0.5  # it fits its training set at least a little
    again = efficiency_curves([4], ["resnet:width=8,downsample=2"], [160], store=store, **kw)
    assert again[0]["cached"] is True and again[0]["test_accuracy"] == rows[0]["test_accuracy"]


def test_train_cell_is_deterministic():
    torch.set_num_threads(1)
    a = train_cell(1, "resnet:width=4,downsample=4", 16, n_test=16, epochs=1, batch_size=8)
    b = train_cell(1, "resnet:width=4,downsample=4", 16, n_test=16, epochs=1, batch_size=8)
    assert a["test_accuracy"] == b["test_accuracy"] and a["relation"] == "SD"


def test_taxonomy_separates_clusters_and_draws():
    rows = [{"problem": p, "model": "m", "n_train": n, "test_accuracy": a}
            for p, accs in {1: (.5, .52, .55), 20: (.5, .5, .6), 4: (.7, .9, .98), 11: (.8, .95, .99),
                            23: (.5, .51, .5)}.items()
            for n, a in zip((100, 400, 1600), accs)]
    t = taxonomy(rows)
    assert t["clusters"][4] == t["clusters"][11] == 1 and t["clusters"][1] == t["clusters"][20] == 0
    assert t["agreement"] == pytest.approx(0.8)  # 23 is spatial but hard here
    assert taxonomy_png(rows)[:4] == b"\x89PNG"


def test_cli_svrt_curves(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    r = CliRunner().invoke(app, ["challenge", "svrt-curves", "--problem", "1", "--problem", "4", "--sizes", "8",
                                 "--epochs", "1", "--n-test", "10", "--model", "resnet:width=4,downsample=4",
                                 "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "curves.csv").exists() and (tmp_path / "o" / "taxonomy.png").exists()
    bad = CliRunner().invoke(app, ["challenge", "svrt-curves", "--problem", "24"])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_svrt_arrays_are_the_same_with_worker_processes():
    from harmonia.challenges.svrt_baselines import svrt_arrays

    a = svrt_arrays(14, range(300, 600), 0, 0)
    b = svrt_arrays(14, range(300, 600), 0, 2)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all() and a[1].sum() == 150
