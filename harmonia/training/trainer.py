"""The neural-harmonizer training loop: ``train(TrainConfig(...)) -> TrainResult``.

One loop for fine-tuning or training from scratch any model :func:`harmonia.models.load`
builds, on a harmonia dataset (optionally mixed with a plain image folder, token 0):

* the published recipe as the ``harmonizer`` preset (SGD Nesterov 0.9, warm-up + step
  decay, weight term 1e-5 in the loss, label smoothing 0.1, paired random resized crop and
  flip), AdamW + cosine as the ``adamw`` preset;
* periodic evaluation of accuracy and alignment (:func:`harmonia.evaluation.evaluate` with
  the release's evaluation saliency), ``best.pt`` at the best validation metric;
* atomic checkpoints (``last.pt``) every N steps and at epoch ends; ``resume=True``
  continues a killed run exactly (same batches, crops, RNG streams and LR), losing at most
  the steps since the last checkpoint;
* the same code under ``torchrun`` (DDP, one process per GPU or CPU), bf16 autocast and
  channels-last on GPUs;
* ``history.json`` (loss parts per logging interval, metrics per evaluation) for training
  curves; the final model as ``final.pt`` (``harmonia evaluate --model OUT/final.pt``) and
  the final results in the results store.

Loss and DDP: the harmonizer loss forwards the model (possibly twice, see
``harmonia.training.loss``) and differentiates through an input gradient. DDP allows only
one forward per backward, so DDP wraps a small module whose ``forward`` *is* the whole loss;
see :mod:`harmonia.training.distributed` for why plain DDP is exact with double backprop.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from harmonia.config import Config
from harmonia.errors import UserError
from harmonia.training import distributed as D
from harmonia.training.augment import PairedAugment, step_generator
from harmonia.training.loss import LossOptions, freeze_batchnorm
from harmonia.training.mixing import ImageFolderSource, MixedBatchSampler, MixedDataset, folder_count
from harmonia.training.schedule import ScheduleFn, build_scheduler, recipe_milestones
from harmonia.training.state import BEST, FINAL, LAST, load_state, rng_state, save_state, set_rng_state, sweep_temporaries
from harmonia.utils.device import default_num_workers
from harmonia.utils.io import atomic_write_text
from harmonia.utils.lock import folder_lock

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"

PRESETS: dict[str, dict[str, Any]] = {
    # The published recipe (docs/methods.md, "The harmonizer loss"). Its learning rate is
    # not recorded: lr=None resolves to 0.1 x batch / 256 (the linear scaling rule).
    "harmonizer": {
        "optimizer": "sgd", "lr": None, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0,
        "lambda_weights": 1e-5, "schedule": "step", "warmup_epochs": None, "milestones": None,
        "gamma": 0.1, "label_smoothing": 0.1, "lambda_harmonization": 1.0, "levels": 5,
        "augment": True, "mix_ratio": 0.8,
    },
    # Decoupled weight decay instead of the loss's weight term; lr=None -> 5e-4 x batch / 512.
    "adamw": {
        "optimizer": "adamw", "lr": None, "weight_decay": 0.05, "lambda_weights": 0.0,
        "schedule": "cosine", "warmup_epochs": None, "milestones": None, "label_smoothing": 0.1,
        "lambda_harmonization": 1.0, "levels": 5, "augment": True, "mix_ratio": 0.8,
    },
}

# Settings that may differ between a run and its resumption (they do not change the maths).
RUNTIME_FIELDS = frozenset({
    "out_dir", "resume", "progress", "log", "device", "num_workers", "eval_splits", "eval_every", "eval_limit", "ceiling",
    "eval_batch_size", "checkpoint_every_steps", "checkpoint_every_epochs", "log_every", "amp", "channels_last",
})


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite (the last checkpoint is kept)."""


