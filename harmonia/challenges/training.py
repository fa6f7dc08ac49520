"""Train a video model on a tracking challenge: ``train_challenge(ChallengeTrainConfig(...))``.

Samples are drawn on the fly (:class:`~harmonia.challenges.dataset.ChallengeDataset`): training
uses indices ``0 .. n_train - 1`` of the generator at ``seed``, validation the first
``val_size`` samples at ``seed + 1``, so they never overlap. The loss is BCE on the one logit
(plus, for the CV-RNN on FeatureTracker, ``sync_weight`` x the synchrony loss on the masks; and
with ``track_weight`` > 0, an InT or GRU gets a 1 x 1 conv on its state of every frame, trained
to say where the target is: ``track_weight`` x :func:`~harmonia.models.tracking.target_map_loss`,
harmonia's addition for short runs, off by default; ``clip_grad_norm`` > 0 caps the gradient's
norm before each step, also off by default).
The ``published`` preset is the papers' optimiser: Adam, learning rate 3e-4, batch 180.

Like harmonia's image trainer it writes atomic checkpoints (``last.pt``, with model, optimizer,
the position in the data and every RNG, so ``resume=True`` continues a killed run exactly),
``best.pt`` at the best validation accuracy (early stopping with ``patience``), ``final.pt``
(what ``harmonia challenge evaluate --model`` reads), ``history.json`` and ``config.json``.

Example:
    >>> cfg = ChallengeTrainConfig(out_dir="runs/int", model="int:channels=8", steps=10,
    ...                            knobs={"frames": 32, "distractors": 0}, preset="published")
    >>> result = train_challenge(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from harmonia.challenges.base import CHALLENGES, create, discover
from harmonia.challenges.dataset import ChallengeDataset
from harmonia.models.tracking import synchrony_loss, target_map_loss
from harmonia.models.video import build_video_model
from harmonia.training.state import BEST, FINAL, LAST, load_state, rng_state, save_state, set_rng_state, sweep_temporaries
from harmonia.utils.device import resolve_device
from harmonia.utils.io import atomic_write, atomic_write_text

MODEL_FORMAT = "harmonia-challenge-model"
PRESETS: dict[str, dict[str, Any]] = {
    # Linsley, Malik et al. 2021 (reference): BCE, lr 3e-4, batch 180 (InT); Adam as in their code.
    "published": {"optimizer": "adam", "lr": 3e-4, "batch_size": 180, "weight_decay": 0.0},
    # For a short CPU run: small batches, a larger step.
    "cpu": {"optimizer": "adam", "lr": 1e-3, "batch_size": 16, "weight_decay": 0.0},
}
# The training condition of the published protocols.
TRAIN_KNOBS: dict[str, dict[str, Any]] = {
    "pathtracker": {"frames": 64, "distractors": 14, "speed": 1},
    "featuretracker": {"shapes": "in", "colors": "in"},
}
# Settings a resumed run may change (no learning-rate schedule depends on the step count).
RUNTIME_FIELDS = frozenset({"out_dir", "resume", "device", "num_workers", "progress", "checkpoint_every", "steps", "patience",
                            "budget_minutes"})


@dataclass
class ChallengeTrainConfig:
    """What a challenge training run does (``preset`` fills optimizer, lr, batch size left as None)."""

    out_dir: str | Path
    challenge: str = "pathtracker"
    knobs: dict[str, Any] = field(default_factory=dict)
    model: str = "int"
    preset: str = "published"
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    steps: int = 1000
    n_train: int = 20_000
    val_size: int = 512
    eval_every: int = 100
    checkpoint_every: int = 50
    patience: int | None = None  # evaluations without a better val accuracy before stopping
    budget_minutes: float | None = None  # stop (validate, checkpoint, final.pt) once training took this long
    sync_weight: float = 1.0
    track_weight: float = 0.0  # > 0: the target-map loss on every frame's state (not in the papers)
    clip_grad_norm: float = 0.0  # > 0: gradients scaled to at most this L2 norm before each step (not in the papers)
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    resume: bool = False
    progress: Callable[[int, int, dict[str, Any]], None] | None = None

    def resolved(self) -> "ChallengeTrainConfig":
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        out = ChallengeTrainConfig(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        discover()
        out.challenge = CHALLENGES.resolve(self.challenge)  # aliases ("pt") -> the registered name
        for k, v in PRESETS[self.preset].items():
            if getattr(out, k) is None:
                setattr(out, k, v)
        out.knobs = {**TRAIN_KNOBS.get(out.challenge, {}), **self.knobs}
        for name in ("steps", "n_train", "val_size", "eval_every", "checkpoint_every", "batch_size"):
            if int(getattr(out, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(out, name)}")
        if not out.clip_grad_norm >= 0:  # NaN too
            raise ValueError(f"clip_grad_norm must be >= 0 (0: off), got {out.clip_grad_norm}")
        if out.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {out.optimizer!r}")
        return out

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        d["out_dir"] = str(d["out_dir"])
        return d


@dataclass
class ChallengeTrainResult:
    out_dir: Path
    steps: int
    val_accuracy: float
    best_val_accuracy: float
    seconds: float
    history: list[dict[str, Any]]


def _optimizer(cfg: ChallengeTrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def batch_loss(model: torch.nn.Module, batch: dict[str, Any], sync_weight: float, device: torch.device,
               track_head: torch.nn.Module | None = None, track_weight: float = 0.0):
    """(loss, logits): BCE, plus the synchrony loss when the model uses masks and the batch has them,
    plus ``track_weight`` x the target-map loss of ``track_head`` on every frame's state when given."""
    video = batch["video"].to(device, non_blocking=True)
    labels = batch["label"].to(device).float()
    if track_head is not None and track_weight > 0:
        logits, states = model(video, return_states=True)
        maps = track_head(states.flatten(0, 1)).view(states.shape[0], states.shape[1], *states.shape[3:])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss = loss + track_weight * target_map_loss(maps, batch["target_mask"].to(device))
    elif getattr(model, "uses_masks", False) and "masks" in batch and sync_weight > 0:
        logits, phases = model(video, return_phases=True)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss = loss + sync_weight * synchrony_loss(phases, batch["masks"].to(device))
    else:
        logits = model(video)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
    return loss, logits


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> tuple[float, list[dict]]:
    """Accuracy and per-sample rows (index, label, logit, correct) of ``model`` over ``loader``."""
    was = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    for batch in loader:
        logits = model(batch["video"].to(device)).float().cpu()
        for idx, y, z in zip(batch["index"].tolist(), batch["label"].tolist(), logits.tolist()):
            rows.append({"index": int(idx), "label": int(y), "logit": float(z), "correct": int((z > 0) == bool(y))})
    model.train(was)
    return (sum(r["correct"] for r in rows) / max(len(rows), 1)), rows


