"""Issue 21, bad options: one line ``error: ...``, exit 2, checked before long work starts.

Also: alignment divided by a ceiling of equally prepared maps, and a warning when a model's
classes are not the dataset's labels. Everything runs on tiny models and data (seconds).
"""

import math
import warnings

import pytest
import torch
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.data import HarmoniaDataset
from harmonia.errors import HarmoniaWarning, UserError
from harmonia.models.checkpoint import save_checkpoint
from harmonia.store import ResultStore
from tests.conftest import write_tiny_dataset

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(r, *fragments):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    for fragment in fragments:
        assert fragment in lines[0], r.output


@pytest.fixture
def ckpt(tmp_path):
    """A 3-class checkpoint (the tiny dataset's classes a, b, c)."""
    import timm

    from harmonia.models.wrapper import HarmoniaModel, Preprocessing

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    model = HarmoniaModel(net, "timm:resnet10t", Preprocessing(input_size=(32, 32)), class_names=["a", "b", "c"])
    return save_checkpoint(model, tmp_path / "tiny.pt")


@pytest.fixture
def subj_dataset(tmp_path):
    return write_tiny_dataset(tmp_path / "subj", n=8, subjects=4)


# -- item 5: attack --target beyond the model's classes ------------------------------------------
def test_attack_target_beyond_classes_is_one_line_and_leaves_no_run(ckpt, tiny_dataset, tmp_path):
    store = tmp_path / "r.sqlite"
    r = run("attack", "-m", ckpt, "-d", tiny_dataset, "--target", "99", "--store", store, "--device", "cpu")
    assert_one_line_error(r, "--target 99", "3")
    assert not store.exists() or ResultStore(store).runs() == []


def test_library_attack_target_checked_before_the_run_starts(tiny_model, tiny_dataset, tmp_path):
    from harmonia.adversarial import adversarial_alignment

    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(UserError, match="not a class of this model"):
        adversarial_alignment(tiny_model, HarmoniaDataset(tiny_dataset), target=99, store=store, device="cpu")
    with pytest.raises(UserError, match="not a class"):
        adversarial_alignment(tiny_model, HarmoniaDataset(tiny_dataset), target={"im000": 7}, store=store, device="cpu")
    assert store.runs() == []


# -- item 6: --device validated in one place ----------------------------------------------------------
def test_resolve_device_rejects_unknown_and_absent_devices(monkeypatch):
    from harmonia.utils.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    for bad in ("tpu", "gpu", "cuda:x", "xla"):
        with pytest.raises(UserError, match="device"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="cuda"):
        resolve_device("cuda")
    with pytest.raises(UserError):
        resolve_device(torch.device("cuda", 0))


def test_library_functions_check_the_device_before_starting_a_run(tiny_model, subj_dataset, tmp_path):
    from harmonia.evaluation import evaluate
    from harmonia.humans.ceiling import run_ceiling

    store = ResultStore(tmp_path / "r.sqlite")
    ds = HarmoniaDataset(subj_dataset)
    with pytest.raises(UserError, match="tpu"):
        run_ceiling(ds, store, device="tpu")
    with pytest.raises(UserError, match="tpu"):
        evaluate(tiny_model, ds, store=store, device="tpu")
    assert store.runs() == []


