"""The published 3D-PC per-model tables (327 models) and the scatter a new model is placed on.

LICENCE: the tables are the 3D-PC authors' (Linsley, Zhou et al., ICLR 2025), released under
CC-BY-4.0 (``tables/README.md``); timm's results table (Apache-2.0) is the one the study export
uses, ``harmonia/resources/timm-results-imagenet.csv``.

Example:
    >>> t = published("linear")
    >>> len(t), t["model_name"].nunique(), round(summary("linear", "depth")["mean"], 1)
    (328, 317, 67.0)

The published statistics (means, maxima, Spearman) are over all 328 rows, duplicates included:
that is how they reproduce; the paper speaks of 327 models.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import spearmanr

TABLES = Path(__file__).parent / "tables"
LICENCE = ("3D-PC per-model tables: Linsley, Zhou et al., ICLR 2025, CC-BY-4.0; "
           "ImageNet top-1: timm results table, Apache-2.0")
FILES = {"linear": "3dpc-linear-probe-results.csv", "finetune": "3dpc-finetune-results.csv"}
STRATEGY_FILES = {"linear": "3dpc-vpt-strategy-linear-probe.csv", "finetune": "3dpc-vpt-strategy-finetune.csv"}
HUMANS = {"perspective": 86.3, "depth": 74.7}  # % accuracy (20 and 10 subjects)
_COLUMN = {"perspective": "perspective_accuracy", "depth": "depth_accuracy"}


def _protocol(protocol: str) -> str:
    p = {"lp": "linear", "linear-probe": "linear", "ft": "finetune", "fine-tune": "finetune"}.get(protocol, protocol)
    if p not in FILES:
        raise ValueError(f"unknown protocol {protocol!r}; expected linear or finetune")
    return p


@lru_cache(maxsize=4)
def published(protocol: str = "linear") -> pd.DataFrame:
    """The per-model table: model_name, imagenet_accuracy, perspective/depth accuracy (+ human set), in %."""
    return pd.read_csv(TABLES / FILES[_protocol(protocol)])


@lru_cache(maxsize=2)
def strategy_accuracy(protocol: str = "linear") -> pd.Series:
    """Per-model VPT-strategy accuracy (%) from the published per-image logits (logit > 0 -> 1)."""
    t = pd.read_csv(TABLES / STRATEGY_FILES[_protocol(protocol)])
    labels = t["label"].to_numpy()
    logits = t.drop(columns=["img_name", "label"])
    correct = (logits.to_numpy() > 0) == (labels[:, None] > 0.5)
    return pd.Series(correct.mean(0) * 100, index=logits.columns)


def summary(protocol: str, task: str) -> dict[str, float]:
    """Mean, max and Spearman(ImageNet top-1, accuracy) over the published models."""
    t = published(protocol)
    acc = t[_COLUMN[task]]
    rho = spearmanr(t["imagenet_accuracy"], acc).statistic
    return {"n": int(len(t)), "unique_models": int(t["model_name"].nunique()), "mean": float(acc.mean()), "max": float(acc.max()), "spearman_imagenet": float(rho)}


@lru_cache(maxsize=1)
def _timm_top1() -> dict[str, float]:
    t = pd.read_csv(Path(__file__).resolve().parents[2] / "resources" / "timm-results-imagenet.csv")
    return dict(zip(t["model"], t["top1"].astype(float)))


def imagenet_top1(name: str) -> float | None:
    """ImageNet top-1 (%) of a timm model name (with or without its pretrained tag), if published.

    Example:
        >>> imagenet_top1("resnet18.a3_in1k")
        68.252
    """
    name = name.removeprefix("timm:")
    t = published("linear")
    hit = t.loc[t["model_name"] == name, "imagenet_accuracy"]
    if len(hit):
        return float(hit.iloc[0])
    top1 = _timm_top1()
    if name in top1:
        return top1[name]
    tagged = [v for k, v in top1.items() if k.split(".")[0] == name]
    return float(tagged[0]) if tagged else None


def scatter_png(protocol: str, task: str, points: list[dict[str, Any]]) -> bytes:
    """PNG: the published models (ImageNet top-1 vs accuracy), humans, and ``points`` highlighted.

    Each point: ``{"name": str, "imagenet_top1": float | None, "accuracy": float (0-1 or %)}``;
    a point without a top-1 is drawn as a horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = published(protocol)
    s = summary(protocol, task)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter(t["imagenet_accuracy"], t[_COLUMN[task]], s=10, c="0.6", label=f"published models (n={s['n']})")
    ax.axhline(50, color="0.3", ls=":", lw=1, label="chance")
    if task in HUMANS:
        ax.axhline(HUMANS[task], color="tab:green", ls="--", lw=1.2, label=f"humans {HUMANS[task]:.1f}%")
    for p in points:
        acc = p["accuracy"] * 100 if p["accuracy"] <= 1.0 else p["accuracy"]
        if p.get("imagenet_top1") is not None:
            ax.scatter([p["imagenet_top1"]], [acc], s=90, marker="*", c="tab:red", zorder=5,
                       label=f"{p['name']}: {acc:.1f}%")
        else:
            ax.axhline(acc, color="tab:red", lw=1.2, label=f"{p['name']}: {acc:.1f}% (top-1 unknown)")
    title = {"perspective": "VPT-basic", "depth": "depth order"}[task]
    ax.set_title(f"3D-PC {title}, {'linear probe' if protocol == 'linear' else 'fine-tuned'} "
                 f"(Spearman with top-1 {s['spearman_imagenet']:.2f})", fontsize=10)
    ax.set_xlabel("ImageNet top-1 (%)")
    ax.set_ylabel("3D-PC test accuracy (%)")
    ax.legend(fontsize=7, loc="best")
    fig.text(0.01, 0.005, LICENCE, fontsize=5, color="0.4")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return buf.getvalue()


