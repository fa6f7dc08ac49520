"""Tracking challenges: generator throughput against the disk floor, and training-step time per model.

1. Generator throughput, videos per second on one core (numpy and torch limited to one
   thread; rates per CPU-second of this process, user + system), for PathTracker (the
   published training condition, 64 frames / 14 distractors, and the longest, 128 / 25) and
   FeatureTracker (its default, 32 frames / 10 distractors, in distribution), drawn one by one
   (``gen[i]``) and in chunks of 32 (``gen.samples``, what the Dataset's DataLoader fetch and
   the writer use), against the floor: writing the same arrays (the video, and FeatureTracker's
   masks) as .npy files into a temporary folder on disk the way a user would, plain
   ``np.save(path, array)`` with no fsync, so into the page cache: the cheapest write, the
   strictest floor. Each chunk's files are deleted, untimed, once written, so the page cache
   never fills and the floor does not depend on the machine's reclaim state. Generation and
   writing are interleaved chunk by chunk (generate 32, write those 32, drop them: what
   ``harmonia data challenge`` does), so both see the same load; the ratio chunks / np.save is
   taken per round and its median over ``--rounds`` is reported (target >= 0.5), with its range
   over the rounds and the same ratio on wall-clock time; the rounds visit the cases in turn,
   so each case is sampled across the whole run. Then, once per case after those rounds (its
   fsyncs slow down the writes and the generation that follow them), harmonia's atomic write
   (temporary file, fsync, rename: what ``harmonia data challenge`` really does), on wall-clock
   time since it waits for the disk.
2. One training step (forward, BCE, backward, Adam) per video model at batch 32 on the CPU
   (the published model sizes; ``--frames`` frames of 32 x 32), median of ``--repeats``
   after one warm-up step.

``--chunk-times`` prints only generation, CPU ms per chunk of 32 (best of 5 x 10 chunks), for
the three cases and FeatureTracker's costliest condition. ``--against DIR`` (a checkout of
another commit, e.g. ``git worktree add /tmp/old COMMIT``) compares that tree's generators with
this one's in one process, chunk by chunk in alternation (the machine's speed drifts by tens of
percent within seconds, so separate runs cannot be compared): it loads DIR's ``pathtracker.py``
and ``featuretracker.py`` under other names, with this tree's shared helpers, and draws their
samples as the older base class did, each from its own ``default_rng([seed, i])``. Samples are
checked identical first.

Run:
    .venv/bin/python benchmarks/bench_challenges.py [--videos 896] [--rounds 7] [--frames 32] [--batch 32]
        [--repeats 2] [--warmup 1] [--models int,r3d_18] [--skip-models] [--skip-generators]
    .venv/bin/python benchmarks/bench_challenges.py --chunk-times [--against /tmp/old]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harmonia.challenges as hc  # noqa: E402
from harmonia.models.video import build_video_model, video_model_names  # noqa: E402

CASES = [
    ("pathtracker", {"frames": 64, "distractors": 14}),
    ("pathtracker", {"frames": 128, "distractors": 25}),
    ("featuretracker", {}),
]


CHUNK_TIME_CASES = CASES + [("featuretracker", {"shapes": "out", "colors": "irregular"})]


CHUNK = 32  # what ChallengeDataset.__getitems__ (a DataLoader batch) and write_challenge draw at once


class Clock:
    """CPU seconds (user + system of this process: per core) and wall seconds, summed over ``with`` blocks."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def __enter__(self) -> "Clock":
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu += time.process_time() - self._cpu
        self.wall += time.perf_counter() - self._wall


def sample_arrays(sample: dict) -> list[np.ndarray]:
    """The arrays a sample writes: its video, and its masks where there are."""
    return [sample["video"]] + ([sample["masks"]] if "masks" in sample else [])


def save_all(folder: str, arrays: list[list[np.ndarray]], atomic: bool) -> None:
    """Each sample's arrays as .npy files in ``folder``: plain ``np.save`` (no fsync) or harmonia's atomic write."""
    from harmonia.utils.io import atomic_save_npy

    for i, group in enumerate(arrays):
        for j, a in enumerate(group):
            path = os.path.join(folder, f"{i:06d}-{j}.npy")
            atomic_save_npy(path, a) if atomic else np.save(path, a)


