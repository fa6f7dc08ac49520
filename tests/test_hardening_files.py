"""Issue 21, files: never overwrite a user's files, one writer, locks, datasets that survive a kill."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
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
