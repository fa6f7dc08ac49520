"""Training: paired augmentation, schedules, mixing, the loop end to end, exact resume, DDP.

All data here is SYNTHETIC (written with DatasetWriter, ``synthetic=True``).
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from harmonia.data import DatasetWriter
from harmonia.models.wrapper import HarmoniaModel, Preprocessing
from harmonia.training.augment import PairedAugment, boxes_to_theta, step_generator
from harmonia.training.mixing import ImageFolderSource, MixedBatchSampler, folder_count
from harmonia.training.schedule import ScheduleFn, cosine_factor, recipe_milestones, step_factor
from harmonia.training.state import load_state
from harmonia.training.trainer import TrainConfig, minmax_maps, train

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "blue"]


@pytest.fixture(autouse=True)
def one_thread():
    # 2 shared cores: one intra-op thread avoids spin-waiting against other processes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_colour_dataset(root: Path, n_train: int = 24, n_test: int = 6, size: int = 32) -> Path:
    """SYNTHETIC: a square of the class's colour on noise; the human map is the blurred square."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        with DatasetWriter(root, split, name="colours", synthetic=True, classes=CLASSES,
                           description="SYNTHETIC coloured squares") as w:
            for i in range(n):
                label = i % 3
                img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                s = size // 3
                y, x = rng.integers(0, size - s, 2)
                img[y:y + s, x:x + s, label] = 255
                m = np.zeros((size, size), np.float32)
                m[y:y + s, x:x + s] = 1.0
                w.add(f"{split}{i:03d}", img, gaussian_filter(m, 2).astype(np.float32), label=label)
    return root


def write_folder(root: Path, per_class: int = 4, size: int = 40) -> Path:
    rng = np.random.default_rng(1)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


class SmallNet(nn.Module):
    """No BatchNorm (rows independent, so 1 and 2 processes see the same maths); dropout
    makes the RNG state matter for exact resumption."""

    def __init__(self, num_classes: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def small_model(dropout: float = 0.0, size: int = 32) -> HarmoniaModel:
    torch.manual_seed(0)
    return HarmoniaModel(SmallNet(dropout=dropout), "small", Preprocessing(input_size=(size, size)), class_names=CLASSES)


def base_config(data: Path, out: Path, **kw) -> TrainConfig:
    kw = {"epochs": 2, "batch_size": 8, "num_workers": 0, "progress": False, "lr": 0.05, **kw}
    return TrainConfig.from_preset(kw.pop("preset", "harmonizer"), data=str(data), out_dir=str(out), **kw)


def weights(model_or_path) -> dict[str, torch.Tensor]:
    if isinstance(model_or_path, (str, Path)):
        return load_state(model_or_path)["model"]
    return {k: v.detach().clone() for k, v in model_or_path.state_dict().items()}


# -- paired augmentation ---------------------------------------------------------------------------
def test_augment_moves_a_map_that_is_an_image_channel_exactly_with_it():
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 10), size=(40, 48), mode="bilinear")  # smooth
    maps = images[:, 1].clone()
    aug = PairedAugment(size=(24, 24), image_mode="bilinear", map_mode="bilinear")
    out_i, out_m = aug(images, maps, generator=g)
    assert torch.equal(out_i[:, 1], out_m)
    # the recipe's modes (bicubic image, bilinear map): same boxes, so still nearly equal
    g = torch.Generator().manual_seed(3)
    out_i, out_m = PairedAugment(size=(24, 24))(images, maps, generator=g)
    assert (out_i[:, 1] - out_m).abs().mean() < 0.01
    _, other = PairedAugment(size=(24, 24))(images, maps, generator=torch.Generator().manual_seed(4))
    assert (out_i[:, 1] - other).abs().mean() > 0.05  # other crops really differ: the check has teeth
    assert out_i.min() >= 0 and out_i.max() <= 1


def test_augment_crops_the_drawn_box_and_flips_it():
    x = torch.rand(2, 3, 20, 30)
    boxes = torch.tensor([[5.0, 4.0, 12.0, 10.0], [0.0, 0.0, 30.0, 20.0]])
    aug = PairedAugment(size=(10, 12), image_mode="bilinear")
    out, _ = aug(x, x[:, 0], boxes=boxes, flips=torch.tensor([False, False]))
    assert torch.allclose(out[0], x[0, :, 4:14, 5:17], atol=1e-5)
    aug = PairedAugment(size=(20, 30), image_mode="bilinear")
    out, m = aug(x, x[:, 0], boxes=boxes, flips=torch.tensor([True, True]))
    assert torch.allclose(out[1], x[1].flip(-1), atol=1e-5) and torch.allclose(m[1], x[1, 0].flip(-1), atol=1e-5)
    assert torch.equal(boxes_to_theta(boxes[1:], torch.tensor([False]), 20, 30), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))


