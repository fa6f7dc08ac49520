"""Imports every command module so that each registers its commands on the app."""

from __future__ import annotations

from harmonia.cli import (  # noqa: F401  (imported for their registrations)
    attack_cmd,
    ceiling_cmd,
    data_clicks_cmd,
    data_cmd,
    data_convert_cmd,
    data_simulate_cmd,
    demo_cmd,
    evaluate_cmd,
    explain_cmd,
    models_cmd,
    neural_cmd,
    results_cmd,
    study_cmd,
    train_cmd,
)
