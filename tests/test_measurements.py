"""Contract tests of every measurement run through :func:`harmonia.measurements.run`.

Each case builds a measurement, models (differently initialised plain ``nn.Module``s, as
a new user would pass them) and data; every contract is checked on every case:
the key is stable across runs and store re-opening, two different models never share a
key (the bug where a module without ``fingerprint()`` was keyed as None and served the
first model's numbers), the batch size never changes a row, and an interrupted then
resumed run equals an uninterrupted one row for row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

from harmonia.measurements import Measurement, run
from harmonia.store import ResultStore
from harmonia.store.sqlite import row_id
from tests.conftest import TinyCNN, write_tiny_dataset


@dataclass
class Case:
    name: str
    measurement: Callable[[], Measurement]
    model: Callable[[int], Any]  # seed -> a model (None for measurements without one)
    data: Callable[[Any], Any]  # tmp_path -> data
    batch_sizes: tuple[int | None, int | None]


def _plain_cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return TinyCNN().eval()


def _images(tmp_path):
    from harmonia.data import HarmoniaDataset

    return HarmoniaDataset(write_tiny_dataset(tmp_path / "data", n=7), "test")


def _subjects(tmp_path):
    from harmonia.data import HarmoniaDataset

    return HarmoniaDataset(write_tiny_dataset(tmp_path / "subj", n=7, subjects=3), "test")


def _recording(tmp_path):
    from harmonia.neural.simulate import simulate_spatial

    return simulate_spatial(n_images=4, n_neurons=3, grid=(5, 5), seed=0)


def _gt_net(seed: int) -> torch.nn.Module:
    from harmonia.neural.simulate import GroundTruthNet

    return GroundTruthNet(seed).eval()


def _training_record(tmp_path):
    from harmonia.training.summary import TrainingRecord

    evals = [{"step": s, "split": sp, "epoch": s // 4, "accuracy": 0.25 * s / 4, "alignment": math.nan}
             for s in (4, 8, 12) for sp in ("val", "test")]
    return TrainingRecord(evals, {"final": {"test": {"accuracy": 0.75}}, "steps": 12}, {"synthetic": True})


def _alignment():
    from harmonia.evaluation import Alignment

    return Alignment(ceiling=0.5, human_cache=False)


def _adversarial():
    from harmonia.adversarial import AdversarialAlignment
    from harmonia.attacks import FMN

    return AdversarialAlignment(FMN(steps=6), limit=5, ceiling=0.5)


def _smoothgrad_alignment():
    from harmonia.attribution import SmoothGrad
    from harmonia.evaluation import Alignment

    return Alignment(SmoothGrad(n_samples=3, noise=0.2, internal_batch_size=5), human_cache=False)


def _ceiling():
    from harmonia.humans.ceiling import HumanCeiling

    return HumanCeiling(repeats=2, chunk_size=3, blur="none")


def _neural():
    from harmonia.neural.run import NeuralSweep

    return NeuralSweep(n_components=3)


def _training():
    from harmonia.training.summary import TrainingSummary

    return TrainingSummary({"lr": 0.1, "epochs": 3})


CASES = [
    Case("evaluation", _alignment, _plain_cnn, _images, (3, 5)),
    Case("evaluation-smoothgrad", _smoothgrad_alignment, _plain_cnn, _images, (2, 7)),
    Case("adversarial", _adversarial, _plain_cnn, _images, (2, 5)),
    Case("ceiling", _ceiling, lambda seed: None, _subjects, (1, None)),
    Case("neural", _neural, _gt_net, _recording, (1, None)),
    Case("training", _training, _plain_cnn, _training_record, (1, None)),
]


def _by_id(rows):
    return {row_id(r): r for r in rows}


def assert_same_rows(a, b):
    """Same items, the same fields, the same values (floats to rounding, NaN == NaN)."""
    a, b = _by_id(a), _by_id(b)
    assert sorted(a) == sorted(b)
    for item in a:
        ra, rb = a[item], b[item]
        assert sorted(ra) == sorted(rb), item
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(va, float) or isinstance(vb, float):
                assert va == pytest.approx(vb, rel=1e-5, abs=1e-6, nan_ok=True), (item, k)
            elif isinstance(va, list):
                assert np.allclose(np.asarray(va, float), np.asarray(vb, float), rtol=1e-5, atol=1e-6, equal_nan=True)
            else:
                assert va == vb, (item, k)


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


def test_key_is_stable_across_runs_and_store_reopening(case, tmp_path):
    data, model = case.data(tmp_path), case.model(0)
    store = ResultStore(tmp_path / "r.sqlite")
    first = run(case.measurement(), model, data, store=store)
    store.close()
    store = ResultStore(tmp_path / "r.sqlite")
    again = run(case.measurement(), case.model(0), data, store=store)  # a fresh object, the same weights
    assert again.key == first.key and not first.cached and again.cached
    assert_same_rows(again.rows, first.rows)
    assert again.headline.keys() == first.headline.keys() and all(not isinstance(v, dict) for v in again.headline.values())


def test_two_different_models_never_share_a_key(case, tmp_path):
    if not case.measurement().uses_model:
        pytest.skip("this measurement has no model: its key is its data and settings")
    data = case.data(tmp_path)
    store = ResultStore(tmp_path / "r.sqlite")
    a = run(case.measurement(), case.model(0), data, store=store)
    b = run(case.measurement(), case.model(1), data, store=store)  # plain modules, other initial weights
    assert a.key != b.key and not b.cached


def test_batch_size_never_changes_a_row(case, tmp_path):
    data = case.data(tmp_path)
    small, large = case.batch_sizes
    a = run(case.measurement(), case.model(0), data, batch_size=small)
    b = run(case.measurement(), case.model(0), data, batch_size=large)
    assert a.key == b.key
    assert_same_rows(a.rows, b.rows)


class Interrupt(Exception):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(case, tmp_path):
    data = case.data(tmp_path)
    small = case.batch_sizes[0]
    whole = run(case.measurement(), case.model(0), data, store=ResultStore(tmp_path / "whole.sqlite"), batch_size=small)

    def stop_after_first_batch(name, info):
        if name == "batch":
            raise Interrupt

    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(Interrupt):
        run(case.measurement(), case.model(0), data, store=store, batch_size=small, on_event=stop_after_first_batch)
    stored = store.get_run(whole.key)
    assert stored.status == "partial" and 0 < stored.n_rows < len(whole.rows)
    resumed = run(case.measurement(), case.model(0), data, store=store, batch_size=small)
    assert not resumed.cached and resumed.resumed == stored.n_rows
    assert_same_rows(resumed.rows, whole.rows)
    assert resumed.headline == pytest.approx(whole.headline, nan_ok=True)


def test_a_model_without_a_content_key_is_refused(tmp_path):
    from harmonia.evaluation import Alignment

    with pytest.raises(ValueError, match="cannot key"):
        run(Alignment(), object(), _images(tmp_path), store=ResultStore(tmp_path / "r.sqlite"))


def test_runtime_options_are_not_in_the_key(tmp_path):
    from harmonia.attribution import SmoothGrad
    from harmonia.evaluation import Alignment

    data, model = _images(tmp_path), _plain_cnn(0)
    store = ResultStore(tmp_path / "r.sqlite")
    keys = {Alignment(SmoothGrad(internal_batch_size=b)).key(model, data, store) for b in (1, 8, 64)}
    assert len(keys) == 1
    assert Alignment(SmoothGrad(n_samples=3)).key(model, data, store) not in keys  # a setting that changes numbers


def test_a_release_does_not_change_keys_a_measurement_version_does(tmp_path, monkeypatch):
    from harmonia.evaluation import Alignment
    from harmonia.store import keys

    data, model = _images(tmp_path), _plain_cnn(0)
    store = ResultStore(tmp_path / "r.sqlite")
    before = Alignment().key(model, data, store)
    monkeypatch.setattr(keys.cache_key, "__kwdefaults__", {"version": "99.0"})  # another package version
    store = ResultStore(tmp_path / "r2.sqlite")  # no cached file digests either
    assert Alignment().key(model, data, store) == before
    monkeypatch.setattr(Alignment, "version", "2")
    assert Alignment().key(model, data, store) != before


def test_public_wrappers_never_serve_one_plain_module_the_numbers_of_another(tmp_path):
    """The report of issue 16: two differently initialised modules without fingerprint()."""
    from harmonia.adversarial import adversarial_alignment
    from harmonia.attacks import FMN
    from harmonia.neural.run import run_neural

    store = ResultStore(tmp_path / "r.sqlite")
    data = _images(tmp_path)
    a = adversarial_alignment(_plain_cnn(0), data, FMN(steps=4), store=store, limit=3)
    b = adversarial_alignment(_plain_cnn(1), data, FMN(steps=4), store=store, limit=3)
    assert a.key != b.key and not b.cached
    rec = _recording(tmp_path)
    assert not run_neural(_gt_net(0), rec, store=store, n_components=3)[1]
    assert not run_neural(_gt_net(1), rec, store=store, n_components=3)[1]
    assert run_neural(_gt_net(1), rec, store=store, n_components=3)[1]  # the same weights again: a hit


def test_a_measurement_without_a_model_is_keyed_by_its_data(tmp_path):
    from harmonia.humans.ceiling import HumanCeiling

    g = np.random.default_rng(0)
    a = {f"im{i}": g.random((3, 8, 8)).astype(np.float32) for i in range(4)}
    b = {k: v.copy() for k, v in a.items()}
    b["im2"][1, 4, 4] += 0.5  # one subject's map, one pixel
    store = ResultStore(tmp_path / "r.sqlite")
    first = run(HumanCeiling(blur="none", repeats=2), None, a, store=store)
    assert run(HumanCeiling(blur="none", repeats=2), None, b, store=store).key != first.key
    assert run(HumanCeiling(blur="none", repeats=2), None, a, store=store).cached
