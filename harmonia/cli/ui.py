"""The command line's :class:`harmonia.utils.ui.UI`: rich rules, lines and tables on stdout, progress bars on stderr."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from harmonia.cli.common import console
from harmonia.cli.progress import progress_callback
from harmonia.utils.ui import UI


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                justify: Optional[Sequence[str]] = None) -> None:
    """One rich table on the console (``justify``: ``"left"`` / ``"right"`` per column, default left)."""
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify=justify[i] if justify else "left")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def cli_ui(on_step: Optional[Callable[[str, dict[str, Any]], None]] = None) -> UI:
    """The UI the commands pass to library jobs."""
    return UI(rule=console.rule, log=console.print, table=print_table, progress=progress_callback, on_step=on_step)
