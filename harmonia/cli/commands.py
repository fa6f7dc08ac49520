"""The command modules, in the order ``harmonia --help`` lists them.

Each exposes ``register(app)``, which adds its command (or group) to a Typer app. A command
module never imports :mod:`harmonia.cli.main`: the app is built there, from this list, so
importing a command module has no side effect and there is no import cycle. A new command is
one ``*_cmd.py`` module with a ``register(app)``, added here.
"""

from __future__ import annotations

import typer

from harmonia.cli import (
    attack_cmd,
    ceiling_cmd,
    challenge_cmd,
    data_cmd,
    demo_cmd,
    evaluate_cmd,
    explain_cmd,
    featviz_cmd,
    models_cmd,
    neural_cmd,
    results_cmd,
    study_cmd,
    train_cmd,
)

COMMAND_MODULES = (attack_cmd, ceiling_cmd, challenge_cmd, data_cmd, demo_cmd, evaluate_cmd, explain_cmd, featviz_cmd,
                   models_cmd, neural_cmd, results_cmd, study_cmd, train_cmd)


def register_all(app: typer.Typer) -> None:
    """Add every command of :data:`COMMAND_MODULES` to ``app``."""
    for module in COMMAND_MODULES:
        module.register(app)
