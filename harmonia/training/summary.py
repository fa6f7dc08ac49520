"""A finished training run as a measurement: its evaluations are the rows.

Nothing is computed here: the trainer has measured its evaluations (one per epoch and
split, :mod:`harmonia.training.trainer`) and hands them over; the runner keys the record
by the trained weights and the configuration's identity and stores it like any other
measurement, so ``harmonia results`` lists, exports and merges training runs the same way.

Example:
    >>> import tempfile, torch.nn as nn
    >>> from harmonia.measurements import run
    >>> from harmonia.store import ResultStore
    >>> record = TrainingRecord(evals=[{"step": 4, "split": "test", "accuracy": 0.5}],
    ...                         aggregates={"final": {"test": {"accuracy": 0.5}}, "steps": 4})
    >>> res = run(TrainingSummary({"lr": 0.1}), nn.Linear(2, 2), record, store=ResultStore(tempfile.mkdtemp() + "/r.sqlite"))
    >>> res.rows[0]["item_id"], res.headline
    ('eval/00000004/test', {'steps': 4, 'test_accuracy': 0.5})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harmonia.measurements.base import Batch, Measurement


@dataclass
class TrainingRecord:
    """What a training run measured: its evaluations, its summary and descriptive metadata."""

    evals: list[dict[str, Any]]
    aggregates: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def item_id(self, e: dict[str, Any]) -> str:
        return f"eval/{int(e['step']):08d}/{e['split']}"


class TrainingSummary(Measurement):
    """The record of a training run, keyed by its trained weights and configuration identity."""

    kind = "training"
    version = "1"
    default_batch_size = None

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity

    def settings(self) -> dict[str, Any]:
        return {"config": self.identity}

    def data_key(self, data: TrainingRecord, store: Any) -> Any:
        return None  # the configuration's identity names the data (its path and splits)

    def items(self, data: TrainingRecord) -> list[str]:
        return [data.item_id(e) for e in data.evals]

    def meta(self, model: Any, data: TrainingRecord) -> dict[str, Any]:
        return dict(data.meta)

    def prepare(self, model: Any, data: TrainingRecord, data_key: Any) -> TrainingRecord:
        return data

    def compute(self, record: TrainingRecord, batch: Batch) -> list[dict[str, Any]]:
        return [{"item_id": record.item_id(e), **e} for e in (record.evals[i] for i in batch.index)]

    def aggregate(self, rows: list[dict[str, Any]], data: TrainingRecord) -> dict[str, Any]:
        return data.aggregates

    def headline(self, agg: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": agg.get("steps")}
        for split, metrics in (agg.get("final") or {}).items():
            for k in ("accuracy", "alignment"):
                if isinstance(metrics, dict) and k in metrics:
                    out[f"{split}_{k}"] = metrics[k]
        return out
