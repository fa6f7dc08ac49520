"""Adversarial alignment: minimal perturbations vs human maps, per image, into the store.

For each image the model classifies correctly, a minimal-norm attack gives the
perturbation tolerance (the L2 norm, and its Linf norm, of the smallest perturbation found
that changes the decision) and the Spearman correlation between the perturbation's map
and the human map (the adversarial alignment), optionally divided by a ceiling. Images
the model gets wrong are rows with status "misclassified"; images not fooled within the
budget are rows with status "not_fooled": both have NaN norms and scores, counted in the
aggregates and never averaged as numbers. Keyed and resumable like
:func:`harmonia.evaluation.evaluate`.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch

from harmonia import __version__
from harmonia.adversarial.grouping import GroupedLogits, resolve_grouping
from harmonia.adversarial.maps import perturbation_map
from harmonia.attacks import FMN, FOOLED, MISCLASSIFIED, NOT_FOOLED, Attack, AttackResult
from harmonia.errors import HarmoniaWarning, UserError
from harmonia.evaluation import Ceiling, check_classes
from harmonia.evaluation.evaluate import dataset_meta, model_meta
from harmonia.measurements import Batch, Measurement, Result, dataset_ids, loader_batches, progress_events, run
from harmonia.metrics import MapScorer, summarize
from harmonia.store import ResultStore, dataset_fingerprint, model_key
from harmonia.utils.device import resolve_device


SKIPPED = "skipped"  # targeted: the image's label is the target (nothing to attack)
LEAST_LIKELY = "least_likely"

Target = Union[int, str, Mapping[str, int]]


def resolve_targets(target: Target, ids: Sequence[str], clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Target class per image: a class index for all, ``"least_likely"`` (argmin of the clean
    logits) or a mapping image id -> class.

    Example:
        >>> resolve_targets(2, ["a", "b"]).tolist(), resolve_targets({"a": 1, "b": 0}, ["b"]).tolist()
        ([2, 2], [0])
    """
    if isinstance(target, str):
        if target.replace("-", "_") != LEAST_LIKELY:
            raise ValueError(f"unknown target {target!r}: a class index, 'least_likely' or a mapping id -> class")
        if clean_logits is None:
            raise ValueError("least_likely targets need the clean logits")
        return clean_logits.argmin(1)
    if isinstance(target, Mapping):
        missing = [i for i in ids if i not in target]
        if missing:
            raise ValueError(f"no target class for image {missing[0]!r} ({len(missing)} images without one)")
        return torch.tensor([int(target[i]) for i in ids], dtype=torch.long)
    return torch.full((len(ids),), int(target), dtype=torch.long)


def check_target(target: Target | None, num_classes: int | None) -> None:
    """Raise :class:`~harmonia.errors.UserError` for a target class the model does not have.

    Example:
        >>> check_target(99, 8)
        Traceback (most recent call last):
        ...
        harmonia.errors.UserError: --target 99 is not a class of this model (it has 8: 0..7)
    """
    if target is None or isinstance(target, str) or not num_classes:
        return
    values = {int(target)} if not isinstance(target, Mapping) else {int(v) for v in target.values()}
    bad = sorted(v for v in values if not 0 <= v < num_classes)
    if bad:
        where = f"--target {bad[0]}" if not isinstance(target, Mapping) else f"target class {bad[0]} (of {len(bad)} bad ones)"
        raise UserError(f"{where} is not a class of this model (it has {num_classes}: 0..{num_classes - 1})")


def parse_target(text: str | None, dataset: Any = None) -> Target | None:
    """The ``--target`` text: None, a class index, ``"least_likely"`` or {image id: class} from a
    column of ``dataset``'s index.csv (``"column:NAME"``).

    Example:
        >>> parse_target("3"), parse_target("least-likely"), parse_target(None)
        (3, 'least_likely', None)
    """
    if text is None:
        return None
    t = text.strip()
    if t.lstrip("-").isdigit():
        if int(t) < 0:
            raise ValueError(f"--target {t}: a class index is >= 0")
        return int(t)
    if t.replace("-", "_").lower() == LEAST_LIKELY:
        return LEAST_LIKELY
    if t.startswith("column:"):
        from harmonia.data.format import read_index_column

        if dataset is None:
            raise ValueError(f"--target {t}: a column target needs the dataset")
        out = {}
        for image_id, value in read_index_column(dataset.split_dir, t[len("column:"):]).items():
            if not value.strip().isdigit():
                raise ValueError(f"--target {t}: image {image_id!r} has target {value!r}, not a class index")
            out[image_id] = int(value)
        return out
    raise ValueError(f"--target {t!r}: expected a class index, 'least-likely' or 'column:NAME'")