@dataclass
class TrainConfig(Config):
    """Everything a training run depends on (saved as ``OUT/config.json``).

    Build one from a preset with :meth:`from_preset`; the field defaults are the
    ``harmonizer`` preset. ``None`` means "derived": ``lr`` from the preset and batch size,
    ``warmup_epochs`` / ``milestones`` from the recipe scaled to ``epochs`` (see
    :func:`harmonia.training.schedule.recipe_milestones`), ``image_size`` = the dataset's
    native size, ``eval_splits`` = "val" or else "test" when the dataset has one,
    ``amp`` / ``channels_last`` = on for CUDA only.

    Example:
        >>> c = TrainConfig.from_preset("adamw", data="data/sim", epochs=3)
        >>> c.optimizer, c.schedule, c.resolved_lr()
        ('adamw', 'cosine', 6.25e-05)
    """

    data: str = ""
    model: str = "timm:resnet10t"
    pretrained: bool = False
    out_dir: str = "runs/train"
    preset: str = "harmonizer"
    train_split: str = "train"
    eval_splits: list[str] | None = None
    epochs: int = 10
    batch_size: int = 64  # global: split evenly over the processes
    optimizer: str = "sgd"  # "sgd" | "adamw"
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0  # the optimizer's own decay (AdamW: decoupled), weight parameters only
    lambda_weights: float = LossOptions.lambda_weights  # the loss's sum 0.5 ||w||^2 term (the recipe's weight decay)
    schedule: str = "step"  # "step" | "cosine" | "constant"
    warmup_epochs: float | None = None
    milestones: list[float] | None = None  # epochs where the LR is multiplied by gamma
    gamma: float = 0.1
    min_lr_fraction: float = 0.0  # cosine: final LR / base LR
    # the loss (harmonia.training.loss.LossOptions holds the defaults)
    lambda_harmonization: float = LossOptions.lambda_harmonization
    label_smoothing: float = LossOptions.label_smoothing
    levels: int = LossOptions.levels
    reducer: str = LossOptions.reducer  # training saliency's channel reduction (signed mean, as released)
    saliency_input: str = LossOptions.saliency_input
    score: str = LossOptions.score  # what the training saliency explains (the true-class logit, as released)
    lambda_outside: float = LossOptions.lambda_outside  # extra term, not in the release: squared saliency where people do not look
    outside_threshold: float = LossOptions.outside_threshold
    lambda_masked: float = LossOptions.lambda_masked  # extra term, not in the release: cross-entropy of images reduced to the human maps
    freeze_batchnorm: bool = False  # BatchNorm on running statistics (affine still trained): cheap loss path
    image_size: int | None = None
    model_input_size: int | None = None  # None: the network sees image_size (no inner resize)
    augment: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    mix_folder: str | None = None
    mix_ratio: float = 0.8  # share of each batch from mix_folder (only with a folder)
    eval_every: int = 1  # epochs; 0 = only at the end
    eval_limit: int | None = None
    eval_batch_size: int | None = None
    ceiling: str = "auto"
    best_metric: str = "accuracy"  # "accuracy" | "alignment" | "spearman"
    checkpoint_every_steps: int = 0  # 0: only at epoch ends
    checkpoint_every_epochs: int = 1
    log_every: int = 0  # steps per history entry; 0: about 20 per epoch
    clip_grad_norm: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    amp_dtype: str = "bfloat16"
    channels_last: bool | None = None
    num_workers: int | None = None  # None: default_num_workers(device)
    resume: bool = False
    progress: bool = True  # the live progress bar (stderr)
    # A header, one line per epoch and one per evaluation on stderr, with or without the bar
    # (a batch job's log); off, the trainer prints nothing unless the bar is on.
    log: bool = False

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str = "harmonizer", **overrides: Any) -> "TrainConfig":
        """The preset's settings, then ``overrides`` on top.

        Example:
            >>> TrainConfig.from_preset("harmonizer", epochs=2).schedule
            'step'
        """
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        cls.check_keys(overrides, "training")
        return cls(**{**PRESETS[preset], "preset": preset, **overrides})

    def loss_options(self) -> LossOptions:
        """The loss settings of this run (the :class:`LossOptions` fields it has; the rest default)."""
        return LossOptions(**{k: getattr(self, k) for k in LossOptions.field_names() if hasattr(self, k)})

    # -- derived values ------------------------------------------------------------------------
    def resolved_lr(self) -> float:
        """The base learning rate (``lr``, or the preset's rule for the global batch size)."""
        if self.lr is not None:
            return float(self.lr)
        if self.optimizer == "adamw":
            return 5e-4 * self.batch_size / 512
        return 0.1 * self.batch_size / 256

    def resolved_schedule(self) -> tuple[float, tuple[float, ...]]:
        """(warm-up epochs, milestones) after filling in the recipe's scaled defaults."""
        warmup, milestones = recipe_milestones(self.epochs)
        if self.warmup_epochs is not None:
            warmup = float(self.warmup_epochs)
        if self.milestones is not None:
            milestones = tuple(float(m) for m in self.milestones)
        return warmup, milestones

    def identity(self) -> dict[str, Any]:
        """The settings that define the run's result (runtime-only ones left out)."""
        return {k: v for k, v in self.to_json().items() if k not in RUNTIME_FIELDS}

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (bool(self.data), "data: a dataset directory is needed"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}"),
            (self.schedule in ("step", "cosine", "constant"), f"schedule must be step, cosine or constant, got {self.schedule!r}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0.0 <= self.mix_ratio < 1.0, f"mix_ratio must be in [0, 1), got {self.mix_ratio}"),
            (self.best_metric in ("accuracy", "alignment", "spearman"), f"best_metric must be accuracy, alignment or spearman, got {self.best_metric!r}"),
            (self.amp_dtype in ("bfloat16", "float16"), f"amp_dtype must be bfloat16 or float16, got {self.amp_dtype!r}"),
            (self.eval_every >= 0 and self.checkpoint_every_steps >= 0 and self.checkpoint_every_epochs >= 0, "eval/checkpoint intervals must be >= 0"),
            (self.image_size is None or self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}"),
            (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}"),
        ]

    def validate(self) -> "TrainConfig":
        """Raise :class:`~harmonia.errors.UserError` naming the first unusable setting."""
        super().validate()
        self.loss_options().validate()
        from harmonia.evaluation import parse_ceiling_option

        parse_ceiling_option(self.ceiling)  # before the first epoch, not at its evaluation
        return self


