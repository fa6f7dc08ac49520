"""The study's tidy table: one row per model x data x measurement x headline number.

Each row carries the model's metadata (family, parameter count, input size, weights) and an
ImageNet top-1 with its source: measured, when the study measured ``accuracy`` on a
1000-class data set; else, for ImageNet-pretrained models, timm's published top-1 from the
table shipped in ``harmonia/resources/timm-results-imagenet.csv`` (Apache-2.0, see its
LICENSE file beside it); else empty.

Example:
    >>> published_top1("timm:resnet50")
    (80.382, 'timm-results-imagenet.csv (resnet50.a1_in1k at 224 px)')
    >>> published_top1("efficientnet_lite0")[0]
    74.846
"""

from __future__ import annotations

import csv
import functools
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from harmonia.studies.spec import Study

TIMM_TABLE = "timm-results-imagenet.csv"
COLUMNS = ("study", "model", "family", "arch", "params", "input_size", "weights", "variant", "pair", "seed",
           "data", "split", "measurement", "kind", "metric", "value", "value_text", "status", "reason", "imagenet_top1",
           "top1_source", "content_key", "spec_key")


def family_of(arch: str) -> str:
    """A model family from its architecture name (the letters before the first digit or '_').

    Example:
        >>> [family_of(a) for a in ("timm:convnext_tiny", "resnet50", "tf_efficientnet_lite0", "vit_b_16")]
        ['convnext', 'resnet', 'efficientnet', 'vit']
    """
    source, _, name = arch.partition(":")
    name = name if re.search("[A-Za-z]", name) else source or arch  # "simulated:0": the source names it
    name = re.sub(r"^(tf|tv|timm|legacy|gluon)_", "", name.lower())
    m = re.match(r"[a-z]+", name)
    return m.group(0) if m else name


@functools.lru_cache(maxsize=1)
def timm_results() -> dict[str, list[dict[str, str]]]:
    """timm's published ImageNet-1k results by model name (``arch.tag``): one row per test size."""
    text = resources.files("harmonia.resources").joinpath(TIMM_TABLE).read_text(encoding="utf-8")
    out: dict[str, list[dict[str, str]]] = {}
    for r in csv.DictReader(text.splitlines()):
        out.setdefault(r["model"], []).append(r)  # some models are listed at two test sizes
    return out


def _timm_default_tag(arch: str) -> str | None:
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch)
        return cfg.tag if cfg is not None else None
    except Exception:  # noqa: BLE001 - an unknown arch simply has no default tag
        return None


def _timm_default_size(name: str) -> int | None:
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        return int(cfg.input_size[-1]) if cfg is not None else None
    except Exception:  # noqa: BLE001
        return None


def published_top1(name: str, tag: str | None = None, input_size: int | None = None) -> tuple[float, str] | None:
    """timm's published top-1 (%) of a pretrained model and the table row it came from: at
    ``input_size`` when the table has it there, else at the weights' default size."""
    source, _, arch = name.partition(":")
    if not arch:
        source, arch = "", name
    if source in ("", "built-in") and re.fullmatch(r"efficientnet[_-]lite[0-4]", arch):
        arch = "tf_" + arch.replace("-", "_")  # harmonia's built-in Lite models are timm's tf_ ports
    elif source not in ("", "timm"):
        return None
    table = timm_results()
    arch, _, given_tag = arch.partition(".")
    for key in filter(None, (f"{arch}.{given_tag or tag}" if (given_tag or tag) else None,
                             f"{arch}.{_timm_default_tag(arch)}", arch, f"{arch}.in1k")):
        if key in table:
            rows = table[key]
            size = input_size or _timm_default_size(key)
            row = next((r for r in rows if size is not None and int(r["img_size"]) == size), rows[0])
            return float(row["top1"]), f"{TIMM_TABLE} ({key} at {row['img_size']} px)"
    return None


def study_rows(study: Study) -> list[dict[str, Any]]:
    """The tidy rows of every measure task in the plan (pending ones with status 'pending')."""
    from harmonia.studies.runner import task_states

    states = task_states(study)
    measured_top1: dict[str, tuple[float, str]] = {}
    for t, state, row in states:
        if state == "done" and t.measurement.get("kind") == "accuracy" and row and row.get("headline"):
            n_classes = _n_classes(study, t.data)
            if n_classes == 1000:
                measured_top1[t.model["label"]] = (100 * row["headline"]["accuracy"], f"measured on {t.data['name']}")
    out: list[dict[str, Any]] = []
    for t, state, row in states:
        if t.stage != "measure":
            continue
        m, info = t.model, (row or {}).get("model_info") or {}
        top1 = measured_top1.get(m["label"])
        if top1 is None and m["pretrained"] and not m.get("train"):
            size = info.get("input_size")
            top1 = published_top1(m["name"], info.get("timm_tag"), int(size.split("x")[-1]) if size else None)
        base = {
            "study": study.name, "model": m["label"], "family": info.get("family") or m.get("family") or family_of(m["name"]),
            "arch": info.get("arch") or m["name"], "params": info.get("params"), "input_size": info.get("input_size"),
            "weights": info.get("weights"), "variant": m.get("variant"), "pair": m.get("pair"), "seed": m.get("seed"),
            "data": t.data["name"], "split": t.data["split"], "measurement": t.measurement["name"],
            "kind": t.measurement["kind"], "status": state, "reason": (row or {}).get("reason") if state == "failed" else None,
            "imagenet_top1": top1[0] if top1 else None, "top1_source": top1[1] if top1 else None,
            "content_key": (row or {}).get("content_key") if state == "done" else None, "spec_key": t.spec_key,
        }  # fmt: skip
        headline = (row or {}).get("headline") if state == "done" else None
        if headline:
            for metric, value in headline.items():  # a text (a neural run's best layer) in its own column
                text = value if isinstance(value, str) else None
                out.append({**base, "metric": metric, "value": None if text is not None else value, "value_text": text})
        else:
            out.append({**base, "metric": None, "value": None})
    return [{c: r.get(c) for c in COLUMNS} for r in out]


def _n_classes(study: Study, data: dict[str, Any]) -> int | None:
    from harmonia.data.format import read_info

    try:
        info = read_info(study.root / data["path"])
        return len(info.classes) if info.classes else None
    except (OSError, ValueError):
        return None


def export_table(study: Study, out: str | Path) -> Path:
    """Write the tidy table as CSV or parquet (by the suffix of ``out``), atomically."""
    import pandas as pd

    from harmonia.utils.io import atomic_write, atomic_write_text

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out must end in .csv or .parquet, got {out.name!r}")
    df = pd.DataFrame(study_rows(study), columns=list(COLUMNS))
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    for c in ("params", "seed"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")  # integers, empty where unknown
    if suffix == ".csv":
        atomic_write_text(out, df.to_csv(index=False))
    else:
        atomic_write(out, lambda tmp: df.to_parquet(tmp, index=False))
    return out


def wide_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per model x data with ``measurement/metric`` columns (figures, the report's table)."""
    by: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        k = (r["model"], r["data"])
        rec = by.setdefault(k, {c: r[c] for c in ("model", "family", "params", "input_size", "weights", "variant",
                                                  "pair", "seed", "data", "imagenet_top1", "top1_source")})
        value = r["value"] if r.get("value_text") is None else r["value_text"]
        if r["metric"] is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
            rec[f"{r['measurement']}/{r['metric']}"] = value
        rec.setdefault("status", set()).add(r["status"])
    for rec in by.values():
        rec["status"] = ",".join(sorted(rec["status"]))
    return list(by.values())