def test_augment_boxes_follow_the_inception_ranges_and_the_seed():
    aug = PairedAugment(size=(32, 32))
    boxes = aug.sample_boxes(4000, 64, 64, step_generator(0, 1))
    area = boxes[:, 2] * boxes[:, 3] / 64**2
    aspect = boxes[:, 2] / boxes[:, 3]
    assert area.min() >= 0.07 and area.max() <= 1.0 and area.mean() > 0.35
    assert aspect.min() >= 0.70 and aspect.max() <= 1.45
    assert (boxes[:, 0] + boxes[:, 2] <= 64).all() and (boxes[:, 1] + boxes[:, 3] <= 64).all() and (boxes >= 0).all()
    assert torch.equal(boxes, aug.sample_boxes(4000, 64, 64, step_generator(0, 1)))
    assert not torch.equal(boxes, aug.sample_boxes(4000, 64, 64, step_generator(0, 2)))
    flips = aug.sample_flips(4000, step_generator(0, 1)).float().mean()
    assert 0.45 < flips < 0.55


def test_minmax_maps_keeps_constant_maps_at_zero():
    m = minmax_maps(torch.stack([torch.rand(5, 5) * 7 + 2, torch.zeros(5, 5), torch.full((5, 5), 3.0)]))
    assert m[0].min() == 0 and m[0].max() == 1 and m[1:].abs().sum() == 0


# -- schedules ---------------------------------------------------------------------------------------
def test_step_schedule_matches_the_recipe_at_key_epochs():
    assert recipe_milestones(200) == (5.0, (30.0, 60.0, 80.0))
    f = [step_factor(e) for e in (0, 1, 4.99, 5, 29.99, 30, 59.99, 60, 79.99, 80, 199)]
    assert f == pytest.approx([0.0, 0.2, 0.998, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    warm, ms = recipe_milestones(9)
    assert warm == pytest.approx(0.5) and ms == pytest.approx((3.0, 6.0, 8.0))
    fn = ScheduleFn("step", steps_per_epoch=10, total_epochs=9, warmup_epochs=warm, milestones=ms)
    lrs = [fn(s) for s in range(90)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)  # 5 warm-up steps, first one > 0
    assert lrs[29] == 1.0 and lrs[30] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01) and lrs[80] == pytest.approx(0.001)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    assert cosine_factor(0, total_epochs=10, warmup_epochs=2) == 0.0
    assert cosine_factor(6, total_epochs=10, warmup_epochs=2) == pytest.approx(0.5)
    assert cosine_factor(10, total_epochs=10, warmup_epochs=2, final=0.1) == pytest.approx(0.1)
    fn = ScheduleFn("cosine", steps_per_epoch=4, total_epochs=10, warmup_epochs=1)
    lrs = [fn(s) for s in range(40)]
    assert lrs[3] == 1.0 and all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 0.01


# -- mixing ----------------------------------------------------------------------------------------
def test_mixing_puts_the_ratio_of_folder_images_in_every_batch(tmp_path):
    assert folder_count(0.8, 10) == 8 and folder_count(0.0, 10) == 0
    with pytest.raises(ValueError):
        folder_count(1.0, 10)
    sampler = MixedBatchSampler(40, 12, local_batch=8, n_folder_per_batch=6, seed=0)
    seen_folder = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == 20  # one pass over the 40 human-map images, 2 per batch
        assert all(sum(i >= 40 for i in b) == 6 and len(b) == 8 for b in batches)
        primary = sorted(i for b in batches for i in b if i < 40)
        assert primary == list(range(40))  # every human-map image exactly once per epoch
        seen_folder += [i for b in batches for i in b if i >= 40]
    counts = np.bincount(np.array(seen_folder) - 40, minlength=12)
    assert counts.min() == counts.max() == 3 * 20 * 6 // 12  # the folder stream cycles evenly
    # resuming mid-epoch yields the rest of the same epoch
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start=7)
    assert list(sampler) == full[7:]

    folder = ImageFolderSource(write_folder(tmp_path / "folder"), CLASSES, size=(32, 32))
    item = folder[5]
    assert item["token"] == 0 and item["label"] == 1 and item["map"].abs().sum() == 0
    assert tuple(item["image"].shape) == (3, 32, 32)
    (tmp_path / "folder" / "purple").mkdir()
    with pytest.raises(ValueError, match="purple"):
        ImageFolderSource(tmp_path / "folder", CLASSES, size=(32, 32))