def _target_setting(target: Target | None) -> Any:
    """JSON-able cache-key part of a target (a digest for a per-image mapping)."""
    if target is None or isinstance(target, (int, str)):
        return target
    blob = json.dumps({str(k): int(v) for k, v in target.items()}, sort_keys=True).encode()
    return {"per_image_sha256": hashlib.sha256(blob).hexdigest()}


def alignment_scores(images: torch.Tensor, result: AttackResult, human_maps: torch.Tensor,
                     reducer: str = "abs_mean") -> torch.Tensor:
    """Spearman (float64, N) of each perturbation map with its human map; NaN unless fooled.

    The perturbation map is resized to the human map's size when they differ (as
    :class:`~harmonia.metrics.MapScorer` does for model maps); no blur.

    Example:
        >>> from harmonia.attacks import AttackResult
        >>> x = torch.zeros(1, 3, 4, 4); h = torch.rand(1, 4, 4)
        >>> r = AttackResult(x + h[:, None], torch.tensor([True]), torch.tensor([False]), torch.ones(1),
        ...                  torch.ones(1), torch.ones(1), torch.ones(1), {})
        >>> round(float(alignment_scores(x, r, h)[0]), 6)
        1.0
    """
    maps = perturbation_map(result.adv - images, reducer)
    rho = MapScorer(metrics=("spearman",))(maps, human_maps)["spearman"]
    return torch.where(result.success.to(rho.device), rho, torch.full_like(rho, math.nan))


