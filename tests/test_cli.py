"""The command line end to end on tiny inputs (no network, random-init or local weights)."""

import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.models.checkpoint import save_checkpoint

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def ckpt(tiny_model, tmp_path):
    import timm

    from harmonia.models.wrapper import HarmoniaModel, Preprocessing

    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    model = HarmoniaModel(net, "timm:resnet10t", Preprocessing(input_size=(32, 32)), class_names=["a", "b", "c"])
    path = tmp_path / "tiny.pt"
    save_checkpoint(model, path)
    return path


def test_evaluate_fills_the_store_then_hits_the_cache(ckpt, tiny_dataset, tmp_path):
    store = tmp_path / "r.sqlite"
    r = run("evaluate", "--model", ckpt, "--data", tiny_dataset, "--store", store, "-b", "4", "--workers", "0",
            "-e", "saliency", "-e", "gradcam")
    assert r.exit_code == 0, r.output
    assert "spearman" in r.output and "SYNTHETIC" in r.output
    r = run("evaluate", "--model", ckpt, "--data", tiny_dataset, "--store", store, "--workers", "0")
    assert r.exit_code == 0 and "yes" in r.output  # cached
    r = run("results", "list", "--store", store)
    assert r.exit_code == 0 and "evaluation" in r.output
    out = tmp_path / "runs.csv"
    assert run("results", "export", out, "--store", store).exit_code == 0
    runs = list(csv.DictReader(out.open()))
    assert len(runs) == 2 and all(row["status"] == "complete" for row in runs)
    rows_out = tmp_path / "rows.csv"
    r = run("results", "export", rows_out, "--rows", runs[0]["run"][:8], "--store", store)
    assert r.exit_code == 0, r.output
    assert len(list(csv.DictReader(rows_out.open()))) == 10


def test_explain_writes_maps_and_overlays(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    out = tmp_path / "out"
    r = run("explain", "--model", "timm:resnet10t", "--random-init", "--images", photos, "--out", out)
    assert r.exit_code == 0, r.output
    for name in ("a", "b"):
        m = np.load(out / f"{name}.npy")
        assert m.ndim == 2 and np.isfinite(m).all()
        assert (out / f"{name}.png").stat().st_size > 1000
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--model", "timm:resnet10t", "--random-init", "--data", "/no/such/dir"], "no such dataset"),
        (["evaluate", "--model", "no_such_model_xyz", "--data", "{data}"], "no_such_model_xyz"),
        (["evaluate", "--model", "timm:resnet10t", "--data", "{data}", "-e", "nope"], "nope"),
        (["explain", "--model", "timm:resnet10t", "--random-init", "--images", "/no/such", "--out", "x"], "no such"),
        (["results", "list", "--store", "/no/such/store.sqlite"], "no results store"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tiny_dataset):
    r = run(*[a.replace("{data}", str(tiny_dataset)) for a in args])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and message in r.output
    assert "Traceback" not in r.output


def test_help_everywhere():
    for cmd in ([], ["evaluate"], ["explain"], ["models"], ["results"], ["demo"], ["data"]):
        r = run(*cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_help_prose_reflows_to_the_terminal():
    """Typer keeps every newline of a help text: prose paragraphs must be single lines, or
    the help comes out ragged in a terminal narrower than the source."""
    from harmonia.cli.data_cmd import data_app

    commands = [c for a in (app, data_app) for c in a.registered_commands if c.help]
    assert len(commands) >= 10
    for c in commands:
        for para in c.help.split("\n\n"):
            lines = para.splitlines()
            assert len(lines) == 1 or any(line[:1].isspace() for line in lines), (c.name, lines[:2])
    narrow = CliRunner().invoke(app, ["attack", "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert "finds the smallest L2 perturbation" in " ".join(narrow.output.split())
