"""Issue 21, items 11, 14, 16, 17, 18: seeded random models, telling stored runs apart,
defaults on every help page, signed maps, logs of batch jobs."""

import re

import pytest
import typer
from typer.testing import CliRunner

from harmonia.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    """One line per option in the rendered help (typer reads TERMINAL_WIDTH once, at import)."""
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1000)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _commands(cmd=None, path=()):
    cmd = cmd or typer.main.get_command(app)
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield list(path), cmd
    for name, sub in (subs or {}).items():
        yield from _commands(sub, (*path, name))


def _option_rows(path):
    r = run(*path, "--help")
    assert r.exit_code == 0, r.output
    return r.output.splitlines()


# -- item 16: every option shows its real default ------------------------------------------------


def test_every_option_of_every_command_shows_its_default():
    """Rich markup swallowed `[default: ...]` written in help strings; defaults given as None
    showed nothing. An option that is neither required nor an off-by-default flag must show a
    default in the rendered help."""
    missing, checked = [], 0
    for path, cmd in _commands():
        lines = _option_rows(path)
        for p in cmd.params:
            if p.param_type_name != "option" or p.name == "help" or p.required:
                continue
            if p.is_flag and not p.secondary_opts and not p.default:
                continue  # a plain switch, off unless given
            row = [line for line in lines if re.search(r"│[ *]+" + re.escape(p.opts[0]) + r"[ ,]", line)]
            assert row, f"{' '.join(path)} {p.opts[0]}: not in the help"
            checked += 1
            if "[default:" not in row[0]:
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert checked > 150
    assert not missing, f"{len(missing)} options show no default: {missing}"


def test_help_shows_the_real_defaults_and_no_printf_escapes():
    from harmonia.experiments.comparison import ComparisonSettings
    from harmonia.training.trainer import TrainConfig

    train = "\n".join(_option_rows(["train"]))
    cfg = TrainConfig(data="d")
    for opt, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size), ("--seed", cfg.seed),
                       ("--levels", cfg.levels), ("--gamma", cfg.gamma), ("--label-smoothing", cfg.label_smoothing)):
        row = next(line for line in train.splitlines() if re.search(r"│[ *]+" + opt + r"[ ,]", line))
        assert re.search(r"\[default: \(?" + re.escape(str(value)) + r"\)?\]", row), row
    demo = "\n".join(_option_rows(["demo"]))
    s, q = ComparisonSettings(), ComparisonSettings.quick()
    assert f"[default: ({s.epochs}; --quick: {q.epochs})]" in demo
    assert f"[default: ({s.lambda_masked:g})]" in demo and f"[default: ({s.reducer})]" in demo
    for path, _ in _commands():
        out = "\n".join(_option_rows(path))
        assert "%%" not in out, path


# -- item 11: --random-init is seeded ---------------------------------------------------------------


