"""Simulated ClickMe: a seeded, SYNTHETIC image-classification benchmark with known evidence.

The images and the "human" maps are simulated; no person clicked on anything. What the
benchmark offers is ground truth about where the evidence is:

* K classes (default 8) share one body shape and differ only by a small *part* on the body
  (its shape; see :mod:`harmonia.humans.simulate_render`). Position, size, elongation,
  rotation and colours of body and part are drawn independently of the class.
* A planted *shortcut*: a small framed square in a corner, away from the object, whose fill
  colour codes a class. In ``train`` and ``test`` (in-distribution) it shows the true class
  in exactly ``round(shortcut_rate * n)`` images (default 90%) and a uniformly drawn *other*
  class otherwise. In ``test_shortcut_broken`` it always shows a uniformly drawn other
  class, so it agrees with the label in 0% of the images (below chance): a model that reads
  the cue instead of the part fails there. In ``test_no_cue`` the square is filled with its
  frame's grey: it codes no class, so accuracy there is what the model reads from the part
  alone (it tells "never learned the part" apart from "learned it, but the cue wins").
* Simulated participants (default 10 per image; :mod:`harmonia.humans.simulate_participants`)
  click mostly on the part; their clicks become maps through the very pipeline used for real
  clicks (:func:`harmonia.humans.clicks.subject_click_maps` and
  :func:`harmonia.humans.blur.blur_maps`). Every split has the blurred mean as ``map``; the
  test splits also keep the raw per-participant count maps as ``subjects`` (so split-half
  ceilings are computed, not assumed). ``train`` keeps them only with ``train_subjects=True``:
  they would be most of the data set's 0.5 GB, and training uses only ``map``.

Per-image ground truth is in ``SPLIT/meta.csv`` (same order as ``index.csv``; read it with
:func:`load_meta`): ``id, label, class_name, shortcut_class, shortcut_agrees``, the boxes
``cue_*``, ``object_*`` and ``part_*`` as ``x0, y0, x1, y1`` pixels (x = column,
end-exclusive), ``part_cx, part_cy, part_radius``, ``texture`` and ``n_clicks``.
``harmonia.json`` says ``synthetic: true`` and keeps the :class:`SimulationConfig` under
``extra["simulation"]``.

Example:
    >>> import tempfile
    >>> root = simulate_clickme(tempfile.mkdtemp(), n_train=16, n_test=8, image_size=32,
    ...                         n_subjects=4, progress=False)
    >>> from harmonia.data import HarmoniaDataset
    >>> ds = HarmoniaDataset(root, split="test_shortcut_broken", with_subjects=True)
    >>> len(ds), tuple(ds[0]["subjects"].shape), ds.info.synthetic
    (8, (4, 32, 32), True)
"""

from __future__ import annotations

import csv
import io
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from harmonia.data.format import INDEX_FILE, META_FILE, DatasetWriter, is_partial_entry, partial_split_dir, read_info
from harmonia.humans.blur import blur_maps
from harmonia.humans.clicks import subject_click_maps
from harmonia.humans.simulate_participants import simulate_clicks
from harmonia.humans.simulate_render import (
    PART_SHAPES, Sample, render_sample,
)  # fmt: skip
from harmonia.settings import SimulationConfig
from harmonia.utils.io import atomic_write_text
from harmonia.utils.lock import LOCK_FILE, folder_lock

SPLITS = ("train", "test", "test_shortcut_broken", "test_no_cue")
NO_CUE = -1  # shortcut_class of test_no_cue images: the square codes no class
META_CSV = "meta.csv"
DATASET_NAME = "simulated-clickme"
DESCRIPTION = (
    "SYNTHETIC benchmark (simulated ClickMe): the images are rendered by harmonia (a shared "
    "body with a class-specific part, on backgrounds cut from scikit-image's texture photos) "
    "and the human maps come from SIMULATED participants, not real people. A planted shortcut "
    "(a class-coded corner square) agrees with the label in {rate:.0%} of train/test images and "
    "never in test_shortcut_broken; in test_no_cue the square is plain grey (codes no class). "
    "Ground truth per image: SPLIT/meta.csv."
)
# Images blurred together: one vectorised blur call per chunk, memory stays flat.
_CHUNK = 64


