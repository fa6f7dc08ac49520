"""Studies: the file and its errors, plan keys, failures recorded, kill -9 and resume,
executors giving the same table, merge idempotence, the report in a headless browser."""

from __future__ import annotations

import os
import shutil
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
from tests.conftest import write_tiny_dataset

STUDY = """\
[study]
name = "tiny-zoo"
seeds = [0]
batch_size = {batch_size}

[[models]]
name = "small_cnn"
label = "w2"
pretrained = false
num_classes = 3
kwargs = {{ width = 2, input_size = [32, 32] }}

[[models]]
name = "small_cnn"
label = "w3"
pretrained = false
num_classes = 3
kwargs = {{ width = 3, input_size = [32, 32] }}
{extra}
[[data]]
name = "tiny"
path = "data"
split = "test"

[[measurements]]
kind = "accuracy"

[[measurements]]
kind = "alignment"
explainer = "saliency:reducer=max_abs"
ceiling = "none"
"""

NOT_CACHED = """
[[models]]
name = "timm:resnet10t"
pretrained = true
"""


def make_study(folder: Path, extra: str = "", n: int = 6, batch_size: int = 4, name: str = "s.toml") -> Path:
    if not (folder / "data").exists():
        write_tiny_dataset(folder / "data", n=n)
    path = folder / name
    path.write_text(STUDY.format(extra=extra, batch_size=batch_size))
    return path


def table(study) -> pd.DataFrame:
    df = pd.DataFrame(study_rows(study)).drop(columns=["study"])
    return df.sort_values(["spec_key", "metric"], na_position="first").reset_index(drop=True)


# -- the file ------------------------------------------------------------------------------------


def test_study_file_parsed(tmp_path):
    s = load_study(make_study(tmp_path))
    assert s.name == "tiny-zoo" and s.store == (tmp_path / "tiny-zoo.sqlite").resolve()
    assert [m.label for m in s.models] == ["w2", "w3"] and s.models[0].kwargs == {"width": 2, "input_size": [32, 32]}
    assert [m.kind for m in s.measurements] == ["accuracy", "alignment"]
    assert s.measurements[1].settings == {"explainer": "saliency:reducer=max_abs", "ceiling": "none"}


@pytest.mark.parametrize("edit, line, words", [
    (("kind = \"accuracy\"", "kind = \"acuracy\""), 26, ["[[measurements]] #1", "'kind'", "unknown kind"]),
    (("explainer = ", "explainr = "), 30, ["[[measurements]] #2", "'explainr'", "unknown key"]),
    (("seeds = [0]", "seeds = [0, 0]"), 3, ["[study]", "'seeds'", "distinct"]),
    (("label = \"w3\"", "label = \"w3\"\nnum_clases = 3"), 16, ["[[models]] #2", "'num_clases'"]),
    (("name = \"small_cnn\"\nlabel = \"w2\"", "name = \"no_such_net_xyz\"\nlabel = \"w2\""), 7, ["[[models]] #1", "'name'"]),
    (("explainer = \"saliency:reducer=max_abs\"", "explainer = \"saliency:reducr=max_abs\""), 30,
     ["[[measurements]] #2", "'explainer'"]),
    (("batch_size = 4", "batch_size = \"4\""), 4, ["'batch_size'", "expected int"]),
    # nothing reads a data table's "synthetic": the study says so instead of ignoring it
    (("split = \"test\"", "split = \"test\"\nsynthetic = true"), 24, ["[[data]] #1", "'synthetic'", "unknown key"]),
])
def test_study_file_errors_name_line_and_key(tmp_path, edit, line, words):
    p = make_study(tmp_path)
    p.write_text(p.read_text().replace(*edit, 1))
    with pytest.raises(StudyFileError) as e:
        load_study(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}:"), msg
    for w in words:
        assert w in msg, msg


