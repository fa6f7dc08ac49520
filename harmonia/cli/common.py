"""Shared CLI plumbing: one-line errors and a non-zero exit for bad input."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

from rich.console import Console

# Tables are wide; when output goes to a file or a pipe (CI logs), do not squeeze them to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def reflow(text: str) -> str:
    r"""A command's help with each prose paragraph on one line, so the terminal wraps it.

    Typer's rich help keeps every newline, so text wrapped for the source file comes out
    ragged in a narrower terminal. Paragraphs with an indented line (examples) stay as written.

    Example:
        >>> reflow("One line\nand its rest.\n\n  harmonia demo\n  harmonia test")
        'One line and its rest.\n\n  harmonia demo\n  harmonia test'
    """
    paragraphs = text.strip("\n").split("\n\n")
    return "\n\n".join(p if any(line[:1].isspace() for line in p.splitlines()) else " ".join(p.split("\n"))
                       for p in paragraphs)


# Exceptions that mean "the user's input is wrong": reported in one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, LookupError, OSError)


def user_errors(func: F) -> F:
    """Turn expected input errors into ``error: <reason>`` and exit code 2 (no traceback).

    Set HARMONIA_DEBUG=1 to see the full traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import os

        try:
            return func(*args, **kwargs)
        except USER_ERRORS as e:
            if os.environ.get("HARMONIA_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if isinstance(e, KeyError):
                msg = str(e.args[0]) if e.args else msg
            err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