def test_two_ranks_together_see_the_one_process_batches():
    one = MixedBatchSampler(30, local_batch=8, seed=5)
    ranks = [MixedBatchSampler(30, local_batch=4, rank=r, world_size=2, seed=5) for r in range(2)]
    one.set_epoch(2)
    for s in ranks:
        s.set_epoch(2)
    a, b = list(ranks[0]), list(ranks[1])
    merged = [[x for pair in zip(ba, bb) for x in pair] for ba, bb in zip(a, b)]  # global slot j*2 + rank
    assert merged == list(one)


# -- the loop ----------------------------------------------------------------------------------------
def test_the_extra_terms_are_logged_when_on(tmp_path):
    data = write_colour_dataset(tmp_path / "data", n_train=16)
    cfg = base_config(data, tmp_path / "run", preset="adamw", lr=0.01, epochs=1, batch_size=8, log_every=1,
                      lambda_harmonization=1.0, lambda_outside=0.5, lambda_masked=0.25, eval_every=0)
    steps = train(cfg, store=None, model=small_model()).history["steps"]
    assert steps and all(s["outside"] > 0 and s["masked"] > 0 for s in steps)
    assert all(s["loss"] == pytest.approx(s["ce"] + s["harm"] + 0.5 * s["outside"] + 0.25 * s["masked"], rel=1e-5)
               for s in steps)


def test_frozen_batchnorm_keeps_its_statistics_and_trains_its_affine(tmp_path):
    data = write_colour_dataset(tmp_path / "data", n_train=16)

    def run(freeze: bool) -> tuple[HarmoniaModel, dict[str, torch.Tensor]]:
        model = small_model()
        model.net.features.insert(1, nn.BatchNorm2d(8))
        before = weights(model)
        cfg = base_config(data, tmp_path / f"run{freeze}", epochs=2, eval_every=1, freeze_batchnorm=freeze)
        train(cfg, store=None, model=model)  # evaluates after epoch 1, then trains again
        return model, before

    frozen, before = run(True)
    bn, after = frozen.net.features[1], weights(frozen)
    assert not bn.training and int(bn.num_batches_tracked) == 0
    assert torch.equal(after["net.features.1.running_mean"], before["net.features.1.running_mean"])
    assert not torch.equal(after["net.features.1.weight"], before["net.features.1.weight"])
    trained, before = run(False)  # the same run with the recipe's BatchNorm moves the statistics
    assert not torch.equal(weights(trained)["net.features.1.running_mean"], before["net.features.1.running_mean"])


def test_training_lowers_the_loss_and_writes_the_run(tmp_path):
    from harmonia.store import ResultStore

    data = write_colour_dataset(tmp_path / "data", n_train=24)
    out = tmp_path / "run"
    folder = write_folder(tmp_path / "folder")
    store = ResultStore(tmp_path / "r.sqlite")
    cfg = base_config(data, out, preset="adamw", lr=0.01, epochs=6, batch_size=8, mix_folder=str(folder),
                      mix_ratio=0.25, log_every=1, lambda_harmonization=1.0)
    seen = []
    res = train(cfg, store=store, model=small_model(), callbacks=[lambda ev, info: seen.append(ev)])
    steps = res.history["steps"]
    assert res.steps == 6 * 4 == len(steps)  # 24 images, 6 of each batch of 8 with maps
    first, last = np.mean([s["loss"] for s in steps[:4]]), np.mean([s["loss"] for s in steps[-4:]])
    assert last < first - 0.1, (first, last)
    assert all(s["harm"] > 0 and s["wd"] > 0 for s in steps)  # parts are logged unweighted
    assert all(s["loss"] == pytest.approx(s["ce"] + s["harm"], rel=1e-5) for s in steps)  # adamw: lambda_w = 0
    assert all("outside" not in s for s in steps)  # logged only when that term is on
    assert {"step", "eval", "checkpoint", "epoch"} <= set(seen)
    for name in ("config.json", "history.json", "last.pt", "final.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["mix_ratio"] == 0.25
    evals = json.loads((out / "history.json").read_text())["evals"]
    assert [e["epoch"] for e in evals] == [1, 2, 3, 4, 5, 6] and evals[-1]["split"] == "test"
    final = res.final_metrics["test"]
    assert 0 <= final["accuracy"] <= 1 and math.isfinite(final["alignment"])
    run = store.get_run(res.store_key)
    assert run.kind == "training" and run.status == "complete" and run.meta["synthetic"] is True
    assert store.get_run(final["evaluation_key"]).kind == "evaluation"
    with pytest.raises(ValueError, match="--resume"):  # never overwrite a run silently
        train(cfg, model=small_model())


def test_resume_after_an_interrupt_reaches_the_same_weights(tmp_path):
    data = write_colour_dataset(tmp_path / "data", n_train=24)
    folder = write_folder(tmp_path / "folder")
    kw = {"epochs": 2, "checkpoint_every_steps": 3, "log_every": 1, "mix_folder": str(folder), "mix_ratio": 0.25}
    ref = train(base_config(data, tmp_path / "a", **kw), model=small_model(dropout=0.3))

    class Killed(Exception):
        pass

    def kill_after_step_7(event, info):  # 4 steps per epoch: mid-epoch 2, after the step-6 checkpoint
        if event == "step" and info["global_step"] == 7:
            raise Killed

    cfg = base_config(data, tmp_path / "b", **kw)
    with pytest.raises(Killed):
        train(cfg, model=small_model(dropout=0.3), callbacks=[kill_after_step_7])
    progress = load_state(tmp_path / "b" / "last.pt")["progress"]
    assert (progress["global_step"], progress["epoch"], progress["step_in_epoch"]) == (6, 1, 2)  # last checkpoint
    cfg.resume = True
    fresh = small_model(dropout=0.3)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # another init: last.pt must replace it
    res = train(cfg, model=fresh)
    assert res.resumed_from_step == 6
    a, b = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s["loss"] for s in res.history["steps"]] == [s["loss"] for s in ref.history["steps"]]
    # a different recipe cannot resume this run
    with pytest.raises(ValueError, match="different settings"):
        train(base_config(data, tmp_path / "b", **{**kw, "lr": 0.1}, resume=True), model=small_model())


