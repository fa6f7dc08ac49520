"""``harmonia data ...``: dataset tools (convert, simulate, clicks). Each sub-command lives in a
``data_*_cmd.py`` module with a ``register(app)`` that adds it to :data:`data_app`."""

from __future__ import annotations

import typer

from harmonia.cli import data_clicks_cmd, data_convert_cmd, data_simulate_cmd

data_app = typer.Typer(
    help="Dataset tools: convert published formats, build maps from raw clicks, simulate ClickMe.",
    no_args_is_help=True,
)
for _module in (data_clicks_cmd, data_convert_cmd, data_simulate_cmd):
    _module.register(data_app)


def register(app: typer.Typer) -> None:
    """Add the ``harmonia data`` group to ``app``."""
    app.add_typer(data_app, name="data")
