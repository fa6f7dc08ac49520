"""Check that two results stores hold the same numbers: every complete run's key, rows and
aggregates (wall-clock fields left out), e.g. ``harmonia demo --quick`` before and after a change.

    python benchmarks/compare_stores.py BEFORE/results.sqlite AFTER/results.sqlite

Run both demos with the same ``--out`` path (a training run's key holds its data path).
Prints one line per run; exits 1 when a key is missing on one side or anything differs.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from harmonia.store import ResultStore

WALL_CLOCK = {"train_seconds", "img_s", "seconds", "images_per_second"}


def _numbers(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _numbers(v) for k, v in x.items() if k not in WALL_CLOCK}
    if isinstance(x, list):
        return [_numbers(v) for v in x]
    return x


def _text(x: Any) -> str:
    return json.dumps(_numbers(x), sort_keys=True, default=str)


def main(before: str, after: str) -> int:
    a, b = ResultStore(before), ResultStore(after)
    ra = {r.key: r for r in a.runs(status="complete")}
    rb = {r.key: r for r in b.runs(status="complete")}
    bad = 0
    for key in sorted(set(ra) | set(rb)):
        x, y = ra.get(key), rb.get(key)
        if x is None or y is None:
            print(f"{(x or y).kind:12s} {key[:12]} only in {'after' if x is None else 'before'}")
            bad += 1
            continue
        same_agg, same_rows = _text(x.aggregates) == _text(y.aggregates), _text(a.rows(key)) == _text(b.rows(key))
        print(f"{x.kind:12s} {key[:12]} aggregates equal: {same_agg}, rows equal: {same_rows} ({x.n_rows} rows)")
        bad += (not same_agg) + (not same_rows)
    print(f"{len(ra)} runs before, {len(rb)} after: {'same numbers' if not bad else f'{bad} differences'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
