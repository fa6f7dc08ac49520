"""One measurement interface and one keyed, resumable runner.

A :class:`Measurement` says *what* is measured: its kind, a version (bumped when its maths
changes), its settings (everything that changes a number, nothing else), its items (image
ids, layers, ...), how to compute rows for a batch of items and how to aggregate rows.
:func:`run` does the protocol once for every measurement:

    key -> cached? -> resume -> rows -> aggregates

The key is a content address: the measurement's kind, version and settings, the model's
content key (:func:`harmonia.store.model_key`: its ``fingerprint()`` or a digest of its
weights) and the data's content key. Rows are committed batch by batch, so an interrupted
run resumes with the items it had not finished; a complete run is a cache hit.

Example:
    >>> import tempfile
    >>> from harmonia.store import ResultStore
    >>> class Squares(Measurement):
    ...     kind, version, uses_model = "squares", "1", False  # no model: the key is data + settings
    ...     def __init__(self, power=2): self.power = power
    ...     def settings(self): return {"power": self.power}
    ...     def data_key(self, data, store): return list(data)
    ...     def items(self, data): return [str(x) for x in data]
    ...     def compute(self, ctx, batch): return [{"item_id": i, "y": float(i) ** self.power} for i in batch.ids]
    ...     def aggregate(self, rows, data): return {"sum": sum(r["y"] for r in rows)}
    ...     def headline(self, agg): return {"sum": agg["sum"]}
    >>> store = ResultStore(tempfile.mkdtemp() + "/r.sqlite")
    >>> first = run(Squares(), None, [1, 2, 3], store=store)
    >>> again = run(Squares(), None, [1, 2, 3], store=store)
    >>> first.headline, again.cached, again.key == first.key
    ({'sum': 14.0}, True, True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

from harmonia.store import ResultStore, cache_key, model_key
from harmonia.store.sqlite import row_id

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class Batch:
    """Items to compute together: their ids, their positions in the item list and, when the
    measurement loads them, their data (e.g. a collated batch of images)."""

    ids: list[str]
    index: list[int]
    data: Any = None


def loader_batches(data: Any, index: list[int], batch_size: int | None, **loader_options: Any) -> Iterator[Batch]:
    """Batches of the items of ``data`` at ``index`` through a torch ``DataLoader`` (items are
    dicts with an ``"id"``): what a measurement over a dataset's images yields from ``batches``.

    Example:
        >>> data = [{"id": f"im{i}", "x": i} for i in range(5)]
        >>> [(b.ids, b.index) for b in loader_batches(data, [0, 2, 4], 2)]
        [(['im0', 'im2'], [0, 2]), (['im4'], [4])]
    """
    from torch.utils.data import DataLoader, Subset

    start = 0
    for batch in DataLoader(Subset(data, index), batch_size=batch_size or len(index) or 1, **loader_options):
        n = len(batch["id"])
        yield Batch([str(i) for i in batch["id"]], index[start:start + n], batch)
        start += n


@dataclass
class Result:
    """What :func:`run` returns for every measurement."""

    key: str
    cached: bool
    rows: list[dict[str, Any]]
    aggregates: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    headline: dict[str, Any] = field(default_factory=dict)
    resumed: int = 0  # items an interrupted run had already stored (0: computed from the start, or cached)


class Measurement(ABC):
    """What one measurement is; :func:`run` does the rest. See the module docstring.

    Subclasses set ``kind`` and ``version`` and implement :meth:`settings`,
    :meth:`data_key`, :meth:`items`, :meth:`compute`, :meth:`aggregate` and
    :meth:`headline`; :meth:`prepare`, :meth:`batches`, :meth:`meta`, :meth:`check` and
    :meth:`from_cache` have defaults. Runtime options that do not change a number (device,
    batch size, workers, callbacks) are attributes, never settings.
    """

    kind: ClassVar[str]
    version: ClassVar[str]
    uses_model: ClassVar[bool] = True  # False: the model is not part of the key (human ceilings)
    default_batch_size: ClassVar[int | None] = 32  # items per compute call; None: all at once

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able settings that change a number (the key's part besides model and data)."""

    @abstractmethod
    def data_key(self, data: Any, store: ResultStore | None) -> Any:
        """Content key of the data (``store`` can supply cached file digests; may be None)."""

    @abstractmethod
    def items(self, data: Any) -> list[str]:
        """Ids of the items measured, in order (unique)."""

    @abstractmethod
    def compute(self, ctx: Any, batch: Batch) -> list[dict[str, Any]]:
        """Rows for a batch of items, each with its id (``item_id`` or ``image_id``).

        A row must not depend on which other items share its batch, nor on resuming."""

    @abstractmethod
    def aggregate(self, rows: list[dict[str, Any]], data: Any) -> dict[str, Any]:
        """The run's aggregates from all its rows (ordered by item id when read from a store)."""

    @abstractmethod
    def headline(self, aggregates: dict[str, Any]) -> dict[str, Any]:
        """A flat dict of the main numbers (tables, plots)."""

    # -- defaults ---------------------------------------------------------------------------
    def check(self, model: Any, data: Any) -> None:  # noqa: B027  (optional hook: most need no checks)
        """Validate before any work (raise ValueError with a one-line message). Called first,
        so it may also resolve what depends on the model or data (``NeuralSweep`` finds the
        model's default layers here, which its items and settings then use)."""

    def prepare(self, model: Any, data: Any, data_key: Any) -> Any:
        """The context ``compute`` gets (e.g. the model moved to its device); default: the model.

        ``data_key`` is what :meth:`data_key` gave for this run (None without a store)."""
        return model

    def batches(self, data: Any, ids: list[str], index: list[int], batch_size: int | None) -> Iterator[Batch]:
        """Cut the items to compute into batches (override to load their data)."""
        step = len(ids) if not batch_size else batch_size
        for s in range(0, len(ids), max(step, 1)):
            yield Batch(ids[s:s + step], index[s:s + step])

    def meta(self, model: Any, data: Any) -> dict[str, Any]:
        """Descriptive metadata stored with the run (not part of the key)."""
        return {}

    def key(self, model: Any, data: Any, store: ResultStore | None = None, data_key: Any = ...) -> str:
        """The content address of this measurement of ``model`` on ``data``.

        A model without a content key is refused (:func:`harmonia.store.model_key`)."""
        if data_key is ...:
            data_key = self.data_key(data, store)
        parts: dict[str, Any] = {"kind": self.kind, "settings": self.settings(), "data": data_key}
        if self.uses_model:
            parts["model"] = model_key(model)
        return cache_key(parts, version=f"{self.kind}/{self.version}")

    def reaggregate_cached(self) -> bool:
        """Whether a cache hit recomputes the aggregates from the stored rows (True when an
        aggregation option outside the key can change, e.g. the ceiling alignment is divided by)."""
        return True


