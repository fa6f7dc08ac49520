"""Neural scores in studies: [[data]] kind = "neural" (a recording, or a SYNTHETIC simulated one),
[[measurements]] kind = "neural" (harmonia.neural.run.NeuralSweep), its errors, export, report
panels and resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harmonia.store import ResultStore
from harmonia.studies import StudyFileError, load_study, make_plan, run_study, task_states
from harmonia.studies.export import export_table, study_rows
from harmonia.studies.report import write_report
from tests.conftest import write_tiny_dataset
from tests.test_studies import _chromium, make_study

# simulated:0 is the network the simulated recording reads out (its block3); simulated:1 is another one
STUDY = """\
[study]
name = "neural-zoo"
seeds = [0]
batch_size = 8

[[models]]
name = "small_cnn"
label = "w2"
pretrained = false
num_classes = 3
kwargs = { width = 2, input_size = [32, 32] }

[[models]]
name = "simulated:0"
label = "truth"

[[models]]
name = "simulated:1"
label = "other"

[[data]]
name = "tiny"
path = "data"
split = "test"

[[data]]
name = "it"
kind = "neural"
path = "it-sim"
simulate = { kind = "spatial", n_images = 6, n_neurons = 8, grid = [5, 5], layer = "block3" }

[[measurements]]
kind = "accuracy"

[[measurements]]
kind = "alignment"
explainer = "saliency:reducer=max_abs"
ceiling = "none"

