import math
import sqlite3

import pytest

from harmonia.store import ResultStore, StoreError, cache_key, files_fingerprint


def test_round_trip_and_resume(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("k", kind="evaluation", meta={"model": "m", "nested": {"a": 1}})
    store.add_rows("k", [{"image_id": "a", "spearman": 0.25}, {"image_id": "b", "spearman": float("nan")}])
    assert store.get_run("k").status == "partial"
    assert store.done_ids("k") == {"a", "b"}
    # Re-opening the file (as after a crash) keeps what was committed.
    store.close()
    store = ResultStore(tmp_path / "r.sqlite")
    rows = {r["image_id"]: r for r in store.rows("k")}
    assert rows["a"]["spearman"] == 0.25 and math.isnan(rows["b"]["spearman"])
    store.finish_run("k", {"spearman": {"mean": 0.25, "n_nan": 1}})
    run = store.get_run("k")
    assert run.status == "complete" and run.n_rows == 2 and run.aggregates["spearman"]["n_nan"] == 1
    assert run.meta["nested"] == {"a": 1}


def test_start_run_is_idempotent_and_rows_need_a_run(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(KeyError):
        store.add_rows("missing", [{"image_id": "a"}])
    store.start_run("k", "evaluation", {"x": 1})
    store.add_rows("k", [{"image_id": "a", "v": 1}])
    store.start_run("k", "evaluation", {"x": 2})
    assert store.get_run("k").meta == {"x": 1} and store.done_ids("k") == {"a"}


def test_failed_transaction_writes_nothing(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("k", "evaluation", {})
    with pytest.raises(KeyError):
        store.add_rows("k", [{"image_id": "a"}, {"no_id": 1}])  # second row is bad
    assert store.done_ids("k") == set()


def test_export_csv(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("k", "evaluation", {"model": "m"})
    store.add_rows("k", [{"image_id": "a", "spearman": 0.5}])
    store.finish_run("k", {"spearman": {"mean": 0.5}})
    rows_csv = store.export_rows_csv(["k"]).splitlines()
    assert rows_csv[0].split(",")[:3] == ["run", "kind", "model"] and rows_csv[1].endswith(",a,0.5")
    runs_csv = store.export_runs_csv(store.runs()).splitlines()
    assert "spearman.mean" in runs_csv[0] and runs_csv[1].endswith("0.5")


def test_corrupt_store_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable"):
        ResultStore(bad)


def test_cache_key_and_file_digests(tmp_path):
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert cache_key({"a": 1}, version="0.1") != cache_key({"a": 1}, version="0.2")
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    fp1 = files_fingerprint([f], root=tmp_path)
    store = ResultStore(tmp_path / "r.sqlite")
    d1 = store.file_digest(f)
    f.write_bytes(b"abd")  # same size: the mtime changes, the digest must follow the content
    import os

    os.utime(f, ns=(1, 1))
    assert store.file_digest(f) != d1
    assert files_fingerprint([f], root=tmp_path) != fp1


def test_rows_and_aggregates_round_trip_exactly(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    row = {"item_id": "layer3", "z": 1.5, "nan": math.nan, "inf": math.inf, "ninf": -math.inf, "none": None,
           "nested": {"v": [None, math.nan, math.inf, 0.1]}, "a": "text"}
    agg = {"mean": math.nan, "max": math.inf, "missing": None, "per": [math.nan, None]}
    store.start_run("k", "neural", {"ceiling": math.inf})
    store.add_rows("k", [row])
    store.finish_run("k", agg)
    store.close()
    store = ResultStore(tmp_path / "r.sqlite")
    (back,) = store.rows("k")
    assert list(back) == list(row)  # field order kept
    assert back["none"] is None and math.isnan(back["nan"]) and back["inf"] == math.inf and back["ninf"] == -math.inf
    assert back["nested"]["v"][0] is None and math.isnan(back["nested"]["v"][1]) and back["nested"]["v"][2] == math.inf
    run = store.get_run("k")
    assert math.isnan(run.aggregates["mean"]) and run.aggregates["max"] == math.inf and run.aggregates["missing"] is None
    assert run.aggregates["per"][1] is None and run.meta["ceiling"] == math.inf
    assert store.done_ids("k") == {"layer3"}


def test_generic_row_id_prefers_item_id(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("k", "training", {})
    store.add_rows("k", [{"item_id": "eval/1", "image_id": "not-the-id"}, {"image_id": "b"}])
    assert store.done_ids("k") == {"eval/1", "b"}


def _write_v1_store(path):
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE runs (key TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,"
        " updated REAL NOT NULL, meta TEXT NOT NULL, aggregates TEXT);"
        "CREATE TABLE rows (run_key TEXT NOT NULL, image_id TEXT NOT NULL, data TEXT NOT NULL,"
        " PRIMARY KEY (run_key, image_id));"
        "CREATE TABLE file_digests (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
        " digest TEXT NOT NULL);"
        "CREATE TABLE info (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO info VALUES ('schema_version', '1');"
        """INSERT INTO runs VALUES ('k', 'evaluation', 'complete', 1.0, 2.0, '{"model":"m"}',"""
        """ '{"alignment":null,"max":"inf"}');"""
        """INSERT INTO rows VALUES ('k', 'img1', '{"label":3,"spearman":null}');"""
    )
    conn.commit()
    conn.close()


def test_v1_store_is_migrated(tmp_path):
    _write_v1_store(tmp_path / "old.sqlite")
    store = ResultStore(tmp_path / "old.sqlite")
    (row,) = store.rows("k")
    assert row["image_id"] == "img1" and row["label"] == 3 and math.isnan(row["spearman"])  # as a v1 reader saw it
    run = store.get_run("k")
    assert run.status == "complete" and run.n_rows == 1 and run.aggregates["max"] == math.inf
    assert store.done_ids("k") == {"img1"}
    store.close()
    again = ResultStore(tmp_path / "old.sqlite").rows("k")  # re-opening a v2 store migrates nothing
    assert again[0]["image_id"] == "img1" and math.isnan(again[0]["spearman"])


def test_newer_schema_is_refused(tmp_path):
    ResultStore(tmp_path / "r.sqlite").close()
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    conn.execute("UPDATE info SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        ResultStore(tmp_path / "r.sqlite")


def test_merge_is_idempotent_and_completes_partial_runs(tmp_path):
    worker1, worker2 = ResultStore(tmp_path / "w1.sqlite"), ResultStore(tmp_path / "w2.sqlite")
    driver = ResultStore(tmp_path / "driver.sqlite")
    worker1.start_run("a", "evaluation", {"m": 1})
    worker1.add_rows("a", [{"image_id": "x", "v": 1.0}, {"image_id": "y", "v": math.nan}])
    worker1.finish_run("a", {"v": 1.0})
    (worker1.artifacts_dir("a") / "fig.png").write_bytes(b"png")
    worker2.start_run("b", "adversarial", {})
    worker2.add_rows("b", [{"image_id": "x", "l2": math.inf}])  # partial: still running
    driver.start_run("a", "evaluation", {"m": 1})
    driver.add_rows("a", [{"image_id": "x", "v": 1.0}])  # the driver had started "a" itself
    assert driver.merge(worker1) == {"runs": 0, "completed": 1, "rows": 1, "artifacts": 1}
    assert driver.merge(tmp_path / "w2.sqlite") == {"runs": 1, "completed": 0, "rows": 1, "artifacts": 0}
    snapshot = [(r.key, r.status, r.n_rows, r.aggregates) for r in driver.runs()]
    assert driver.merge(worker1) == driver.merge(worker2) == {"runs": 0, "completed": 0, "rows": 0, "artifacts": 0}
    assert [(r.key, r.status, r.n_rows, r.aggregates) for r in driver.runs()] == snapshot
    assert driver.get_run("a").status == "complete" and math.isnan(driver.rows("a")[1]["v"])
    assert driver.rows("b") == [{"image_id": "x", "l2": math.inf}]
    assert (driver.artifacts_dir("a") / "fig.png").read_bytes() == b"png"
    with pytest.raises(ValueError, match="itself"):
        driver.merge(tmp_path / "driver.sqlite")


def test_delete_run_removes_its_artifacts(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(KeyError):
        store.artifacts_dir("nope")
    store.start_run("k", "evaluation", {})
    (store.artifacts_dir("k") / "a.npy").write_bytes(b"1")
    assert store.delete_run("k") and not store.artifacts_dir("k", create=False).exists()


def test_cli_merges_worker_stores(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    for name, key in (("w1", "aaaa"), ("w2", "bbbb")):
        s = ResultStore(tmp_path / f"{name}.sqlite")
        s.start_run(key, "evaluation", {"model": name})
        s.add_rows(key, [{"image_id": "x", "spearman": 0.5}])
        s.finish_run(key, {"spearman": {"mean": 0.5}})
        s.close()
    args = ["results", "merge", str(tmp_path / "w1.sqlite"), str(tmp_path / "w2.sqlite"), "--store", str(tmp_path / "all.sqlite")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "1 new runs" in r.output and {x.key for x in ResultStore(tmp_path / "all.sqlite").runs()} == {"aaaa", "bbbb"}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 new runs, 0 completed, 0 rows" in again.output
    bad = CliRunner().invoke(app, ["results", "merge", str(tmp_path / "nope.sqlite"), "--store", str(tmp_path / "all.sqlite")])
    assert bad.exit_code == 2 and "no such results store" in bad.output
