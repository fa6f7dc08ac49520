"""Measurement kinds a study file names, built from their settings.

``alignment`` is :class:`harmonia.evaluation.Alignment`, ``adversarial`` is
:class:`harmonia.adversarial.AdversarialAlignment`, ``accuracy`` is :class:`Accuracy` (a
forward pass only: top-1 on the data's labels), ``neural`` is
:class:`harmonia.neural.run.NeuralSweep` (every layer's neural predictivity on a
``kind = "neural"`` data entry; its ``batch_size`` is the number of layers scored per
forward pass). All run through :func:`harmonia.measurements.run`, so each is keyed, cached
and resumable.

Example:
    >>> build_measurement("alignment", {"explainer": "saliency:reducer=max_abs", "ceiling": "none"}).kind
    'evaluation'
    >>> build_measurement("accuracy", {"limit": 4}).settings()
    {'limit': 4}
    >>> build_measurement("neural", {"regression": "ridge", "alpha": "cv:1,10"}).kind, data_kind("neural")
    ('neural', 'neural')
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from harmonia.measurements import Batch, Measurement, dataset_ids, loader_batches
from harmonia.neural.run import NeuralSweep
from harmonia.registry import Registry
from harmonia.settings import NeuralSettings
from harmonia.store import ResultStore, dataset_fingerprint, model_key


class Accuracy(Measurement):
    """Top-1 accuracy of a model on a labelled dataset (rows: label, pred, correct).

    Example:
        >>> Accuracy(limit=8).kind, Accuracy().headline({"n_images": 2, "accuracy": 0.5})
        ('accuracy', {'n_images': 2, 'accuracy': 0.5})
    """

    kind = "accuracy"
    version = "1"

    def __init__(self, limit: int | None = None, device: str | torch.device | None = None) -> None:
        from harmonia.utils.device import resolve_device

        self.limit, self.device = limit, resolve_device(device)

    def settings(self) -> dict[str, Any]:
        return {"limit": self.limit}

    def data_key(self, data: Any, store: ResultStore | None) -> Any:
        return dataset_fingerprint(data, digest=store.file_digest) if store is not None else None

    def items(self, data: Any) -> list[str]:
        return dataset_ids(data, self.limit)

    def meta(self, model: Any, data: Any) -> dict[str, Any]:
        from harmonia.evaluation.evaluate import dataset_meta, model_meta

        return {**model_meta(model, model_key(model)), **dataset_meta(data)}

    def prepare(self, model: Any, data: Any, data_key: Any) -> Any:
        return model.to(self.device).eval()

    def batches(self, data: Any, ids: list[str], index: list[int], batch_size: int | None) -> Iterator[Batch]:
        return loader_batches(data, index, batch_size)

    def compute(self, model: Any, batch: Batch) -> list[dict[str, Any]]:
        with torch.no_grad():
            preds = model(batch.data["image"].to(self.device)).argmax(1).tolist()
        labels = [int(x) for x in batch.data["label"]]
        return [{"image_id": i, "label": y, "pred": int(p), "correct": int(p) == y}
                for i, y, p in zip(batch.ids, labels, preds)]

    def aggregate(self, rows: list[dict[str, Any]], data: Any) -> dict[str, Any]:
        return {"n_images": len(rows), "accuracy": sum(r["correct"] for r in rows) / len(rows) if rows else math.nan}

    def headline(self, agg: dict[str, Any]) -> dict[str, Any]:
        return {"n_images": agg["n_images"], "accuracy": agg["accuracy"]}


def _ceiling(value: Any, dataset: Any, store: ResultStore | None, scorer: Any = None) -> Any:
    from harmonia.evaluation import parse_ceiling_option, resolve_ceiling

    if dataset is None:
        return parse_ceiling_option(value)  # checked without data
    return resolve_ceiling(dataset, value, store, scorer)


class SettingError(ValueError):
    """A bad measurement setting; ``key`` names it (the study file's error points at its line)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _setting(key: str, make: Any) -> Any:
    try:
        return make()
    except (ValueError, TypeError) as e:
        raise SettingError(key, str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _take(settings: dict[str, Any], allowed: tuple[str, ...], kind: str) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise SettingError(unknown[0], f"not a setting of {kind} (its settings: {', '.join(allowed)})")
    return settings


RUNTIME = ("dataset", "store", "device")  # given by the task, never by the study file

# Measurement kinds a study file names: a builder per kind whose keyword settings (other
# than RUNTIME) are the keys its [[measurements]] table accepts.
STUDY_MEASUREMENTS: Registry[Measurement] = Registry("measurement kind")


@STUDY_MEASUREMENTS.register("accuracy")
def _accuracy(*, limit: int | None = None, dataset: Any = None, store: Any = None, device: Any = None) -> Measurement:
    return Accuracy(limit=limit, device=device)


@STUDY_MEASUREMENTS.register("alignment")
def _alignment(*, explainer: str = "saliency:reducer=max_abs", ceiling: Any = "auto", targets: str = "label",
               metrics: list[str] | None = None, limit: int | None = None, dataset: Any = None, store: Any = None,
               device: Any = None) -> Measurement:
    from harmonia.attribution import parse_explainer_spec
    from harmonia.evaluation import Alignment
    from harmonia.metrics import MapScorer

    expl = _setting("explainer", lambda: parse_explainer_spec(str(explainer)))
    scorer = _setting("metrics", lambda: MapScorer(metrics=tuple(metrics)) if metrics is not None else MapScorer())
    ceil = _setting("ceiling", lambda: _ceiling(ceiling, dataset, store, scorer))
    return _setting("targets", lambda: Alignment(expl, scorer, ceiling=None if dataset is None else ceil,
                                                 targets=targets, limit=limit, device=device))


@STUDY_MEASUREMENTS.register("adversarial")
def _adversarial(*, attack: str = "fmn", reducer: str = "abs_mean", ceiling: Any = "auto", limit: int | None = None,
                 dataset: Any = None, store: Any = None, device: Any = None) -> Measurement:
    from harmonia.adversarial import AdversarialAlignment
    from harmonia.attacks import create_attack

    ceil = _setting("ceiling", lambda: _ceiling(ceiling, dataset, store))
    atk = _setting("attack", lambda: create_attack(str(attack)))
    return _setting("reducer", lambda: AdversarialAlignment(atk, reducer=reducer, ceiling=None if dataset is None else ceil,
                                                            limit=limit, device=device))


class StudyNeuralSweep(NeuralSweep):
    """:class:`~harmonia.neural.run.NeuralSweep` with the study's device (the same key and
    rows as ``harmonia neural``: the device never changes a number)."""

    def __init__(self, device: str | torch.device | None = None, **kw: Any) -> None:
        from harmonia.utils.device import resolve_device

        super().__init__(**kw)
        self.device = resolve_device(device)

    def prepare(self, model: Any, data: Any, data_key: Any) -> Any:
        return super().prepare(model.to(self.device).eval(), data, data_key)


@STUDY_MEASUREMENTS.register("neural")
def _neural(*, layers: list[str] | None = None, regression: str = NeuralSettings.regression,
            components: int = NeuralSettings.n_components, alpha: Any = NeuralSettings.alpha,
            folds: int = NeuralSettings.folds, projection: int | None = None, pool: int | None = None,
            reduce: str | None = None, ceiling: Any = "auto", dataset: Any = None, store: Any = None,
            device: Any = None) -> Measurement:
    from harmonia.neural.options import check_regression, parse_alpha, parse_reduce, sweep_options

    def positive(key: str, value: Any) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise SettingError(key, f"must be an integer >= 1, got {value!r}")

    if layers is not None and (not isinstance(layers, list) or not all(isinstance(x, str) for x in layers)):
        raise SettingError("layers", f"expected a list of layer names, got {layers!r}")
    _setting("regression", lambda: check_regression(regression))
    _setting("alpha", lambda: parse_alpha(str(alpha)))
    for key, value in (("components", components), ("folds", folds), ("projection", projection), ("pool", pool)):
        positive(key, value)
    if folds < 2:
        raise SettingError("folds", f"must be >= 2, got {folds}")
    _setting("reduce", lambda: parse_reduce(reduce, projection))
    if ceiling != "auto" and (not isinstance(ceiling, (int, float)) or isinstance(ceiling, bool) or ceiling <= 0):
        raise SettingError("ceiling", f"expected 'auto' (from the recording) or a positive number, got {ceiling!r}")
    if dataset is None:
        return StudyNeuralSweep(device=device)  # settings checked; the options depend on the recording's kind
    opts = _setting("reduce", lambda: sweep_options(dataset, layers=layers, regression=regression, components=components,
                                                    alpha=str(alpha), folds=folds, projection=projection, pool=pool,
                                                    reduce=reduce, ceiling=None if ceiling == "auto" else float(ceiling)))
    return StudyNeuralSweep(device=device, **opts)


# The data a measurement kind takes: a [[data]] table's kind ("images" unless listed here).
_DATA_KIND = {"neural": "neural"}


def data_kind(kind: str) -> str:
    """The ``[[data]]`` kind a measurement kind measures on (``images`` or ``neural``).

    Example:
        >>> data_kind("alignment"), data_kind("neural")
        ('images', 'neural')
    """
    return _DATA_KIND.get(STUDY_MEASUREMENTS.resolve(kind), "images")


def measurement_settings(kind: str) -> list[str]:
    """The settings a ``[[measurements]]`` table of this kind accepts.

    Example:
        >>> measurement_settings("adversarial")
        ['attack', 'reducer', 'ceiling', 'limit']
    """
    return [k for k in STUDY_MEASUREMENTS.settings(kind) if k not in RUNTIME]


def build_measurement(kind: str, settings: dict[str, Any], dataset: Any = None, store: ResultStore | None = None,
                      device: str | None = None) -> Measurement:
    """The :class:`~harmonia.measurements.Measurement` a study file's entry describes.

    Without ``dataset`` only the settings are checked (a ceiling "auto" is resolved when the
    data is at hand: computed from its per-subject maps when it has them).
    """
    s = _take(settings, tuple(measurement_settings(kind)), kind)
    return STUDY_MEASUREMENTS.create(kind, **s, dataset=dataset, store=store, device=device)
