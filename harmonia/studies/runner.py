"""The study driver: plan, skip what is done, dispatch the rest, merge, record.

Resumable after ``kill -9`` at any point: rows are committed batch by batch by the
measurement runner (a half batch is never stored), the ledger and each merge are single
transactions, and a task is ``done`` only once its run is complete in the study's store. A
re-run merges any part files left by killed workers (idempotent), then does every task that
is not done: pending, interrupted and failed ones (their stored rows are resumed).

Example:
    >>> from harmonia.studies import load_study, run_study  # doctest: +SKIP
    >>> summary = run_study(load_study("examples/lite-zoo.toml"), workers=2)  # doctest: +SKIP
    >>> summary["done"], summary["failed"]  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from harmonia.store import ResultStore
from harmonia.studies.execute import LocalExecutor, ProcessExecutor, RayExecutor, part_path
from harmonia.studies.ledger import Ledger
from harmonia.studies.plan import Task, make_plan
from harmonia.studies.spec import Study
from harmonia.utils.io import atomic_write_bytes
from harmonia.utils.lock import LockedError, PathLock

Event = Callable[[str, dict[str, Any]], None]


def parts_dir(study: Study) -> Path:
    """Where worker tasks write their own store files (beside the study's store)."""
    return study.store.with_name(study.store.name + ".parts")


def models_dir(study: Study) -> Path:
    """Where the study's training stages keep their checkpoints (one folder per train task)."""
    return study.store.with_name(study.store.name + ".models")


def study_lock(study: Study) -> PathLock:
    """One driver per study at a time (dropped by the kernel if the driver dies)."""
    return PathLock(study.store.with_name(study.store.name + ".study.lock"), f"study {study.name}")


def driver_alive(study: Study) -> bool:
    """Whether a driver is running this study now (someone holds its lock)."""
    lock = study_lock(study)
    try:
        lock.acquire()
    except LockedError:
        return True
    lock.release()
    return False


def task_states(study: Study, tasks: list[Task] | None = None) -> list[tuple[Task, str, dict[str, Any] | None]]:
    """(task, state, ledger row) for every planned task, without loading any model."""
    tasks = make_plan(study) if tasks is None else tasks
    if not study.store.exists():
        return [(t, "pending", None) for t in tasks]
    ledger = Ledger(study.store)
    rows = ledger.all()
    ledger.close()
    alive = driver_alive(study)
    out = []
    with ResultStore(study.store) as store:
        for t in tasks:
            row = rows.get(t.spec_key)
            state = "pending" if row is None else row["state"]
            if state == "done" and t.stage == "measure":
                run = store.get_run(row["content_key"]) if row["content_key"] else None
                if run is None or run.status != "complete":
                    state = "pending"
            elif state == "done" and not (models_dir(study) / t.spec_key / "final.pt").is_file():
                state = "pending"
            if state == "running" and not alive:
                state = "pending"  # its driver died: a re-run resumes it
            out.append((t, state, row))
    return out


def _prepare_data(study: Study, emit: Event) -> None:
    """Make the simulated data sets a study asks for (SYNTHETIC), once, before any task."""
    from harmonia.data.format import read_info
    from harmonia.humans.simulate import SimulationConfig, simulate_from_config
    from harmonia.studies.neural import make_simulated

    for d in study.data:
        if d.simulate is None:
            continue
        if d.kind == "neural":
            if not (d.path / "neural.json").is_file():
                emit("simulate", {"data": d.name, "path": str(d.path)})
            make_simulated(d.path, d.simulate)
            continue
        cfg = SimulationConfig.from_json(d.simulate)  # lists as tuples, as the data set's own record
        if (d.path / "harmonia.json").is_file():
            info = read_info(d.path)
            if SimulationConfig.from_json(info.extra.get("simulation", {})) == cfg:
                continue
            raise ValueError(f"{d.path} holds another data set than [[data]] {d.name!r} simulates; move it or change 'path'")
        emit("simulate", {"data": d.name, "path": str(d.path)})
        simulate_from_config(d.path, cfg, progress=False)


def _merge_part(store: ResultStore, path: Path) -> None:
    if not path.exists():
        return
    store.merge(path)


def _remove_part(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    for suffix in (".artifacts", ".locks"):
        shutil.rmtree(path.with_name(path.name + suffix), ignore_errors=True)


def make_executor(workers: int = 1, ray: bool = False, ray_address: str | None = None, threads: int | None = None,
                  device: str = "cpu", on_train: Any = None) -> Any:
    """The executor for these options (``threads``: torch threads per task, None: as is;
    ``on_train``: the trainer's events, sequential executor only)."""
    if ray or ray_address:
        gpus = 1.0 if str(device).startswith("cuda") else 0.0
        return RayExecutor(ray_address, num_cpus=None if ray_address else max(workers, 1), gpus_per_task=gpus,
                           threads=threads or 1)
    if workers > 1:
        return ProcessExecutor(workers, threads or 1)
    return LocalExecutor(threads, on_train)


def run_study(study: Study, *, workers: int = 1, ray: bool = False, ray_address: str | None = None,
              threads: int | None = None, on_event: Event | None = None, executor: Any = None) -> dict[str, Any]:
    """Run every task of ``study`` that is not done; returns counts by state and the wall time.

    Events: ``"plan"`` (``total``, ``todo``), ``"task"`` (``task``, ``outcome``, ``done``,
    ``total``) as each finishes, ``"simulate"`` when a data set is made, and with the
    sequential executor ``"train"`` (``task``, ``event`` and the trainer's own fields: its
    steps, epochs and evaluations) while a training task runs.
    """
    emit = on_event or (lambda name, info: None)
    t0 = time.perf_counter()
    with study_lock(study):
        _prepare_data(study, emit)
        tasks = make_plan(study)
        store = ResultStore(study.store)
        ledger = Ledger(study.store)
        pdir = parts_dir(study)
        if pdir.is_dir():  # parts left by killed workers: what they finished is kept
            for p in sorted(pdir.glob("*.sqlite")):
                _merge_part(store, p)
        states = {t.spec_key: s for t, s, _ in task_states(study, tasks)}
        # a re-run of this driver: interrupted ('running') tasks are pending again
        todo = [t for t in tasks if states[t.spec_key] != "done"]
        emit("plan", {"total": len(tasks), "todo": len(todo)})
        own = executor is None
        ex = executor or make_executor(workers, ray, ray_address, threads, study.device,
                                       lambda task, event, info: emit("train", {"task": task, "event": event, **info}))
        args = {"root": str(study.root), "store": str(study.store), "parts_dir": str(pdir),
                "models_dir": str(models_dir(study)), "device": study.device, "batch_size": study.batch_size}
        if ex.parts:
            pdir.mkdir(parents=True, exist_ok=True)
        counts: Counter[str] = Counter(done=len(tasks) - len(todo))
        try:
            train = [t for t in todo if t.stage == "train"]
            measure = [t for t in todo if t.stage == "measure"]
            failed_models: dict[str, str] = {}
            trained_failed: dict[str, str] = {}
            for stage_tasks in (train, None):
                if stage_tasks is None:  # measurements: after every training, without the failed ones
                    stage_tasks = []
                    for t in measure:
                        if t.needs in trained_failed:
                            ledger.mark(t.spec_key, "failed", reason=f"training: {trained_failed[t.needs]}")
                            counts["failed"] += 1
                            emit("task", {"task": t, "outcome": {"state": "failed"}, "done": sum(counts.values()), "total": len(tasks)})
                        else:
                            stage_tasks.append(t)
                for outcome in _outcomes(ex, stage_tasks, args, failed_models):
                    t = next(x for x in stage_tasks if x.spec_key == outcome["spec_key"])
                    sent = outcome.pop("part_bytes", None)  # a Ray task on a machine that cannot see pdir
                    if sent is not None:
                        atomic_write_bytes(part_path(pdir, t.spec_key), sent)
                    _record(store, ledger, ex, pdir, t, outcome)
                    if outcome["state"] == "failed":
                        if t.stage == "train":
                            trained_failed[t.spec_key] = outcome["reason"]
                        elif outcome.get("failed_stage") == "model":
                            failed_models[t.model["label"]] = outcome["reason"]
                    counts[outcome["state"]] += 1
                    emit("task", {"task": t, "outcome": outcome, "done": sum(counts.values()), "total": len(tasks)})
        finally:
            if own:
                ex.close()
            if pdir.is_dir() and not any(pdir.iterdir()):
                pdir.rmdir()  # every part merged
            ledger.close()
            store.close()
    return {"total": len(tasks), "done": counts["done"], "failed": counts["failed"],
            "seconds": time.perf_counter() - t0}


def _outcomes(ex: Any, tasks: list[Task], args: dict[str, Any], failed_models: dict[str, str]):
    """Outcomes of ``tasks``; with the sequential executor, a model that failed to load is
    not loaded again for its other tasks (they get its reason)."""
    if not ex.parts:
        for t in tasks:
            if t.model["label"] in failed_models:
                yield {"spec_key": t.spec_key, "state": "failed", "reason": failed_models[t.model["label"]],
                       "failed_stage": "model", "seconds": 0.0}
                continue
            yield from ex.map([t], args)
        return
    yield from ex.map(tasks, args)


def _record(store: ResultStore, ledger: Ledger, ex: Any, pdir: Path, t: Task, outcome: dict[str, Any]) -> None:
    """Merge the task's part (workers), then mark it in the ledger (in that order: a driver
    killed between the two re-runs the task, a cache hit, and merges again: idempotent)."""
    part = part_path(pdir, t.spec_key)
    if ex.parts:
        _merge_part(store, part)
    if outcome["state"] == "done":
        ledger.mark(t.spec_key, "done", content_key=outcome.get("content_key"), headline=outcome.get("headline"),
                    model_info=outcome.get("model_info"), seconds=outcome.get("seconds"))
        if ex.parts:
            _remove_part(part)
    else:
        ledger.mark(t.spec_key, "failed", reason=outcome["reason"], model_info=outcome.get("model_info"),
                    seconds=outcome.get("seconds"))