def _median(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def aggregate_attack_rows(rows: list[dict[str, Any]], ceiling: Ceiling | None) -> dict[str, Any]:
    """Counts per status, median/mean tolerance over fooled images, Spearman summary,
    alignment (mean Spearman / ceiling), mean passes per attacked image.

    Example:
        >>> rows = [{"status": "fooled", "l2": 0.5, "linf": 0.1, "spearman": 0.4, "forwards": 10, "backwards": 9},
        ...         {"status": "misclassified", "l2": float("nan"), "linf": float("nan"),
        ...          "spearman": float("nan"), "forwards": 1, "backwards": 0}]
        >>> a = aggregate_attack_rows(rows, None); a["n_fooled"], a["l2_median"]
        (1, 0.5)
    """
    agg: dict[str, Any] = {"n_images": len(rows)}
    for st in (FOOLED, MISCLASSIFIED, NOT_FOOLED):
        agg[f"n_{st}"] = sum(r["status"] == st for r in rows)
    n_skipped = sum(r["status"] == SKIPPED for r in rows)
    if n_skipped:
        agg[f"n_{SKIPPED}"] = n_skipped
    attacked = [r for r in rows if r["status"] not in (MISCLASSIFIED, SKIPPED)]
    judged = len(rows) - n_skipped  # skipped images were not classified
    agg["accuracy"] = len(attacked) / judged if judged else math.nan
    agg["success_rate"] = agg[f"n_{FOOLED}"] / len(attacked) if attacked else math.nan
    for key in ("l2", "linf", "eps"):
        vals = [r[key] for r in rows if r["status"] == FOOLED and r.get(key) is not None]
        if vals:
            agg[f"{key}_median"] = _median(vals)
            agg[f"{key}_mean"] = summarize(torch.tensor(vals, dtype=torch.float64)).mean
    fooled = [r["spearman"] for r in rows if r["status"] == FOOLED]
    agg["spearman"] = summarize(torch.tensor(fooled, dtype=torch.float64)).to_dict()
    for key in ("forwards", "backwards"):
        agg[f"{key}_mean"] = float(np.mean([r[key] for r in attacked])) if attacked else math.nan
    if ceiling is not None:
        mean = agg["spearman"]["mean"]
        agg["ceiling"] = {"value": ceiling.value, "source": ceiling.source}
        agg["alignment"] = mean / ceiling.value if mean is not None and math.isfinite(mean) else math.nan
    return agg


AdversarialResult = Result  # the adversarial alignment's result is the runner's


class AdversarialAlignment(Measurement):
    """Perturbation tolerance and adversarial alignment (see :func:`adversarial_alignment`).

    Example:
        >>> m = AdversarialAlignment(reducer="abs_max")
        >>> m.kind, m.settings()["attack"]["name"], m.settings()["reducer"]
        ('adversarial', 'fmn', 'abs_max')
    """

    kind = "adversarial"
    version = "1"

    def __init__(self, attack: Attack | None = None, *, reducer: str = "abs_mean", ceiling: Ceiling | float | None = None,
                 target: Target | None = None, grouping: str | Sequence[Sequence[int]] | None = None,
                 limit: int | None = None, device: str | torch.device | None = None,
                 on_batch: Callable[[dict[str, Any], AttackResult, list[dict[str, Any]]], None] | None = None) -> None:
        self.attack = attack or FMN()
        perturbation_map(torch.zeros(1, 3, 1, 1), reducer)  # validate before any work
        if target is not None and grouping is not None:
            raise ValueError("a grouped decision has two outcomes: an untargeted attack already aims at the other group")
        if isinstance(target, str):
            resolve_targets(target, [], torch.zeros(0, 2))  # validate the name
        self.reducer, self.target, self.grouping, self.limit = reducer, target, grouping, limit
        self.groups = resolve_grouping(grouping) if grouping is not None else None
        self.ceiling = Ceiling(float(ceiling), "user") if isinstance(ceiling, (int, float)) else ceiling
        self.device, self.on_batch = resolve_device(device), on_batch

    def check(self, model: Any, data: Any) -> None:
        # Before the run is started in the store, so a bad option leaves nothing behind.
        check_target(self.target, getattr(model, "num_classes", None))
        mismatch = check_classes(model, data, labels_as_targets=False) if self.groups is None else None
        if mismatch:
            warnings.warn(mismatch, HarmoniaWarning, stacklevel=4)  # at the caller of adversarial_alignment()

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"attack": self.attack.config(), "reducer": self.reducer, "limit": self.limit}
        if self.target is not None:  # only when set, as before
            settings["target"] = _target_setting(self.target)
        if self.groups is not None:
            settings["grouping"] = self.grouping if isinstance(self.grouping, str) else self.groups
        return settings

    def data_key(self, data: Any, store: ResultStore | None) -> Any:
        return dataset_fingerprint(data, digest=store.file_digest) if store is not None else None

    def items(self, data: Any) -> list[str]:
        return dataset_ids(data, self.limit)

    def meta(self, model: Any, data: Any) -> dict[str, Any]:
        g = self.grouping
        return {
            **model_meta(model, model_key(model)), **dataset_meta(data),
            "attack": self.attack.config(), "reducer": self.reducer, "norm_space": "[0, 1] pixels",
            "harmonia_version": __version__, "target": _target_setting(self.target),
            "grouping": g if isinstance(g, str) or g is None else self.groups,
        }

    def prepare(self, model: Any, data: Any, data_key: Any) -> Callable:
        model = model.to(self.device).eval()
        return GroupedLogits(model, self.groups) if self.groups is not None else model

    def batches(self, data: Any, ids: list[str], index: list[int], batch_size: int | None) -> Iterator[Batch]:
        return loader_batches(data, index, batch_size)

    def compute(self, attacked_model: Callable, batch: Batch) -> list[dict[str, Any]]:
        dev, b, ids, target, groups = self.device, batch.data, batch.ids, self.target, self.groups
        images = b["image"].to(dev)
        human = b["map"].to(dev)
        labels = torch.as_tensor(b["label"], device=dev)
        att_labels = attacked_model.group_of(labels) if groups is not None else labels
        targets, extra_fwd = None, 0
        if target is not None:
            clean = None
            if isinstance(target, str):
                with torch.no_grad():
                    clean = attacked_model(images)
                extra_fwd = 1  # the forward that chose the target, charged to each image
            targets = resolve_targets(target, ids, clean).to(dev)
        sel = torch.arange(len(ids), device=dev) if targets is None else (targets != att_labels).nonzero().squeeze(1)
        res = self.attack(attacked_model, images[sel], att_labels[sel], None if targets is None else targets[sel])
        rho = alignment_scores(images[sel], res, human[sel], self.reducer)
        attacked_rows = dict(zip(sel.tolist(), zip(res.rows(), rho.tolist())))
        rows = []
        for j, image_id in enumerate(ids):
            row: dict[str, Any] = {"image_id": image_id, "label": int(labels[j])}
            if groups is not None:
                row["group"] = int(att_labels[j])
            if targets is not None:
                row["target"] = int(targets[j])
            if j in attacked_rows:
                r, rh = attacked_rows[j]
                row.update(r, spearman=float(rh))
                row["forwards"] += extra_fwd
            else:
                row.update(status=SKIPPED, l2=math.nan, linf=math.nan, forwards=extra_fwd, backwards=0,
                           spearman=math.nan)
            if "budget" in row:  # the store keeps flat rows; the budget is a property of the run
                row["budget"] = str(row["budget"])
            rows.append(row)
        if self.on_batch is not None:
            idx = sel.tolist()
            sub = {k: v[sel.to(v.device)] if isinstance(v, torch.Tensor) else [v[i] for i in idx] for k, v in b.items()}
            self.on_batch(sub, res, [rows[i] for i in idx])
        return rows

    def aggregate(self, rows: list[dict[str, Any]], data: Any) -> dict[str, Any]:
        return aggregate_attack_rows(rows, self.ceiling)

    def headline(self, agg: dict[str, Any]) -> dict[str, Any]:
        out = {k: agg.get(k, math.nan) for k in ("n_images", "accuracy", "success_rate", "l2_median", "linf_median")}
        out["spearman_mean"] = agg["spearman"]["mean"]
        if "alignment" in agg:
            out["alignment"] = agg["alignment"]
        return out