[[measurements]]
kind = "neural"
regression = "pls"
components = 5
{extra}"""


def neural_study(folder: Path, extra: str = "", text: str = STUDY) -> Path:
    if not (folder / "data").exists():
        write_tiny_dataset(folder / "data", n=6)
    path = folder / "s.toml"
    path.write_text(text.replace("{extra}", extra))
    return path


def test_neural_study_file_parsed_and_planned(tmp_path):
    s = load_study(neural_study(tmp_path))
    it = s.data[1]
    assert (it.kind, it.split, it.simulate["kind"], it.simulate["grid"]) == ("neural", None, "spatial", [5, 5])
    assert s.measurements[2].kind == "neural" and s.measurements[2].settings == {"regression": "pls", "components": 5}
    tasks = make_plan(s)
    pairs = {(t.data["name"], t.measurement["kind"]) for t in tasks}
    # neural measurements on recordings only, the others on images only
    assert pairs == {("tiny", "accuracy"), ("tiny", "alignment"), ("it", "neural")}
    assert len(tasks) == 3 * 3
    # the image data's task keys do not depend on a neural entry being there
    plain = make_study(tmp_path / "plain", extra='\n[[models]]\nname = "simulated:0"\nlabel = "truth"\n')
    plain_keys = {(t.model["label"], t.measurement["name"]): t.spec_key for t in make_plan(load_study(plain))
                  if t.model["label"] == "truth"}
    keys = {(t.model["label"], t.measurement["name"]): t.spec_key for t in tasks if t.model["label"] == "truth"}
    assert plain_keys.items() <= keys.items()


@pytest.mark.parametrize("edit, key, words", [
    (('regression = "pls"', 'regresion = "pls"'), "regresion", ["[[measurements]] #3", "unknown key"]),
    (('regression = "pls"', 'regression = "lasso"'), "regression", ["unknown regression 'lasso'"]),
    (('components = 5', 'components = 0'), "components", ["must be an integer >= 1"]),
    (('components = 5', 'alpha = "cvx"'), "alpha", ["'cv'"]),
    (('components = 5', 'reduce = "pca:x"'), "reduce", ["pca:N"]),
    (('components = 5', 'ceiling = "none"'), "ceiling", ["'auto'"]),
    (('components = 5', 'data = ["tiny"]'), "data", ["'tiny' is images data", "neural data"]),
    (('layer = "block3" }', 'layer = "block9" }'), "simulate", ["[[data]] #2", "bad layer = 'block9'"]),
    (('kind = "spatial",', 'kind = "cube",'), "simulate", ["kind must be spatial or flat"]),
    (('n_images = 6,', 'n_imgs = 6,'), "simulate", ["no setting 'n_imgs'"]),
    (('path = "it-sim"', 'path = "it-sim"\nwindow = "90-130"'), "window", ["[[data]] #2", "two numbers"]),
    (('path = "it-sim"', 'path = "it-sim"\nsplit = "test"'), "split", ["image data sets only"]),
    (('path = "it-sim"', 'path = "it-sim"\npreset = "bob"'), "preset", ["unknown preset 'bob'"]),
    (('path = "data"', 'path = "data"\nwindow = "90,130"'), "window", ["[[data]] #1", 'kind = "neural"']),
    (('kind = "neural"\npath', 'kind = "brain"\npath'), "kind", ["expected images or neural"]),
])
def test_bad_neural_settings_name_the_line_and_key(tmp_path, edit, key, words):
    p = neural_study(tmp_path)
    text = p.read_text()
    assert edit[0] in text
    p.write_text(text.replace(*edit, 1))
    with pytest.raises(StudyFileError) as e:
        load_study(p)
    msg = str(e.value)
    lines = p.read_text().splitlines()
    line = int(msg.split(":")[1])
    assert lines[line - 1].lstrip().startswith(key), (msg, lines[line - 1])
    assert f"key '{key}'" in msg and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_neural_measurement_needs_neural_data_and_training_needs_images(tmp_path):
    p = make_study(tmp_path)
    p.write_text(p.read_text() + '\n[[measurements]]\nkind = "neural"\n')
    with pytest.raises(StudyFileError, match=r"\[\[measurements\]\] #3 key 'kind': no \[\[data\]\] of kind 'neural', which neural"):
        load_study(p)
    p = neural_study(tmp_path / "b", extra='\n[[models]]\nname = "small_cnn"\nlabel = "t"\n[models.train]\ndata = "it"\n')
    with pytest.raises(StudyFileError, match=r"key 'train.data': \[\[data\]\] 'it' is a neural recording"):
        load_study(p)


def test_tiny_neural_study_runs_exports_reports_and_resumes(tmp_path, monkeypatch):
    study = load_study(neural_study(tmp_path))
    summary = run_study(study)
    assert (summary["total"], summary["done"], summary["failed"]) == (9, 9, 0)
    assert summary["seconds"] < 60  # seconds on 2 loaded cores
    assert (tmp_path / "it-sim" / "neural.json").is_file()

    a = pd.read_csv(export_table(study, tmp_path / "t.csv"))
    b = pd.read_parquet(export_table(study, tmp_path / "t.parquet"))
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    neural = a[a.kind == "neural"]
    # one row per model x data x measurement headline number
    assert neural.groupby(["model", "data", "measurement"]).size().to_dict() == {
        (m, "it", "neural"): 5 for m in ("other", "truth", "w2")}
    assert set(neural.metric) == {"best_layer", "score", "ceiled", "map_spearman", "ceiling"}
    assert set(neural.status) == {"done"} and neural.split.isna().all()
    best = neural[neural.metric == "best_layer"].set_index("model")
    assert best.value.isna().all() and best.loc["truth", "value_text"] == "block3"  # the layer read out
    score = neural[neural.metric == "ceiled"].set_index("model").value
    assert score["truth"] > score["other"] and score["truth"] > score["w2"]  # the ground truth ranks first
    assert neural[neural.metric == "ceiling"].value.nunique() == 1  # one recording, one ceiling
    assert set(neural.family) == {"small", "simulated"}

    page = write_report(study, tmp_path / "report")
    text = page.read_text()
    assert "neural predictivity / ceiling (neural on it) vs accuracy on tiny (%)" in text
    assert "neural predictivity / ceiling (neural on it) vs alignment with human maps (alignment on tiny)" in text
    assert "neural-map alignment, Spearman (neural on it) vs accuracy on tiny (%)" in text
    for name in ("w2", "truth", "other"):
        assert f"<title>{name} (" in text  # the hover name of its points
    assert '"neural/ceiled [it]"' in text and "SYNTHETIC data" in text

    # the same key as `harmonia neural` (score_neural_models: sweep_options + run_neural): a cache hit
    from harmonia.models import load
    from harmonia.neural.options import open_recording, sweep_options
    from harmonia.neural.run import run_neural

    rec = open_recording(tmp_path / "it-sim")
    with ResultStore(study.store) as store:
        res, cached = run_neural(load("simulated:0"), rec, store=store, **sweep_options(rec, components=5))
    assert cached and res.best.layer == "block3"

    # resume: a re-run does nothing, the neural scorer is not called again
    def fail(*a, **k):
        raise AssertionError("a finished neural task ran again")

    monkeypatch.setattr("harmonia.neural.run.NeuralSweep.compute", fail)
    seen = []
    again = run_study(study, on_event=lambda name, info: seen.append(info) if name == "plan" else None)
    assert seen == [{"total": 9, "todo": 0}] and (again["done"], again["failed"]) == (9, 0)

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (CI installs the Debian 'chromium' package before the tests)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert ">neural/ceiled [it]</th>" in dom, dom[-2000:]  # the sortable table's neural column
    for name in ("w2", "truth", "other"):
        assert f"<td>{name}</td>" in dom


def test_no_neural_panel_when_not_measured(tmp_path):
    study = load_study(make_study(tmp_path))
    run_study(study)
    text = write_report(study, tmp_path / "report").read_text()
    assert "neural" not in text.lower()


def test_recording_folder_failure_recorded_then_retried_alone(tmp_path):
    """A recording that is not there fails its tasks with a one-line reason; once it is
    there (here: a flat SYNTHETIC recording in harmonia's format) only those tasks run."""
    from harmonia.neural.data import save_recording
    from harmonia.neural.simulate import simulate_flat

    extra = '\n[[data]]\nname = "flat"\nkind = "neural"\npath = "flat-rec"\n'
    text = STUDY.replace('components = 5\n', 'components = 5\n\n[[measurements]]\nname = "ridge"\nkind = "neural"\n'
                         'regression = "ridge"\nalpha = "cv:0.1,10"\nfolds = 3\ndata = "flat"\n')
    study = load_study(neural_study(tmp_path, extra, text))
    summary = run_study(study)
    failed = [(t, r) for t, s, r in task_states(study) if s == "failed"]
    assert summary["failed"] == len(failed) == 6  # 3 models x (neural, ridge) on the missing recording
    assert {t.data["name"] for t, _ in failed} == {"flat"}
    assert all(r["reason"].startswith("data: FileNotFoundError:") and "\n" not in r["reason"] for _, r in failed)
    save_recording(simulate_flat(n_stimuli=30, n_neurons=5, layer="block2", seed=0), tmp_path / "flat-rec")
    seen = []
    again = run_study(study, on_event=lambda name, info: seen.append(info) if name == "plan" else None)
    assert seen == [{"total": 15, "todo": 6}] and again["failed"] == 0
    rows = {(r["model"], r["measurement"], r["metric"]): r for r in study_rows(study) if r["data"] == "flat"}
    assert all(r["status"] == "done" for r in rows.values()) and len(rows) == 3 * 2 * 5
    assert all(0 < rows[(m, n, "score")]["value"] <= 1 for m in ("w2", "truth", "other") for n in ("neural", "ridge"))
    with ResultStore(study.store) as store:  # the file's read-out settings are the ones scored
        meta = store.get_run(rows[("truth", "ridge", "score")]["content_key"]).meta
    assert (meta["benchmark"], meta["regression"], meta["alphas"], meta["folds"]) == ("predictivity", "ridge", [0.1, 10.0], 3)
    assert meta["synthetic"] is True


def test_embedded_example_measures_neural_scores_on_its_recording():
    study = load_study(Path(__file__).parent.parent / "examples" / "lite-zoo.toml")
    tasks = make_plan(study)
    neural = [t for t in tasks if t.measurement.get("kind") == "neural"]
    assert len(tasks) == 26 and {t.data["name"] for t in neural} == {"it"}
    assert len(neural) == len({t.model["label"] for t in tasks}) == 7  # every model, once
    assert study.data[1].simulate["kind"] == "spatial"  # SYNTHETIC, made on the first run


def test_neural_panels_pair_a_models_recording_scores_with_its_image_numbers(tmp_path):
    from harmonia.studies.report import neural_panels, table_records

    study = load_study(neural_study(tmp_path))
    base = {"family": "f", "variant": None, "pair": None, "top1_source": "published"}
    records = []
    for m, top1, ceiled, score, align in (("a", 70.0, 0.5, 0.3, 0.1), ("b", 75.0, 0.6, 0.4, 0.2), ("c", 80.0, 0.4, 0.2, 0.3)):
        records.append({**base, "model": m, "data": "it", "imagenet_top1": top1, "neural/ceiled": ceiled,
                        "neural/score": score, "neural/best_layer": "x"})
        records.append({**base, "model": m, "data": "tiny", "imagenet_top1": top1, "alignment/spearman_mean": align})
    by_title = {p.title: p for p in neural_panels(study, records)}
    assert set(by_title) == {  # no accuracy-on-data panel: every model has an ImageNet top-1; no maps Spearman
        "neural predictivity / ceiling (neural on it) vs ImageNet top-1 (%)",
        "neural predictivity / ceiling (neural on it) vs alignment with human maps (alignment on tiny)"}
    top1 = by_title["neural predictivity / ceiling (neural on it) vs ImageNet top-1 (%)"].points
    assert [(p["model"], p["x"], p["y"]) for p in top1] == [("a", 70.0, 0.5), ("b", 75.0, 0.6), ("c", 80.0, 0.4)]
    align = by_title["neural predictivity / ceiling (neural on it) vs alignment with human maps (alignment on tiny)"]
    assert [(p["x"], p["y"]) for p in align.points] == [(0.1, 0.5), (0.2, 0.6), (0.3, 0.4)]
    # without a finite ceiling the raw score is drawn, labelled as such
    raw = [{**r, "neural/ceiled": float("nan")} for r in records]
    assert {p.ylabel for p in neural_panels(study, raw)} == {"neural predictivity (median r) (neural on it)"}
    assert [p["y"] for p in neural_panels(study, raw)[0].points] == [0.3, 0.4, 0.2]
    # the table: one row per model (its image data row) with the recording's numbers as columns
    table = table_records(study, records)
    assert [(r["model"], r["data"], r["neural/ceiled [it]"]) for r in table] == [("a", "tiny", 0.5), ("b", "tiny", 0.6),
                                                                                ("c", "tiny", 0.4)]
    assert not any("neural/ceiled" in r for r in table)


_ONE_NEURAL = """\
[study]
name = "killed-neural"
batch_size = 1                 # one layer per batch: rows are committed layer by layer

[[models]]
name = "small_cnn"
label = "w2"
pretrained = false
num_classes = 3
kwargs = { width = 2, input_size = [32, 32] }

[[data]]
name = "it"
kind = "neural"
path = "it-sim"
simulate = { kind = "spatial", n_images = 6, n_neurons = 8, grid = [5, 5], layer = "block3" }

[[measurements]]
kind = "neural"
components = 5
"""

_KILLABLE_NEURAL = """
import sys, time
from harmonia.neural.run import NeuralSweep
from harmonia.studies import load_study, run_study
compute = NeuralSweep.compute
def slow(self, ctx, batch):  # slow enough to be killed in the middle of the sweep
    time.sleep(0.2)
    return compute(self, ctx, batch)
NeuralSweep.compute = slow
run_study(load_study(sys.argv[1]))
"""


def test_kill_9_mid_neural_sweep_then_resume_gives_the_uninterrupted_result(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "s.toml").write_text(_ONE_NEURAL)
    ref = load_study(tmp_path / "ref" / "s.toml")
    run_study(ref)
    with ResultStore(ref.store) as store:
        n_layers = store.runs()[0].n_rows
    assert n_layers > 6
    (tmp_path / "killed").mkdir()
    path = tmp_path / "killed" / "s.toml"
    path.write_text(_ONE_NEURAL)
    study = load_study(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_NEURAL, str(path)], env=env)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once the sweep is part-way through its layers
            n = 0
            if study.store.exists():
                try:
                    con = sqlite3.connect(study.store)
                    n = con.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    pass
            if 2 <= n < n_layers - 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the study never started writing rows")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with ResultStore(study.store) as store:
        partial = store.runs()
        assert len(partial) == 1 and partial[0].status == "partial" and 0 < partial[0].n_rows < n_layers
    assert [s for _, s, _ in task_states(study)] == ["pending"]
    run_study(study)
    with ResultStore(study.store) as store:
        run = store.runs()[0]
        assert run.status == "complete" and run.n_rows == n_layers
        assert len({r["item_id"] for r in store.rows(run.key)}) == n_layers  # no layer lost or stored twice
    cols = ["model", "metric", "value", "value_text", "status", "content_key"]
    assert [[r[c] for c in cols] for r in study_rows(study)] == [[r[c] for c in cols] for r in study_rows(ref)]
