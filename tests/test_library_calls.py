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


# -- evaluate / attack / ceiling over models, without typer -------------------------------------


@pytest.fixture
def two_checkpoints(tmp_path):
    from harmonia.models.checkpoint import save_checkpoint

    paths = []
    for seed in (0, 1):
        m = load("small_cnn", pretrained=False, num_classes=3, width=8, seed=seed)
        m.class_names = ["a", "b", "c"]
        paths.append(str(save_checkpoint(m, tmp_path / f"m{seed}.pt")))
    return paths


def recording_ui():
    """A UI that keeps what a job showed (lines, tables, progress bars) in ``ui.shown``."""
    import contextlib

    from harmonia.utils.ui import UI

    shown = {"log": [], "table": [], "progress": []}

    @contextlib.contextmanager
    def progress(description):
        shown["progress"].append(description)
        yield lambda done, total: None

    ui = UI(log=shown["log"].append, progress=progress,
            table=lambda title, header, rows, justify=None: shown["table"].append((title, header, rows, justify)))
    ui.shown = shown
    return ui


def test_evaluate_models_runs_every_pair_and_shows_one_table(tmp_path, two_checkpoints):
    from tests.conftest import write_tiny_dataset

    from harmonia.experiments.evaluation import evaluate_models

    data = write_tiny_dataset(tmp_path / "data", n=6)
    ui = recording_ui()
    res = evaluate_models(two_checkpoints, data, explainers=["saliency", "gradcam"], store=tmp_path / "r.sqlite",
                          device="cpu", ui=ui)
    assert [(r.model, r.explainer.split("(")[0]) for r in res.runs] == [
        (two_checkpoints[0], "Saliency"), (two_checkpoints[0], "GradCAM"),
        (two_checkpoints[1], "Saliency"), (two_checkpoints[1], "GradCAM")]
    assert res.ceiling.source == "ClickMe release constant" and res.store == tmp_path / "r.sqlite"
    assert len(ui.shown["progress"]) == 4 and "SYNTHETIC" in ui.shown["log"][0]
    (title, header, rows, justify), = ui.shown["table"]
    assert title == "Alignment on tiny / test (6 images)" and header[:3] == ["model", "explainer", "spearman"]
    assert justify[:3] == ["left", "left", "right"] and [r[-1] for r in rows] == ["no"] * 4
    spearman = [r.result.aggregates["spearman"]["mean"] for r in res.runs]
    assert spearman[0] != spearman[2]  # two different models, two different numbers
    again = evaluate_models(two_checkpoints[:1], data, store=tmp_path / "r.sqlite", device="cpu")  # silent UI
    assert again.runs[0].result.cached and again.runs[0].result.aggregates == res.runs[0].result.aggregates
    for kw, match in (({"explainers": ["nope"]}, "unknown explainer"), ({"ceiling": "0"}, "--ceiling must be"),
                      ({"targets": "x"}, "targets must be"), ({"split": "train"}, "train")):
        with pytest.raises(ValueError, match=match):
            evaluate_models(["does-not-exist.pt"], data, store=tmp_path / "bad.sqlite", **kw)  # before any model
    assert not (tmp_path / "bad.sqlite").exists()


