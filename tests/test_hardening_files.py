"""Issue 21, files: never overwrite a user's files, one writer, locks, datasets that survive a kill."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.utils.io import _umask

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def usual_mode() -> int:
    return 0o666 & ~_umask()


# --------------------------------------------------------------------------- locks (item 12)


def hold_in_child(code: str) -> subprocess.Popen:
    """Run ``code`` (which takes a lock) in a child that prints 'ready' and then waits to be killed."""
    script = textwrap.dedent(code) + "\nprint('ready', flush=True)\nimport time\ntime.sleep(120)\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.stdout.readline().strip() == "ready"
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def test_train_refuses_a_run_folder_another_process_writes_and_takes_over_a_dead_ones(tmp_path):
    from tests.test_training import write_colour_dataset

    data = write_colour_dataset(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "run"
    child = hold_in_child(f"from harmonia.utils.lock import folder_lock\n"
                          f"lock = folder_lock({str(out)!r}, 'run folder').acquire()")
    try:
        r = run("train", "--data", data, "--out", out, "--model", "timm:resnet10t", "--epochs", "1",
                "--batch-size", "4", "--resume", "--no-progress", "--device", "cpu")
        assert r.exit_code == 2, r.output
        assert f"pid {child.pid}" in r.output and "run folder" in r.output
        assert not (out / "config.json").exists()  # refused before touching the folder
    finally:
        kill(child)
    # The holder died (kill -9): its lock file is left behind and simply taken over.
    assert (out / ".harmonia.lock").read_text().split() == [str(child.pid)]
    from harmonia.utils.lock import folder_lock

    with folder_lock(out, "run folder") as lock:
        assert lock.held and (out / ".harmonia.lock").read_text().split() == [str(os.getpid())]
    assert not (out / ".harmonia.lock").exists()  # released: removed


def test_a_lock_dies_with_its_holder_even_when_it_forked_workers(tmp_path):
    """DataLoader workers are forks of the trainer: they must not keep its lock after a kill -9."""
    from harmonia.utils.lock import LockedError, folder_lock

    child = hold_in_child(f"from harmonia.utils.lock import folder_lock\n"
                          f"import os, time\n"
                          f"lock = folder_lock({str(tmp_path)!r}, 'run folder').acquire()\n"
                          f"worker = os.fork()\n"
                          f"if worker == 0:\n"
                          f"    time.sleep(60); os._exit(0)\n"
                          f"open({str(tmp_path / 'worker')!r}, 'w').write(str(worker))\n")
    worker = int((tmp_path / "worker").read_text())
    try:
        with pytest.raises(LockedError, match=f"pid {child.pid}"):
            folder_lock(tmp_path, "run folder").acquire()
        kill(child)  # the forked worker lives on
        with folder_lock(tmp_path, "run folder") as lock:
            assert lock.held
    finally:
        kill(child) if child.poll() is None else None
        os.kill(worker, signal.SIGKILL)


def test_a_store_run_being_written_is_locked_until_finished(tmp_path):
    from harmonia.store import ResultStore
    from harmonia.utils.lock import LockedError

    path = tmp_path / "r.sqlite"
    child = hold_in_child(f"from harmonia.store import ResultStore\n"
                          f"s = ResultStore({str(path)!r}); s.start_run('k1', kind='evaluation', meta={{}})")
    store = ResultStore(path)
    try:
        with pytest.raises(LockedError, match=f"pid {child.pid}"):
            store.start_run("k1", kind="evaluation", meta={})
        with pytest.raises(LockedError, match=f"pid {child.pid}"):
            store.delete_run("k1")  # --recompute must not pull rows from under a live writer
        store.start_run("k2", kind="evaluation", meta={})  # other runs are free
    finally:
        kill(child)
    store.start_run("k1", kind="evaluation", meta={})  # the dead holder's lock is taken over
    store.add_rows("k1", [{"image_id": "a", "x": 1.0}])
    store.finish_run("k1", {})
    store.finish_run("k2", {})
    assert not (tmp_path / "r.sqlite.locks").exists()  # nothing left once every run is finished


# --------------------------------------------------------------------------- one writer (item 4)


def test_harmonization_shards_get_the_permissions_of_every_other_output(tmp_path):
    from tests.conftest import write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", n=3)
    r = run("data", "convert", data, tmp_path / "shards", "--to", "harmonization", "--split", "test")
    assert r.exit_code == 0, r.output
    shards = list((tmp_path / "shards").glob("*.tfrecords"))
    assert shards
    for p in [*shards, data / "harmonia.json"]:
        assert stat.S_IMODE(p.stat().st_mode) == usual_mode(), p


# --------------------------------------------------------------------------- outputs (items 1, 2, 3)


def write_photos(folder: Path, names=("a.png", "b.png")) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


EXPLAIN = ("explain", "--model", "timm:resnet10t", "--random-init", "--device", "cpu")


@pytest.mark.parametrize("spelling", ["same", "dot-dot", "symlink"])
def test_explain_never_writes_over_its_inputs(tmp_path, spelling):
    photos = write_photos(tmp_path / "d")
    before = {p: p.read_bytes() for p in photos}
    out = {"same": tmp_path / "d", "dot-dot": tmp_path / "d" / ".." / "d"}.get(spelling)
    if spelling == "symlink":
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "d")
    r = run(*EXPLAIN, "-i", tmp_path / "d", "-o", out)
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and "would write over the input" in r.output
    assert {p: p.read_bytes() for p in photos} == before
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.png", "b.png"]  # nothing written


def test_explain_never_replaces_a_file_it_did_not_write_but_replaces_its_own(tmp_path):
    write_photos(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").write_bytes(b"the user's own file")
    r = run(*EXPLAIN, "-i", tmp_path / "photos", "-o", out)
    assert r.exit_code == 2 and "not written by harmonia" in r.output, r.output
    assert (out / "a.npy").read_bytes() == b"the user's own file"
    (out / "a.npy").unlink()
    for _ in range(2):  # the second run replaces the files of the first
        r = run(*EXPLAIN, "-i", tmp_path / "photos", "-o", out)
        assert r.exit_code == 0, r.output


def test_explain_gives_inputs_with_the_same_stem_their_own_outputs(tmp_path):
    import csv

    write_photos(tmp_path / "photos", names=("coffee.png", "coffee.jpg", "tea.png"))
    out = tmp_path / "out"
    r = run(*EXPLAIN, "-i", tmp_path / "photos", "-o", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert {(r["image"], r["map"], r["figure"]) for r in rows} == {
        ("coffee.jpg", "coffee_jpg.npy", "coffee_jpg.png"),
        ("coffee.png", "coffee_png.npy", "coffee_png.png"),
        ("tea.png", "tea.npy", "tea.png"),
    }
    assert all((out / r["map"]).is_file() and (out / r["figure"]).is_file() for r in rows)


def test_attack_figures_of_two_models_with_the_same_file_name_do_not_collide(tmp_path, tiny_dataset):
    import timm
    import torch

    from harmonia.models.checkpoint import save_checkpoint
    from harmonia.models.wrapper import HarmoniaModel, Preprocessing

    ckpts = []
    for run_name in ("a", "b"):
        torch.manual_seed(98)  # the same weights: both fool the same images (--recompute: no cache hit)
        net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
        ckpts.append(tmp_path / "runs" / run_name / "final.pt")
        save_checkpoint(HarmoniaModel(net, "timm:resnet10t", Preprocessing(input_size=(32, 32)),
                                      class_names=list("abc")), ckpts[-1])
    figs = tmp_path / "figs"
    r = run("attack", "-m", ckpts[0], "-m", ckpts[1], "--data", tiny_dataset, "--store", tmp_path / "r.sqlite",
            "--attack", "fmn:steps=10", "--limit", "3", "--figures", figs, "--ceiling", "none", "--device", "cpu", "--recompute")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in figs.glob("*.png"))
    assert names and {n.split("-")[0] for n in names} == {"a_final.pt", "b_final.pt"}, names
    # A file of the user's with a figure's name: refused before any work, the file kept.
    other = tmp_path / "figs2"
    other.mkdir()
    (other / names[0]).write_bytes(b"mine")
    r = run("attack", "-m", ckpts[0], "-m", ckpts[1], "--data", tiny_dataset, "--store", tmp_path / "r2.sqlite",
            "--attack", "fmn:steps=10", "--limit", "3", "--figures", other, "--ceiling", "none", "--device", "cpu")
    assert r.exit_code == 2 and "--figures" in r.output and "not written by harmonia" in r.output, r.output
    assert (other / names[0]).read_bytes() == b"mine"


def test_results_export_refuses_to_write_over_the_store_or_a_users_file(tmp_path):
    from harmonia.store import ResultStore

    store = tmp_path / "r.sqlite"
    ResultStore(store).close()
    before = store.read_bytes()
    r = run("results", "export", tmp_path / "." / "r.sqlite", "--store", store)
    assert r.exit_code == 2 and "would write over the input" in r.output, r.output
    assert store.read_bytes() == before
    (tmp_path / "mine.csv").write_text("keep me")
    r = run("results", "export", tmp_path / "mine.csv", "--store", store)
    assert r.exit_code == 2 and "not written by harmonia" in r.output, r.output
    assert (tmp_path / "mine.csv").read_text() == "keep me"
    for _ in range(2):
        r = run("results", "export", tmp_path / "runs.csv", "--store", store)
        assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- datasets (items 8, 13)


def test_a_zero_byte_tfrecord_is_an_error_not_an_empty_split(tmp_path):
    (tmp_path / "val-0.tfrecords").write_bytes(b"")
    r = run("data", "convert", tmp_path / "val-0.tfrecords", tmp_path / "out", "--to", "harmonia")
    assert r.exit_code == 2 and "empty file (0 bytes" in r.output, r.output
    assert not (tmp_path / "out" / "val").exists()


SIM = dict(n_train=70, n_test=3, image_size=32, n_classes=2, n_subjects=2)


def simulate_killed(out: Path, kill_after: int, **kw) -> None:
    """``simulate_clickme`` in a child that SIGKILLs itself once ``kill_after`` images are done."""
    script = textwrap.dedent(f"""
        import os, signal
        from harmonia.humans.simulate import simulate_clickme
        def tick(done, total):
            if done >= {kill_after}:
                os.kill(os.getpid(), signal.SIGKILL)
        simulate_clickme({str(out)!r}, progress=tick, **{kw!r})
    """)
    res = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == -signal.SIGKILL


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference_simulation(tmp_path_factory):
    from harmonia.humans.simulate import simulate_clickme

    return tree(simulate_clickme(tmp_path_factory.mktemp("ref") / "sim", progress=False, **SIM))


@pytest.mark.parametrize("kill_after, left", [(64, "in its first split"), (72, "after two splits")])
def test_an_interrupted_simulate_is_finished_by_the_same_command(tmp_path, reference_simulation, kill_after, left):
    out = tmp_path / "sim"
    simulate_killed(out, kill_after, **SIM)
    assert not (out / "train" / "index.csv").exists() or kill_after > SIM["n_train"]
    args = ["data", "simulate", "--out", out, "--n-train", 70, "--n-test", 3, "--image-size", 32,
            "--classes", 2, "--subjects", 2]
    if kill_after > SIM["n_train"]:
        other = run(*args[:-1], 3)  # other settings: refused, and the message says what is there
        assert other.exit_code == 2 and "half-written simulated dataset" in other.output, other.output
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "half-written" in r.output  # says what it found (removed or finished)
    assert tree(out) == reference_simulation  # identical to an uninterrupted run, nothing left over


def test_an_interrupted_simulate_is_replaced_by_overwrite(tmp_path, reference_simulation):
    from harmonia.humans.simulate import simulate_clickme

    out = tmp_path / "sim"
    simulate_killed(out, 64, **SIM)  # in the first split: nothing complete yet
    from harmonia.errors import HarmoniaWarning

    with pytest.warns(HarmoniaWarning, match="half-written split 'train'"):
        simulate_clickme(out, progress=False, overwrite=True, **SIM)
    assert tree(out) == reference_simulation


def test_convert_replaces_a_split_whole_and_leaves_nothing_stale(tmp_path):
    from tests.conftest import write_tiny_dataset

    from harmonia.data import HarmoniaDataset
    from harmonia.data.convert import convert

    data = write_tiny_dataset(tmp_path / "data", n=5)
    shards = tmp_path / "shards"
    assert len(convert(data, shards, to="harmonization", shard_size=1).files) == 5
    assert [p.name for p in convert(data, shards, to="harmonization", shard_size=3).files] == \
        ["test-0.tfrecords", "test-1.tfrecords"]
    assert sorted(p.name for p in shards.glob("*.tfrecords")) == ["test-0.tfrecords", "test-1.tfrecords"]
    out = tmp_path / "out"
    convert(shards, out, to="harmonia", split="val", preprocess="none")
    small = write_tiny_dataset(tmp_path / "small", n=2)
    convert(small, tmp_path / "small-shards", to="harmonization")
    convert(tmp_path / "small-shards", out, to="harmonia", split="val", preprocess="none")
    assert len(HarmoniaDataset(out, split="val")) == 2
    assert len(list((out / "val" / "images").iterdir())) == 2  # the old split's 5 images are gone
    assert sorted(p.name for p in out.iterdir()) == ["harmonia.json", "val"]


def test_an_interrupted_convert_leaves_only_a_partial_folder_the_next_run_removes(tmp_path):
    from tests.conftest import write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", n=6)
    shards = tmp_path / "shards"
    script = textwrap.dedent(f"""
        import os, signal
        from harmonia.data.convert import convert
        def tick(done, total):
            if done >= 3:
                os.kill(os.getpid(), signal.SIGKILL)
        convert({str(data)!r}, {str(shards)!r}, to="harmonization", shard_size=2, progress=tick)
    """)
    res = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == -signal.SIGKILL
    assert not list(shards.glob("*.tfrecords"))  # no shard appears before the whole set is written
    assert (shards / ".test.partial").is_dir()
    r = run("data", "convert", data, shards, "--to", "harmonization", "--shard-size", "2")
    assert r.exit_code == 0, r.output
    assert "half-written" in r.output
    assert sorted(p.name for p in shards.iterdir() if not p.name.startswith(".")) == \
        ["test-0.tfrecords", "test-1.tfrecords", "test-2.tfrecords"]
    assert not (shards / ".test.partial").exists()


def test_train_and_demo_never_replace_a_users_file_in_their_out_folder(tmp_path):
    from tests.test_training import write_colour_dataset

    data = write_colour_dataset(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    r = run("train", "--data", data, "--out", out, "--model", "timm:resnet10t", "--epochs", "1", "--batch-size", "4",
            "--no-progress", "--device", "cpu")
    assert r.exit_code == 2 and "not written by harmonia" in r.output, r.output
    assert (out / "config.json").read_text() == '{"mine": true}'
    (out / "report.html").write_text("my report")
    r = run("demo", "--quick", "--out", out)
    assert r.exit_code == 2 and "not written by harmonia" in r.output, r.output
    assert (out / "report.html").read_text() == "my report"


def test_neural_make_sim_never_writes_into_a_users_folder(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "notes.txt").write_text("mine")
    r = run("neural", "--make-sim", tmp_path)
    assert r.exit_code == 2 and "not written by harmonia" in r.output, r.output
    assert (tmp_path / "flat" / "notes.txt").read_text() == "mine" and not (tmp_path / "spatial").exists()