def plan_split(
    rng: np.random.Generator, n: int, n_classes: int, shortcut_rate: float, broken: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (balanced to within one image per class) and cue classes of one split.

    The cue shows the label in exactly ``round(shortcut_rate * n)`` images and a uniformly
    drawn other class in the rest; with ``broken=True`` it never shows the label.

    Example:
        >>> labels, cues = plan_split(np.random.default_rng(0), 100, 4, 0.9, broken=False)
        >>> int((labels == cues).sum()), np.bincount(labels).tolist()
        (90, [25, 25, 25, 25])
    """
    labels = rng.permutation(np.arange(n) % n_classes)
    agree = np.zeros(n, bool)
    if not broken:
        agree[rng.permutation(n)[: int(round(shortcut_rate * n))]] = True
    # label + 1..K-1 (mod K) is a uniform draw among the other classes.
    other = (labels + rng.integers(1, n_classes, n)) % n_classes
    return labels, np.where(agree, labels, other)


def _prepare_out(out: Path, cfg: SimulationConfig, overwrite: bool) -> list[str]:
    """Make ``out`` ready; returns the splits a half-written run with the same settings already wrote.

    An interrupted run leaves complete splits (listed in harmonia.json, with its settings) and
    at most one ``.SPLIT.partial`` folder: the same command resumes it, ``--overwrite`` replaces it.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    entries = [p for p in out.iterdir() if not is_partial_entry(p) and p.name != LOCK_FILE] if out.is_dir() else []
    if not entries:
        out.mkdir(parents=True, exist_ok=True)
        return []
    done: list[str] = []
    same = False
    if (out / META_FILE).is_file():
        info = read_info(out)
        done = [s for s in SPLITS if s in info.splits]
        try:
            same = SimulationConfig.from_json(info.extra.get("simulation") or {}) == cfg
        except (TypeError, ValueError):
            same = False
        ours = True  # a harmonia dataset: --overwrite may replace it
    else:
        ours = _interrupted_before_any_split(out, entries)
    if not ours:
        # Only ever delete something we recognise as a data set.
        if overwrite:
            raise FileExistsError(f"{out}: not empty and not a harmonia dataset; refusing to overwrite it")
        raise FileExistsError(f"{out}: not empty; choose another folder or pass overwrite=True (--overwrite)")
    half = f"a half-written simulated dataset ({len(done)} of {len(SPLITS)} splits: {', '.join(done) or 'none'})"
    if not overwrite:
        if len(done) == len(SPLITS):
            what = "this simulated dataset" if same else "a simulated dataset made with other settings"
            raise FileExistsError(f"{out}: not empty (holds {what}); choose another folder or pass "
                                  "overwrite=True (--overwrite)")
        if same:
            import warnings

            from harmonia.errors import HarmoniaWarning

            # Resume: each split is drawn from its own seeds, so the rest comes out identical.
            warnings.warn(f"{out}: finishing {half} left by an interrupted run with the same settings",
                          HarmoniaWarning, stacklevel=3)
            return done
        raise FileExistsError(f"{out}: holds {half} made with other settings; re-run with those settings to "
                              "finish it, or pass overwrite=True (--overwrite) to replace it")
    for split in SPLITS:
        for p in (out / split, partial_split_dir(out, split)):
            if p.is_dir():
                shutil.rmtree(p)
    (out / META_FILE).unlink(missing_ok=True)
    return []


def _interrupted_before_any_split(out: Path, entries: list[Path]) -> bool:
    """True if ``out`` holds only split folders of an older harmonia's run killed in its first split."""
    allowed = {"images", "maps", "subjects", META_CSV, INDEX_FILE}
    return all(p.is_dir() and p.name in SPLITS and {q.name for q in p.iterdir()} <= allowed for p in entries)


@contextmanager
def _progress_updater(progress: bool | Callable[[int, int], None]) -> Iterator[Callable[[int, int], None]]:
    if callable(progress):
        yield progress
    elif progress:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("simulating ClickMe (synthetic)", total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
    else:
        yield lambda done, total: None


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    # Blurring 64 small maps is too little work to share: with several threads torch spends
    # its time synchronising them (10x slower on a busy 2-core machine, measured).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_META_COLUMNS = [
    "id", "label", "class_name", "shortcut_class", "shortcut_agrees",
    "cue_x0", "cue_y0", "cue_x1", "cue_y1",
    "object_x0", "object_y0", "object_x1", "object_y1",
    "part_x0", "part_y0", "part_x1", "part_y1",
    "part_cx", "part_cy", "part_radius", "texture", "n_clicks",
]  # fmt: skip


def _write_split(
    out: Path, split: str, cfg: SimulationConfig, extra: dict[str, Any], tick: Callable[[int], None]
) -> None:
    n = cfg.n_train if split == "train" else cfg.n_test
    code = SPLITS.index(split)
    classes = list(PART_SHAPES[: cfg.n_classes])
    plan_rng = np.random.default_rng([cfg.seed, code])
    labels, cues = plan_split(plan_rng, n, cfg.n_classes, cfg.shortcut_rate, broken=split not in ("train", "test"))
    if split == "test_no_cue":
        cues = np.full_like(cues, NO_CUE)
    keep_subjects = split != "train" or cfg.train_subjects
    size = (cfg.image_size, cfg.image_size)
    rows: list[dict[str, Any]] = []
    with DatasetWriter(
        out, split, name=DATASET_NAME, synthetic=True, description=DESCRIPTION.format(rate=cfg.shortcut_rate),
        classes=classes, extra=extra,
    ) as writer:  # fmt: skip
        for start in range(0, n, _CHUNK):
            idx = range(start, min(start + _CHUNK, n))
            samples, subjects = [], []
            for i in idx:
                # One random stream per image: any image can be redrawn alone, in any order.
                rng = np.random.default_rng([cfg.seed, code, 1, i])
                cue = None if cues[i] == NO_CUE else int(cues[i])
                s = render_sample(rng, cfg.image_size, int(labels[i]), cue, cfg.part_radius)
                xs, ys = simulate_clicks(rng, s, cfg.n_subjects, cfg.participants)
                samples.append(s)
                # Simulated clicks go through the real pipeline: count maps, then the blurred mean.
                subjects.append(np.asarray(subject_click_maps(xs, ys, size), np.float32))
            means = np.stack([m.mean(0) for m in subjects])
            with _one_torch_thread():
                maps = np.asarray(blur_maps(means, method="disk", size=cfg.effective_blur_size), np.float32)
            for i, s, subj, hmap in zip(idx, samples, subjects, maps):
                row = _meta_row(f"{split}-{i:05d}", int(labels[i]), int(cues[i]), classes, s, subj)
                writer.add(row["id"], s.image, hmap, label=row["label"], subjects=subj if keep_subjects else None)
                rows.append(row)
            tick(len(idx))
        # meta.csv before index.csv (written on close): a complete split always has both.
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=_META_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(writer.split_dir / META_CSV, buf.getvalue())


def _meta_row(id: str, label: int, cue: int, classes: list[str], s: Sample, subj: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": id, "label": label, "class_name": classes[label],
        "shortcut_class": cue, "shortcut_agrees": int(cue == label),
    }  # fmt: skip
    for name, box in (("cue", s.cue_box), ("object", s.object_box), ("part", s.part_box)):
        row.update({f"{name}_{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), box)})
    row.update(
        part_cx=f"{s.part_center[0]:.3f}", part_cy=f"{s.part_center[1]:.3f}", part_radius=f"{s.part_radius:.3f}",
        texture=s.texture, n_clicks=int(subj.sum()),
    )  # fmt: skip
    return row


def simulate_clickme(
    out_dir: str | Path,
    *,
    n_train: int = SimulationConfig.n_train,
    n_test: int = SimulationConfig.n_test,
    image_size: int = SimulationConfig.image_size,
    n_classes: int = SimulationConfig.n_classes,
    shortcut_rate: float = SimulationConfig.shortcut_rate,
    n_subjects: int = SimulationConfig.n_subjects,
    seed: int = SimulationConfig.seed,
    train_subjects: bool = SimulationConfig.train_subjects,
    part_radius: tuple[float, float] = SimulationConfig.part_radius,
    overwrite: bool = False,
    progress: bool | Callable[[int, int], None] = True,
) -> Path:
    """Write the SYNTHETIC simulated-ClickMe data set (splits train, test, test_shortcut_broken, test_no_cue).

    Same arguments, same files, byte for byte (on one installation: decoders of the texture
    photos may differ across library versions). ``progress``: True draws a bar on stderr, or
    pass a ``callback(done, total)``. ``overwrite`` replaces an existing harmonia data set in
    ``out_dir`` (any other non-empty folder is refused). ``part_radius``: range of the
    part's half-size in pixels at 64 px (larger: the class evidence is easier to learn).
    Returns ``out_dir``.

    Example:
        >>> import tempfile
        >>> root = simulate_clickme(tempfile.mkdtemp(), n_train=8, n_test=8, image_size=32,
        ...                         n_classes=2, n_subjects=2, progress=False)
        >>> sorted(p.name for p in root.iterdir())
        ['harmonia.json', 'test', 'test_no_cue', 'test_shortcut_broken', 'train']
    """
    cfg = SimulationConfig(
        n_train=n_train, n_test=n_test, image_size=image_size, n_classes=n_classes, shortcut_rate=shortcut_rate,
        n_subjects=n_subjects, seed=seed, train_subjects=train_subjects, part_radius=tuple(part_radius),
    )  # fmt: skip
    return simulate_from_config(out_dir, cfg, overwrite=overwrite, progress=progress)


def simulate_from_config(
    out_dir: str | Path,
    cfg: SimulationConfig,
    *,
    overwrite: bool = False,
    progress: bool | Callable[[int, int], None] = True,
) -> Path:
    """:func:`simulate_clickme` driven by a full :class:`SimulationConfig` (participant model included).

    Example:
        >>> import tempfile
        >>> cfg = SimulationConfig(n_train=4, n_test=4, image_size=32, n_subjects=2)
        >>> simulate_from_config(tempfile.mkdtemp(), cfg, progress=False).is_dir()
        True
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "dataset"):  # a second `data simulate` into the same folder refuses
        return _simulate_locked(out, cfg, overwrite, progress)


def _simulate_locked(out: Path, cfg: SimulationConfig, overwrite: bool,
                     progress: bool | Callable[[int, int], None]) -> Path:
    done_splits = _prepare_out(out, cfg, overwrite)
    extra = {
        "simulation": cfg.to_json(),
        "generator": "harmonia.humans.simulate",
        "meta_file": META_CSV,
        "meta_columns": _META_COLUMNS,
        "shortcut_broken_rule": "cue drawn uniformly from the classes other than the label (never agrees)",
        "no_cue_rule": f"cue square filled with its frame's grey, shortcut_class {NO_CUE} (codes no class)",
        "subjects": "raw per-participant click-count maps (unblurred); map = blur_maps(mean of subjects)",
        # Read by harmonia.humans.ceiling: blur the split halves exactly like the maps.
        "subjects_blur": {"method": "disk", "size": cfg.effective_blur_size, "sigma": None},
    }
    total = cfg.n_train + (len(SPLITS) - 1) * cfg.n_test
    done = 0
    with _progress_updater(progress) as update:
        update(0, total)

        def tick(k: int) -> None:
            nonlocal done
            done += k
            update(done, total)

        for split in SPLITS:
            if split in done_splits:  # written by an interrupted run with the same settings
                tick(cfg.n_train if split == "train" else cfg.n_test)
                continue
            _write_split(out, split, cfg, extra, tick)
    return out


def load_meta(root: str | Path, split: str) -> dict[str, np.ndarray]:
    """Per-image ground truth of a simulated split, one array per ``meta.csv`` column.

    Example:
        >>> import tempfile
        >>> root = simulate_clickme(tempfile.mkdtemp(), n_train=4, n_test=4, image_size=32,
        ...                         n_subjects=2, progress=False)
        >>> m = load_meta(root, "test_shortcut_broken")
        >>> int(m["shortcut_agrees"].sum()), m["part_x0"].dtype.kind
        (0, 'i')
    """
    path = Path(root) / split / META_CSV
    if not path.is_file():
        info = read_info(root)  # a clear error if root is no data set at all
        if not (Path(root) / split / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{Path(root)}: no split {split!r} (available: {', '.join(info.splits)})")
        raise FileNotFoundError(f"{path}: missing; this data set was not made by `harmonia data simulate`")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, np.ndarray] = {}
    for col in _META_COLUMNS:
        vals = [r[col] for r in rows]
        if col in ("id", "class_name", "texture"):
            out[col] = np.array(vals, dtype=str)
        elif col in ("part_cx", "part_cy", "part_radius"):
            out[col] = np.array(vals, dtype=np.float64)
        else:
            out[col] = np.array(vals, dtype=np.int64)
    return out
