"""Entry point of the ``harmonia`` command: registers every command module."""

from __future__ import annotations

import typer
from typer import rich_utils

from harmonia import __version__
from harmonia.cli.common import print_usage_error

# Usage errors as one line `error: ...` like every other error (Typer boxes them in a panel).
rich_utils.rich_format_error = print_usage_error

app = typer.Typer(
    name="harmonia",
    help=(
        "Measure and improve how human-like the visual strategies of deep networks are.\n\n"
        "Feature-importance maps for any PyTorch vision model, their alignment with human "
        "(ClickMe) maps, and the tools around it. Run `harmonia COMMAND --help` for details."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"harmonia {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


# Command modules register themselves on `app` when imported.
from harmonia.cli import commands  # noqa: E402,F401

if __name__ == "__main__":
    # Under `python -m`, this file runs as __main__, a second copy of the module; the
    # commands registered themselves on the imported harmonia.cli.main.app.
    from harmonia.cli.main import app as _app

    _app()