def adversarial_alignment(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    attack: Attack | None = None,
    *,
    reducer: str = "abs_mean",
    store: ResultStore | None = None,
    ceiling: Ceiling | float | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    limit: int | None = None,
    recompute: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[dict[str, Any], AttackResult, list[dict[str, Any]]], None] | None = None,
    target: Target | None = None,
    grouping: str | Sequence[Sequence[int]] | None = None,
) -> Result:
    """Tolerance and adversarial alignment of ``model`` on ``dataset`` (labels = true classes):
    :class:`AdversarialAlignment` through :func:`harmonia.measurements.run`.

    Args:
        model: a :class:`~harmonia.models.HarmoniaModel` (or any module on [0, 1] images;
            keyed by its ``fingerprint()`` or its weights, :func:`harmonia.store.model_key`).
        dataset: dicts with ``image``, ``map``, ``label``, ``id`` (e.g. HarmoniaDataset).
        attack: a minimal-norm attack; defaults to ``FMN()`` (as the 2025 protocol).
        reducer: perturbation map reducer, ``"abs_mean"`` (2023) or ``"abs_max"`` (2025).
        ceiling: divide the mean Spearman by it (``alignment``); None: raw Spearman only.
        on_batch: called with each batch, its attack result and its rows (figures); with a
            target, batch and rows are restricted to the attacked (not skipped) images.
        target: targeted attack: a class index, ``"least_likely"`` (the clean image's
            least likely class; one more forward per image, counted in its row) or a mapping
            image id -> class. Images whose label is the target get status "skipped".
        grouping: attack a grouped decision instead of the class: ``"animate_inanimate"``
            (the 2025 task: ImageNet classes 0-397 vs 398-999, max logit within each group)
            or a list of class groups; labels map to their group and the attack flips the
            group decision. Exclusive with ``target``.

    Example:
        >>> from harmonia.data import HarmoniaDataset  # doctest: +SKIP
        >>> res = adversarial_alignment(load("efficientnet_lite0"), HarmoniaDataset("sim", "test"))  # doctest: +SKIP
        >>> res.aggregates["l2_median"], res.aggregates["spearman"]["mean"]  # doctest: +SKIP
    """
    measurement = AdversarialAlignment(attack, reducer=reducer, ceiling=ceiling, target=target, grouping=grouping,
                                       limit=limit, device=device, on_batch=on_batch)
    return run(measurement, model, dataset, store=store, recompute=recompute, on_event=progress_events(progress),
               batch_size=batch_size)