def save_model(path: Path, model: torch.nn.Module, cfg: ChallengeTrainConfig, extra: dict[str, Any]) -> None:
    """The trained model as a standalone file: its spec, weights and training condition."""
    payload = {"format": MODEL_FORMAT, "model": cfg.model, "challenge": cfg.challenge, "knobs": cfg.knobs,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model saved by :func:`save_model` (``final.pt`` / ``best.pt``) and its record, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (train one with `harmonia challenge train`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a challenge model (final.pt or best.pt of `harmonia challenge train`)")
    model = build_video_model(payload["model"])
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval(), payload


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def train_challenge(config: ChallengeTrainConfig) -> ChallengeTrainResult:
    """Run (or resume) a training; see the module docstring."""
    cfg = config.resolved()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(out)
    device = resolve_device(cfg.device)
    saved = {k: v for k, v in cfg.to_json().items() if k not in RUNTIME_FIELDS}
    config_file = out / "config.json"
    if config_file.is_file() and (out / LAST).is_file():
        # a setting added after the run was made reads as its default (what the run used)
        defaults = {f.name: f.default for f in fields(ChallengeTrainConfig) if f.default is not MISSING}
        old = {k: v for k, v in {**defaults, **json.loads(config_file.read_text())}.items()
               if k not in RUNTIME_FIELDS and k in saved}
        if not cfg.resume:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or use another --out")
        if old != saved:
            diff = sorted(k for k in set(old) | set(saved) if old.get(k) != saved.get(k))
            raise ValueError(f"cannot resume {out}: settings differ ({', '.join(diff)})")
    atomic_write_text(config_file, json.dumps(cfg.to_json(), indent=2) + "\n")

    torch.manual_seed(cfg.seed)
    train_gen = create(cfg.challenge, seed=cfg.seed, **cfg.knobs)
    if train_gen.modality != "video":
        raise ValueError(f"{cfg.challenge} is an {train_gen.modality} challenge; this trainer takes the video "
                         "challenges (pathtracker, featuretracker)")
    train_gen.length = max(train_gen.length, cfg.n_train)
    val_gen = create(cfg.challenge, seed=cfg.seed + 1, **cfg.knobs)
    val_gen.length = max(val_gen.length, cfg.val_size)
    train_ds = ChallengeDataset(train_gen, cfg.n_train, target_masks=cfg.track_weight > 0)
    val_ds = ChallengeDataset(val_gen, cfg.val_size)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    model = build_video_model(cfg.model).to(device).train()
    track_head = None
    if cfg.track_weight > 0:
        if "return_states" not in inspect.signature(model.forward).parameters:
            raise ValueError(f"track_weight needs a recurrent model with per-frame states (int, gru), not {cfg.model!r}")
        track_head = torch.nn.Conv2d(model.channels, 1, 1).to(device)
    trained = model if track_head is None else torch.nn.ModuleList([model, track_head])
    opt = _optimizer(cfg, trained)

    step, epoch, pos, best, stale, before = 0, 0, 0, -1.0, 0, 0.0
    history: list[dict[str, Any]] = []
    if cfg.resume and (out / LAST).is_file():
        state = load_state(out / LAST)
        model.load_state_dict(state["model"])
        if track_head is not None:
            track_head.load_state_dict(state["track_head"])
        opt.load_state_dict(state["optimizer"])
        p = state["progress"]
        step, epoch, pos, best, stale = p["step"], p["epoch"], p["pos"], p["best"], p["stale"]
        before = float(p.get("seconds", 0.0))  # training time of the earlier sessions
        history = json.loads(state["history"])
        set_rng_state(state["rng"])

    def checkpoint() -> None:
        extra = {} if track_head is None else {"track_head": track_head.state_dict()}
        save_state(out / LAST, {"model": model.state_dict(), **extra, "optimizer": opt.state_dict(), "rng": rng_state(),
                                "progress": {"step": step, "epoch": epoch, "pos": pos, "best": best, "stale": stale,
                                             "seconds": before + time.perf_counter() - start},
                                "history": json.dumps(history)})
        atomic_write_text(out / "history.json", json.dumps(history, indent=1) + "\n")

    start, running = time.perf_counter(), []
    val_acc = history[-1]["val_accuracy"] if history else float("nan")
    stopped = False
    while step < cfg.steps and not stopped:
        order = _epoch_order(cfg.seed, epoch, cfg.n_train)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size)]
        if not batches:
            raise ValueError(f"n_train={cfg.n_train} is smaller than one batch ({cfg.batch_size})")
        loader = torch.utils.data.DataLoader(train_ds, batch_sampler=batches[pos:], num_workers=cfg.num_workers)
        for batch in loader:
            loss, logits = batch_loss(model, batch, cfg.sync_weight, device, track_head, cfg.track_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.clip_grad_norm)
            opt.step()
            step, pos = step + 1, pos + 1
            acc = float(((logits.detach() > 0).long().cpu() == batch["label"]).float().mean())
            running.append((float(loss.detach()), acc))
            out_of_time = cfg.budget_minutes is not None and before + time.perf_counter() - start >= 60 * cfg.budget_minutes
            if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
                val_acc, _ = accuracy(model, val_loader, device)
                n = len(running)
                history.append({"step": step, "loss": sum(r[0] for r in running) / n,
                                "train_accuracy": sum(r[1] for r in running) / n, "val_accuracy": val_acc,
                                "seconds": before + time.perf_counter() - start})
                running = []
                if val_acc > best:
                    best, stale = val_acc, 0
                    save_model(out / BEST, model, cfg, {"step": step, "val_accuracy": val_acc})
                else:
                    stale += 1
                    stopped = cfg.patience is not None and stale >= cfg.patience
                stopped = stopped or out_of_time
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped:
                checkpoint()
            if cfg.progress:
                cfg.progress(step, cfg.steps, {"loss": float(loss.detach()), "val_accuracy": val_acc})
            if step >= cfg.steps or stopped:
                break
        else:
            epoch, pos = epoch + 1, 0
    checkpoint()
    save_model(out / FINAL, model, cfg, {"step": step, "val_accuracy": val_acc})
    return ChallengeTrainResult(out, step, val_acc, best, before + time.perf_counter() - start, history)