@dataclass
class TrainResult:
    """What a run produced; paths are under ``out_dir``."""

    out_dir: Path
    final_checkpoint: Path | None
    best_checkpoint: Path | None
    last_state: Path
    epochs: int
    steps: int
    final_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # per eval split
    history: dict[str, Any] = field(default_factory=dict)
    store_key: str | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    resumed_from_step: int | None = None


Callback = Callable[[str, dict[str, Any]], None]


def train(
    config: TrainConfig,
    store: Any = None,
    callbacks: Iterable[Callback] = (),
    model: nn.Module | None = None,
) -> TrainResult:
    """Train (or fine-tune) a model with the harmonizer loss; see the module docstring.

    Args:
        config: the run's settings.
        store: a :class:`harmonia.store.ResultStore` for the final evaluation and the run's
            summary (None: results only in ``OUT/history.json`` and the returned value).
        callbacks: called as ``cb(event, info)`` on every process, with event "step"
            (after each optimisation step), "checkpoint", "eval" or "epoch"; ``info`` has
            epoch, global_step, loss parts, lr and metrics. An exception stops training.
        model: a ready :class:`harmonia.models.HarmoniaModel` to train instead of
            ``config.model`` (its classes must match the dataset's).

    Example:
        >>> res = train(TrainConfig.from_preset("harmonizer", data="data/sim", epochs=5,
        ...                                     out_dir="runs/h"))  # doctest: +SKIP
        >>> res.final_metrics["test"]["alignment"]  # doctest: +SKIP
    """
    config.validate()
    from harmonia.utils.device import resolve_device

    requested = resolve_device(config.device)
    info = D.setup(requested.type)
    try:
        return _Trainer(config, info, D.local_device(info, requested), store, list(callbacks), model).run()
    finally:
        D.teardown(info)