@pytest.mark.parametrize("device", ["tpu", "cuda"])
@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "-m", "{ckpt}", "-d", "{data}"],
        ["attack", "-m", "{ckpt}", "-d", "{data}"],
        ["explain", "-m", "{ckpt}", "-i", "{data}/test/images", "-o", "{tmp}/explained"],
        ["train", "-d", "{data}", "--out", "{tmp}/run", "--epochs", "1"],
        ["ceiling", "-d", "{data}"],
        ["neural", "-m", "{ckpt}", "-d", "{data}"],
        ["data", "clicks", "{tmp}/clicks.csv", "--images", "{tmp}/images", "--out", "{tmp}/out"],
        ["demo", "--out", "{tmp}/demo", "--quick"],
    ],
)
def test_every_device_option_is_one_line_error(command, device, ckpt, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [a.replace("{ckpt}", str(ckpt)).replace("{data}", str(tiny_dataset)).replace("{tmp}", str(tmp_path))
            for a in command]
    r = run(*args, "--device", device)
    assert_one_line_error(r, f"device {device!r}")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert not (tmp_path / "explained").exists() and not (tmp_path / "demo").exists()


# -- item 7: --ceiling, --size, --downsample ------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "attack"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_ceiling_must_be_positive(command, value, ckpt, tiny_dataset, tmp_path):
    r = run(command, "-m", ckpt, "-d", tiny_dataset, "--ceiling", value, "--device", "cpu",
            "--store", tmp_path / "r.sqlite")
    assert_one_line_error(r, "--ceiling", "positive")
    assert r.output.count("\n") == 1, r.output  # before the data is read (no SYNTHETIC note)


def test_library_ceiling_checks():
    from harmonia.evaluation import Ceiling, parse_ceiling_option

    with pytest.raises(UserError, match="positive"):
        Ceiling(0.0, "user")
    with pytest.raises(UserError, match="positive"):
        parse_ceiling_option("-0.5")
    with pytest.raises(UserError, match="number, 'auto' or 'none'"):
        parse_ceiling_option("high")
    assert parse_ceiling_option("0.5").value == 0.5


def test_train_ceiling_zero_fails_before_the_first_epoch(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    r = run("train", "-d", tiny_dataset, "--train-split", "test", "--out", out, "--epochs", "1", "-b", "4",
            "--ceiling", "0", "--device", "cpu", "--store", tmp_path / "r.sqlite")
    assert_one_line_error(r, "--ceiling", "positive")
    assert not (out / "last.pt").exists() and not (out / "history.json").exists()


def test_size_zero_is_one_line_error(ckpt, tiny_dataset, tmp_path):
    for cmd in ("evaluate", "attack"):
        r = run(cmd, "-m", ckpt, "-d", tiny_dataset, "--size", "0", "--device", "cpu", "--store", tmp_path / "r.sqlite")
        assert_one_line_error(r, "--size")
    with pytest.raises(UserError):
        HarmoniaDataset(tiny_dataset, size=(32, 0))


def test_downsample_larger_than_the_maps_is_an_error_before_work(ckpt, tiny_dataset, tmp_path):
    store = tmp_path / "r.sqlite"
    r = run("evaluate", "-m", ckpt, "-d", tiny_dataset, "--downsample", "100", "--device", "cpu", "--store", store)
    assert_one_line_error(r, "--downsample 100", "32x32")
    assert not store.exists() or ResultStore(store).runs() == []
    r = run("evaluate", "-m", ckpt, "-d", tiny_dataset, "--downsample", "4", "--device", "cpu", "--store", store,
            "--workers", "0")
    assert r.exit_code == 0, r.output


# -- item 9: results list --kind <typo> ------------------------------------------------------------------
def test_results_list_unknown_kind_lists_the_kinds(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.start_run("k1", kind="evaluation", meta={"model": "m"})
    store.finish_run("k1", {})
    r = run("results", "list", "--kind", "evaluaton", "--store", path)
    assert_one_line_error(r, "'evaluaton'", "evaluation", "ceiling", "adversarial")
    r = run("results", "export", "-", "--kind", "evaluaton", "--store", path)
    assert_one_line_error(r, "evaluation")
    r = run("results", "list", "--kind", "evaluation", "--store", path)
    assert r.exit_code == 0 and "k1" in r.output


def test_store_kinds_cover_every_writer():
    """Each run kind harmonia writes is a known kind (a new writer must add its kind)."""
    import re
    from pathlib import Path

    import harmonia
    from harmonia.store.sqlite import RUN_KINDS

    root = Path(harmonia.__file__).parent
    written = set()
    for f in root.rglob("*.py"):
        written |= set(re.findall(r'start_run\([^)]*kind="(\w+)"', f.read_text()))
        written |= set(re.findall(r'^KIND = "(\w+)"', f.read_text(), re.M))
    assert written and written <= set(RUN_KINDS), written - set(RUN_KINDS)


# -- item 10: one line, the CLI's spelling --------------------------------------------------------------
def test_long_error_is_one_line_when_not_a_terminal(tmp_path):
    long_path = tmp_path / ("a-very-long-folder-name-" * 6) / "data"
    r = run("evaluate", "-m", "timm:resnet10t", "--random-init", "-d", long_path, "--device", "cpu")
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("error:") and len(r.output) > 100, r.output


def test_error_after_a_progress_bar_has_no_blank_line(capsys):
    from harmonia.cli.common import user_errors
    from harmonia.cli.progress import progress_callback

    @user_errors
    def command():
        with progress_callback("work") as update:
            update(1, 10)
            raise UserError("the input [0, 1] is bad " + "really " * 20)

    with pytest.raises(SystemExit) as e:
        command()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: the input [0, 1] is bad " + "really " * 19 + "really\n", repr(err)


def test_errors_use_the_cli_spelling(tmp_path, tiny_dataset):
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    pickled = tmp_path / "whole.pt"
    torch.save(net, pickled)
    r = run("evaluate", "-m", pickled, "-d", tiny_dataset, "--device", "cpu")
    assert_one_line_error(r, "--allow-pickle")
    assert "allow_pickle" not in r.output
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    r = run("evaluate", "-m", plain, "-d", tiny_dataset, "--device", "cpu")
    assert_one_line_error(r, "--arch")
    assert "arch=" not in r.output


def test_cli_spelling_rewrites_keywords():
    from harmonia.cli.common import cli_spelling

    assert cli_spelling("choose another folder or pass overwrite=True (--overwrite)") == \
        "choose another folder or pass --overwrite"
    assert cli_spelling("pass arch=...") == "pass --arch ..."


# -- item 15: the ceiling sees the maps as they are scored ----------------------------------------------
def test_auto_ceiling_is_computed_with_the_same_map_preparation(subj_dataset, tmp_path):
    from harmonia.evaluation import resolve_ceiling
    from harmonia.humans.ceiling import MapPreparation, dataset_ceiling
    from harmonia.metrics import MapScorer

    ds = HarmoniaDataset(subj_dataset)
    store = ResultStore(tmp_path / "r.sqlite")
    plain = resolve_ceiling(ds, "auto", store=store)
    blurred = resolve_ceiling(ds, "auto", store=store, scorer=MapScorer(blur_sigma=2.0))
    assert "--blur 2.0" in blurred.source and "--blur" not in plain.source
    assert blurred.value != pytest.approx(plain.value, abs=1e-4)
    direct = dataset_ceiling(ds, prepare=MapPreparation(blur_sigma=2.0)).ceiling.mean
    assert blurred.value == pytest.approx(direct, abs=1e-6)
    pooled = resolve_ceiling(HarmoniaDataset(subj_dataset, size=16), "auto", store=store,
                             scorer=MapScorer(downsample=2))
    assert "--size 16" in pooled.source and "--downsample 2" in pooled.source
    assert math.isfinite(pooled.value)
    # the native size is no preparation: same key, same number as the plain ceiling
    native = resolve_ceiling(HarmoniaDataset(subj_dataset, size=32), "auto", store=store)
    assert native.value == plain.value and native.source == plain.source


def test_constant_ceiling_says_it_was_not_recomputed(tiny_dataset):
    from harmonia.evaluation import resolve_ceiling
    from harmonia.metrics import MapScorer

    c = resolve_ceiling(HarmoniaDataset(tiny_dataset), "auto", scorer=MapScorer(blur_sigma=2.0))
    assert "not recomputed for --blur 2.0" in c.source


def test_evaluate_blur_reports_the_prepared_ceiling(ckpt, subj_dataset, tmp_path):
    r = run("evaluate", "-m", ckpt, "-d", subj_dataset, "--blur", "2", "--device", "cpu", "--workers", "0",
            "--store", tmp_path / "r.sqlite")
    assert r.exit_code == 0, r.output
    assert "--blur 2.0" in " ".join(r.output.split())


# -- item 19: a model whose classes are not the dataset's ------------------------------------------------
def test_class_mismatch_warns_once(tiny_dataset, tmp_path):
    # timm:resnet10t has the 1000 ImageNet classes; the tiny dataset's are a, b, c
    r = run("evaluate", "-m", "timm:resnet10t", "--random-init", "-d", tiny_dataset, "-e", "saliency", "-e", "gradcam",
            "--device", "cpu", "--workers", "0", "--store", tmp_path / "r.sqlite")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1, r.output
    assert "1000 classes" in lines[0] and "'a'" in lines[0]


def test_matching_classes_do_not_warn(ckpt, tiny_dataset, tmp_path):
    r = run("evaluate", "-m", ckpt, "-d", tiny_dataset, "--device", "cpu", "--workers", "0",
            "--store", tmp_path / "r.sqlite")
    assert r.exit_code == 0 and "warning:" not in r.output, r.output


def test_library_class_checks(tiny_model, tmp_path):
    from harmonia.evaluation import check_classes, evaluate

    other = write_tiny_dataset(tmp_path / "other", n=4)
    ds = HarmoniaDataset(other)
    tiny_model.class_names = ["x", "y", "z"]
    with pytest.warns(HarmoniaWarning, match="not the 3 classes"):
        evaluate(tiny_model, ds, device="cpu")
    tiny_model.class_names = None
    tiny_model._num_classes = 2  # labels go up to 2: beyond a 2-class model
    with pytest.raises(UserError, match="beyond model"):
        check_classes(tiny_model, ds)
    assert "beyond" in check_classes(tiny_model, ds, labels_as_targets=False)
    tiny_model.class_names = ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", HarmoniaWarning)
        evaluate(tiny_model, ds, device="cpu")


@pytest.mark.parametrize("option, value, message", [("--blur", "0", "--blur must be positive"),
                                                     ("--downsample", "0", "--downsample must be a positive int,"),
                                                     ("--targets", "foo", "--targets must be one of")])
def test_scoring_options_use_the_cli_spelling_before_any_work(option, value, message, tiny_dataset, tmp_path):
    store = tmp_path / "r.sqlite"
    r = run("evaluate", "-m", "timm:resnet10t", "--random-init", "-d", tiny_dataset, "--device", "cpu",
            "--store", store, option, value)
    assert_one_line_error(r, message)
    assert r.output.count("\n") == 1 and not store.exists(), r.output  # nothing read, loaded or stored first


@pytest.mark.parametrize("args, message", [(["evaluate", "-m", "x"], "Missing option '--data'"),
                                           (["evaluate", "-m", "x", "-d", "y", "--limit", "0"], "'--limit'"),
                                           (["evaluatx"], "No such command 'evaluatx'")])
def test_usage_errors_are_one_line_too(args, message):
    r = run(*args)
    assert_one_line_error(r, message, "--help')")
    assert r.output.count("\n") == 1, r.output
