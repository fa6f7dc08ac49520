"""``harmonia results``: list, show and export what the results store holds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors

results_app = typer.Typer(
    help="Query and export the results store (default $HARMONIA_STORE or ./harmonia-results.sqlite).\n\n"
    "Examples:\n\n  harmonia results list\n\n  harmonia results show 3fa2\n\n"
    "  harmonia results export runs.csv\n\n  harmonia results export rows.csv --rows 3fa2\n\n"
    "  harmonia results merge workers/*.sqlite --store all.sqlite",
    no_args_is_help=True,
)

StoreOpt = typer.Option(None, "--store", help="Results store path.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite")


def _open(store: Optional[Path]):
    from harmonia.store import ResultStore, default_store_path

    path = store or default_store_path()
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no results store yet (run `harmonia evaluate` first, or pass --store)")
    return ResultStore(path)


def _one(store, prefix: str):
    runs = store.find_runs(prefix)
    if not runs:
        raise KeyError(f"no run whose key starts with {prefix!r}")
    if len(runs) > 1:
        raise KeyError(f"{len(runs)} runs start with {prefix!r}; give more characters")
    return runs[0]


@results_app.command("list")
@user_errors
def list_runs(
    kind: Optional[str] = typer.Option(None, help="Only runs of this kind (evaluation, ceiling, ...).", show_default="all kinds"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """One line per stored run, newest first: what tells it apart (model, data, settings) and its headline.

    A trained model is named after the run folder that trained it (and its lambda), a random
    one after its seed.
    """
    from harmonia.store.describe import run_data, run_headline, run_model, run_settings, trained_models

    s = _open(store)
    runs = s.runs(kind=kind)
    trained = trained_models(s.runs())  # whatever --kind shows, trained models are named by their runs
    table = Table(title=f"Runs in {s.path}")
    for col in ("key", "kind", "status", "model", "data", "settings", "rows", "headline", "updated"):
        table.add_column(col)
    for r in runs:
        table.add_row(r.key[:10], r.kind, r.status, run_model(r, trained), run_data(r), run_settings(r), str(r.n_rows),
                      run_headline(r), time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)))
    console.print(table)


@results_app.command("show")
@user_errors
def show_run(key: str = typer.Argument(..., help="Run key or a unique prefix."), store: Optional[Path] = StoreOpt) -> None:
    """Everything about one run: settings and aggregates as JSON."""
    s = _open(store)
    r = _one(s, key)
    from harmonia.store.sqlite import json_safe

    console.print_json(json.dumps(json_safe({"key": r.key, "kind": r.kind, "status": r.status, "rows": r.n_rows,
                                             "meta": r.meta, "aggregates": r.aggregates})))


@results_app.command("export")
@user_errors
def export(
    out: Path = typer.Argument(..., help="CSV file to write ('-' for standard output)."),
    rows: Optional[list[str]] = typer.Option(None, "--rows", help="Export per-image rows of these runs (key prefixes) instead of one line per run.", show_default="none (one line per run)"),
    kind: Optional[str] = typer.Option(None, help="Only runs of this kind.", show_default="all kinds"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Export runs (one line each, aggregates flattened) or per-image rows to CSV."""
    from harmonia.utils.io import atomic_write_text, claim_output_file

    s = _open(store)
    if str(out) != "-":  # never over the store itself or a file harmonia did not write
        claim_output_file(out, inputs=[s.path], option="OUT")
    if rows:
        text = s.export_rows_csv([_one(s, k).key for k in rows])
    else:
        text = s.export_runs_csv(s.runs(kind=kind))
    if str(out) == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")


MERGE_HELP = """Merge worker stores into one (--store, created if missing).

Run keys are content addresses, so merging is idempotent: a run complete in the target is
kept, a partial one gains the worker's rows (and completes when the worker's run is
complete), a missing one is copied with its artifacts. Give each worker process or
machine its own store file (SQLite must not be shared over a network filesystem) and merge
them where the results are read.

Example:

  harmonia results merge workers/*.sqlite --store all.sqlite
"""


@results_app.command("merge", help=reflow(MERGE_HELP))
@user_errors
def merge(
    sources: list[Path] = typer.Argument(..., help="Worker stores to merge in."),
    store: Optional[Path] = StoreOpt,
) -> None:
    from harmonia.store import ResultStore, default_store_path

    missing = [p for p in sources if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such results store")
    target = ResultStore(store or default_store_path())
    for src in sources:
        n = target.merge(src)
        console.print(f"{src}: {n['runs']} new runs, {n['completed']} completed, {n['rows']} rows, "
                      f"{n['artifacts']} artifacts", highlight=False)
    console.print(f"merged into {target.path}")


def register(app: typer.Typer) -> None:
    """Add the ``harmonia results`` group to ``app``."""
    app.add_typer(results_app, name="results")
