"""How a long library job shows its work: :class:`UI` callbacks (the CLI draws them; the default is silent).

A job (:func:`harmonia.experiments.demo.run_demo`, :func:`harmonia.experiments.evaluation.evaluate_models`,
...) never prints: it calls ``ui.log``, ``ui.table`` and ``ui.progress``, so a worker process or a
notebook runs the same function as the command line, quietly or with its own display.

Example:
    >>> lines = []
    >>> ui = UI(log=lines.append)
    >>> ui.log("hello"); ui.table("t", ["a"], [["1"]])
    >>> with ui.progress("work") as update:
    ...     update(1, 2)
    >>> lines
    ['hello']
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence


@contextlib.contextmanager
def no_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(description)`` that shows nothing: yields an ``update(done, total)`` that does nothing."""
    yield lambda done, total: None


def _no_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
              justify: Optional[Sequence[str]] = None) -> None:
    pass


@dataclass
class UI:
    """Section titles, lines (rich markup allowed), tables, progress bars and per-epoch steps.

    ``table(title, header, rows, justify=None)``: ``justify`` is one of ``"left"`` /
    ``"right"`` per column (None: all left).
    """

    rule: Callable[[str], None] = lambda title: None
    log: Callable[[str], None] = lambda line: None
    table: Callable[..., None] = _no_table
    progress: Callable[[str], ContextManager[Callable[[int, int], None]]] = no_progress
    on_step: Optional[Callable[[str, dict[str, Any]], None]] = None


def fmt_number(x: object, pct: bool = False) -> str:
    """A table cell: ``nan`` for a missing or NaN value, else 4 decimals (or a percentage).

    Example:
        >>> fmt_number(0.123456), fmt_number(0.5, pct=True), fmt_number(None)
        ('0.1235', '50.0%', 'nan')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"  # type: ignore[operator]
