"""``harmonia train``: train or fine-tune a model with the neural harmonizer loss."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import typer

from harmonia.cli.common import console, err_console, reflow, user_errors
from harmonia.settings import LossOptions

TRAIN_HELP = """Train or fine-tune a model with the neural harmonizer loss.

Loss = cross-entropy (label smoothing 0.1) + lambda_w * weight term
+ lambda_h * harmonization; the harmonization term compares the model's
input-gradient map with the dataset's human maps at five pyramid levels
(double back-propagation). --lambda-harmonization 0 trains the baseline.

Presets: 'harmonizer' (default; the published recipe: SGD Nesterov 0.9,
5 warm-up epochs, LR x0.1 at epochs 30/60/80 -- scaled by epochs/90 for
shorter runs --, weight term 1e-5 in the loss, one random resized crop and
flip shared by image and map) and 'adamw' (AdamW, decoupled weight decay
0.05, warm-up + cosine). Options you give override the preset.

Writes to --out: config.json; history.json (loss parts and metrics, for
curves); last.pt (the full training state, written atomically every
--checkpoint-every-steps steps and at epoch ends); best.pt (best
--best-metric on the first eval split) and final.pt, both model
checkpoints (harmonia evaluate --model OUT/final.pt). The final evaluation
goes into the results store.

After a kill, `harmonia train --resume --out OUT` continues from last.pt
with the same batches, crops and random streams. --resume on an empty
--out simply starts, so preemptible jobs can always pass it.

--out is locked while a run writes it (OUT/.harmonia.lock): a second
`harmonia train` on the same folder, --resume or not, refuses at once and
names the pid of the one running; a killed run's lock is taken over. A new
run never replaces files in --out that harmonia did not write.

Examples:

  harmonia train --data sim-clickme --epochs 10 --out runs/harmonized

  harmonia train --data sim-clickme --epochs 10 --lambda 0 --out runs/base

  harmonia train --data clickme --model timm:resnet50 --pretrained \\
      --mix-folder imagenet/train --mix-ratio 0.8 -b 1024 --epochs 90 \\
      --out runs/r50

  harmonia train --resume --out runs/r50

Several GPUs or nodes (DDP; --batch-size stays the global batch size):

  torchrun --nproc_per_node 8 --no-python harmonia train \\
      --data clickme -b 1024 --out runs/r50

  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
      --rdzv-endpoint HOST:29500 --no-python harmonia train \\
      --data clickme -b 2048 --out /shared/runs/r50

