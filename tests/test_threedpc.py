"""3D-PC: readers on both layouts, the published probe on SYNTHETIC scenes, its cache, the tables."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from harmonia.challenges.threedpc.data import open_split, read_parquet, read_release
from harmonia.challenges.threedpc.probe import ProbeConfig, linear_probe_3dpc
from harmonia.challenges.threedpc.scenes import ThreeDPCScenes, draw_scene, line_of_sight, release_to_parquet, write_release
from harmonia.models import load
from harmonia.store import ResultStore

SIZES = {"train": 64, "val": 32, "test": 64, "human": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tdpc")
    return write_release(root / "release", sizes={"train": 6, "val": 4, "test": 4, "human": 4}, size=32)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    m = load("efficientnet_lite0")
    # a small input keeps the CPU test fast; the protocol (short side -> input size) is unchanged
    m.preprocessing = dataclasses.replace(m.preprocessing, input_size=(128, 128))
    return m


def test_release_layout_reader(tiny):
    split = read_release(tiny, "perspective", "train")
    assert len(split) == 6 and split.labels.sum() == 3
    assert all(p.parent.name == str(l) for p, l in zip(split.paths, split.labels))
    assert split.image(0).mode == "RGB" and split.image(0).size == (32, 32)
    human = read_release(tiny, "depth", "human")
    with open(tiny / "depth" / "human.csv") as f:
        assert next(csv.reader(f)) == ["img_url", "perspective_label", "depth_label"]
    assert len(human) == 4
    assert open_split(tiny, "vpt-basic", "val").task == "perspective"


def test_reader_refuses_a_label_csv_that_disagrees(tiny, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(tiny, root)
    rows = (root / "depth" / "val.csv").read_text().splitlines()
    name, label = rows[1].split(",")
    rows[1] = f"{name},{1 - int(label)}"
    (root / "depth" / "val.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="label CSV says"):
        read_release(root, "depth", "val")
    with pytest.raises(FileNotFoundError, match="no 3D-PC split folder"):
        read_release(root, "depth", "nosuch")
    with pytest.raises(ValueError, match="unknown 3D-PC task"):
        read_release(root, "colour", "val")


def test_parquet_layout_reader_matches_release(tiny, tmp_path):
    hf = release_to_parquet(tiny, tmp_path / "hf")
    assert (hf / "vpt-basic" / "train-00000-of-00001.parquet").exists()
    a, b = read_release(tiny, "depth", "test"), read_parquet(hf, "depth", "test")
    assert b.layout == "parquet" and b.labels.tolist() == a.labels.tolist()
    np.testing.assert_array_equal(np.asarray(a.image(1)), np.asarray(b.image(1)))
    assert open_split(hf, "perspective", "train").layout == "parquet"
    with pytest.raises(FileNotFoundError, match="vpt-strategy"):
        read_parquet(hf, "vpt-strategy", "test")


def test_synthetic_labels_come_from_geometry():
    rng = np.random.default_rng(0)
    eye = np.array([0.0, 1.25, 0.0])
    assert not line_of_sight(eye, np.array([0.0, 0.2, 4.0]), np.array([0.0, 2.0]), 1.0)  # object in between
    assert line_of_sight(eye, np.array([0.0, 0.2, 4.0]), np.array([2.0, 2.0]), 1.0)  # object aside
    for _ in range(50):
        s = draw_scene(rng)
        ball, obj = np.array(s["ball"]), np.array([s["object_xz"][0], s["object_height"] / 2, s["object_xz"][1]])
        cam = np.array([0.0, 1.6, 0.0])
        assert s["depth_label"] == int(np.linalg.norm(ball - cam) < np.linalg.norm(obj - cam))
        assert s["perspective_label"] == int(s["view_angle_deg"] <= 60 and s["unoccluded"])
    gen = ThreeDPCScenes(task="perspective", size=32, length=40)
    labels = [gen[i]["label"] for i in range(40)]
    assert sum(labels) == 20 and all(gen[i]["meta"]["perspective_label"] == labels[i] for i in range(40))


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("probe")
    easy = write_release(d / "easy", sizes=SIZES, size=64, easy=True, tasks=("depth",))
    noise = write_release(d / "random", sizes=SIZES, size=64, easy=True, labels="random", tasks=("depth",))
    store = ResultStore(d / "r.sqlite")
    first = linear_probe_3dpc(model, easy, "depth", store=store)
    again = linear_probe_3dpc(model, easy, "depth", store=store)
    chance = linear_probe_3dpc(model, noise, "depth", store=store)
    return first, again, chance


def test_probe_solves_a_trivial_synthetic_task(probe_runs):
    first, _, _ = probe_runs
    assert first["protocol"] == "linear" and first["config"] == dataclasses.asdict(ProbeConfig())
    # depth from the ball's size (chance 0.5; 64 test images); measured 0.89 at this size
    assert first["accuracy"]["test"] >= 0.8, first["accuracy"]
    assert first["accuracy"]["val"] >= 0.8


def test_probe_is_at_chance_on_random_labels(probe_runs):
    _, _, chance = probe_runs
    # 64 test images: chance is 0.5 +- 0.125 (2 s.d.)
    assert abs(chance["accuracy"]["test"] - 0.5) <= 0.2, chance["accuracy"]


def test_probe_features_are_a_cache_hit(probe_runs):
    first, again, _ = probe_runs
    assert first["feature_cache_hits"] == 0 and not first["probe_cached"]
    assert again["feature_cache_hits"] == 4 and again["probe_cached"]
    assert again["accuracy"] == first["accuracy"]


def test_published_tables_reproduce_the_published_numbers():
    from harmonia.challenges.threedpc.tables import imagenet_top1, published, rank_among, scatter_png, summary

    # reference: LP VPT mean 50.9 / max 53.8, depth 67.0 / 80.3; FT VPT 63.9 / 86.1, depth 85.8 / 92.0;
    # Spearman with ImageNet top-1 0.37, 0.66, 0.65, 0.77
    expected = {("linear", "perspective"): (50.9, 53.8, 0.37), ("linear", "depth"): (67.0, 80.3, 0.66),
                ("finetune", "perspective"): (63.9, 86.1, 0.65), ("finetune", "depth"): (85.8, 92.0, 0.77)}
    for (protocol, task), (mean, top, rho) in expected.items():
        s = summary(protocol, task)
        assert abs(s["mean"] - mean) < 0.05 and abs(s["max"] - top) < 0.05 and abs(s["spearman_imagenet"] - rho) < 0.005
    assert published("finetune").shape[1] == 6
    assert imagenet_top1("timm:resnet50.a3_in1k") == 78.048 and imagenet_top1("no_such_net") is None
    assert rank_among("linear", "depth", 0.99)["models_above"] == 0
    png = scatter_png("linear", "depth", [{"name": "mine", "imagenet_top1": 75.0, "accuracy": 0.7}])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_protocol_runs_and_moves_the_backbone(tiny, model):
    import copy

    from harmonia.challenges.threedpc.probe import FinetuneConfig, finetune_3dpc, lr_at

    m = copy.deepcopy(model)
    before = [p.detach().clone() for p in m.net.parameters()]
    res = finetune_3dpc(m, tiny, "depth", FinetuneConfig(epochs=2, warmup_epochs=1, batch_size=3))
    assert res["protocol"] == "finetune" and res["best_epoch"] in (1, 2) and len(res["history"]) == 2
    assert set(res["accuracy"]) == {"val", "test", "human"}
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.parameters()))
    c = FinetuneConfig()
    assert lr_at(0, 100, 10, c) < lr_at(9, 100, 10, c) == c.lr and abs(lr_at(100, 100, 10, c) - c.min_lr) < 1e-12


def test_cli_probe_3dpc(tiny, tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    runner = CliRunner()
    args = ["challenge", "probe", "3dpc", "--model", "efficientnet_lite0", "--data", str(tiny), "--task", "depth",
            "--epochs", "2", "--store", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output and (tmp_path / "out" / "scatter-depth.png").exists()
    assert "SYNTHETIC" in (tmp_path / "out" / "report.html").read_text()
    again = runner.invoke(app, args)
    assert "1 split(s)" not in again.output and "4 split(s) read from the cache" in again.output
    bad = runner.invoke(app, ["challenge", "probe", "svrt", "--model", "x", "--data", str(tiny)])
    assert bad.exit_code == 2 and "error:" in bad.output


@pytest.mark.parametrize("module", ["data", "scenes", "tables"])
def test_docstring_examples(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(f"harmonia.challenges.threedpc.{module}"))
    assert res.failed == 0 and res.attempted > 0
