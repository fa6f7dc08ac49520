"""`harmonia challenge train / evaluate`: checkpoints, exact resume, the grid, the store, the CLI."""

import json

import pytest
import torch
from typer.testing import CliRunner

from harmonia.challenges.evaluation import evaluate_grid, grid, heatmap_figure, human_accuracy
from harmonia.challenges.training import ChallengeTrainConfig, load_model, train_challenge
from harmonia.cli.main import app
from harmonia.models.video import build_video_model
from harmonia.store import ResultStore

TINY = dict(challenge="pathtracker", model="gru:channels=2", preset="cpu", batch_size=4, n_train=16, val_size=4,
            eval_every=2, checkpoint_every=1, knobs={"frames": 6, "distractors": 0}, device="cpu")


def test_train_writes_checkpoints_and_resumes_exactly(tmp_path):
    full = train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "full", steps=6, **TINY))
    assert {p.name for p in (tmp_path / "full").iterdir()} >= {"last.pt", "best.pt", "final.pt", "history.json", "config.json"}
    assert [h["step"] for h in full.history] == [2, 4, 6]
    train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "cut", steps=3, **TINY))  # "killed" after 3 steps
    with pytest.raises(ValueError, match="--resume"):
        train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "cut", steps=6, **TINY))
    with pytest.raises(ValueError, match="settings differ"):
        train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "cut", steps=6, resume=True, **{**TINY, "batch_size": 2}))
    resumed = train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "cut", steps=6, resume=True, **TINY))
    a, _ = load_model(tmp_path / "full" / "final.pt")
    b, record = load_model(tmp_path / "cut" / "final.pt")
    assert record["knobs"]["frames"] == 6 and record["model"] == "gru:channels=2"
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name  # same batches, same RNG: the same model
    assert resumed.history[-1]["val_accuracy"] == full.history[-1]["val_accuracy"]


def test_evaluate_grid_store_cache_and_figure(tmp_path):
    train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "run", steps=2, **TINY))
    model = tmp_path / "run" / "final.pt"
    cells = [{"frames": 6, "distractors": 0, "speed": 1}, {"frames": 8, "distractors": 2, "speed": 1}]
    with ResultStore(tmp_path / "s.sqlite") as store:
        rows = evaluate_grid([model], conditions=cells, n=6, store=store)
        assert [r["cached"] for r in rows] == [False, False] and rows[0]["trained_on"] and not rows[1]["trained_on"]
        assert all(0 <= r["accuracy"] <= 1 and r["n_samples"] == 6 and r["synthetic"] for r in rows)
        again = evaluate_grid([model], conditions=cells, n=6, store=store)
        assert [r["cached"] for r in again] == [True, True]
        assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    assert len(grid("pathtracker")) == 14 and len(grid("featuretracker")) == 12
    assert human_accuracy("featuretracker", {"shapes": "out", "colors": "irregular"})[:2] == (0.79, 0.92)
    assert human_accuracy("pathtracker", {"frames": 64}) is None
    png = heatmap_figure([{**r, "condition": f"frames={32 * (i + 1)},distractors=0,speed=1"} for i, r in enumerate(rows)],
                         "pathtracker")
    assert png[:4] == b"\x89PNG"