def rank_among(protocol: str, task: str, accuracy: float) -> dict[str, float]:
    """Where an accuracy (0-1 or %) falls among the published models: percentile and count above."""
    acc = accuracy * 100 if accuracy <= 1.0 else accuracy
    col = published(protocol)[_COLUMN[task]].to_numpy()
    return {"percentile": float((col < acc).mean() * 100), "models_above": int((col > acc).sum())}


__all__ = ["HUMANS", "LICENCE", "imagenet_top1", "published", "rank_among", "scatter_png", "strategy_accuracy",
           "summary"]


def report_html(results: list[dict[str, Any]], model: str, protocol: str, top1: float | None,
                synthetic: bool = False) -> str:
    """A self-contained HTML report: the accuracies beside the published ones, and the scatters."""
    from html import escape

    from harmonia.report.html import img_tag, render_page, table

    tag = " (SYNTHETIC scenes, not the 3D-PC)" if synthetic else ""
    rows, figures = [], []
    for r in results:
        acc, task = r["accuracy"], r["task"]
        known = task in HUMANS
        s = summary(protocol, task) if known else None
        rows.append([task, r["best_epoch"], f"{acc['val']:.3f}", f"{acc['test']:.3f}",
                     f"{acc['human']:.3f}" if "human" in acc else "-",
                     f"{s['mean']:.1f}% / {s['max']:.1f}%" if s else "-", f"{HUMANS[task]:.1f}%" if known else "-"])
        if known:
            png = scatter_png(protocol, task, [{"name": model + (" (SYNTHETIC)" if synthetic else ""),
                                                "imagenet_top1": top1, "accuracy": acc["test"]}])
            figures.append(f"<h2>{escape(task)}</h2>" + img_tag(png, f"{model} on the published {task} scatter"))
    head = (f"<h1>3D-PC {'linear probe' if protocol == 'linear' else 'fine-tuning'}: {escape(model)}{escape(tag)}</h1>"
            f"<p>ImageNet top-1 used for the scatter: {'unknown' if top1 is None else f'{top1:.2f}%'}. "
            f"{escape(LICENCE)}.</p>")
    tab = table(["task", "best epoch", "val", "test", "human set", "published mean / max", "humans"], rows)
    return render_page(f"3D-PC {model}", [head, tab, *figures])