def test_sigkill_then_cli_resume_matches_an_uninterrupted_run(tmp_path):
    """A real SIGKILL mid-run (no clean-up code runs), then `harmonia train --resume`."""
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    data = write_colour_dataset(tmp_path / "data", n_train=16, n_test=3)
    args = dict(model="timm:resnet10t", epochs=2, batch_size=8, checkpoint_every_steps=1, eval_splits=[])
    ref = train(base_config(data, tmp_path / "ref", **args))
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(1)
        from harmonia.training.trainer import TrainConfig, train
        def kill(event, info):
            if event == "step" and info["global_step"] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        cfg = TrainConfig.from_preset("harmonizer", data={str(data)!r}, out_dir={str(tmp_path / "run")!r},
                                      num_workers=0, progress=False, lr=0.05, **{args!r})
        train(cfg, callbacks=[kill])
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    r = CliRunner().invoke(app, ["train", "--resume", "--out", str(tmp_path / "run"), "--no-progress",
                                 "--store", str(tmp_path / "r.sqlite")])
    assert r.exit_code == 0, r.output
    a, b = weights(tmp_path / "ref" / "last.pt"), weights(tmp_path / "run" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ref.steps == 4 and "4 steps" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "run" / "final.pt"), "--data", str(data),
                                 "--split", "test", "--store", str(tmp_path / "r.sqlite"), "--workers", "0"])
    assert r.exit_code == 0, r.output


DDP_WORKER = """
import json, os, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_training import base_config, small_model
from pathlib import Path
losses = []
cfg = base_config(Path({data!r}), Path({out!r}), epochs=1, eval_splits=[], log_every=1)
from harmonia.training.trainer import train
result = train(cfg, model=small_model(), callbacks=[lambda ev, info: losses.append(info["loss"]) if ev == "step" else None])
if int(os.environ["RANK"]) == 0:
    Path({out!r}, "losses.json").write_text(json.dumps(losses))
"""


def test_two_process_ddp_on_cpu_gives_the_one_process_loss_and_weights(tmp_path):
    """torchrun, 2 processes, gloo: same global batch -> same loss and weights as 1 process.

    The model has no BatchNorm (per-rank batch statistics would differ from the global
    batch's); augmentation is on (crops are drawn per global-batch slot, not per rank).
    """
    data = write_colour_dataset(tmp_path / "data", n_train=16, n_test=3)
    one = train(base_config(data, tmp_path / "one", epochs=1, eval_splits=[], log_every=1), model=small_model())
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_WORKER.format(tests=str(REPO / "tests"), data=str(data), out=str(tmp_path / "two")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses_two = json.loads((tmp_path / "two" / "losses.json").read_text())
    losses_one = [s["loss"] for s in one.history["steps"]]
    assert len(losses_one) == len(losses_two) == 2
    assert losses_two == pytest.approx(losses_one, abs=1e-6)
    assert load_state(tmp_path / "two" / "last.pt")["world_size"] == 2  # really two processes
    a, b = weights(tmp_path / "one" / "last.pt"), weights(tmp_path / "two" / "last.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not all(torch.equal(a[k], weights(small_model())[k]) for k in a)  # and they did train


def test_cli_help_and_bad_input(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    r = CliRunner().invoke(app, ["train", "--help"])
    assert r.exit_code == 0 and "torchrun" in r.output and "--resume" in r.output
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2 and "error:" in r.output
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--data" in r.output
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--reducer", "bogus"])
    assert r.exit_code == 2 and "unknown reducer 'bogus'" in r.output
