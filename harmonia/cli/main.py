"""Entry point of the ``harmonia`` command: builds the app from the command modules (harmonia.cli.commands)."""

from __future__ import annotations

import typer
from typer import rich_utils

from harmonia import __version__
from harmonia.cli.common import print_usage_error

# Usage errors as one line `error: ...` like every other error (Typer boxes them in a panel).
rich_utils.rich_format_error = print_usage_error


def build_app() -> typer.Typer:
    """The ``harmonia`` command: a Typer app with every command module registered on it.

    Example:
        >>> sorted(c.name for c in build_app().registered_commands)[:3]
        ['attack', 'ceiling', 'demo']
    """
    from harmonia.cli.commands import register_all

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
    app.callback()(_main)
    register_all(app)
    return app


def _version(value: bool) -> None:
    if value:
        typer.echo(f"harmonia {__version__}")
        raise typer.Exit()


def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


app = build_app()

if __name__ == "__main__":
    app()
