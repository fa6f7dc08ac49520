"""One registry and one spec grammar for models, explainers and attacks; CLI commands registered without an import cycle."""

import subprocess
import sys

import pytest

from harmonia.attacks import ATTACKS, FMNLinf, PGDSphereL2, attack_for_norm, create_attack, minimal_norm_attack
from harmonia.attribution import EXPLAINERS, create_explainer, list_explainers, parse_explainer_spec
from harmonia.models import load, resolve_name
from harmonia.models.registry import BUILTIN_MODELS, MODELS, SOURCES, ModelSource
from harmonia.registry import Registry, UnknownSettingError, format_spec, parse_spec


def _settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "name"}


@pytest.mark.parametrize("name", list_explainers())
def test_explainer_spec_round_trip(name):
    """config() -> spec text -> the same explainer: the spec grammar says everything a config holds."""
    config = create_explainer(name).config()
    spec = format_spec(name, _settings(config))
    assert parse_explainer_spec(spec).config() == config
    assert EXPLAINERS.from_spec(spec).config() == config


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "pgd_sphere_l2"])
def test_attack_spec_round_trip(name):
    config = create_attack(name).config()
    assert create_attack(format_spec(name, _settings(config))).config() == config
    changed = create_attack(f"{name}:steps=7")
    assert changed.steps == 7 and changed.config() != config


def test_every_kind_parses_specs_the_same_way():
    spec = "smoothgrad:n_samples=16,noise=0.1,seed=none,squared=yes"
    name, kw = parse_spec(spec)
    assert (name, kw) == ("smoothgrad", {"n_samples": 16, "noise": 0.1, "seed": None, "squared": True})
    assert parse_explainer_spec(spec).config() == create_explainer(name, **kw).config()
    assert create_attack("fmn:extrapolate=off,patience=none").config() == ATTACKS.create("fmn", extrapolate=False,
                                                                                         patience=None).config()
    for text, match in (("smoothgrad:n_samples", "key=value"), ("saliency:reducer=mean,reducer=sum", "twice")):
        with pytest.raises(ValueError, match=match):
            parse_explainer_spec(text)
        with pytest.raises(ValueError, match=match):
            create_attack(text.replace("smoothgrad", "fmn").replace("saliency", "ddn"))


def test_names_aliases_and_helpful_errors():
    assert list(EXPLAINERS) == list_explainers() == EXPLAINERS.names() and len(ATTACKS) == 5
    assert isinstance(create_attack("FMN-Linf"), FMNLinf) and EXPLAINERS["ig"] is EXPLAINERS["integrated_gradients"]
    with pytest.raises(ValueError, match="did you mean smoothgrad"):
        parse_explainer_spec("smoothgrd")
    with pytest.raises(ValueError, match="unknown attack 'cw'.*available: fmn, fmn_linf, ddn"):
        create_attack("cw")
    with pytest.raises(UnknownSettingError, match="its settings: reducer") as err:
        create_explainer("saliency", reducr="mean")
    assert err.value.unknown == ["reducr"] and isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="bad options for attack 'fmn': no option 'stpes'; its options: steps, "):
        create_attack("fmn:stpes=3")
    with pytest.raises(ValueError, match="bad options for attack 'pgd_sphere_l2'.*eps"):
        create_attack("pgd_sphere_l2")
    assert create_attack("pgd_sphere_l2:eps=0.5").eps == 0.5
    with pytest.raises(ValueError, match="empty attack spec"):
        create_attack(" ")


def test_the_norm_picks_the_attack():
    assert attack_for_norm("fmn:steps=5", "linf") == "fmn_linf:steps=5"
    assert attack_for_norm("fmn_linf", "l2") == "fmn" and attack_for_norm("ddn", None) == "ddn"
    assert minimal_norm_attack("fmn", "linf").name == "fmn_linf"
    with pytest.raises(ValueError, match="does not minimise the linf norm; linf attacks: fmn_linf"):
        attack_for_norm("ddn", "linf")
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        attack_for_norm("fmn", "l1")
    with pytest.raises(ValueError, match="fixed-budget attack; tolerance needs a minimal-norm one \\(fmn, fmn_linf, ddn"):
        minimal_norm_attack("pgd_sphere_l2:eps=1")
    assert isinstance(ATTACKS.create("pgd_sphere_l2", eps=1), PGDSphereL2)


