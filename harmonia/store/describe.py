"""One-line descriptions of stored runs: what tells them apart and their headline numbers.

``harmonia results list`` prints these. Runs are keyed on content, so two runs of the same
model name can differ in size, blur, targets or weights; the description shows exactly those
settings, and names a trained model by the run folder it came from (the demo's baseline and
harmonized models are both ``small_cnn``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from harmonia.registry import format_spec
from harmonia.store.sqlite import Run, json_safe


def trained_models(runs: Iterable[Run]) -> dict[str, Run]:
    """Training runs by the fingerprint of the model they produced (its final weights).

    Example:
        >>> r = Run("k", "training", "complete", 0, 0, {"model_fingerprint": "f1"}, None)
        >>> list(trained_models([r]))
        ['f1']
    """
    return {r.meta["model_fingerprint"]: r for r in runs
            if r.kind == "training" and r.meta.get("model_fingerprint")}


def _num(x: Any, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _mean(v: Any) -> Any:
    return v.get("mean") if isinstance(v, dict) else v


def _tail(path: Any, parts: int = 2) -> str:
    return "/".join(Path(str(path)).parts[-parts:])


def run_model(run: Run, trained: dict[str, Run] | None = None) -> str:
    """The model's name, with the seed of random weights and the run folder that trained it.

    Example:
        >>> t = Run("t", "training", "complete", 0, 0, {"model_fingerprint": "f", "out_dir": "demo/runs/seed0/baseline",
        ...         "lambda_harmonization": 0.0}, None)
        >>> e = Run("e", "evaluation", "complete", 0, 0, {"model": "small_cnn", "model_fingerprint": "f"}, None)
        >>> run_model(e, trained_models([t]))
        'small_cnn (seed0/baseline, lambda 0)'
        >>> run_model(Run("r", "evaluation", "complete", 0, 0, {"model": "timm:resnet18", "init_seed": 0}, None))
        'timm:resnet18 (random init, seed 0)'
    """
    m = run.meta
    if "model" not in m:
        return ""
    label = str(m["model"])
    notes = []
    if m.get("init_seed") is not None:
        notes.append(f"random init, seed {m['init_seed']}")
    origin = (trained or {}).get(m.get("model_fingerprint") or "")
    if origin is not None:
        om = origin.meta
        notes.append(_tail(om.get("out_dir", "")) + (f", lambda {om['lambda_harmonization']:g}"
                                                     if om.get("lambda_harmonization") is not None else ""))
    return label + (f" ({'; '.join(notes)})" if notes else "")


def run_data(run: Run) -> str:
    """``dataset/split``, or a recording's name; ``(synthetic)`` when the data are simulated.

    Example:
        >>> run_data(Run("k", "neural", "complete", 0, 0, {"data": "sim_data", "synthetic": True}, None))
        'sim_data (synthetic)'
    """
    m = run.meta
    if m.get("dataset"):
        text = Path(str(m["dataset"])).name + (f"/{m['split']}" if m.get("split") else "")
    else:
        text = str(m.get("data", ""))
    return text + (" (synthetic)" if m.get("synthetic") else "")


def _size(m: dict[str, Any]) -> list[str]:
    size = m.get("size")
    if not size:
        return []
    h, w = (size, size) if isinstance(size, int) else size
    return [f"size {h}" if h == w else f"size {h}x{w}"]


def run_settings(run: Run) -> str:
    """The settings that tell runs of one kind apart (the ones at their defaults left out).

    Example:
        >>> m = {"explainer": {"name": "saliency", "reducer": "max_abs"}, "size": [224, 224],
        ...      "scorer": {"blur_sigma": 2.0, "downsample": None}, "targets": "label"}
        >>> run_settings(Run("k", "evaluation", "complete", 0, 0, m, None))
        'saliency:reducer=max_abs, size 224, blur 2'
    """
    m, kind = run.meta, run.kind
    parts: list[str] = []
    if kind == "evaluation":
        exp = dict(m.get("explainer") or {})
        parts.append(format_spec(exp.pop("name", "?"), exp))
        parts += _size(m)
        scorer = m.get("scorer") or {}
        if scorer.get("blur_sigma"):
            parts.append(f"blur {scorer['blur_sigma']:g}")
        if scorer.get("downsample") and scorer["downsample"] != 1:
            parts.append(f"downsample {scorer['downsample']}")
        if m.get("targets") not in (None, "label"):
            parts.append(f"targets {m['targets']}")
    elif kind == "adversarial":
        attack = m.get("attack") or {}
        parts.append(str(attack.get("name", "?")) + (f" {attack['steps']} steps" if attack.get("steps") else ""))
        parts.append(str(m.get("reducer", "")))
        parts += _size(m)
        if m.get("target") is not None:
            parts.append(f"target {m['target']}")
        if m.get("grouping") is not None:
            parts.append(f"grouping {m['grouping']}")
    elif kind == "ceiling":
        parts.append(f"{m.get('metric', '?')}, {m.get('repeats', '?')} repeats")
        if m.get("blur"):
            parts.append(f"{m['blur']} blur {m.get('blur_size') or ''}".rstrip())
        if m.get("crop"):
            parts.append(f"crop {m['crop']}")
        if m.get("seed"):
            parts.append(f"seed {m['seed']}")
        prep = {k: v for k, v in (m.get("prepare") or {}).items() if v not in (None, False, 1)}
        if prep:
            parts.append("maps as scored: " + format_spec("", prep).lstrip(":"))
    elif kind == "neural":
        parts.append(f"{m.get('benchmark', '?')}, {m.get('regression', '?')}")
        for key in ("n_components", "alpha", "pool", "projection", "pca"):
            if m.get(key) is not None:
                parts.append(f"{key} {m[key]}")
        if m.get("alphas"):
            parts.append(f"alpha cv over {len(m['alphas'])}")
    elif kind == "training":
        lam = m.get("lambda_harmonization")
        parts.append(f"{m.get('preset', '?')}, lambda {'?' if lam is None else format(lam, 'g')}, "
                     f"{m.get('epochs', '?')} epochs, batch {m.get('batch_size', '?')}")
        seed = (m.get("config") or {}).get("seed")
        if seed is not None:
            parts.append(f"seed {seed}")
    return ", ".join(p for p in parts if p)


def _evaluation_headline(a: dict[str, Any]) -> list[str]:
    parts = [f"{name} {_num(_mean(a[name]))}" for name in ("spearman", "dice", "iou") if _mean(a.get(name)) is not None]
    if a.get("alignment") is not None:
        parts.append(f"alignment {_pct(a['alignment'])}")
    if a.get("accuracy") is not None:
        parts.append(f"acc {_pct(a['accuracy'])}")
    return parts


def run_headline(run: Run) -> str:
    """Each kind's main numbers.

    Example:
        >>> a = {"n_images": 16, "n_fooled": 12, "l2_median": 0.51, "linf_median": 0.04,
        ...      "spearman": {"mean": 0.2}, "alignment": 0.3}
        >>> run_headline(Run("k", "adversarial", "complete", 0, 0, {}, a))
        'fooled 12/16, median L2 0.5100, Linf 0.0400, spearman 0.2000, alignment 30.0%'
    """
    a = json_safe(run.aggregates, inf_as_text=False)  # an undefined (NaN) number is left out, as a missing one
    if not a:
        return ""
    kind = run.kind
    parts: list[str] = []
    if kind == "evaluation":
        parts = _evaluation_headline(a)
    elif kind == "adversarial":
        parts = [f"fooled {a.get('n_fooled', 0)}/{a.get('n_images', '?')}", f"median L2 {_num(a.get('l2_median'))}",
                 f"Linf {_num(a.get('linf_median'))}", f"spearman {_num(_mean(a.get('spearman')))}"]
        if a.get("alignment") is not None:
            parts.append(f"alignment {_pct(a['alignment'])}")
    elif kind == "ceiling":
        parts = [f"ceiling {_num(_mean(a.get('ceiling')))}", f"floor {_num(_mean(a.get('floor')))}"]
    elif kind == "neural":
        parts = [f"best {a.get('best_layer', '?')}: r {_num(a.get('score'))}", f"ceiled {_num(a.get('ceiled'))}"]
        if a.get("map_spearman") is not None:
            parts.append(f"maps spearman {_num(a['map_spearman'])}")
    elif kind == "training":
        final = a.get("final") or {}
        for split, metrics in list(final.items())[:1]:
            parts = [f"{split}: acc {_pct(metrics.get('accuracy'))}", f"alignment {_pct(metrics.get('alignment'))}"]
        parts.append(f"{a.get('steps', '?')} steps")
    else:
        parts = _evaluation_headline(a)
    return ", ".join(parts)