def run(
    measurement: Measurement,
    model: Any,
    data: Any,
    *,
    store: ResultStore | None = None,
    recompute: bool = False,
    on_event: Event | None = None,
    batch_size: int | None = None,
) -> Result:
    """Measure ``model`` on ``data``: cached, resumed or computed, batch by batch.

    Events (``on_event(name, info)``): ``"start"`` (``total``, ``done``: items stored
    before), ``"batch"`` (``done``, ``total``, ``rows``, ``batch``) after each batch is
    committed, ``"cached"`` on a cache hit, ``"finish"`` (``result``).
    ``batch_size`` overrides the measurement's default (it never changes a number).
    """
    emit = on_event or (lambda name, info: None)
    measurement.check(model, data)
    data_key = measurement.data_key(data, store)
    key = measurement.key(model, data, store, data_key)
    all_ids = measurement.items(data)
    done: set[str] = set()
    if store is not None:
        stored = store.get_run(key)
        if stored is not None and recompute:
            store.delete_run(key)
            stored = None
        if stored is not None and stored.status == "complete":
            rows = store.rows(key)
            agg = stored.aggregates or {}
            if measurement.reaggregate_cached():
                agg = measurement.aggregate(rows, data)
                if agg != stored.aggregates:
                    store.finish_run(key, agg)
            result = Result(key, True, rows, agg, stored.meta, measurement.kind, measurement.headline(agg))
            emit("cached", {"total": len(all_ids), "result": result})
            return result
    meta = measurement.meta(model, data)  # after the cache check: a hit never pays for it
    if store is not None:
        store.start_run(key, kind=measurement.kind, meta=meta)
        done = store.done_ids(key)
    wanted = set(all_ids)
    todo = [(i, item) for i, item in enumerate(all_ids) if item not in done]
    finished = len(all_ids) - len(todo)
    emit("start", {"total": len(all_ids), "done": finished})
    ctx = measurement.prepare(model, data, data_key)
    rows: list[dict[str, Any]] = []
    size = batch_size if batch_size is not None else measurement.default_batch_size
    for batch in measurement.batches(data, [t[1] for t in todo], [t[0] for t in todo], size):
        batch_rows = measurement.compute(ctx, batch)
        if store is not None:
            store.add_rows(key, batch_rows)
        rows.extend(batch_rows)
        finished += sum(row_id(r) in wanted and row_id(r) not in done for r in batch_rows)
        done.update(row_id(r) for r in batch_rows)
        emit("batch", {"done": finished, "total": len(all_ids), "rows": batch_rows, "batch": batch})
    if store is not None:
        rows = [r for r in store.rows(key) if row_id(r) in wanted]
    agg = measurement.aggregate(rows, data)
    if store is not None:
        store.finish_run(key, agg)
    result = Result(key, False, rows, agg, meta, measurement.kind, measurement.headline(agg), len(all_ids) - len(todo))
    emit("finish", {"result": result})
    return result


def progress_events(progress: Callable[[int, int], None] | None) -> Event | None:
    """An ``on_event`` that drives a ``progress(done, total)`` callback (the CLI's bars).

    Example:
        >>> seen = []; ev = progress_events(lambda d, t: seen.append((d, t)))
        >>> ev("start", {"done": 0, "total": 2}); ev("batch", {"done": 2, "total": 2}); seen
        [(0, 2), (2, 2)]
    """
    if progress is None:
        return None

    def on_event(name: str, info: dict[str, Any]) -> None:
        if name in ("start", "batch"):
            progress(info["done"], info["total"])

    return on_event


def dataset_ids(dataset: Any, n: int | None = None) -> list[str]:
    """The first ``n`` item ids of a map-style dataset of dicts with ``id`` (``ids`` when it has them).

    Example:
        >>> dataset_ids([{"id": "a"}, {"id": "b"}], 1)
        ['a']
    """
    n = len(dataset) if n is None else min(n, len(dataset))
    if hasattr(dataset, "ids"):
        return [str(i) for i in list(dataset.ids)[:n]]
    return [str(dataset[i]["id"]) for i in range(n)]
