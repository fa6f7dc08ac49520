"""The study's ledger: one row per task (spec key -> state, content key, reason, headline).

It is a table (``study_tasks``) in the study's results store file, written in single
transactions, so a driver killed at any point leaves each task either as it was or fully
updated. A task is ``done`` only when the ledger says so *and* its run is complete in the
store; ``running`` entries whose driver died (nobody holds the study's lock) count as
pending, so a re-run does them again (the runner resumes their stored rows).

Example:
    >>> import tempfile
    >>> led = Ledger(tempfile.mkdtemp() + "/s.sqlite")
    >>> led.mark("k1", "failed", reason="weights not cached"); led.get("k1")["reason"]
    'weights not cached'
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

STATES = ("done", "running", "pending", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study_tasks (
    spec_key TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    content_key TEXT,
    reason TEXT,
    headline TEXT,
    model_info TEXT,
    seconds REAL,
    host TEXT,
    pid INTEGER,
    updated REAL NOT NULL
)
"""


class Ledger:
    """Task states of a study, beside its runs in the same SQLite file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def mark(self, spec_key: str, state: str, *, content_key: str | None = None, reason: str | None = None,
             headline: dict[str, Any] | None = None, model_info: dict[str, Any] | None = None,
             seconds: float | None = None) -> None:
        """Set a task's state (one transaction; what is not given is kept from before, except the reason)."""
        old = self.get(spec_key) or {}
        self._conn.execute(
            "INSERT OR REPLACE INTO study_tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (spec_key, state, content_key or old.get("content_key"), reason,
             json.dumps(headline, allow_nan=True) if headline is not None else _dump(old.get("headline")),
             json.dumps(model_info) if model_info is not None else _dump(old.get("model_info")),
             seconds if seconds is not None else old.get("seconds"), socket.gethostname(), os.getpid(), time.time()))

    def get(self, spec_key: str) -> dict[str, Any] | None:
        return self.all().get(spec_key)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every ledger row by spec key."""
        cur = self._conn.execute("SELECT * FROM study_tasks")
        names = [c[0] for c in cur.description]
        out = {}
        for row in cur.fetchall():
            d = dict(zip(names, row))
            for k in ("headline", "model_info"):
                d[k] = json.loads(d[k]) if d[k] else None
            out[d["spec_key"]] = d
        return out


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=True)