def test_load_with_a_seed_gives_the_same_weights_and_leaves_the_global_rng_alone():
    import torch

    from harmonia.models import load

    state = torch.random.get_rng_state()
    a, b = (load("small_cnn", pretrained=False, num_classes=3, seed=5) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.fingerprint() == b.fingerprint() and a.init_seed == 5
    assert load("small_cnn", pretrained=False, num_classes=3, seed=6).fingerprint() != a.fingerprint()


def test_random_init_twice_is_one_model_and_a_cache_hit(tiny_dataset, tmp_path):
    from harmonia.store import ResultStore

    store = tmp_path / "r.sqlite"
    args = ("evaluate", "-m", "small_cnn", "--random-init", "--data", tiny_dataset, "--store", store,
            "--workers", "0", "--limit", "4", "--device", "cpu")

    def cached(*extra):
        r = run(*args, *extra)
        assert r.exit_code == 0, r.output
        row = next(line for line in r.output.splitlines() if "small_cnn" in line and "Saliency" in line)
        return row.rstrip(" │").split()[-1]

    assert cached() == "no"
    assert cached() == "yes"  # the same weights: the same fingerprint and store key
    assert cached("--seed", "1") == "no"
    runs = ResultStore(store).runs(kind="evaluation")
    assert sorted(r.meta["init_seed"] for r in runs) == [0, 1]
    assert len({r.meta["model_fingerprint"] for r in runs}) == 2


# -- item 17: signed maps on a diverging colour map, short titles -----------------------------------


@pytest.fixture
def photos(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("spec, signed, short", [
    ("input_x_gradient", True, "input_x_gradient (mean)"),
    ("integrated_gradients:steps=4,reducer=sum", True, "integrated_gradients (sum)"),
    ("saliency", False, "saliency (max_abs)"),
])
def test_explain_draws_signed_maps_centred_at_zero_with_a_colour_bar(photos, tmp_path, monkeypatch, spec, signed, short):
    import harmonia.viz as viz

    calls = []
    monkeypatch.setattr(viz, "save_overlay", lambda path, image, fmap, **kw: calls.append((image, fmap, kw)))
    r = run("explain", "-m", "small_cnn", "--random-init", "-e", spec, "-i", photos, "-o", tmp_path / "out",
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert len(calls) == 2
    for image, fmap, kw in calls:
        assert kw.get("signed") is signed
        assert short in kw["title"]
        assert "Gradient" not in kw["title"] and "=" not in kw["title"]  # no repr with every setting
        fig = viz.overlay_figure(image, fmap, signed=kw["signed"])
        shown = fig.axes[1].images[0]
        if signed:
            assert shown.get_cmap().name == "RdBu_r"
            assert shown.norm.vmax > 0 and shown.norm.vmin == -shown.norm.vmax  # centred at 0
            assert len(fig.axes) == 4  # three panels and the colour bar
        else:
            assert (shown.norm.vmin, shown.norm.vmax) == (0, 1) and len(fig.axes) == 3


def test_an_unsaid_sign_is_read_from_the_map():
    import torch

    from harmonia.viz import overlay_figure

    fig = overlay_figure(torch.rand(3, 8, 8), torch.linspace(-1, 2, 64).view(8, 8))
    assert fig.axes[1].images[0].get_cmap().name == "RdBu_r"
    fig = overlay_figure(torch.rand(3, 8, 8), torch.rand(8, 8))
    assert fig.axes[1].images[0].get_cmap().name == "jet"


# -- items 14 and 18: runs told apart in `results list`; train --no-progress logs; resumed evaluations


def _train(data, out, store, lam):
    return run("train", "--data", data, "--model", "small_cnn", "--preset", "adamw", "--epochs", "2", "-b", "4",
               "--lambda", lam, "--out", out, "--no-progress", "--store", store, "--eval-split", "test",
               "--device", "cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A baseline and a harmonized small_cnn, trained like the demo's (2 epochs of 2 steps), and their store."""
    from tests.conftest import write_tiny_dataset

    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    write_tiny_dataset(data, n=8, split="train")
    write_tiny_dataset(data, n=6, split="test", subjects=3)
    store = root / "r.sqlite"
    logs = {v: _train(data, root / "runs" / "seed0" / v, store, lam) for v, lam in (("baseline", 0), ("harmonized", 1))}
    return data, store, logs


def test_train_without_progress_bar_prints_a_header_and_a_line_per_epoch(trained):
    _, _, logs = trained
    r = logs["baseline"]
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(line.startswith("training small_cnn on ") and "2 steps/epoch x 2" in line for line in lines)
    for epoch in (1, 2):
        assert any(line.startswith(f"epoch {epoch}/2  loss ") and "img/s" in line for line in lines), r.output
        assert any(line.startswith(f"epoch {epoch}/2  test: acc ") for line in lines), r.output


def _listing(store, monkeypatch, *args):
    from rich.console import Console

    import harmonia.cli.results_cmd as results_cmd

    monkeypatch.setattr(results_cmd, "console", Console(width=1000))
    r = run("results", "list", "--store", store, *args)
    assert r.exit_code == 0, r.output
    return [line for line in r.output.splitlines() if "│" in line]


def test_results_list_tells_runs_apart_and_shows_every_kind_headline(trained, monkeypatch):
    import torch

    from harmonia.adversarial import adversarial_alignment
    from harmonia.attacks import FMN
    from harmonia.data import HarmoniaDataset
    from harmonia.humans.ceiling import run_ceiling
    from harmonia.models.wrapper import HarmoniaModel, Preprocessing
    from harmonia.neural.run import run_neural
    from harmonia.neural.simulate import ground_truth_model, simulate_spatial
    from harmonia.store import ResultStore
    from tests.conftest import TinyCNN

    data, store, _ = trained  # the two training runs and their final evaluations, plus the runs below
    base = ("evaluate", "-m", "small_cnn", "--random-init", "--data", data, "--store", store, "--workers", "0",
            "--limit", "2", "--device", "cpu")
    for extra in ((), ("--size", "16"), ("--blur", "2"), ("--targets", "predicted"), ("--seed", "3")):
        assert run(*base, *extra).exit_code == 0
    s = ResultStore(store)
    run_ceiling(HarmoniaDataset(data, "test"), s, repeats=2)
    torch.manual_seed(0)
    tiny = HarmoniaModel(TinyCNN(), "tiny", Preprocessing(input_size=(32, 32)), class_names=["a", "b", "c"])
    adversarial_alignment(tiny, HarmoniaDataset(data, "test"), FMN(steps=5), store=s, limit=4, device="cpu")
    run_neural(ground_truth_model(0), simulate_spatial(n_images=4, n_neurons=3, grid=(5, 5), seed=0), store=s,
               n_components=3)

    rows = _listing(store, monkeypatch)
    evals = [line for line in rows if "│ evaluation" in line]
    random = [line for line in evals if "random init" in line]
    assert len(random) == 5 and len(set(random)) == 5
    assert any("seed 3" in line for line in random)
    assert any("size 16" in line for line in random) and any("blur 2" in line for line in random)
    assert any("targets predicted" in line for line in random)
    # the demo's situation: both trained models are small_cnn, told apart by their run folder and lambda
    trained_evals = [line for line in evals if "random init" not in line]
    assert any("small_cnn (seed0/baseline, lambda 0)" in line for line in trained_evals), "\n".join(rows)
    assert any("small_cnn (seed0/harmonized, lambda 1)" in line for line in trained_evals)
    training = [line for line in rows if "│ training" in line]
    assert len(training) == 2 and all("test: acc" in line and "steps" in line for line in training)
    ceilings = [line for line in rows if "│ ceiling" in line]  # the evaluations' (10 repeats) and this one
    assert len(ceilings) >= 2 and all(re.search(r"ceiling -?\d\.\d{4}, floor -?\d\.\d{4}", c) for c in ceilings)
    assert any("spearman, 2 repeats" in c for c in ceilings) and any("spearman, 10 repeats" in c for c in ceilings)
    (adv,) = [line for line in rows if "│ adversarial" in line]
    assert re.search(r"fooled \d+/4, median L2 ", adv) and "fmn 5 steps" in adv
    (neural,) = [line for line in rows if "│ neural" in line]
    assert "(synthetic)" in neural and "/ (synthetic)" not in neural
    assert re.search(r"best \S+: r -?\d\.\d{4}, ceiled", neural) and "spatial, pls" in neural


def test_a_resumed_evaluation_says_how_many_images_were_stored(trained, tmp_path):
    from harmonia.attribution import parse_explainer_spec
    from harmonia.data import HarmoniaDataset
    from harmonia.evaluation import evaluate
    from harmonia.metrics import MapScorer
    from harmonia.models import load
    from harmonia.store import ResultStore

    data, _, _ = trained
    store = tmp_path / "r.sqlite"

    def interrupt(done, total):
        if done:
            raise KeyboardInterrupt  # after the first batch was stored

    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="not this model's classes"):
        evaluate(load("small_cnn", pretrained=False, seed=0), HarmoniaDataset(data), parse_explainer_spec("saliency"),
                 MapScorer(), store=ResultStore(store), batch_size=2, num_workers=0, device="cpu", progress=interrupt)
    r = run("evaluate", "-m", "small_cnn", "--random-init", "--data", data, "--store", store, "--workers", "0",
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "resumed an interrupted run: 2 of 6 images were already stored, 4 computed now" in r.output
    assert "resumed (2 stored)" in r.output