def test_a_factory_with_kwargs_takes_any_setting():
    things: Registry[dict] = Registry("thing")
    things.register("open")(lambda **kw: kw)
    things.register("closed")(lambda size=1: {"size": size})
    assert things.create("open", anything=3) == {"anything": 3} and things.takes_any("open")
    with pytest.raises(UnknownSettingError, match="thing closed has no setting 'anything'; its settings: size"):
        things.create("closed", anything=3)


def test_built_in_models_and_sources_are_registered_once():
    assert MODELS.names() == list(BUILTIN_MODELS) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                                      "small_cnn"]
    assert SOURCES.names() == ["builtin", "timm", "torchvision", "simulated"]
    assert resolve_name("builtin:small-cnn") == ("built-in", "small_cnn")
    assert resolve_name("simulated:07") == ("simulated", "7")
    assert load("small_cnn", pretrained=False, num_classes=3, width=4, seed=0).build_kwargs == {"width": 4}


def test_simulated_models_load_like_any_other():
    from harmonia.models import ModelNotFoundError
    from harmonia.neural.simulate import ground_truth_model

    m = load("simulated:3")
    assert m.fingerprint() == ground_truth_model(3).fingerprint() != load("simulated:4").fingerprint()
    assert not m.training
    with pytest.raises(ModelNotFoundError, match="simulated:SEED"):
        load("simulated:abc")
    with pytest.raises(ModelNotFoundError, match="simulated:"):
        load("nosuchsource:abc")
    with pytest.raises(ValueError, match="no num_classes"):
        load("simulated:0", num_classes=4)


def test_a_new_model_source_is_one_class():
    from harmonia.models.small import build_small_cnn

    @SOURCES.register("test_tiny")
    class TinySource(ModelSource):
        name, bare = "test_tiny", False

        def has(self, name):
            return name in ("a", "b")

        def build(self, name, *, pretrained=True, num_classes=None, **kwargs):
            return build_small_cnn(num_classes=num_classes, width=2 if name == "a" else 3)

    try:
        assert resolve_name("test_tiny:a") == ("test_tiny", "a")
        assert load("test_tiny:b", num_classes=2).build_kwargs == {"width": 3}
        with pytest.raises(LookupError, match="no model named 'c' in test_tiny"):
            load("test_tiny:c")
    finally:
        SOURCES._entries.pop("test_tiny")  # the other tests see the built-in sources only


def test_command_modules_register_without_importing_the_app():
    """Importing a command module has no side effect on an app and never imports harmonia.cli.main."""
    code = (
        "import importlib, sys\n"
        "from harmonia.cli.commands import COMMAND_MODULES\n"
        "assert 'harmonia.cli.main' not in sys.modules, 'commands imported main'\n"
        "import typer\n"
        "app = typer.Typer()\n"
        "for m in COMMAND_MODULES:\n"
        "    m.register(app)\n"
        "print(' '.join(c.name for c in app.registered_commands), '|', ' '.join(g.name for g in app.registered_groups))\n"
        "assert 'harmonia.cli.main' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == "attack ceiling demo evaluate explain models neural train | challenge data featviz results study".split()
    from harmonia.cli.data_cmd import data_app
    from harmonia.cli.main import app, build_app

    assert [c.name for c in data_app.registered_commands] == ["clicks", "convert", "simulate", "challenge"]
    assert [c.name for c in build_app().registered_commands] == [c.name for c in app.registered_commands]
    version = subprocess.run([sys.executable, "-m", "harmonia.cli.main", "--version"], capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("harmonia "), version.stderr
