"""Doing one task (in the driver, a worker process or a Ray task) and the executors.

:func:`execute_task` takes a JSON-able task and returns a JSON-able outcome; it never
raises for a failing model or measurement: the outcome then says ``failed`` with a
one-line reason. It writes into the store file it is given: the study's store for the
sequential executor, its own *part* file for worker processes and Ray tasks (the driver
merges parts as tasks finish; SQLite is never shared between machines).

Executors yield outcomes as tasks finish: :class:`LocalExecutor` (sequential, in the
driver), :class:`ProcessExecutor` (``--workers N``), :class:`RayExecutor` (``--ray``,
``--ray-address``; one Ray task per task, with its CPU/GPU resources).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Iterator

from harmonia.studies.plan import Task

CHECKPOINT = "final.pt"


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(text.strip().split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def model_info(model: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a loaded model for the export: family, parameters, input size, weights tag."""
    from harmonia.studies.export import family_of

    net = getattr(model, "net", model)
    tag = None
    cfg = getattr(net, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        tag = cfg.get("tag")
    if spec.get("train"):
        weights = f"trained on {spec['train']['data']} ({spec['variant']}, seed {spec['seed']})"
    elif spec.get("pretrained"):
        weights = f"pretrained{f' ({tag})' if tag else ''}"
    else:
        weights = f"random init (seed {spec.get('seed')})"
    size = getattr(model, "input_size", None)
    return {
        "arch": getattr(model, "arch", None) or spec["name"], "source": getattr(model, "source", None),
        "family": spec.get("family") or family_of(getattr(model, "arch", None) or spec["name"]),
        "params": int(sum(p.numel() for p in model.parameters())),
        "input_size": "x".join(map(str, size)) if size is not None else None, "weights": weights,
        "timm_tag": tag, "fingerprint": getattr(model, "fingerprint", lambda: None)(),
    }  # fmt: skip


def _dataset(root: Path, data: dict[str, Any], split: str | None = None) -> Any:
    from harmonia.data import HarmoniaDataset

    if data.get("kind") == "neural":
        from harmonia.studies.neural import open_data

        return open_data(root, data)

    return HarmoniaDataset(root / data["path"], split or data["split"], size=data.get("size"))


def _load_model(task: Task, root: Path, models_dir: Path, n_classes: int | None) -> Any:
    from harmonia.models import load

    m = task.model
    if task.needs is not None:
        ckpt = models_dir / task.needs / CHECKPOINT
        if not ckpt.is_file():
            raise FileNotFoundError(f"no trained checkpoint {ckpt} (its training task did not finish)")
        model = load(ckpt)
    else:
        name = m["name"]
        if os.path.isabs(name) or "/" in name:
            name = str(root / name)
        model = load(name, pretrained=m["pretrained"], num_classes=m["num_classes"], seed=m["seed"], **m["kwargs"])
    model.name = m["label"]  # the study's label names the model in every run's meta
    return model


def _train(task: Task, root: Path, models_dir: Path, device: str, on_train: Any = None) -> dict[str, Any]:
    from harmonia.models import load
    from harmonia.training import train
    from harmonia.training.trainer import TrainConfig

    m, t = task.model, task.model["train"]
    out = models_dir / task.spec_key
    ckpt = out / CHECKPOINT
    ds = _dataset(root, task.data, t["split"])
    if not ckpt.is_file():
        n_classes = len(ds.info.classes) if getattr(ds.info, "classes", None) else m["num_classes"]
        model = load(m["name"], pretrained=m["pretrained"], num_classes=n_classes, seed=m["seed"], **m["kwargs"])
        overrides = dict(t["settings"])
        if m["variant"] == "baseline":  # the same run without any human-map term
            overrides.update(lambda_harmonization=0.0, lambda_masked=0.0, lambda_outside=0.0)
        cfg = TrainConfig.from_preset(t["preset"], **{
            "data": str(root / t["path"]), "model": m["name"], "out_dir": str(out), "seed": int(m["seed"] or 0),
            "epochs": t["epochs"], "train_split": t["split"], "device": device, "progress": False, "resume": True,
            "num_workers": 0, "eval_every": 0, "eval_limit": 32, **overrides})
        callbacks = [lambda event, info: on_train(task, event, info)] if on_train is not None else []
        res = train(cfg, model=model, callbacks=callbacks)
        if res.final_checkpoint is None or not Path(res.final_checkpoint).is_file():
            raise RuntimeError(f"training ended without a final checkpoint in {out}")
        if Path(res.final_checkpoint) != ckpt:
            os.replace(res.final_checkpoint, ckpt)
    model = load(ckpt)
    return {"model_info": model_info(model, m), "content_key": getattr(model, "fingerprint", lambda: None)()}


def _mark_running(ledger_path: str | None, spec_key: str) -> None:
    """Tell ``status`` this task has started (when the study's store is visible from here:
    a Ray task on another machine skips it and its task shows as pending until it is done)."""
    import sqlite3

    from harmonia.studies.ledger import Ledger

    if not ledger_path or not os.path.isfile(ledger_path):
        return
    try:
        led = Ledger(ledger_path)
        led.mark(spec_key, "running")
        led.close()
    except sqlite3.Error:
        pass  # the status line is informative only; the driver records the outcome


def execute_task(task_json: dict[str, Any], root: str, store_path: str, models_dir: str, device: str = "cpu",
                 batch_size: int = 32, threads: int | None = None, ledger_path: str | None = None,
                 on_train: Any = None) -> dict[str, Any]:
    """Do one task; returns ``{"spec_key", "state": "done"|"failed", "reason", "content_key",
    "headline", "model_info", "seconds", "cached"}``. ``on_train(task, event, info)``: the
    trainer's events of a training task (per step, epoch and evaluation)."""
    import torch

    from harmonia.measurements import run
    from harmonia.store import ResultStore
    from harmonia.studies.measures import build_measurement

    if threads:
        torch.set_num_threads(threads)
    task = Task.from_json(task_json)
    _mark_running(ledger_path, task.spec_key)
    out: dict[str, Any] = {"spec_key": task.spec_key, "state": "failed", "reason": None, "content_key": None,
                           "headline": None, "model_info": None, "cached": False}
    start = time.perf_counter()
    stage = "model"
    try:
        if task.stage == "train":
            stage = "training"
            out.update(_train(task, Path(root), Path(models_dir), device, on_train))
        else:
            stage = "data"
            ds = _dataset(Path(root), task.data)
            stage = "model"
            model = _load_model(task, Path(root), Path(models_dir), None)
            out["model_info"] = model_info(model, task.model)
            stage = "measurement"
            with ResultStore(store_path) as store:
                measurement = build_measurement(task.measurement["kind"], task.measurement["settings"], ds, store, device)
                if task.data.get("limit") is not None and getattr(measurement, "limit", None) is None:
                    measurement.limit = task.data["limit"]
                bs = task.measurement.get("batch_size") or batch_size
                res = run(measurement, model, ds, store=store, batch_size=bs)
            out.update(content_key=res.key, headline=res.headline, cached=res.cached)
        out["state"] = "done"
    except Exception as e:  # noqa: BLE001 - any failure is the task's, recorded and skipped
        if os.environ.get("HARMONIA_DEBUG"):
            traceback.print_exc()
        out["reason"] = f"{stage}: {_one_line(e)}"
        out["failed_stage"] = stage
    out["seconds"] = time.perf_counter() - start
    return out


# -- executors -----------------------------------------------------------------------------------


def worker_died(task: Task, e: BaseException) -> dict[str, Any]:
    """The outcome of a task whose worker died: failed, so a re-run retries it (its part file resumes)."""
    return {"spec_key": task.spec_key, "state": "failed", "reason": f"worker: {_one_line(e)}", "failed_stage": "worker",
            "seconds": 0.0}


class LocalExecutor:
    """Tasks one after another in this process, writing straight into the study's store
    (``on_train``: see :func:`execute_task`; only this executor can call back into the driver)."""

    parts = False

    def __init__(self, threads: int | None = None, on_train: Any = None) -> None:
        self.threads, self.on_train = threads, on_train

    def map(self, tasks: Iterable[Task], args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for t in tasks:
            yield execute_task(t.to_json(), args["root"], args["store"], args["models_dir"], args["device"],
                               args["batch_size"], self.threads, args["store"], self.on_train)

    def close(self) -> None:
        pass


def part_path(parts_dir: str | Path, spec_key: str) -> Path:
    """The store file one worker task writes (named by its spec key, so a re-run resumes it)."""
    return Path(parts_dir) / f"{spec_key}.sqlite"


class ProcessExecutor:
    """``workers`` local processes; each task writes its own part file, merged by the driver."""

    parts = True

    def __init__(self, workers: int, threads: int | None = 1) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker (forking a process that holds torch threads and
        # SQLite connections is not safe)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        self.threads = threads

    def map(self, tasks: Iterable[Task], args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from concurrent.futures import as_completed

        futures = {self.pool.submit(execute_task, t.to_json(), args["root"], str(part_path(args["parts_dir"], t.spec_key)),
                                    args["models_dir"], args["device"], args["batch_size"], self.threads, args["store"]): t
                   for t in tasks}
        for f in as_completed(futures):
            try:
                yield f.result()
            except Exception as e:  # noqa: BLE001 - the worker process died (killed, out of memory)
                yield worker_died(futures[f], e)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _ray_task(task_json: dict[str, Any], root: str, parts_dir: str, models_dir: str, device: str, batch_size: int,
              threads: int | None, ledger_path: str) -> dict[str, Any]:
    """A Ray task: writes its part file where the driver reads it when that folder is visible
    here (one machine, or a shared folder); else in a local temporary folder, sent back as bytes."""
    spec_key = task_json["spec_key"]
    local = not os.path.isdir(parts_dir)
    folder = tempfile.mkdtemp(prefix="harmonia-part-") if local else parts_dir
    path = part_path(folder, spec_key)
    out = execute_task(task_json, root, str(path), models_dir, device, batch_size, threads, ledger_path)
    if local and path.exists():
        out["part_bytes"] = path.read_bytes()
    return out


class RayExecutor:
    """One Ray task per study task: ``address=None`` starts a local Ray instance."""

    parts = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, threads: int | None = 1) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("the Ray executor needs Ray: pip install 'harmonia[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address:
                try:
                    ray.init(address=address, log_to_driver=False)
                except ConnectionError as e:
                    hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                        "; a cluster started with `ray start` uses token authentication (Ray >= 2.59):"
                        " set RAY_AUTH_MODE=token here too (docs/studies.md)")
                    raise ConnectionError(f"{e}{hint}") from None
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
        self.remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)(_ray_task)
        self.threads = threads

    def map(self, tasks: Iterable[Task], args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        refs = {self.remote.remote(t.to_json(), args["root"], args["parts_dir"], args["models_dir"], args["device"],
                                   args["batch_size"], self.threads, args["store"]): t for t in tasks}
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            try:
                yield self.ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - the Ray worker or its node died
                yield worker_died(refs[ready[0]], e)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