def test_cli_train_and_evaluate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(app, ["challenge", "train", "pathtracker", "--model", "gru:channels=2", "--out", str(out),
                              "--preset", "cpu", "--batch-size", "4", "--steps", "2", "--eval-every", "2",
                              "--val-size", "4", "--n-train", "8", "--set", "frames=6", "--set", "distractors=0",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["knobs"] == {"frames": 6, "distractors": 0, "speed": 1}
    res = runner.invoke(app, ["challenge", "evaluate", "pathtracker", "--model", str(out / "final.pt"), "--n", "4",
                              "--set", "frames=6", "--set", "distractors=0", "--store", str(tmp_path / "s.sqlite"),
                              "--out", str(tmp_path / "rep"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "frames=6,distractors=0 (train)" in res.output and (tmp_path / "rep" / "grid.csv").is_file()
    bad = runner.invoke(app, ["challenge", "evaluate", "pathtracker", "--model", str(tmp_path / "none.pt")])
    assert bad.exit_code == 2 and "no such model file" in " ".join(bad.output.split())
    bad = runner.invoke(app, ["challenge", "train", "pathtracker", "--model", "nonet", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown video model" in bad.output


def test_cv_rnn_trains_with_the_synchrony_loss_on_featuretracker(tmp_path, monkeypatch):
    import harmonia.challenges.training as training

    calls = []
    real = training.synchrony_loss
    monkeypatch.setattr(training, "synchrony_loss", lambda p, m: calls.append(m.shape) or real(p, m))
    cfg = ChallengeTrainConfig(out_dir=tmp_path / "cv", challenge="featuretracker", model="cv_rnn:channels=2,kernel=3",
                               preset="cpu", batch_size=2, n_train=4, val_size=2, eval_every=2, steps=2,
                               knobs={"frames": 3, "distractors": 1}, device="cpu")
    result = train_challenge(cfg)
    assert calls == [(2, 3, 32, 32)] * 2  # masks of every training batch went into the loss
    assert result.history[-1]["loss"] > 0.6  # BCE (about 0.69 at init) plus a synchrony term
    rows = evaluate_grid([tmp_path / "cv" / "final.pt"], conditions=[{"shapes": "out", "colors": "irregular",
                                                                      "frames": 3, "distractors": 1}], n=2)
    assert rows[0]["human_low"] == 0.79 and not rows[0]["trained_on"]


def test_time_budget_stops_with_a_validated_checkpoint(tmp_path):
    result = train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "b", steps=50, budget_minutes=1e-6, **TINY))
    assert result.steps == 1 and [h["step"] for h in result.history] == [1]
    assert (tmp_path / "b" / "final.pt").is_file() and (tmp_path / "b" / "last.pt").is_file()


def test_track_weight_trains_a_target_map_head_and_resumes_exactly(tmp_path):
    tiny = {**TINY, "track_weight": 1.0}
    full = train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "full", steps=4, **tiny))
    assert full.history[0]["loss"] > 2.0  # BCE ~0.69 plus the map loss, ~log(1024 / 4) at init
    train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "cut", steps=2, **tiny))
    train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "cut", steps=4, resume=True, **tiny))
    a, b = load_model(tmp_path / "full" / "final.pt")[0], load_model(tmp_path / "cut" / "final.pt")[0]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name  # the head's weights and moments were checkpointed too
    with pytest.raises(ValueError, match="per-frame states"):
        train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "r3d", steps=1, **{**tiny, "model": "r3d_18"}))


def test_clip_grad_norm_caps_every_step(tmp_path):
    # SGD moves the weights in proportion to the gradient, so a tiny cap leaves them almost where they were
    sgd = {**TINY, "optimizer": "sgd", "lr": 0.1, "eval_every": 10, "track_weight": 1.0}
    torch.manual_seed(0)  # the trainer's seed: the same initial weights as both runs
    init = build_video_model(TINY["model"]).state_dict()
    moved = {}
    for cap in (0.0, 1e-9):
        run = train_challenge(ChallengeTrainConfig(out_dir=tmp_path / f"c{cap}", steps=2, clip_grad_norm=cap, **sgd))
        weights = load_model(run.out_dir / "final.pt")[0].state_dict()
        moved[cap] = max(float((weights[k] - v).abs().max()) for k, v in init.items())
    assert moved[0.0] > 1e-3 and moved[1e-9] < 1e-7, moved
    assert json.loads((tmp_path / "c1e-09" / "config.json").read_text())["clip_grad_norm"] == 1e-9
    with pytest.raises(ValueError, match="clip_grad_norm must be >= 0"):
        train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "bad", steps=1, clip_grad_norm=float("nan"), **sgd))


def test_a_run_made_before_a_setting_existed_resumes(tmp_path):
    train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "r", steps=2, **TINY))
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    del config["clip_grad_norm"]  # as written by an older harmonia
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    assert train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "r", steps=3, resume=True, **TINY)).steps == 3
    with pytest.raises(ValueError, match=r"settings differ \(clip_grad_norm\)"):
        train_challenge(ChallengeTrainConfig(out_dir=tmp_path / "r", steps=4, resume=True, clip_grad_norm=1.0, **TINY))


@pytest.mark.slow  # minutes: 350 steps of a 32-frame recurrent model on one thread (about 1-1.7 s a step here)
def test_short_training_on_the_easiest_setting_beats_chance(tmp_path):
    """Issue 19: InT (4 channels, 5 x 5) on SYNTHETIC PathTracker, 32 frames, 0 distractors.

    BCE alone stayed at chance in every short run (docs/challenges.md); with the target-map
    loss (``track_weight``) the default seed learns to track: at chance through step 250, then
    above 0.7 (best 0.820 at step 350 on 256 held-out videos of another seed; chance's 95% band
    is 0.44-0.56). One thread, as measured: another thread count changes the float rounding.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_challenge(ChallengeTrainConfig(
            out_dir=tmp_path / "int", challenge="pathtracker", model="int:channels=4,kernel=5,readout=marker",
            knobs={"frames": 32, "distractors": 0}, preset="cpu", lr=3e-3, batch_size=16, steps=350, n_train=1024,
            val_size=256, eval_every=50, checkpoint_every=50, track_weight=1.0, seed=0, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    accuracies = [h["val_accuracy"] for h in result.history]
    assert accuracies[0] < 0.56, accuracies  # nothing learned yet at step 50
    assert result.best_val_accuracy >= 0.65, accuracies  # best.pt, as evaluation reads it