def test_study_file_bad_toml_and_missing_tables(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[study]\nname = \n")
    with pytest.raises(StudyFileError, match=r"bad.toml: not valid TOML: .*line 2"):
        load_study(p)
    p.write_text("[study]\nname = \"x\"\n[[data]]\nname = \"d\"\n[[measurements]]\nkind = \"accuracy\"\n")
    with pytest.raises(StudyFileError, match=r"at least one \[\[models\]\]"):
        load_study(p)


def test_plan_keys_stable_and_independent_of_where_the_file_lies(tmp_path):
    a = make_study(tmp_path / "a")
    keys = [t.spec_key for t in make_plan(load_study(a))]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert keys == [t.spec_key for t in make_plan(load_study(a))]
    b = tmp_path / "elsewhere" / "copy.toml"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert keys == [t.spec_key for t in make_plan(load_study(b))]
    # a setting that changes a number changes the key
    b.write_text(b.read_text().replace("width = 3", "width = 4"))
    changed = [t.spec_key for t in make_plan(load_study(b))]
    assert changed[:2] == keys[:2] and changed[2:] != keys[2:]


# -- running -------------------------------------------------------------------------------------


def test_failing_model_recorded_and_skipped_rerun_retries_only_what_is_not_done(tmp_path):
    study = load_study(make_study(tmp_path, extra=NOT_CACHED))
    assert {s for _, s, _ in task_states(study)} == {"pending"}
    summary = run_study(study)
    assert summary["total"] == 6 and summary["done"] == 4 and summary["failed"] == 2
    states = task_states(study)
    failed = [(t, r) for t, s, r in states if s == "failed"]
    assert {t.model["label"] for t, _ in failed} == {"timm:resnet10t"}
    for _, r in failed:
        assert r["reason"].startswith("model: WeightsNotFoundError:") and "\n" not in r["reason"]
    seen = []
    again = run_study(study, on_event=lambda name, info: seen.append(info) if name == "plan" else None)
    assert seen == [{"total": 6, "todo": 2}]  # only the failed ones are tried again
    assert again["done"] == 4 and again["failed"] == 2
    rows = study_rows(study)
    assert {r["status"] for r in rows if r["model"] == "timm:resnet10t"} == {"failed"}
    acc = [r for r in rows if r["model"] == "w2" and r["measurement"] == "accuracy" and r["metric"] == "accuracy"]
    assert len(acc) == 1 and 0.0 <= acc[0]["value"] <= 1.0


_KILLABLE = """
import sys, time
import harmonia.studies.measures as ms
from harmonia.studies import load_study, run_study
compute = ms.Accuracy.compute
def slow(self, ctx, batch):  # slow enough to be killed in the middle of a task
    time.sleep(0.15)
    return compute(self, ctx, batch)
ms.Accuracy.compute = slow
run_study(load_study(sys.argv[1]))
"""


def test_kill_9_mid_study_then_resume_no_lost_duplicated_or_half_rows(tmp_path):
    ref = load_study(make_study(tmp_path / "ref", n=12, batch_size=1))
    run_study(ref)
    path = make_study(tmp_path / "killed", n=12, batch_size=1)
    study = load_study(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(path)], env=env)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once the first task is part-way through its items
            if study.store.exists():
                try:
                    con = sqlite3.connect(study.store)
                    n = con.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    n = 0
                if 3 <= n < 12:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the study never started writing rows")
        live = [s for _, s, _ in task_states(study)]
        assert live.count("running") == 1 and live.count("pending") == 3, live  # status while it runs
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    states = task_states(study)
    assert "done" not in {s for _, s, _ in states[:1]} and any(s == "pending" for _, s, _ in states)
    with ResultStore(study.store) as store:
        partial = [r for r in store.runs() if r.status == "partial"]
        assert partial and 0 < partial[0].n_rows < 12  # the killed run kept whole batches only
    run_study(study)
    assert {s for _, s, _ in task_states(study)} == {"done"}
    with ResultStore(study.store) as store:
        runs = [r for r in store.runs() if r.kind in ("accuracy", "evaluation")]
        assert len(runs) == 4 and all(r.status == "complete" and r.n_rows == 12 for r in runs)
        for r in runs:
            rows = store.rows(r.key)
            assert len({x["image_id"] for x in rows}) == 12 and all("correct" in x for x in rows)
    pd.testing.assert_frame_equal(table(study), table(ref))


def _ray_or_skip():
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (pip install 'harmonia[ray]')")


@pytest.mark.slow  # a Ray instance starts (about 20 s on 2 cores)
def test_ray_executor_gives_the_same_table_and_merging_again_changes_nothing(tmp_path):
    _ray_or_skip()
    local = load_study(make_study(tmp_path / "local"))
    run_study(local, threads=1)
    remote = load_study(make_study(tmp_path / "ray"))
    summary = run_study(remote, ray=True, workers=2, threads=1)
    assert summary["done"] == 4 and summary["failed"] == 0
    assert not (remote.store.parent / (remote.store.name + ".parts")).exists()  # every part merged
    pd.testing.assert_frame_equal(table(local), table(remote))
    with ResultStore(local.store) as a:
        before = {r.key: (r.status, r.n_rows) for r in a.runs()}
        counts = a.merge(remote.store)
        assert counts == {"runs": 0, "completed": 0, "rows": 0, "artifacts": 0}
        assert a.merge(remote.store) == counts
        assert {r.key: (r.status, r.n_rows) for r in a.runs()} == before


@pytest.mark.slow  # two spawned interpreters import torch
def test_worker_processes_give_the_same_table(tmp_path):
    local = load_study(make_study(tmp_path / "local"))
    run_study(local, threads=1)
    par = load_study(make_study(tmp_path / "par"))
    run_study(par, workers=2, threads=1)
    pd.testing.assert_frame_equal(table(local), table(par))


