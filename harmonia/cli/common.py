"""Shared CLI plumbing: one-line errors and a non-zero exit for bad input."""

from __future__ import annotations

import functools
import re
import sys
import warnings
from typing import Any, Callable, TypeVar

from rich.console import Console

from harmonia.errors import HarmoniaWarning

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
# (harmonia.errors.UserError, what library validation raises, is a ValueError.)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, LookupError, OSError)

# Library messages name the Python keywords; on the command line the options are spelled otherwise.
_CLI_SPELLING: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\ballow_pickle=True\b"), "--allow-pickle"),
    (re.compile(r"\boverwrite=True(?: \(--overwrite\))?"), "--overwrite"),
    (re.compile(r"\barch=(['\"])([^'\"]+)\1"), r"--arch \2"),
    (re.compile(r"\barch=\.\.\."), "--arch ..."),
    # MapScorer and evaluate() checks, whose options are --blur, --downsample, --targets
    (re.compile(r"^blur_sigma\b"), "--blur"),
    (re.compile(r"^(downsample|targets) must"), r"--\1 must"),
    (re.compile(r" or None, got "), ", got "),
)


def cli_spelling(message: str) -> str:
    """A library message with Python keywords (``allow_pickle=True``) in the CLI's spelling.

    Example:
        >>> cli_spelling("pass allow_pickle=True, or arch='timm:resnet18'")
        'pass --allow-pickle, or --arch timm:resnet18'
    """
    for pattern, replacement in _CLI_SPELLING:
        message = pattern.sub(replacement, message)
    return message


def print_problem(label: str, message: str, style: str = "bold red") -> None:
    """``label: message`` on stderr as exactly one line (never wrapped, markup in it shown as is)."""
    from rich.markup import escape

    text = " ".join(cli_spelling(message).split())  # one line whatever the message holds
    err_console.print(f"[{style}]{label}:[/] {escape(text)}", highlight=False, soft_wrap=True)


def print_usage_error(e: Any) -> None:
    """A click usage error (missing option, invalid value, ...) as one line ``error: ...``.

    Installed in place of Typer's boxed error panel (harmonia.cli.main), which wraps at 80
    columns off a terminal and takes five lines: usage errors look like every other error
    and still exit with code 2.
    """
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    print_problem("error", f"{e.format_message()}{hint}")


def _one_line(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0]).strip().splitlines()[0] if str(e.args[0]).strip() else type(e).__name__
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def user_errors(func: F) -> F:
    """Turn expected input errors into ``error: <reason>`` and exit code 2 (no traceback).

    Library warnings of type :class:`harmonia.errors.HarmoniaWarning` are printed as one
    line ``warning: <reason>``, each distinct message once per command.
    Set HARMONIA_DEBUG=1 to see the full traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import os

        with warnings.catch_warnings():
            warnings.simplefilter("always", HarmoniaWarning)  # dedup below, per command, not per process
            seen: set[str] = set()
            show_other = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
                if not issubclass(category, HarmoniaWarning):
                    return show_other(message, category, filename, lineno, file, line)
                if str(message) not in seen:
                    seen.add(str(message))
                    print_problem("warning", str(message), style="bold yellow")

            warnings.showwarning = show
            try:
                return func(*args, **kwargs)
            except USER_ERRORS as e:
                if os.environ.get("HARMONIA_DEBUG"):
                    raise
                print_problem("error", _one_line(e))
                sys.exit(2)

    return wrapper  # type: ignore[return-value]