def measure_round(gen, first: int, n: int, n_single: int) -> dict[str, float]:
    """One round: ``n_single`` videos one by one, then ``n`` in chunks, each chunk written with np.save
    right after it is drawn (a fresh folder, deleted untimed). Videos per second."""
    single, chunks, plain = Clock(), Clock(), Clock()
    with single:
        for i in range(first, first + n_single):
            gen[i]
    with tempfile.TemporaryDirectory() as tmp:
        for j in range(first, first + n, CHUNK):
            with chunks:
                samples = gen.samples(list(range(j, min(j + CHUNK, first + n))))
            arrays = [sample_arrays(s) for s in samples]
            folder = os.path.join(tmp, f"{j:08d}")
            os.mkdir(folder)
            with plain:
                save_all(folder, arrays, atomic=False)
            # deleted untimed: the page cache never fills up, so every write finds free memory (the
            # cheapest, most stable floor, rather than one that depends on the dirty-page and reclaim state)
            shutil.rmtree(folder)
            del samples, arrays  # dropped, as the writer does: the next chunk reuses the memory
    return {"single": n_single / single.cpu, "chunks": n / chunks.cpu, "np.save": n / plain.cpu,
            "ratio": plain.cpu / chunks.cpu, "ratio_wall": plain.wall / chunks.wall}


def atomic_round(gen, first: int, n: int) -> dict[str, float]:
    """``n`` videos in chunks, each chunk written with harmonia's atomic write (fsync) right after it is
    drawn; wall-clock time (the fsync waits for the disk). Kept out of the np.save rounds: the fsyncs
    slow down the writes and the generation that follow them."""
    chunks, atomic = Clock(), Clock()
    with tempfile.TemporaryDirectory() as tmp:
        for j in range(first, first + n, CHUNK):
            with chunks:
                samples = gen.samples(list(range(j, min(j + CHUNK, first + n))))
            with atomic:
                save_all(tmp, [sample_arrays(s) for s in samples], atomic=True)
            del samples
    return {"atomic": n / atomic.wall, "ratio_atomic": atomic.wall / chunks.wall}


def step_time(spec: str, batch: int, frames: int, repeats: int, warmup: int = 1) -> float:
    torch.manual_seed(0)
    model = build_video_model(spec).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    video, labels = torch.rand(batch, 3, frames, 32, 32), (torch.arange(batch) % 2).float()
    times = []
    for r in range(repeats + warmup):
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(video), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r >= warmup:  # the first steps warm up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=896, help="videos per generator case, over all rounds")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of generation and writing per case")
    ap.add_argument("--frames", type=int, default=32, help="frames per clip in the training-step timing")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    ap.add_argument("--models", default="", help="comma-separated video models (default: all)")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-generators", action="store_true")
    ap.add_argument("--chunk-times", action="store_true", help="only generation: CPU ms per chunk of 32, best of 5")
    ap.add_argument("--against", default=None, metavar="DIR",
                    help="with --chunk-times: another checkout's generators, timed in alternation with these")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.chunk_times:
        chunk_times(args.against)
        return

    if not args.skip_generators:
        generator_table(args.videos, args.rounds)
    if args.skip_models:
        return
    print(f"\ntraining step, batch {args.batch}, {args.frames} x 32 x 32 frames, CPU, {torch.get_num_threads()} thread(s)")
    for name in (args.models.split(",") if args.models else video_model_names()):
        seconds = step_time(name, args.batch, args.frames, args.repeats, args.warmup)
        print(f"  {name:14s} {seconds:8.2f} s/step", flush=True)


