"""The results store: one SQLite file holding every run, its per-image rows and aggregates.

A *run* is one computation identified by a content cache key (see :mod:`harmonia.store.keys`):
an evaluation of a model on a dataset with an explainer and metrics, a ceiling, ...
Per-image rows are added in transactions as they are computed, so an interrupted run
resumes where it stopped (``done_ids``) and a finished one is a cache hit (``get_run``).

Example:
    >>> import tempfile, os
    >>> store = ResultStore(os.path.join(tempfile.mkdtemp(), "r.sqlite"))
    >>> store.start_run("k1", kind="evaluation", meta={"model": "toy"})
    >>> store.add_rows("k1", [{"image_id": "a", "spearman": 0.5}])
    >>> store.finish_run("k1", {"spearman_mean": 0.5})
    >>> store.get_run("k1").status, store.done_ids("k1")
    ('complete', {'a'})
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harmonia.store.keys import canonical_json, file_digest

# What each part of harmonia records (evaluate, attack, ceiling, train, neural).
RUN_KINDS = ("evaluation", "adversarial", "ceiling", "training", "neural")
from harmonia.utils.lock import PathLock

DEFAULT_STORE = "harmonia-results.sqlite"
SCHEMA_VERSION = 1

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
    image_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_key, image_id)
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


def _nan_to_none(value: Any) -> Any:
    # JSON has no NaN; store None and give NaN back when read (see _none_to_nan).
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


class ResultStore:
    """SQLite-backed store of runs and per-image rows (WAL mode, one transaction per write)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._locks: dict[str, PathLock] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._tx():
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self._conn.execute(stmt)
                row = self._conn.execute("SELECT value FROM info WHERE name='schema_version'").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: store schema {row[0]} is newer than this harmonia reads")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable harmonia results store ({e})") from e

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
                (key, kind, now, now, canonical_json(_nan_to_none(meta))),
            )

    def add_rows(self, key: str, rows: Iterable[dict[str, Any]]) -> None:
        """Insert (or replace) per-image rows in one transaction. Each row needs ``image_id``."""
        payload = []
        for r in rows:
            r = dict(r)
            image_id = str(r.pop("image_id"))
            payload.append((key, image_id, canonical_json(_nan_to_none(r))))
        with self._tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is None:
                raise KeyError(f"no run {key!r}; call start_run first")
            c.executemany("INSERT OR REPLACE INTO rows (run_key, image_id, data) VALUES (?, ?, ?)", payload)
            c.execute("UPDATE runs SET updated = ? WHERE key = ?", (time.time(), key))

    def done_ids(self, key: str) -> set[str]:
        """Image ids that already have a row in this run (for resuming)."""
        return {r[0] for r in self._conn.execute("SELECT image_id FROM rows WHERE run_key = ?", (key,))}

    def rows(self, key: str) -> list[dict[str, Any]]:
        """Per-image rows of a run (NaN restored where a value was missing), ordered by id."""
        out = []
        for image_id, data in self._conn.execute(
            "SELECT image_id, data FROM rows WHERE run_key = ? ORDER BY image_id", (key,)
        ):
            d = {k: (math.nan if v is None else v) for k, v in json.loads(data).items()}
            out.append({"image_id": image_id, **d})
        return out

    def finish_run(self, key: str, aggregates: dict[str, Any]) -> None:
        """Mark the run complete with its aggregates."""
        with self._tx() as c:
            n = c.execute(
                "UPDATE runs SET status='complete', aggregates=?, updated=? WHERE key=?",
                (canonical_json(_nan_to_none(aggregates)), time.time(), key),
            ).rowcount
            if n == 0:
                raise KeyError(f"no run {key!r}")
        lock = self._locks.pop(key, None)
        if lock is not None:
            lock.release()

    def delete_run(self, key: str) -> bool:
        with self.run_lock(key), self._tx() as c:  # never under a process still writing it
            c.execute("DELETE FROM rows WHERE run_key = ?", (key,))
            return c.execute("DELETE FROM runs WHERE key = ?", (key,)).rowcount > 0

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
        return Run(key, kind, status, created, updated, json.loads(meta), json.loads(agg) if agg else None, n)

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
    columns: list[str] = []
    for r in records:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    text = buf.getvalue()
    if out is not None:
        out.write(text)
    return text