# -- export and report ---------------------------------------------------------------------------


def test_export_csv_and_parquet(tmp_path):
    study = load_study(make_study(tmp_path, extra=NOT_CACHED))
    run_study(study)
    csv_path = export_table(study, tmp_path / "t.csv")
    pq = export_table(study, tmp_path / "t.parquet")
    a, b = pd.read_csv(csv_path), pd.read_parquet(pq)
    assert len(a) == len(b) and list(a.columns) == list(b.columns)
    w2 = a[(a.model == "w2") & (a.metric == "accuracy") & (a.measurement == "accuracy")].iloc[0]
    assert w2.family == "small" and w2.params > 0 and w2.input_size == "32x32" and w2.weights == "random init (seed 0)"
    assert pd.isna(w2.imagenet_top1)  # trained on nothing ImageNet: no published top-1
    failed = a[a.model == "timm:resnet10t"]
    assert set(failed.status) == {"failed"}
    assert set(failed.imagenet_top1) <= {68.354, 66.724}  # resnet10t.c3_in1k at 224 or 176 px
    assert failed.top1_source.iloc[0].startswith("timm-results-imagenet.csv (resnet10t.")
    with pytest.raises(ValueError, match="--out must end in .csv or .parquet"):
        export_table(study, tmp_path / "t.xlsx")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_page_in_headless_chromium_names_the_models(tmp_path):
    from harmonia.studies.report import write_report

    study = load_study(make_study(tmp_path))
    run_study(study)
    page = write_report(study, tmp_path / "report")
    assert (tmp_path / "report" / "figure-1.png").is_file() and (tmp_path / "report" / "figure-1.svg").is_file()
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (CI installs the Debian 'chromium' package before the tests)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    # the table is built by the page's script from its JSON: only a browser that ran it shows these cells
    for name in ("w2", "w3"):
        assert f"<td>{name}</td>" in dom, dom[-2000:]
        assert f"<title>{name} (small)" in dom  # the hover name of its point
    assert "SYNTHETIC data" in dom


def test_cli_study_errors_and_status(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    p = make_study(tmp_path)
    p.write_text(p.read_text().replace('kind = "accuracy"', 'kind = "acuracy"'))
    res = CliRunner().invoke(app, ["study", "status", str(p)])
    assert res.exit_code == 2 and f"{p}:26:" in res.output and "unknown kind" in res.output and "accuracy" in res.output
    p.write_text(p.read_text().replace('kind = "acuracy"', 'kind = "accuracy"'))
    res = CliRunner().invoke(app, ["study", "status", str(p)])
    assert res.exit_code == 0 and "4 tasks: 0 done, 0 running, 4 pending, 0 failed" in res.output


TRAINED = """
[study]
name = "trained"
seeds = [0]

[[models]]
name = "small_cnn"
label = "cnn"
kwargs = { width = 2 }
[models.train]
data = "tiny"
split = "train"
epochs = 1
settings = { batch_size = 4, augment = false }

[[data]]
name = "tiny"
path = "data"
split = "test"

[[measurements]]
kind = "accuracy"
"""


def test_training_stage_baseline_and_harmonized_pair(tmp_path):
    import json

    from harmonia.studies.report import panels, write_report
    from harmonia.studies.export import wide_table

    write_tiny_dataset(tmp_path / "data", n=8, size=64, split="train", subjects=0)
    write_tiny_dataset(tmp_path / "data", n=4, size=64, split="test")
    (tmp_path / "s.toml").write_text(TRAINED)
    study = load_study(tmp_path / "s.toml")
    tasks = make_plan(study)
    assert [(t.stage, t.model["label"]) for t in tasks] == [
        ("train", "cnn/baseline"), ("train", "cnn/harmonized"), ("measure", "cnn/baseline"), ("measure", "cnn/harmonized")]
    assert run_study(study)["failed"] == 0
    for t in tasks[:2]:
        cfg = json.loads((tmp_path / "trained.sqlite.models" / t.spec_key / "config.json").read_text())
        assert (cfg["lambda_harmonization"] == 0.0) == (t.model["variant"] == "baseline")
    rows = [r for r in study_rows(study) if r["metric"] == "accuracy"]
    assert {(r["model"], r["variant"], r["pair"]) for r in rows} == {("cnn/baseline", "baseline", "cnn-s0"),
                                                                     ("cnn/harmonized", "harmonized", "cnn-s0")}
    assert all(r["weights"].startswith("trained on tiny") for r in rows)
    assert run_study(study)["done"] == 4  # nothing to redo, trained checkpoints reused
    assert panels(study, wide_table(study_rows(study))) == []  # accuracy alone: nothing to trade off
    write_report(study, tmp_path / "report")
