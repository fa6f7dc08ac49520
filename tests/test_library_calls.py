"""What the CLI commands do, called as library functions (no typer): a worker process can run them."""

import csv

import numpy as np
import pytest
from PIL import Image

from harmonia.adversarial import parse_target
from harmonia.attribution import Saliency
from harmonia.attribution.photos import check_photo_outputs, explain_folder
from harmonia.models import load
from harmonia.neural.options import open_recording, parse_alpha, parse_reduce, sweep_options, write_simulated_recordings


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "a.jpg"):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_explain_folder_writes_maps_overlays_and_predictions(photos, tmp_path):
    model = load("small_cnn", pretrained=False, num_classes=4, width=4, seed=0)
    out = tmp_path / "out"
    records = explain_folder(model, Saliency(), photos, out, topk=3, batch_size=2)
    assert [r["map"] for r in records] == ["a_jpg.npy", "a_png.npy", "b.npy"]  # shared stems keep their extension
    assert np.load(out / "b.npy").shape == (64, 64)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["image"] for r in rows] == ["a.jpg", "a.png", "b.jpg"] and len(rows[0]["top5"].split("; ")) == 3
    again = explain_folder(model, Saliency(), photos, out, target=2)  # its own files are replaced
    assert {r["explained_class"] for r in again} == {"2"}
    with pytest.raises(ValueError, match="--target 4 outside 0..3"):
        explain_folder(model, Saliency(), photos, out, target=4)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "b.npy").write_bytes(b"not harmonia's")
    with pytest.raises(FileExistsError, match="b.npy exists and was not written by harmonia"):
        check_photo_outputs(sorted(photos.iterdir()), foreign)  # refused before any work


def test_attack_target_text():
    assert parse_target("5") == 5 and parse_target(" least-likely ") == "least_likely" and parse_target(None) is None
    for text, match in (("-1", ">= 0"), ("cat", "expected a class index"), ("column:goal", "needs the dataset")):
        with pytest.raises(ValueError, match=match):
            parse_target(text)


def test_neural_options(tmp_path):
    assert parse_alpha("cv")["alphas"][0] == pytest.approx(1e-3) and parse_reduce("random:64", 8) == (None, 64)
    for bad, call in (("--alpha must be", lambda: parse_alpha("cv:-1")), ("--reduce must be", lambda: parse_reduce("svd:3", None))):
        with pytest.raises(ValueError, match=bad):
            call()
    paths = write_simulated_recordings(tmp_path / "sim")
    assert paths["spatial"].is_file() and paths["brainscore"].is_file()
    flat = open_recording(paths["flat"])
    opts = sweep_options(flat, regression="ridge", alpha="0.5", reduce="pca:5", pool=2)
    assert (opts["alpha"], opts["pca"], opts["pool"], opts["regression"]) == (0.5, 5, 2, "ridge")
    assert "n_components" not in opts and opts["layers"] is None
    spatial = open_recording(paths["spatial"], window="90,130")
    assert spatial.kind == "spatial" and "folds" not in sweep_options(spatial)
    with pytest.raises(ValueError, match="--reduce applies to flat recordings"):
        sweep_options(spatial, reduce="pca:5")
    with pytest.raises(ValueError, match="unknown regression 'lasso'"):
        sweep_options(flat, regression="lasso")
    with pytest.raises(ValueError, match="--stimuli and --region apply to Brain-Score"):
        open_recording(paths["flat"], region="IT")
