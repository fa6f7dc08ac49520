"""Settings objects (harmonia.config.Config): JSON round trips, refused unknown keys, one-line
validation errors, and command-line defaults that are the dataclass defaults."""

import dataclasses
import json

import pytest
import typer

from harmonia.cli.main import app
from harmonia.errors import UserError
from harmonia.settings import (
    CeilingSettings, ComparisonSettings, LossOptions, NeuralSettings, ParticipantModel, SimulationConfig,
)  # fmt: skip
from harmonia.training.trainer import TrainConfig

ALL = [LossOptions, CeilingSettings, NeuralSettings, ParticipantModel, SimulationConfig, ComparisonSettings, TrainConfig]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_json_round_trip_through_text(cls):
    obj = cls()
    again = cls.from_json(json.loads(json.dumps(obj.to_json())))  # tuples come back as tuples
    assert again == obj


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_unknown_key_is_refused_with_the_known_ones(cls):
    with pytest.raises(UserError) as e:
        cls.from_json({**cls().to_json(), "lamda": 1})
    msg = str(e.value)
    assert "'lamda'" in msg and "\n" not in msg
    assert all(name in msg for name in cls.field_names())


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_defaults_validate(cls):
    obj = cls(data="d") if cls is TrainConfig else cls()
    assert obj.validate() is obj


@pytest.mark.parametrize("obj, fragment", [
    (LossOptions(reducer="median"), "median"),
    (LossOptions(levels=7), "levels=7"),
    (LossOptions(lambda_masked=-1), "lambda_masked"),
    (CeilingSettings(chunk_size=1), "chunk_size must be >= 2, got 1"),
    (CeilingSettings(metric="pearson"), "metric must be one of"),
    (NeuralSettings(regression="lasso"), "unknown regression 'lasso'"),
    (SimulationConfig(shortcut_rate=2.0), "shortcut_rate must be in [0, 1], got 2.0"),
    (SimulationConfig(participants=ParticipantModel(min_clicks=0)), "min_clicks"),
    (TrainConfig(data="d", levels=9), "levels=9"),
    (TrainConfig(data="d", score="prob"), "score must be one of"),
    (TrainConfig(data=""), "data: a dataset directory is needed"),
], ids=str)  # fmt: skip
def test_validation_is_one_user_error_line(obj, fragment):
    with pytest.raises(UserError) as e:
        obj.validate()
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_replace_refuses_unknown_names_and_default_reads_the_field():
    assert ComparisonSettings().replace(epochs=3).epochs == 3
    with pytest.raises(UserError, match="unknown ComparisonSettings setting 'epoch'"):
        ComparisonSettings().replace(epoch=3)
    assert SimulationConfig.default("participants") == ParticipantModel()
    assert TrainConfig.default("reducer") == LossOptions.reducer == "mean"
    with pytest.raises(UserError, match="unknown training setting"):
        TrainConfig.from_preset("adamw", epoch=2)


def test_loss_defaults_are_written_once():
    import inspect

    from harmonia.training.loss import harmonizer_loss

    params = inspect.signature(harmonizer_loss).parameters
    for f in dataclasses.fields(LossOptions):
        assert params[f.name].default == f.default, f.name
        if f.name in {x.name for x in dataclasses.fields(TrainConfig)}:
            assert TrainConfig.default(f.name) == f.default, f.name


def _defaults(*path):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return {p.name: p.default for p in cmd.params}


def test_command_line_defaults_are_the_settings_defaults():
    ceiling = _defaults("ceiling")
    for name in ("metric", "repeats", "seed", "chunk_size"):
        assert ceiling[name] == CeilingSettings.default(name), name
    sim = _defaults("data", "simulate")
    spelled = {"classes": "n_classes", "subjects": "n_subjects"}
    for name in ("n_train", "n_test", "image_size", "classes", "shortcut_rate", "subjects", "seed", "train_subjects"):
        assert sim[name] == SimulationConfig.default(spelled.get(name, name)), name
    assert tuple(sim["part_radius"]) == SimulationConfig.part_radius
    neural = _defaults("neural")
    assert neural["regression"] == NeuralSettings.regression and neural["components"] == NeuralSettings.n_components
    assert float(neural["alpha"]) == NeuralSettings.alpha and neural["folds"] == NeuralSettings.folds
