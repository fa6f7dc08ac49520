"""The results store: one SQLite file holding every run, its rows and aggregates.

A *run* is one computation identified by a content cache key (see :mod:`harmonia.store.keys`):
an evaluation of a model on a dataset with an explainer and metrics, a ceiling, a layer
sweep, a training run... Its *rows* are keyed by a generic item id (an image id, a layer,
a training evaluation): the id is read from the row's ``item_id`` field, else its
``image_id`` field, and the row comes back exactly as it was written (field order, NaN,
inf, -inf and None kept apart). Rows are added in transactions as they are computed, so an
interrupted run resumes where it stopped (``done_ids``) and a finished one is a cache hit
(``get_run``). Files a run produces (figures, arrays) go in its artifacts folder
(``artifacts_dir``). Keys are content addresses, so stores written by separate workers
merge idempotently (``merge``): give each worker its own file (SQLite must not be shared
over a network filesystem) and merge them on the driver.

Example:
    >>> import tempfile, os
    >>> store = ResultStore(os.path.join(tempfile.mkdtemp(), "r.sqlite"))
    >>> store.start_run("k1", kind="evaluation", meta={"model": "toy"})
    >>> store.add_rows("k1", [{"image_id": "a", "spearman": float("inf"), "floor": None}])
    >>> store.finish_run("k1", {"spearman_mean": float("nan")})
    >>> store.get_run("k1").status, store.done_ids("k1"), store.rows("k1")
    ('complete', {'a'}, [{'image_id': 'a', 'spearman': inf, 'floor': None}])
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harmonia.store.keys import _json_default, file_digest
from harmonia.utils.lock import PathLock
from harmonia.utils.io import records_csv

# What each part of harmonia records (evaluate, attack, ceiling, train, neural).
RUN_KINDS = ("evaluation", "adversarial", "ceiling", "training", "neural")

DEFAULT_STORE = "harmonia-results.sqlite"
SCHEMA_VERSION = 2
ID_FIELDS = ("item_id", "image_id")  # where a row's id is read from, in this order

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('partial', 'complete')),
    created REAL NOT NULL,
    updated REAL NOT NULL,
    meta TEXT NOT NULL,
    aggregates TEXT
);
CREATE TABLE IF NOT EXISTS rows (
    run_key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_key, item_id)
);
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def default_store_path() -> Path:
    """``$HARMONIA_STORE`` if set, else ``./harmonia-results.sqlite``."""
    return Path(os.environ.get("HARMONIA_STORE", DEFAULT_STORE))


class StoreError(RuntimeError):
    """The store file is unusable (corrupt, newer schema, not SQLite)."""


@dataclass
class Run:
    key: str
    kind: str
    status: str
    created: float
    updated: float
    meta: dict[str, Any]
    aggregates: dict[str, Any] | None
    n_rows: int = 0


def encode(value: Any) -> str:
    """JSON text of a row, meta or aggregates that decodes to exactly ``value``.

    Python's JSON extension literals (``NaN``, ``Infinity``) keep non-finite floats apart
    from each other and from None (standard JSON has no way to say them); field order is
    kept; tuples become lists.

    Example:
        >>> decode(encode({"b": float("-inf"), "a": [None, float("nan")]}))
        {'b': -inf, 'a': [None, nan]}
    """
    return json.dumps(value, separators=(",", ":"), allow_nan=True, default=_json_default)


def decode(text: str) -> Any:
    """Inverse of :func:`encode`."""
    return json.loads(text)


def json_safe(value: Any, inf_as_text: bool = True) -> Any:
    """``value`` as standard JSON can say it, for output to other programs: NaN as None, inf
    and -inf as the strings "inf" and "-inf" (kept as floats with ``inf_as_text=False``);
    the store itself keeps them exactly.

    Example:
        >>> json_safe({"a": [float("nan"), float("-inf"), 1.5]})
        {'a': [None, '-inf', 1.5]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (str(value) if inf_as_text else value)
    if isinstance(value, dict):
        return {k: json_safe(v, inf_as_text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, inf_as_text) for v in value]
    return value


def row_id(row: dict[str, Any]) -> str:
    """The item id of a row: its ``item_id`` field, else its ``image_id`` field.

    Example:
        >>> row_id({"image_id": 7, "x": 1}), row_id({"item_id": "layer1", "layer": "layer1"})
        ('7', 'layer1')
    """
    for f in ID_FIELDS:
        if f in row:
            return str(row[f])
    raise KeyError(f"a row needs an item id ({' or '.join(ID_FIELDS)}); got fields {sorted(row)}")


def _v1_value(value: Any, top: bool) -> Any:
    """What a v1 reader gave back: NaN for a missing top-level row value, inf for "inf"."""
    if isinstance(value, str) and value in ("inf", "-inf"):
        return float(value)
    if value is None and top:
        return math.nan
    if isinstance(value, dict):
        return {k: _v1_value(v, False) for k, v in value.items()}
    if isinstance(value, list):
        return [_v1_value(v, False) for v in value]
    return value


class ResultStore:
    """SQLite-backed store of runs and their rows (WAL mode, one transaction per write)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._locks: dict[str, PathLock] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._tx() as c:
                c.execute("CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                row = c.execute("SELECT value FROM info WHERE name='schema_version'").fetchone()
                version = int(row[0]) if row is not None else None
                if version is not None and version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: store schema {version} is newer than this harmonia reads "
                                     f"(schema {SCHEMA_VERSION}); upgrade harmonia")
                if version == 1:
                    self._migrate_v1(c)
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    c.execute(stmt)
                c.execute("INSERT OR REPLACE INTO info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable harmonia results store ({e})") from e

    @staticmethod
    def _migrate_v1(c: sqlite3.Connection) -> None:
        """v1 -> v2 in the open transaction: rows get a generic ``item_id`` column and keep
        their ``image_id`` field; values are rewritten as a v1 reader returned them."""
        c.execute("ALTER TABLE rows RENAME TO rows_v1")
        c.execute("CREATE TABLE rows (run_key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,"
                  " item_id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_key, item_id))")
        for run_key, image_id, data in c.execute("SELECT run_key, image_id, data FROM rows_v1").fetchall():
            row = {"image_id": image_id, **{k: _v1_value(v, True) for k, v in json.loads(data).items()}}
            c.execute("INSERT INTO rows VALUES (?, ?, ?)", (run_key, image_id, encode(row)))
        c.execute("DROP TABLE rows_v1")
        for key, meta, agg in c.execute("SELECT key, meta, aggregates FROM runs").fetchall():
            new_agg = None if agg is None else encode(_v1_value(json.loads(agg), False))
            c.execute("UPDATE runs SET meta = ?, aggregates = ? WHERE key = ?",
                      (encode(_v1_value(json.loads(meta), False)), new_agg, key))

    # -- transactions -------------------------------------------------------------------
    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> "ResultStore._Tx":
        return ResultStore._Tx(self._conn)

    def close(self) -> None:
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()
        self._conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------
    def get_run(self, key: str) -> Run | None:
        """The run with this key, or None."""
        row = self._conn.execute(
            "SELECT key, kind, status, created, updated, meta, aggregates,"
            " (SELECT COUNT(*) FROM rows WHERE run_key = runs.key) FROM runs WHERE key = ?",
            (key,),
        ).fetchone()
        return self._run(row) if row else None

    def run_lock(self, key: str) -> PathLock:
        """The lock of run ``key`` while it is written (a file in ``STORE.locks/``)."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:120]
        return PathLock(self.path.parent / f"{self.path.name}.locks" / f"{name}.lock",
                        f"run {key[:12]} of {self.path}", remove_empty_parent=True)

    def start_run(self, key: str, kind: str, meta: dict[str, Any]) -> None:
        """Create the run if new (status 'partial'); an existing run is left as it is.

        The run stays locked by this process until :meth:`finish_run` or :meth:`close`: another
        process writing the same run refuses (:class:`~harmonia.utils.lock.LockedError`).
        """
        if key not in self._locks:
            self._locks[key] = self.run_lock(key).acquire()
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO runs (key, kind, status, created, updated, meta) VALUES (?, ?, 'partial', ?, ?, ?)",
                (key, kind, now, now, encode(meta)),
            )

    def add_rows(self, key: str, rows: Iterable[dict[str, Any]]) -> None:
        """Insert (or replace) rows in one transaction; each needs an id (:func:`row_id`)."""
        payload = [(key, row_id(r), encode(dict(r))) for r in rows]
        with self._tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is None:
                raise KeyError(f"no run {key!r}; call start_run first")
            c.executemany("INSERT OR REPLACE INTO rows (run_key, item_id, data) VALUES (?, ?, ?)", payload)
            c.execute("UPDATE runs SET updated = ? WHERE key = ?", (time.time(), key))

    def done_ids(self, key: str) -> set[str]:
        """Item ids that already have a row in this run (for resuming)."""
        return {r[0] for r in self._conn.execute("SELECT item_id FROM rows WHERE run_key = ?", (key,))}

    def rows(self, key: str) -> list[dict[str, Any]]:
        """The rows of a run exactly as written, ordered by item id."""
        return [decode(d) for (d,) in self._conn.execute(
            "SELECT data FROM rows WHERE run_key = ? ORDER BY item_id", (key,))]

    def finish_run(self, key: str, aggregates: dict[str, Any]) -> None:
        """Mark the run complete with its aggregates."""
        with self._tx() as c:
            n = c.execute(
                "UPDATE runs SET status='complete', aggregates=?, updated=? WHERE key=?",
                (encode(aggregates), time.time(), key),
            ).rowcount
            if n == 0:
                raise KeyError(f"no run {key!r}")
        lock = self._locks.pop(key, None)
        if lock is not None:
            lock.release()

    def delete_run(self, key: str) -> bool:
        """Remove a run, its rows and its artifacts folder; False if there was no such run."""
        with self.run_lock(key), self._tx() as c:  # never under a process still writing it
            c.execute("DELETE FROM rows WHERE run_key = ?", (key,))
            existed = c.execute("DELETE FROM runs WHERE key = ?", (key,)).rowcount > 0
        shutil.rmtree(self.artifacts_dir(key, create=False), ignore_errors=True)
        return existed

    def kinds(self) -> list[str]:
        """The kinds of run harmonia writes, and any other kind this store holds."""
        held = {k for (k,) in self._conn.execute("SELECT DISTINCT kind FROM runs")}
        return list(RUN_KINDS) + sorted(held - set(RUN_KINDS))

    def runs(self, kind: str | None = None, status: str | None = None) -> list[Run]:
        """All runs (newest first), optionally filtered by kind and status.

        An unknown ``kind`` (a typo) raises :class:`~harmonia.errors.UserError` listing the
        kinds, rather than answering with nothing.
        """
        if kind and kind not in self.kinds():
            from harmonia.errors import UserError

            raise UserError(f"unknown run kind {kind!r}; kinds: {', '.join(self.kinds())}")
        q = (
            "SELECT key, kind, status, created, updated, meta, aggregates,"
            " (SELECT COUNT(*) FROM rows WHERE run_key = runs.key) FROM runs"
        )
        cond, args = [], []
        if kind:
            cond.append("kind = ?")
            args.append(kind)
        if status:
            cond.append("status = ?")
            args.append(status)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY updated DESC"
        return [self._run(r) for r in self._conn.execute(q, args)]

    def find_runs(self, key_prefix: str) -> list[Run]:
        """Runs whose key starts with ``key_prefix`` (so users can type a short prefix)."""
        return [r for r in self.runs() if r.key.startswith(key_prefix)]

    @staticmethod
    def _run(row: tuple) -> Run:
        key, kind, status, created, updated, meta, agg, n = row
        return Run(key, kind, status, created, updated, decode(meta), decode(agg) if agg else None, n)

    # -- artifacts ------------------------------------------------------------------------
    @property
    def artifacts_root(self) -> Path:
        """``<store file>.artifacts/``: one folder per run key beside the SQLite file."""
        return self.path.with_name(self.path.name + ".artifacts")

    def artifacts_dir(self, key: str, create: bool = True) -> Path:
        """The folder for files of run ``key`` (figures, arrays), created unless ``create=False``.

        Example:
            >>> import tempfile
            >>> s = ResultStore(tempfile.mkdtemp() + "/r.sqlite"); s.start_run("k", "demo", {})
            >>> s.artifacts_dir("k").name, s.artifacts_dir("k").is_dir()
            ('k', True)
        """
        if not key or os.sep in key or key.startswith("."):
            raise ValueError(f"not a run key: {key!r}")
        d = self.artifacts_root / key
        if create:
            if self.get_run(key) is None:
                raise KeyError(f"no run {key!r}; call start_run first")
            d.mkdir(parents=True, exist_ok=True)
        return d

    # -- merging ----------------------------------------------------------------------------
    def merge(self, other: "ResultStore | str | os.PathLike") -> dict[str, int]:
        """Copy every run of ``other`` (a store or its path) into this store.

        Keys are content addresses, so the same key holds the same numbers in both: a run
        complete here is kept, a partial one gains the other's rows (and its aggregates
        when the other is complete), a missing one is copied, and artifacts missing here
        are copied. Merging twice changes nothing. Returns counts of what was added.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp(); a, b = ResultStore(d + "/a.sqlite"), ResultStore(d + "/b.sqlite")
            >>> b.start_run("k", "evaluation", {}); b.add_rows("k", [{"image_id": "x", "v": 1.0}])
            >>> b.finish_run("k", {"v": 1.0})
            >>> a.merge(b), a.merge(b)
            ({'runs': 1, 'completed': 1, 'rows': 1, 'artifacts': 0}, {'runs': 0, 'completed': 0, 'rows': 0, 'artifacts': 0})
        """
        src = other if isinstance(other, ResultStore) else ResultStore(other)
        if src.path.resolve() == self.path.resolve():
            raise ValueError(f"cannot merge {self.path} into itself")
        counts = {"runs": 0, "completed": 0, "rows": 0, "artifacts": 0}
        for theirs in src.runs():
            mine = self.get_run(theirs.key)
            if mine is not None and mine.kind != theirs.kind:
                raise StoreError(f"run {theirs.key}: kind {theirs.kind!r} in {src.path} but {mine.kind!r} here")
            if mine is None or mine.status != "complete":
                data = src._conn.execute("SELECT item_id, data FROM rows WHERE run_key = ?", (theirs.key,)).fetchall()
                with self.run_lock(theirs.key), self._tx() as c:  # never under a process writing it here
                    if mine is None:
                        c.execute("INSERT INTO runs (key, kind, status, created, updated, meta) VALUES (?, ?, 'partial', ?, ?, ?)",
                                  (theirs.key, theirs.kind, theirs.created, theirs.updated, encode(theirs.meta)))
                        counts["runs"] += 1
                    before = c.total_changes
                    c.executemany("INSERT OR IGNORE INTO rows (run_key, item_id, data) VALUES (?, ?, ?)",
                                  [(theirs.key, i, d) for i, d in data])
                    counts["rows"] += c.total_changes - before
                    if theirs.status == "complete":
                        c.execute("UPDATE runs SET status='complete', aggregates=?, updated=? WHERE key=?",
                                  (encode(theirs.aggregates), theirs.updated, theirs.key))
                        counts["completed"] += 1
            there = src.artifacts_dir(theirs.key, create=False)
            if there.is_dir():
                for f in sorted(p for p in there.rglob("*") if p.is_file()):
                    target = self.artifacts_root / theirs.key / f.relative_to(there)
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        tmp = target.with_name(f".{target.name}.merge-tmp")
                        shutil.copy2(f, tmp)
                        os.replace(tmp, target)  # never a half-copied artifact under its name
                        counts["artifacts"] += 1
        if src is not other:
            src.close()
        return counts

    # -- cached file digests -------------------------------------------------------------
    def file_digest(self, path: str | os.PathLike) -> str:
        """Content digest of a file, cached by (absolute path, size, mtime)."""
        p = Path(path).resolve()
        st = p.stat()
        row = self._conn.execute("SELECT size, mtime_ns, digest FROM file_digests WHERE path = ?", (str(p),)).fetchone()
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return row[2]
        digest = file_digest(p)
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO file_digests (path, size, mtime_ns, digest) VALUES (?, ?, ?, ?)",
                (str(p), st.st_size, st.st_mtime_ns, digest),
            )
        return digest

    # -- export ------------------------------------------------------------------------------
    def export_rows_csv(self, keys: Iterable[str], out: io.TextIOBase | None = None) -> str:
        """Per-image rows of the given runs as CSV (run key, run meta summary, metrics)."""
        records: list[dict[str, Any]] = []
        for key in keys:
            run = self.get_run(key)
            if run is None:
                raise KeyError(f"no run {key!r}")
            base = {"run": key, "kind": run.kind, **_flat_meta(run.meta)}
            records.extend({**base, **r} for r in self.rows(key))
        return _write_csv(records, out)

    def export_runs_csv(self, runs: Iterable[Run], out: io.TextIOBase | None = None) -> str:
        """One line per run: key, kind, status, meta summary and aggregates."""
        records = [
            {
                "run": r.key,
                "kind": r.kind,
                "status": r.status,
                "rows": r.n_rows,
                "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated)),
                **_flat_meta(r.meta),
                **_flat_meta(r.aggregates or {}),
            }
            for r in runs
        ]
        return _write_csv(records, out)


def _flat_meta(meta: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in meta.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat_meta(v, name + "."))
        elif isinstance(v, list):
            flat[name] = json.dumps(v)
        else:
            flat[name] = v
    return flat


def _write_csv(records: list[dict[str, Any]], out: io.TextIOBase | None) -> str:
    text = records_csv(records)
    if out is not None:
        out.write(text)
    return text