def test_attack_models_checks_options_first_and_writes_figures_per_model(tmp_path, two_checkpoints):
    from tests.conftest import write_tiny_dataset

    from harmonia.errors import UserError
    from harmonia.experiments.adversarial import attack_models

    data = write_tiny_dataset(tmp_path / "data", n=6)
    res = attack_models(two_checkpoints, data, attack="fmn:steps=20", figures=tmp_path / "figs",
                        store=tmp_path / "r.sqlite", device="cpu")
    assert [r.model for r in res.runs] == two_checkpoints and res.attack.name == "fmn"
    n_fooled = sum(r.result.aggregates["n_fooled"] for r in res.runs)
    assert n_fooled > 0 and len(list((tmp_path / "figs").glob("m?.pt-im*.png"))) == n_fooled  # one per fooled image
    ui = recording_ui()
    res = attack_models(two_checkpoints, data, attack="fmn:steps=5", limit=4, target="least-likely", ceiling="0.5",
                        store=tmp_path / "r.sqlite", device="cpu", ui=ui)
    assert res.ceiling.value == 0.5 and ui.shown["progress"] == [f"{p} / fmn" for p in two_checkpoints]
    (title, header, rows, justify), = ui.shown["table"]
    assert "target least-likely" in title and "skipped" in header and justify.count("left") == 1
    assert any("skipped = images whose label is the target" in line for line in ui.shown["log"])
    a = res.runs[0].result.aggregates
    assert a["n_fooled"] + a["n_misclassified"] + a["n_not_fooled"] + a.get("n_skipped", 0) == 4
    for kw, match in (({"target": "1", "grouping": "animate-inanimate"}, "exclude each other"),
                      ({"norm": "l3"}, "unknown norm"), ({"reducer": "median"}, "unknown reducer"),
                      ({"grouping": "mammals"}, "unknown grouping"), ({"target": "column:nope"}, "no column")):
        with pytest.raises(ValueError, match=match):
            attack_models(["does-not-exist.pt"], data, store=tmp_path / "bad.sqlite", **kw)  # before any model
    with pytest.raises(UserError, match="exclude each other"):
        attack_models(two_checkpoints, data, target="1", grouping="animate-inanimate")
    assert not (tmp_path / "bad.sqlite").exists()


def test_run_ceiling_refuses_a_dataset_without_per_subject_maps(tmp_path):
    from tests.conftest import write_tiny_dataset

    from harmonia.data import HarmoniaDataset, open_split
    from harmonia.errors import UserError
    from harmonia.humans.ceiling import run_ceiling

    plain = write_tiny_dataset(tmp_path / "plain", n=4)
    with pytest.raises(UserError, match="no per-subject maps"):
        run_ceiling(HarmoniaDataset(plain), tmp_path / "r.sqlite")
    assert not (tmp_path / "r.sqlite").exists()  # a store path is opened only for usable data
    subj = write_tiny_dataset(tmp_path / "subj", n=4, subjects=3)
    run = run_ceiling(open_split(subj), tmp_path / "r.sqlite", repeats=2, chunk_size=2)
    assert not run.cached and run_ceiling(open_split(subj), tmp_path / "r.sqlite", repeats=2, chunk_size=2).cached
    empty = tmp_path / "empty"
    write_tiny_dataset(empty, n=0)
    with pytest.raises(UserError, match="has no images"):
        open_split(empty)


def test_score_neural_models_one_table_per_model_and_one_profile(tmp_path):
    from harmonia.experiments.neural import score_neural_models

    paths = write_simulated_recordings(tmp_path / "sim")
    ui = recording_ui()
    res = score_neural_models(["simulated:0", "simulated:5"], paths["flat"], regression="ridge", alpha="0.01", pool=2,
                              plot=tmp_path / "p.png", store=tmp_path / "r.sqlite", ui=ui)
    assert list(res.results) == ["simulated:0", "simulated:5"] and res.cached == {"simulated:0": False, "simulated:5": False}
    assert res.results["simulated:0"].best.layer == "block2"  # the simulated recording's true layer
    assert (tmp_path / "p.png").stat().st_size > 1000 and len(ui.shown["table"]) == 2
    title, header, rows, justify = ui.shown["table"][0]
    assert "simulated:0 on simulated-flat-block2 (flat" in title and header == ["layer", "features", "r (median)", "ceiled"]
    assert "* block2" in [r[0] for r in rows] and justify == ["left", "right", "right", "right"]
    again = score_neural_models(["simulated:0"], paths["flat"], regression="ridge", alpha="0.01", pool=2,
                                store=tmp_path / "r.sqlite")  # no plot, silent
    assert again.cached["simulated:0"] and again.plot is None
    with pytest.raises(ValueError, match="unknown regression"):
        score_neural_models(["simulated:0"], paths["flat"], regression="lasso", store=tmp_path / "bad.sqlite")
    assert not (tmp_path / "bad.sqlite").exists()