def older_generators(tree: str) -> dict[str, type]:
    """The tracker classes of another checkout, loaded under other names (not registered)."""
    import importlib.util

    from harmonia.challenges.base import CHALLENGES

    classes = {}
    register = CHALLENGES.register
    CHALLENGES.register = lambda *a, **k: (lambda cls: cls)  # the names are taken by this tree's classes
    try:
        for name in ("pathtracker", "featuretracker"):
            path = Path(tree) / "harmonia" / "challenges" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(f"_older_{name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            classes[name] = next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "name", "") == name)
    finally:
        CHALLENGES.register = register
    return classes


def chunk_times(against: str | None = None, repeats: int = 5, chunks: int = 10) -> None:
    """Generation alone: CPU ms per chunk of 32, the best of ``repeats`` runs of ``chunks`` fresh chunks;
    with ``against``, that checkout's generators too, in alternation, and the ratio of the medians."""
    older = older_generators(against) if against else {}
    print(f"generation, CPU ms per chunk of {CHUNK} (best of {repeats} x {chunks} chunks)"
          + (f"; {against} vs this tree, chunks alternating, ratio of medians" if against else ""))
    for name, knobs in CHUNK_TIME_CASES:
        gen = hc.create(name, seed=0, **knobs)
        draws = {"this": gen.samples}
        if older:
            old = older[name](seed=0, **knobs)
            draws = {"older": lambda idx, g=old: g.sample_batch([np.random.default_rng([0, i]) for i in idx],
                                                                 [g.label_of(i) for i in idx]), **draws}
            a, b = draws["older"](list(range(CHUNK))), gen.samples(list(range(CHUNK)))
            if not all(np.array_equal(x["video"], y["video"]) for x, y in zip(a, b)):
                raise SystemExit(f"{name} {knobs}: the two trees draw different samples")
        for draw in draws.values():
            draw(list(range(CHUNK)))  # imports, caches
        times: dict[str, list[float]] = {k: [] for k in draws}
        for r in range(repeats):
            for c in range(chunks):
                first = (1 + r * chunks + c) * CHUNK
                for k, draw in draws.items():
                    start = time.process_time()
                    draw(list(range(first, first + CHUNK)))
                    times[k].append(time.process_time() - start)
        best = {k: min(statistics.fmean(t[r * chunks:(r + 1) * chunks]) for r in range(repeats)) for k, t in times.items()}
        label = f"{name} {','.join(f'{k}={v}' for k, v in knobs.items()) or 'defaults'}"
        cols = "  ".join(f"{k} {v * 1e3:6.1f} ms" for k, v in best.items())
        ratio = (f"  older / this {statistics.median(times['older']) / statistics.median(times['this']):.2f}x"
                 if older else "")
        print(f"  {label:44s} {cols}{ratio}", flush=True)


def generator_table(n_videos: int, rounds: int = 7) -> None:
    """Generation and writing interleaved chunk by chunk, in ``rounds`` rounds that each visit every
    case in turn (the machine's load and the disk's state change by the second, so each case is
    sampled across the whole run); medians over the rounds of the rates and of the per-round ratios."""
    per_round = max(n_videos // rounds // CHUNK, 1) * CHUNK
    print(f"generators: one core, {rounds} rounds of {per_round} videos per case, median per column; videos/s per "
          f"CPU-second (atomic: per wall second); ratio = chunks / np.save (no fsync), target >= 0.5; SYNTHETIC videos")
    gens = [hc.create(name, seed=0, **knobs) for name, knobs in CASES]
    for gen in gens:
        gen.samples([0, 1])  # imports, caches
    rows: list[list[dict[str, float]]] = [[] for _ in CASES]
    for r in range(rounds):
        for case_rows, gen in zip(rows, gens):
            case_rows.append(measure_round(gen, r * per_round, per_round, max(per_round // 8, 4)))
    for gen, case_rows in zip(gens, rows):  # after every np.save round: the fsyncs disturb what follows them
        case_rows[0].update(atomic_round(gen, rounds * per_round, per_round))
    print(f"{'case':36s} {'one by one':>10s} {'chunks':>7s} {'np.save':>8s} {'ratio':>6s} {'(wall)':>6s} "
          f"{'atomic':>7s} {'ratio':>6s} {'ratio min-max':>14s}")
    for (name, knobs), case_rows in zip(CASES, rows):
        med = {k: statistics.median(row[k] for row in case_rows if k in row) for k in case_rows[0]}
        spread = [row["ratio"] for row in case_rows]
        label = f"{name} {','.join(f'{k}={v}' for k, v in knobs.items()) or 'defaults'}"
        print(f"{label:36s} {med['single']:10.0f} {med['chunks']:7.0f} {med['np.save']:8.0f} {med['ratio']:6.2f} "
              f"{med['ratio_wall']:6.2f} {med['atomic']:7.0f} {med['ratio_atomic']:6.2f} "
              f"{min(spread):6.2f}-{max(spread):.2f}", flush=True)


if __name__ == "__main__":
    main()