# ---------------------------------------------------------------------------------------------
def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def minmax_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation to [0, 1]; constant maps (e.g. token 0's zeros) give 0.

    The recipe's last "diffusion" step. The loss standardises maps anyway, but its epsilon
    (std + 1e-5) assumes maps in [0, 1]; datasets may store maps at any scale.

    Example:
        >>> minmax_maps(torch.tensor([[[2.0, 4.0]], [[3.0, 3.0]]])).tolist()
        [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    lo = maps.amin((-2, -1), keepdim=True)
    span = maps.amax((-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


class _LossModule(nn.Module):
    """The model plus its loss, so that one ``forward`` is one whole loss (what DDP needs)."""

    def __init__(self, model: nn.Module, options: dict[str, Any]) -> None:
        super().__init__()
        from harmonia.training.weight_decay import weight_params

        self.model = model
        self.options = options
        self.weight_list = weight_params(model)  # selected once, not at every step

    def forward(self, images, labels, maps, tokens):  # type: ignore[override]
        from harmonia.training.loss import harmonizer_loss

        out = harmonizer_loss(self.model, images, labels, maps, tokens, weight_params=self.weight_list, **self.options)
        return out.total, out.cross_entropy, out.harmonization, out.weights, out.outside, out.masked, out.logits


def _fixed_input_size(model: nn.Module) -> bool:
    """True for networks that only accept their own input size (timm ViTs with a strict patch grid)."""
    patch = getattr(getattr(model, "net", model), "patch_embed", None)
    return bool(getattr(patch, "strict_img_size", False)) and not getattr(patch, "dynamic_img_size", False)


def _image_size_of(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        return im.size[1], im.size[0]


class _Trainer:
    def __init__(self, cfg: TrainConfig, info: D.DistInfo, device: torch.device, store: Any,
                 callbacks: list[Callback], model: nn.Module | None) -> None:
        self.cfg, self.info, self.device, self.store, self.callbacks = cfg, info, device, store, callbacks
        self.out = Path(cfg.out_dir)
        self.main = info.is_main
        cuda = device.type == "cuda"
        self.amp = cfg.amp if cfg.amp is not None else cuda
        if self.amp and not cuda:
            self.amp = False  # bf16 autocast of a double backward is slow and unhelpful on CPUs
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
        self._given_model = model
        self.console = None
        if self.main and (cfg.progress or cfg.log):
            from rich.console import Console

            self.console = Console(stderr=True, soft_wrap=True)  # log lines stay whole in a non-terminal's log

    # -- setup ---------------------------------------------------------------------------------
    def _setup_data(self) -> None:
        from harmonia.data import HarmoniaDataset

        cfg = self.cfg
        probe = HarmoniaDataset(cfg.data, cfg.train_split)
        if len(probe) == 0:
            raise ValueError(f"{cfg.data}: split {cfg.train_split!r} has no images")
        self.info_data = probe.info
        self.load_size = _image_size_of(probe.records[0].image)
        self.image_size = (cfg.image_size, cfg.image_size) if cfg.image_size else self.load_size
        # items of another size are resized to the first one's so that batches stack
        self.train_ds = HarmoniaDataset(cfg.data, cfg.train_split, size=self.load_size)
        classes = probe.info.classes
        self.classes = list(classes) if classes else None
        self.num_classes = len(classes) if classes else max(probe.labels) + 1
        self.folder = ImageFolderSource(cfg.mix_folder, self.classes, self.load_size) if cfg.mix_folder else None

        if cfg.batch_size % self.info.world_size:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {self.info.world_size} processes")
        self.local_batch = cfg.batch_size // self.info.world_size
        n_f = folder_count(cfg.mix_ratio, self.local_batch) if self.folder is not None else 0
        self.sampler = MixedBatchSampler(
            len(self.train_ds), len(self.folder) if self.folder is not None else 0,
            local_batch=self.local_batch, n_folder_per_batch=n_f,
            rank=self.info.rank, world_size=self.info.world_size, seed=cfg.seed,
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_ds)} training images make no full batch of {cfg.batch_size - n_f * self.info.world_size} "
                "human-map images; lower the batch size"
            )
        self.loader = DataLoader(
            MixedDataset(self.train_ds, self.folder),
            batch_sampler=self.sampler,
            num_workers=default_num_workers(self.device) if cfg.num_workers is None else cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        )
        self.augment = (
            PairedAugment(size=self.image_size, scale=tuple(cfg.crop_scale))
            if cfg.augment
            else (PairedAugment(size=self.image_size, crop=False, flip_p=0.0, image_mode="bilinear")
                  if self.image_size != self.load_size else None)
        )
        split_names = probe.info.splits
        if cfg.eval_splits is None:
            eval_splits = [s for s in ("val", "test") if s in split_names][:1]
        else:
            eval_splits = list(cfg.eval_splits)
        # opened on every rank so that a wrong split name fails everywhere, not only on rank 0
        self.eval_sets = {s: HarmoniaDataset(cfg.data, s, size=self.image_size) for s in eval_splits}

    def _setup_model(self) -> None:
        cfg = self.cfg
        _seed_all(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        if self._given_model is not None:
            model = self._given_model
        else:
            from harmonia.models import load

            model = load(cfg.model, pretrained=cfg.pretrained, num_classes=self.num_classes)
        n_out = getattr(model, "num_classes", None)
        if n_out is not None and n_out != self.num_classes:
            raise ValueError(f"the model has {n_out} classes but the dataset {self.num_classes}")
        if self.classes and hasattr(model, "class_names"):
            model.class_names = list(self.classes)
        if hasattr(model, "preprocessing"):
            size = (cfg.model_input_size,) * 2 if cfg.model_input_size else self.image_size
            if not cfg.model_input_size and _fixed_input_size(model):
                size = model.input_size  # e.g. a ViT whose patch grid is fixed: keep its size
            model.preprocessing = replace(model.preprocessing, input_size=tuple(size))
        from harmonia.training.loss import disable_fused_attention

        disable_fused_attention(model)  # fused attention kernels have no double backward
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._train_mode(model)
        self.loss_module = _LossModule(model, {
            "lambda_harmonization": cfg.lambda_harmonization, "lambda_weights": cfg.lambda_weights,
            "label_smoothing": cfg.label_smoothing, "levels": cfg.levels, "reducer": cfg.reducer,
            "saliency_input": cfg.saliency_input, "score": cfg.score, "lambda_outside": cfg.lambda_outside,
            "outside_threshold": cfg.outside_threshold, "lambda_masked": cfg.lambda_masked,
        })

        decay_ids = {id(p) for p in self.loss_module.weight_list}
        trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if id(p) in decay_ids], "weight_decay": cfg.weight_decay},
            {"params": [p for p in trainable if id(p) not in decay_ids], "weight_decay": 0.0},
        ]
        lr = cfg.resolved_lr()
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr)
        warmup, milestones = cfg.resolved_schedule()
        self.schedule_fn = ScheduleFn(cfg.schedule, self.steps_per_epoch, float(cfg.epochs), warmup, milestones,
                                      cfg.gamma, cfg.min_lr_fraction)
        self.scheduler = build_scheduler(self.optimizer, self.schedule_fn)
        fp16 = self.amp and cfg.amp_dtype == "float16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)  # bf16 needs no scaling
        # rank-specific stream for dropout / stochastic depth from here on
        _seed_all(cfg.seed * 1009 + 1 + self.info.rank)

    # -- state -----------------------------------------------------------------------------------
    def _fresh_progress(self) -> dict[str, Any]:
        return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "log_acc": None,
                "elapsed": 0.0, "images": 0, "finished": False}

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = rng_state()
        if not self.info.distributed:
            return [mine]
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def _save_last(self) -> None:
        rngs = self._gather_rng()  # collective: every rank calls this
        if not self.main:
            return
        state = {
            "config": self.cfg.to_json(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": self.progress,
            "rng": rngs,
            "world_size": self.info.world_size,
        }
        save_state(self.out / LAST, state)
        self._write_history()
        self._emit("checkpoint", {"path": str(self.out / LAST)})

    def _maybe_resume(self) -> int | None:
        last = self.out / LAST
        if not last.exists():  # nothing to resume (or died before its first checkpoint): start
            return None
        if not self.cfg.resume:
            raise ValueError(f"{self.out} already holds a run ({LAST}); pass --resume to continue it or choose another --out")
        state = load_state(last, map_location=self.device)
        saved = TrainConfig.from_json(state["config"])
        diff = sorted(k for k, v in self.cfg.identity().items() if saved.identity().get(k) != v)
        if diff:
            shown = ", ".join(f"{k}={saved.identity().get(k)!r}" for k in diff[:6])
            raise ValueError(f"{last} was written with different settings ({shown}); resume with those or use another --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the function itself is code, not state: keep this run's (one per parameter group)
        self.scheduler.lr_lambdas = [self.schedule_fn] * len(self.optimizer.param_groups)
        self.scaler.load_state_dict(state["scaler"])
        self.progress = dict(state["progress"])
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:  # another world size: fresh per-rank streams (data order and crops do not depend on it)
            _seed_all(self.cfg.seed * 7919 + self.progress["global_step"] + self.info.rank)
        if self.main:
            self._load_history(self.progress["global_step"])
        return int(self.progress["global_step"])

    def _load_history(self, upto_step: int) -> None:
        path = self.out / HISTORY_FILE
        if path.exists():
            old = json.loads(path.read_text())
            # entries logged after the checkpoint belong to steps that will be redone
            self.history["steps"] = [e for e in old.get("steps", []) if e["step"] <= upto_step]
            self.history["evals"] = [e for e in old.get("evals", []) if e["step"] <= upto_step]

    def _write_history(self) -> None:
        if self.main:
            atomic_write_text(self.out / HISTORY_FILE, json.dumps(_finite(self.history), indent=1) + "\n")

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event, {"epoch": self.progress["epoch"], "global_step": self.progress["global_step"], **info})

    # -- one step --------------------------------------------------------------------------------
    def _step(self, batch: dict[str, Any]) -> list[float]:
        cfg, dev, info = self.cfg, self.device, self.info
        images = batch["image"].to(dev, non_blocking=True)
        maps = minmax_maps(batch["map"].to(dev, non_blocking=True).float())
        labels = torch.as_tensor(batch["label"]).to(dev, non_blocking=True)
        tokens = torch.as_tensor(batch["token"]).to(dev, non_blocking=True)
        if self.augment is not None:
            # draws for the whole global batch, this rank's slots taken: 1 and N processes crop alike
            g = step_generator(cfg.seed, self.progress["global_step"])
            n_global, (h, w) = self.local_batch * info.world_size, images.shape[-2:]
            boxes = self.augment.sample_boxes(n_global, h, w, g)[info.rank :: info.world_size]
            flips = self.augment.sample_flips(n_global, g)[info.rank :: info.world_size]
            images, maps = self.augment(images, maps, boxes=boxes, flips=flips)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
        with torch.autocast(dev.type, dtype=dtype, enabled=self.amp):
            total, ce, harm, wd, outside, masked, _ = self.ddp(images, labels, maps, tokens)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        # every rank gets the same mean, so all of them stop together on a NaN (before stepping)
        parts = D.all_reduce_mean(torch.stack([total, ce, harm, wd, outside, masked]).float(), info).tolist()
        if not all(math.isfinite(v) for v in parts):
            raise TrainingDivergedError(
                f"the loss became {parts[0]} at step {self.progress['global_step'] + 1}; lower --lr or "
                f"--lambda-harmonization (the last checkpoint in {self.out} is intact)"
            )
        if cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        self.lr_used = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return parts

    def _train_mode(self, module: nn.Module) -> None:
        module.train()
        if self.cfg.freeze_batchnorm:
            freeze_batchnorm(module)  # after every .train(), which would undo it

    # -- evaluation --------------------------------------------------------------------------------
    def _evaluate(self, final: bool) -> dict[str, dict[str, Any]]:
        """Accuracy and alignment on every eval split (rank 0; the others wait)."""
        results: dict[str, dict[str, Any]] = {}
        if self.main and self.eval_sets:
            from harmonia.attribution import Saliency
            from harmonia.evaluation import evaluate, resolve_ceiling

            self.model.eval()
            # evaluation must not move the training RNG streams (a resumed run would drift)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for split, ds in self.eval_sets.items():
                    if split not in self._ceilings:
                        self._ceilings[split] = resolve_ceiling(ds, self.cfg.ceiling, store=self.store)
                    res = evaluate(
                        self.model, ds, Saliency(reducer="max_abs"), store=self.store if final else None,
                        ceiling=self._ceilings[split], batch_size=self.cfg.eval_batch_size or self.local_batch,
                        num_workers=0, device=self.device, limit=None if final else self.cfg.eval_limit,
                    )
                    a = res.aggregates
                    results[split] = {
                        "accuracy": a.get("accuracy"), "spearman": a["spearman"]["mean"],
                        "alignment": a.get("alignment"), "n_images": a["n_images"],
                        "n_nan": a["spearman"].get("n_nan"), "evaluation_key": res.key if final and self.store else None,
                    }
            self._train_mode(self.model)
        D.barrier(self.info)
        return results

    def _record_eval(self, results: dict[str, dict[str, Any]]) -> None:
        if not results:
            return
        p = self.progress
        for split, r in results.items():
            entry = {"epoch": p["epoch"], "step": p["global_step"], "split": split, **r}
            self.history["evals"] = [e for e in self.history["evals"] if not (e["step"] == p["global_step"] and e["split"] == split)]
            self.history["evals"].append(entry)
        first = results[next(iter(results))]
        value = first.get(self.cfg.best_metric)
        if value is not None and math.isfinite(value) and (p["best"] is None or value > p["best"]["value"]):
            p["best"] = {"metric": self.cfg.best_metric, "value": value, "epoch": p["epoch"], "step": p["global_step"]}
            if self.main:
                from harmonia.models.checkpoint import save_checkpoint

                save_checkpoint(self.model, self.out / BEST)
        self._emit("eval", {"metrics": results})
        if self.console is not None:
            text = "  ".join(
                f"{s}: acc {_pct(r['accuracy'])} alignment {_pct(r['alignment'])} spearman {_num(r['spearman'])}"
                for s, r in results.items()
            )
            self.console.print(f"epoch {p['epoch']}/{self.cfg.epochs}  {text}{self._synthetic_note}", highlight=False)

    # -- logging ---------------------------------------------------------------------------------------
    def _log(self, parts: list[float], seconds: float, n_images: int, force: bool = False) -> dict[str, Any] | None:
        acc = self.progress["log_acc"] or {"n": 0, "sums": [0.0] * len(parts), "seconds": 0.0, "images": 0}
        acc["n"] += 1
        sums = acc["sums"] + [0.0] * (len(parts) - len(acc["sums"]))  # a state saved before the outside part
        acc["sums"] = [a + b for a, b in zip(sums, parts)]
        acc["seconds"] += seconds
        acc["images"] += n_images
        self.progress["log_acc"] = acc
        step = self.progress["global_step"]
        if not force and step % self.log_every:
            return None
        mean = [s / acc["n"] for s in acc["sums"]]
        entry = {
            "step": step, "epoch": round(step / self.steps_per_epoch, 6),
            "loss": mean[0], "ce": mean[1], "harm": mean[2], "wd": mean[3],
            **({"outside": mean[4]} if self.cfg.lambda_outside else {}),
            **({"masked": mean[5]} if self.cfg.lambda_masked else {}),
            "lr": self.lr_used, "img_s": acc["images"] / max(acc["seconds"], 1e-9),
        }
        self.history["steps"].append(entry)
        self.progress["log_acc"] = None
        return entry

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        # One writer per run folder: a second process (even one passing --resume) refuses at once.
        lock = folder_lock(self.out, "run folder") if self.main else None
        if lock is not None:
            lock.acquire()
        try:
            if self.main and not (self.out / LAST).exists():
                # A new run: never over a user's files (a folder with last.pt is checked by _maybe_resume).
                from harmonia.utils.io import OutputFolder

                model_path = Path(str(self.cfg.model))
                OutputFolder(self.out, inputs=[model_path] if model_path.is_file() else [], option="--out").claim(
                    [CONFIG_FILE, HISTORY_FILE, LAST, BEST, FINAL])
            return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        self._setup_data()
        self._setup_model()
        self._synthetic_note = "  (SYNTHETIC data)" if self.info_data.synthetic else ""
        self._ceilings: dict[str, Any] = {}
        self.log_every = cfg.log_every or max(1, self.steps_per_epoch // 20)
        self.progress = self._fresh_progress()
        self.history: dict[str, Any] = {"config": cfg.to_json(), "synthetic": self.info_data.synthetic,
                                        "steps_per_epoch": self.steps_per_epoch, "steps": [], "evals": []}
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            sweep_temporaries(self.out)
        D.barrier(self.info)
        resumed = self._maybe_resume()
        if self.main:
            atomic_write_text(self.out / CONFIG_FILE, json.dumps(cfg.to_json(), indent=2) + "\n")
        self.ddp = D.wrap(self.loss_module, self.info, self.device)
        self._train_mode(self.ddp)
        if self.console is not None:
            self.console.print(
                f"training {getattr(self.model, 'name', 'model')} on {cfg.data}{self._synthetic_note}: "
                f"{len(self.train_ds)} images, {self.steps_per_epoch} steps/epoch x {cfg.epochs}, batch {cfg.batch_size} "
                f"on {self.info.world_size} x {self.device.type}{' (bf16)' if self.amp else ''}"
                + (f", resumed at step {resumed}" if resumed is not None else ""), highlight=False)

        bar = self._progress_bar()
        try:
            while self.progress["epoch"] < cfg.epochs:
                self._run_epoch(bar)
        finally:
            if bar is not None:
                bar.stop()

        final_metrics = self._evaluate(final=True)
        self._record_eval(final_metrics)  # replaces an entry for the same step (a re-run finish)
        self.progress["finished"] = True
        self._save_last()
        final_path = self.out / FINAL
        store_key = None
        if self.main:
            from harmonia.models.checkpoint import save_checkpoint

            save_checkpoint(self.model, final_path)
            store_key = self._store_summary(final_metrics)
            self._write_history()
        D.barrier(self.info)
        images = int(self.progress["images"])
        train_seconds = float(self.progress["elapsed"])
        return TrainResult(
            out_dir=self.out, final_checkpoint=final_path if self.main else None,
            best_checkpoint=(self.out / BEST) if (self.out / BEST).exists() else None,
            last_state=self.out / LAST, epochs=cfg.epochs, steps=int(self.progress["global_step"]),
            final_metrics=final_metrics, history=self.history, store_key=store_key,
            seconds=time.perf_counter() - t_start, images_per_second=images / train_seconds if train_seconds > 0 else 0.0,
            resumed_from_step=resumed,
        )

    def _run_epoch(self, bar: Any) -> None:
        cfg, p = self.cfg, self.progress
        epoch = p["epoch"]
        self.sampler.set_epoch(epoch, start=p["step_in_epoch"])
        task = None
        if bar is not None:
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch,
                                completed=p["step_in_epoch"], stats="")
        t_last = time.perf_counter()
        for batch in self.loader:
            parts = self._step(batch)
            now = time.perf_counter()
            seconds, t_last = now - t_last, now
            p["step_in_epoch"] += 1
            p["global_step"] += 1
            p["images"] += self.cfg.batch_size
            p["elapsed"] += seconds
            last_of_epoch = p["step_in_epoch"] == self.steps_per_epoch
            entry = self._log(parts, seconds, self.cfg.batch_size, force=last_of_epoch)
            if task is not None:
                lr = self.lr_used
                bar.update(task, advance=1, stats=(
                    f"loss {parts[0]:.3f} ce {parts[1]:.3f} harm {parts[2]:.3f} wd {parts[3]:.3g} "
                    + (f"outside {parts[4]:.3g} " if self.cfg.lambda_outside else "")
                    + (f"masked {parts[5]:.3f} " if self.cfg.lambda_masked else "")
                    + f"lr {lr:.1e} {self.cfg.batch_size / max(seconds, 1e-9):.0f} img/s"))
            self._emit("step", {"loss": parts[0], "cross_entropy": parts[1], "harmonization": parts[2],
                                "weights": parts[3], "outside": parts[4], "masked": parts[5], "lr": self.lr_used, "logged": entry})
            if not last_of_epoch and self._step_checkpoint_due():
                self._save_last()
        # epoch done
        if bar is not None and task is not None:
            bar.remove_task(task)
        p["epoch"] = epoch + 1
        p["step_in_epoch"] = 0
        self._print_epoch(epoch)
        last_epoch = p["epoch"] == cfg.epochs
        if not last_epoch and cfg.eval_every and p["epoch"] % cfg.eval_every == 0:
            self._record_eval(self._evaluate(final=False))
        self._emit("epoch", {"history_steps": len(self.history["steps"])})
        if last_epoch or (cfg.checkpoint_every_epochs and p["epoch"] % cfg.checkpoint_every_epochs == 0) \
                or self._step_checkpoint_due():
            self._save_last()  # saved after the epoch's evaluation, so it holds the best metric too

    def _print_epoch(self, epoch: int) -> None:
        """One log line for the epoch just finished: mean loss parts of its logged steps, lr, speed."""
        if self.console is None:
            return
        lo, hi = epoch * self.steps_per_epoch, (epoch + 1) * self.steps_per_epoch
        entries = [e for e in self.history["steps"] if lo < e["step"] <= hi]
        if not entries:
            return

        def mean(key: str) -> float:
            return sum(e.get(key, 0.0) for e in entries) / len(entries)

        extra = "".join(f" {k} {mean(k):.4g}" for k in ("outside", "masked") if k in entries[-1])
        self.console.print(
            f"epoch {epoch + 1}/{self.cfg.epochs}  loss {mean('loss'):.4f} (ce {mean('ce'):.4f} harm {mean('harm'):.4f} "
            f"wd {mean('wd'):.3g}{extra})  lr {entries[-1]['lr']:.2e}  {mean('img_s'):.0f} img/s  "
            f"step {hi}{self._synthetic_note}", highlight=False)

    def _step_checkpoint_due(self) -> bool:
        every = self.cfg.checkpoint_every_steps
        return bool(every) and self.progress["global_step"] % every == 0

    def _progress_bar(self) -> Any:
        if self.console is None or not self.cfg.progress:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.console, transient=True)
        bar.start()
        return bar

    def _store_summary(self, final_metrics: dict[str, dict[str, Any]]) -> str | None:
        if self.store is None:
            return None
        from harmonia import __version__
        from harmonia.measurements import run
        from harmonia.store import model_key
        from harmonia.training.summary import TrainingRecord, TrainingSummary

        meta = {
            "model": getattr(self.model, "name", type(self.model).__name__), "model_fingerprint": model_key(self.model),
            "dataset": str(self.cfg.data), "split": self.cfg.train_split, "synthetic": bool(self.info_data.synthetic),
            "preset": self.cfg.preset, "lambda_harmonization": self.cfg.lambda_harmonization,
            "epochs": self.cfg.epochs, "batch_size": self.cfg.batch_size, "world_size": self.info.world_size,
            "out_dir": str(self.out), "final_checkpoint": str(self.out / FINAL), "config": self.cfg.to_json(),
            "harmonia_version": __version__,
        }
        last_steps = self.history["steps"][-1] if self.history["steps"] else {}
        aggregates = {
            "final": final_metrics, "best": self.progress["best"], "steps": self.progress["global_step"],
            "train_seconds": self.progress["elapsed"], "final_loss": last_steps,
        }
        record = TrainingRecord(list(self.history["evals"]), aggregates, meta)
        return run(TrainingSummary(self.cfg.identity()), self.model, record, store=self.store).key


def _finite(obj: Any) -> Any:
    """JSON has no NaN: None instead (history.json stays standard JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _pct(x: Any) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: Any) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
