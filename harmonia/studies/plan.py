"""The plan: a study expanded into tasks with keys known before any model loads.

Two stages: ``train`` tasks (one per model with a training stage x variant x seed) and
``measure`` tasks (model instance x data x measurement). A task's *spec key* is a digest of
what the file says about it (model name or checkpoint, weights tag, seed, training settings,
data path as written, split and limit, measurement kind and settings), so it is the same in
every run of the same file, wherever the file lies. Once a task has loaded its model, the
ledger maps the spec key to the runner's *content key* (:meth:`Measurement.key`), which is
what the results store holds.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.toml"
    >>> _ = p.write_text('[[models]]\\nname = "efficientnet_lite0"\\n[[data]]\\nname = "d"\\n'
    ...                  '[[measurements]]\\nkind = "accuracy"\\n')
    >>> from harmonia.studies.spec import load_study
    >>> tasks = make_plan(load_study(p))
    >>> [(t.stage, t.model["label"], t.data["name"], t.measurement["name"]) for t in tasks]
    [('measure', 'efficientnet_lite0', 'd', 'accuracy')]
    >>> tasks[0].spec_key == make_plan(load_study(p))[0].spec_key
    True
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

from harmonia.store import cache_key
from harmonia.studies.measures import data_kind
from harmonia.studies.spec import ModelSpec, Study

PLAN_VERSION = "study-task/1"


@dataclass
class Task:
    """One unit of work (a JSON-able description, so it travels to worker processes and Ray)."""

    spec_key: str
    stage: str  # "train" | "measure"
    model: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # spec key of the train task whose checkpoint the model is

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Task":
        return cls(**d)

    @property
    def title(self) -> str:
        if self.stage == "train":
            return f"train {self.model['label']} on {self.model['train']['data']}"
        return f"{self.model['label']} x {self.data['name']} x {self.measurement['name']}"


def expand_models(study: Study) -> list[dict[str, Any]]:
    """Model instances: names as written, patterns over the registry, seeds and variants.

    A pattern lists only models whose weights are cached here unless ``all = true``.
    Each instance is a JSON-able dict; ``label`` is unique in the study.
    """
    out: list[dict[str, Any]] = []
    for spec in study.models:
        names = [spec.name] if spec.name is not None else _pattern_names(spec)
        for name in names:
            seeded = not spec.pretrained or spec.train is not None
            seeds = [spec.seed] if spec.seed is not None else (list(study.seeds) if seeded else [None])
            variants = list(spec.train.variants) if spec.train is not None else [None]
            for seed in seeds:
                for variant in variants:
                    base = spec.label or name
                    label = base + (f"-s{seed}" if seed is not None and len(seeds) > 1 else "")
                    label += f"/{variant}" if variant else ""
                    out.append({
                        "label": label, "name": name, "pretrained": spec.pretrained, "num_classes": spec.num_classes,
                        "kwargs": spec.kwargs, "family": spec.family, "seed": seed, "variant": variant,
                        "pair": (base + (f"-s{seed}" if seed is not None else "")) if variant else None,
                        "train": _train_json(spec, study) if spec.train is not None else None,
                    })  # fmt: skip
    labels = [m["label"] for m in out]
    dup = next((x for i, x in enumerate(labels) if x in labels[:i]), None)
    if dup is not None:
        from harmonia.errors import UserError

        raise UserError(f"{study.path}: model {dup!r} appears twice; give one of them a 'label'")
    return out


def _pattern_names(spec: ModelSpec) -> list[str]:
    from harmonia.models import list_models

    return [r["name"] for r in list_models(spec.pattern, all=spec.all)]


def _train_json(spec: ModelSpec, study: Study) -> dict[str, Any]:
    t = spec.train
    assert t is not None
    d = next(d for d in study.data if d.name == t.data)
    return {"data": t.data, "path": d.text_path, "split": t.split, "epochs": t.epochs, "preset": t.preset,
            "settings": t.settings}


def _data_json(study: Study) -> dict[str, dict[str, Any]]:
    return {d.name: {"name": d.name, "path": d.text_path, "split": d.split, "limit": d.limit, "size": d.size,
                     "simulate": d.simulate, "kind": d.kind, "read": d.read} for d in study.data}


def _key(parts: dict[str, Any]) -> str:
    # Only what changes a number: labels and families are names, not content.
    return cache_key(parts, version=PLAN_VERSION)


def _model_identity(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("name", "pretrained", "num_classes", "kwargs", "seed", "variant", "train")}


def make_plan(study: Study) -> list[Task]:
    """Every task of the study, train tasks first, in file order."""
    data = _data_json(study)
    tasks: list[Task] = []
    measure: list[Task] = []
    for m in expand_models(study):
        needs = None
        if m["train"] is not None:
            train_data = data[m["train"]["data"]]
            needs = _key({"stage": "train", "model": _model_identity(m), "data": {k: train_data[k] for k in ("path", "simulate")}})
            tasks.append(Task(needs, "train", m, train_data))
        for ms in study.measurements:
            for d in study.data:
                if ms.data is not None and d.name not in ms.data:
                    continue
                if d.kind != data_kind(ms.kind):  # neural measurements on recordings, the others on images
                    continue
                if ms.models is not None and not any(fnmatch.fnmatchcase(m["label"], pat) for pat in ms.models):
                    continue
                mj = {"kind": ms.kind, "name": ms.name, "settings": ms.settings, "batch_size": ms.batch_size}
                key = _key({"stage": "measure", "model": _model_identity(m), "data": _data_identity(data[d.name]),
                            "measurement": {"kind": ms.kind, "settings": ms.settings}})
                measure.append(Task(key, "measure", m, data[d.name], mj, needs))
    return tasks + measure


def _data_identity(d: dict[str, Any]) -> dict[str, Any]:
    ident = {k: d[k] for k in ("path", "split", "limit", "size", "simulate")}
    if d.get("kind") == "neural":  # only then: the keys of image data stay what they were
        ident.update(kind="neural", read=d["read"])
    return ident