`torchrun ... -m harmonia.cli.main train ...` works too. With several
nodes, --out must be on a shared filesystem.
"""


@user_errors
def train_command(
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset directory in harmonia's format (needs a train split).", show_default="the run's config with --resume"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to train: a name (timm:NAME, torchvision:NAME, efficientnet_lite0) or a checkpoint.", show_default="timm:resnet10t"),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--random-init", help="Start from pretrained weights (local caches only) or random ones.", show_default="random-init"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (checkpoints, history, config).", show_default="runs/train"),
    preset: Optional[str] = typer.Option(None, help="'harmonizer' (published recipe) or 'adamw'.", show_default="harmonizer"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt (starts fresh if there is none)."),
    train_split: Optional[str] = typer.Option(None, help="Training split.", show_default="train"),
    eval_split: Optional[list[str]] = typer.Option(None, "--eval-split", help="Split(s) for accuracy and alignment; repeat for several.", show_default="val, else test"),
    no_eval: bool = typer.Option(False, "--no-eval", help="Do not evaluate (no best.pt)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", min=1, help="Epochs (passes over the human-map images).", show_default="10"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1, help="Global batch size, split over processes.", show_default="64"),
    optimizer: Optional[str] = typer.Option(None, help="'sgd' (Nesterov) or 'adamw'.", show_default="preset: harmonizer sgd, adamw adamw"),
    lr: Optional[float] = typer.Option(None, help="Base learning rate.", show_default="preset: sgd 0.1 x batch/256, adamw 5e-4 x batch/512"),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum.", show_default="0.9"),
    weight_decay: Optional[float] = typer.Option(None, help="Optimizer weight decay on weights (AdamW: decoupled).", show_default="preset: sgd 0, adamw 0.05"),
    lambda_weights: Optional[float] = typer.Option(None, help="Weight of the loss's sum 0.5||w||^2 term (the recipe's decay).", show_default="preset: sgd 1e-5, adamw 0"),
    lambda_harmonization: Optional[float] = typer.Option(None, "--lambda-harmonization", "--lambda", help="Weight of the harmonization term; 0 = baseline.", show_default=str(LossOptions.lambda_harmonization)),
    schedule: Optional[str] = typer.Option(None, help="'step', 'cosine' or 'constant'.", show_default="preset: harmonizer step, adamw cosine"),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up epochs (fractions allowed).", show_default="5, x epochs/90 if shorter"),
    milestones: Optional[str] = typer.Option(None, help="Step schedule epochs, comma-separated.", show_default="30,60,80, x epochs/90 if shorter"),
    gamma: Optional[float] = typer.Option(None, help="Step schedule factor.", show_default="0.1"),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the cross-entropy.", show_default=str(LossOptions.label_smoothing)),
    levels: Optional[int] = typer.Option(None, help="Pyramid levels of the harmonization term (5 released, 6 original).", show_default=str(LossOptions.levels)),
    reducer: Optional[str] = typer.Option(None, help="Colour-channel reduction of the training saliency: 'mean' (signed, as released), 'max_abs' (the evaluation's map), 'abs_mean'.", show_default=str(LossOptions.reducer)),
    saliency_input: Optional[str] = typer.Option(None, help="Saliency w.r.t. 'pixels' ([0, 1] images, as released) or 'normalized' (the network input, the original code).", show_default=str(LossOptions.saliency_input)),
    score: Optional[str] = typer.Option(None, help="What the training saliency explains: 'logit' (true class, as released), 'centered_logit' (minus the mean over classes; see docs/demo.md), 'log_prob'.", show_default=str(LossOptions.score)),
    lambda_outside: Optional[float] = typer.Option(None, help="Weight of an extra term, not in the release: the squared saliency where the human map is <= 5% of its max (see docs/demo.md).", show_default="0 = off"),
    lambda_masked: Optional[float] = typer.Option(None, help="Weight of an extra term, not in the release: the cross-entropy of each image with a map reduced to what people looked at (the rest grey; see docs/demo.md).", show_default="0 = off"),
    freeze_batchnorm: Optional[bool] = typer.Option(None, "--freeze-bn/--train-bn", help="BatchNorm layers normalise with their running statistics (scales and shifts still train). Rows of a batch become independent, so the harmonizer step is computed for the map rows only: about 1.3-1.6x a plain step instead of 3-4x (docs/benchmarks.md).", show_default="--train-bn, as the recipe"),
    image_size: Optional[int] = typer.Option(None, help="Training crop size.", show_default="the dataset's native size"),
    model_input_size: Optional[int] = typer.Option(None, help="Size the network sees (the model resizes inside).", show_default="--image-size"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Paired random resized crop + flip.", show_default="on"),
    crop_scale: Optional[str] = typer.Option(None, help="Area range of the random crops, 'MIN,MAX'.", show_default="0.08,1 as the recipe"),
    mix_folder: Optional[Path] = typer.Option(None, help="Plain labelled image folder (ROOT/CLASS/IMG) mixed into every batch with token 0.", show_default="none"),
    mix_ratio: Optional[float] = typer.Option(None, help="Share of each batch from --mix-folder.", show_default="0.8, as the recipe"),
    eval_every: Optional[int] = typer.Option(None, help="Evaluate every N epochs (0: only at the end).", show_default="1"),
    eval_limit: Optional[int] = typer.Option(None, min=1, help="Periodic evaluations use only the first N images (the final one uses all).", show_default="all images"),
    best_metric: Optional[str] = typer.Option(None, help="'accuracy', 'alignment' or 'spearman' on the first eval split.", show_default="accuracy"),
    ceiling: Optional[str] = typer.Option(None, help="Alignment ceiling: number, 'auto' or 'none'.", show_default="auto"),
    checkpoint_every_steps: Optional[int] = typer.Option(None, min=0, help="Also write last.pt every N steps.", show_default="0 = epoch ends only"),
    checkpoint_every_epochs: Optional[int] = typer.Option(None, min=0, help="Write last.pt every N epochs.", show_default="1"),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, data order and crops.", show_default="0"),
    device: Optional[str] = typer.Option(None, help="'auto', 'cpu', 'cuda', ... (torchrun: each process takes cuda:LOCAL_RANK).", show_default="auto"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bfloat16 autocast.", show_default="on for CUDA, off on the CPU"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader worker processes per process.", show_default="0 on the CPU (forked workers slow the compute there), 4 on a GPU"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with loss parts, lr and img/s. Either way a header and one line per epoch and per evaluation are printed (a batch job's log)."),
    store: Optional[Path] = typer.Option(None, help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
) -> None:
    from harmonia.store import ResultStore
    from harmonia.training.options import config_from_options, parse_crop_scale, parse_milestones
    from harmonia.training.trainer import train

    options: dict[str, Any] = {
        "data": str(data) if data is not None else None, "model": model, "pretrained": pretrained,
        "out_dir": str(out) if out is not None else None, "preset": preset, "train_split": train_split,
        "eval_splits": [] if no_eval else (list(eval_split) if eval_split else None), "epochs": epochs,
        "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "lambda_weights": lambda_weights,
        "lambda_harmonization": lambda_harmonization, "schedule": schedule, "warmup_epochs": warmup_epochs,
        "milestones": parse_milestones(milestones), "gamma": gamma, "label_smoothing": label_smoothing,
        "levels": levels, "reducer": reducer, "saliency_input": saliency_input, "score": score,
        "lambda_outside": lambda_outside, "lambda_masked": lambda_masked,
        "freeze_batchnorm": freeze_batchnorm, "image_size": image_size, "model_input_size": model_input_size,
        "augment": augment,
        "crop_scale": parse_crop_scale(crop_scale),
        "mix_folder": str(mix_folder) if mix_folder is not None else None, "mix_ratio": mix_ratio,
        "eval_every": eval_every, "eval_limit": eval_limit, "best_metric": best_metric, "ceiling": ceiling,
        "checkpoint_every_steps": checkpoint_every_steps, "checkpoint_every_epochs": checkpoint_every_epochs,
        "seed": seed, "device": device, "amp": amp, "num_workers": workers, "progress": progress,
        "log": True,  # a header and a line per epoch and per evaluation, bar or not (batch jobs keep a log)
    }
    config = config_from_options(options, resume)
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun: one store writer
    result_store = ResultStore(store) if main else None
    try:
        result = train(config, store=result_store)
    except KeyboardInterrupt:
        if main:
            err_console.print(f"interrupted; continue with: harmonia train --resume --out {config.out_dir}")
        raise typer.Exit(130) from None
    if not main:
        return
    synthetic = " (SYNTHETIC data)" if result.history.get("synthetic") else ""
    for split, m in result.final_metrics.items():
        console.print(
            f"{split}{synthetic}: accuracy {_pct(m.get('accuracy'))}  alignment {_pct(m.get('alignment'))}  "
            f"spearman {_num(m.get('spearman'))}  ({m.get('n_images')} images)", highlight=False)
    console.print(f"{result.steps} steps, {result.images_per_second:.0f} img/s; final model: {result.final_checkpoint}"
                  + (f", best: {result.best_checkpoint}" if result.best_checkpoint else ""), highlight=False)
    if result_store is not None and result.store_key:
        console.print(f"results stored in {result_store.path} (run {result.store_key[:12]})", highlight=False)


def _pct(x: Any) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: Any) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def register(app: typer.Typer) -> None:
    """Add ``harmonia train`` to ``app``."""
    app.command("train", help=reflow(TRAIN_HELP))(train_command)
