"""``harmonia study run|status|export|report FILE``: model-zoo studies (see docs/studies.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from harmonia.cli.common import console, print_problem, reflow, user_errors

study_app = typer.Typer(
    help=reflow("""Model-zoo studies: models x data x measurements declared in a TOML file, run
resumably (locally or on a Ray cluster), exported as a tidy table and drawn as trade-off figures.

Examples:

  harmonia study run examples/lite-zoo.toml

  harmonia study status examples/lite-zoo.toml

  harmonia study export examples/lite-zoo.toml --out zoo.csv

  harmonia study report examples/lite-zoo.toml --out zoo-report

  harmonia study run demo   (the shipped preset behind `harmonia demo`)"""),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``harmonia study`` group to ``app``."""
    app.add_typer(study_app, name="study")

FileArg = typer.Argument(..., help="The study file (TOML), or the name of a shipped preset (demo: the demo's study, rooted in the current folder).", exists=False)

RUN_HELP = """Run every task of the study that is not done yet.

A task is one model x data x measurement (plus one training task per trained model, variant
and seed). Results go to the study's store; a task that fails (weights not cached, a bad
checkpoint, an error while measuring) is recorded with its one-line reason and the study
goes on. Run it again to retry what is not done: finished tasks are skipped, interrupted
ones resume with the rows they had stored (kill -9 included).

Executors: sequential by default; --workers N runs N local processes; --ray starts a local
Ray instance and --ray-address ADDR joins a cluster (one Ray task per study task; each
writes its own store file, merged here as tasks finish).

Examples:

  harmonia study run examples/lite-zoo.toml

  harmonia study run zoo.toml --workers 2

  harmonia study run zoo.toml --ray-address auto
"""


@study_app.command("run", help=reflow(RUN_HELP))
@user_errors
def run_cmd(
    file: Path = FileArg,
    workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes (1: in this process)."),
    ray: bool = typer.Option(False, "--ray", help="Run on a local Ray instance (pip install 'harmonia\\[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster ('auto': the one this node belongs to).", show_default="none: --ray, or local executors"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads per task.", show_default="1 with workers or Ray, else torch's default"),
) -> None:
    from harmonia.cli.progress import progress_callback
    from harmonia.studies import run_study
    from harmonia.studies.presets import resolve_study

    study = resolve_study(file)
    with progress_callback(f"study {study.name}") as update:
        def on_event(name: str, info: dict) -> None:
            if name == "plan":
                console.print(f"study {study.name}: {info['total']} tasks, {info['total'] - info['todo']} done before, "
                              f"{info['todo']} to do")
                update(info["total"] - info["todo"], info["total"])
            elif name == "simulate":
                console.print(escape(f"simulating [[data]] {info['data']} (SYNTHETIC) at {info['path']}"))
            elif name == "task":
                out, t = info["outcome"], info["task"]
                if out["state"] == "failed":
                    print_problem("failed", f"{t.title}: {out.get('reason')}", style="bold yellow")
                update(info["done"], info["total"])

        summary = run_study(study, workers=workers, ray=ray, ray_address=ray_address, threads=threads, on_event=on_event)
    console.print(f"{summary['done']}/{summary['total']} tasks done, {summary['failed']} failed "
                  f"({summary['seconds']:.1f} s); store: {study.store}")


@study_app.command("status")
@user_errors
def status_cmd(
    file: Path = FileArg,
    all_tasks: bool = typer.Option(False, "--all", help="List every task, not only those not done."),
) -> None:
    """Done / running / pending / failed counts and the tasks not done, without loading any model.

    Failed tasks show their one-line reason; `run` again retries them.

    Example: harmonia study status examples/lite-zoo.toml --all
    """
    from collections import Counter

    from harmonia.studies import task_states
    from harmonia.studies.presets import resolve_study

    study = resolve_study(file)
    states = task_states(study)
    counts = Counter(s for _, s, _ in states)
    console.print(f"study {study.name}: {len(states)} tasks: " +
                  ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "running", "pending", "failed")))
    rows = [(t, s, r) for t, s, r in states if all_tasks or s != "done"]
    if rows:
        table = Table("task", "state", "spec key", "reason")
        for t, s, r in rows:
            reason = ((r or {}).get("reason") or "") if s == "failed" else ""
            table.add_row(t.title, s, t.spec_key[:12], reason if len(reason) <= 110 else reason[:109] + "…")
        console.print(table)


@study_app.command("export")
@user_errors
def export_cmd(
    file: Path = FileArg,
    out: Path = typer.Option(..., "--out", help="The table: .csv or .parquet."),
) -> None:
    """One tidy row per model x data x measurement x headline number, with model metadata
    (family, parameters, input size, weights) and ImageNet top-1 with its source (measured,
    or timm's published value).

    Example: harmonia study export examples/lite-zoo.toml --out lite-zoo.parquet
    """
    from harmonia.studies.export import export_table
    from harmonia.studies.presets import resolve_study

    path = export_table(resolve_study(file), out)
    console.print(f"wrote {path}")


@study_app.command("report")
@user_errors
def report_cmd(
    file: Path = FileArg,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the report (report.html and its figures).", show_default="<study name>-report beside the file"),
) -> None:
    """A self-contained HTML page with the trade-off figures (PNG and SVG beside it) and a sortable table.

    Accuracy vs alignment, tolerance and adversarial alignment, with a trend, Spearman's rho
    and its bootstrap CI, the Pareto front and baseline -> harmonized arrows; hover a point
    for its model. Pending and failed tasks are listed, not drawn.

    Example: harmonia study report examples/lite-zoo.toml --out lite-zoo-report
    """
    from harmonia.studies.presets import resolve_study
    from harmonia.studies.report import write_report

    study = resolve_study(file)
    path = write_report(study, out or study.root / f"{study.name}-report")
    console.print(f"report: {path}")
