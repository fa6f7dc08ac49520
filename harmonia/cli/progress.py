"""A rich progress bar usable as the ``progress(done, total)`` callback of long work."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harmonia.cli.common import err_console


@contextmanager
def progress_callback(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields ``update(done, total)``; the bar is drawn on stderr and removed when done."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # Not a terminal (a log, a pipe): no bar, whose end would leave a blank line before the next message.
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
