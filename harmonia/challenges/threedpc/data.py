"""Readers for the 3D-PC: the released folder layout and the Hugging Face parquet layout.

Release layout (``perspective`` = VPT, ``depth`` = depth order)::

    ROOT/<task>/<split>/<0|1>/*.png      splits train, val, test, human
    ROOT/<task>/<split>*.csv             optional labels: img_url,label
                                         (human: img_url,perspective_label,depth_label)

Hugging Face layout (configs ``vpt-basic``, ``vpt-strategy``, ``depth``)::

    ROOT/<config>/<split>-*.parquet      columns: image {bytes, path}, label

Labels come from the ``0``/``1`` folders; a label CSV, when present, must agree with them (a
disagreement is an error, not a silent pick). Both readers give a :class:`ThreeDPCSplit`.

Example:
    >>> import tempfile
    >>> from harmonia.challenges.threedpc.scenes import write_release
    >>> root = write_release(tempfile.mkdtemp(), sizes={"train": 4, "val": 2, "test": 2, "human": 2}, size=32)
    >>> split = open_split(root, "depth", "train")
    >>> len(split), sorted(set(split.labels.tolist())), split.image(0).size
    (4, [0, 1], (32, 32))
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test", "human")
# task name -> (release folder, Hugging Face config)
TASKS: dict[str, tuple[str | None, str]] = {
    "perspective": ("perspective", "vpt-basic"),
    "depth": ("depth", "depth"),
    "vpt-strategy": (None, "vpt-strategy"),
}
ALIASES = {"vpt": "perspective", "vpt-basic": "perspective", "vpt_basic": "perspective", "depth-order": "depth",
           "vpt_strategy": "vpt-strategy", "strategy": "vpt-strategy"}
_HUMAN_COLUMN = {"perspective": "perspective_label", "depth": "depth_label"}


def task_name(task: str) -> str:
    """Canonical task name: 'vpt' / 'vpt-basic' -> 'perspective', ...

    Example:
        >>> task_name("vpt-basic"), task_name("depth")
        ('perspective', 'depth')
    """
    t = ALIASES.get(task.strip().lower(), task.strip().lower())
    if t not in TASKS:
        raise ValueError(f"unknown 3D-PC task {task!r}; expected one of {', '.join(TASKS)}")
    return t


@dataclass
class ThreeDPCSplit:
    """One split of one task: ids, labels and a way to open each image (RGB PIL)."""

    root: Path
    task: str
    split: str
    layout: str  # "release" or "parquet"
    ids: list[str]
    labels: np.ndarray
    paths: list[Path] = field(default_factory=list)  # release layout: one PNG per item
    blobs: list[bytes] = field(default_factory=list, repr=False)  # parquet layout: PNG bytes
    sources: list[Path] = field(default_factory=list)  # the files read (for the cache key)

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> Image.Image:
        src: Any = self.paths[i] if self.paths else io.BytesIO(self.blobs[i])
        with Image.open(src) as im:
            return im.convert("RGB")

    def files(self) -> list[Path]:
        return list(self.sources)

    def config(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "layout": self.layout, "n": len(self)}


def _csv_labels(task_dir: Path, split: str, task: str) -> tuple[dict[str, int], list[Path]]:
    """Labels by image file name from the split's label CSV(s), if any."""
    out: dict[str, int] = {}
    files = sorted(p for p in task_dir.glob(f"{split}*.csv")) + sorted((task_dir / split).glob("*.csv"))
    for f in files:
        with f.open(newline="") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            col = "label" if "label" in cols else _HUMAN_COLUMN.get(task)
            if "img_url" not in cols or col not in cols:
                raise ValueError(f"{f}: expected columns img_url,label (human: img_url,perspective_label,"
                                 f"depth_label), got {','.join(cols)}")
            for row in reader:
                out[Path(row["img_url"]).name] = int(float(row[col]))
    return out, files


def read_release(root: str | Path, task: str, split: str) -> ThreeDPCSplit:
    """A split of the released layout ``ROOT/<task>/<split>/<0|1>/*.png``."""
    task = task_name(task)
    folder = TASKS[task][0]
    root = Path(root)
    if folder is None:
        raise ValueError(f"task {task} is only published in the Hugging Face layout (config {TASKS[task][1]})")
    split_dir = root / folder / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no 3D-PC split folder {split_dir} (expected <root>/{folder}/{split}/0|1/*.png)")
    paths, labels = [], []
    for lab in (0, 1):
        found = sorted((split_dir / str(lab)).glob("*.png"))
        paths += found
        labels += [lab] * len(found)
    if not paths:
        raise FileNotFoundError(f"{split_dir}: no PNG images under 0/ or 1/")
    by_name, csv_files = _csv_labels(root / folder, split, task)
    for p, lab in zip(paths, labels):
        if p.name in by_name and by_name[p.name] != lab:
            raise ValueError(f"{p}: folder says label {lab} but the label CSV says {by_name[p.name]}")
    ids = [f"{p.parent.name}/{p.name}" for p in paths]
    return ThreeDPCSplit(root, task, split, "release", ids, np.array(labels, dtype=np.int64), paths=paths,
                         sources=paths + csv_files)


def _parquet_files(root: Path, config: str, split: str) -> list[Path]:
    cands = [p for p in sorted(root.rglob("*.parquet"))
             if config in p.relative_to(root).parts[:-1] and p.name.startswith(split)]
    return cands


def read_parquet(root: str | Path, task: str, split: str) -> ThreeDPCSplit:
    """A split of the Hugging Face layout ``ROOT/<config>/<split>-*.parquet`` (image bytes + label)."""
    import pyarrow.parquet as pq

    task = task_name(task)
    config = TASKS[task][1]
    root = Path(root)
    files = _parquet_files(root, config, split)
    if not files:
        raise FileNotFoundError(f"no parquet files for config {config!r}, split {split!r} under {root} "
                                f"(expected {root}/{config}/{split}-*.parquet)")
    ids: list[str] = []
    labels: list[int] = []
    blobs: list[bytes] = []
    for f in files:
        table = pq.read_table(f)
        cols = table.column_names
        label_col = "label" if "label" in cols else _HUMAN_COLUMN.get(task)
        if "image" not in cols or label_col not in cols:
            raise ValueError(f"{f}: expected columns image and label, got {', '.join(cols)}")
        for k, (img, lab) in enumerate(zip(table.column("image").to_pylist(), table.column(label_col).to_pylist())):
            data = img.get("bytes") if isinstance(img, dict) else img
            if not data:
                raise ValueError(f"{f}: row {k} has no image bytes")
            name = (img.get("path") if isinstance(img, dict) else None) or f"{f.stem}-{k:06d}.png"
            ids.append(str(name))
            labels.append(int(lab))
            blobs.append(bytes(data))
    return ThreeDPCSplit(root, task, split, "parquet", ids, np.array(labels, dtype=np.int64), blobs=blobs,
                         sources=files)


def detect_layout(root: str | Path) -> str:
    """'release' when ROOT has <task>/<split>/0|1 folders, 'parquet' when it has parquet files."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"3D-PC data folder {root} does not exist")
    if any((root / f / s / lab).is_dir() for f in ("perspective", "depth") for s in SPLITS for lab in "01"):
        return "release"
    if next(root.rglob("*.parquet"), None) is not None:
        return "parquet"
    raise FileNotFoundError(f"{root}: neither the release layout (perspective/ or depth/ folders) nor parquet "
                            "files of the Hugging Face layout")


def open_split(root: str | Path, task: str, split: str, layout: str | None = None) -> ThreeDPCSplit:
    """A split in whichever layout ROOT holds (or the one given)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    layout = layout or detect_layout(root)
    if layout == "release":
        return read_release(root, task, split)
    if layout == "parquet":
        return read_parquet(root, task, split)
    raise ValueError(f"unknown layout {layout!r}; expected release or parquet")


def available_splits(root: str | Path, task: str, layout: str | None = None) -> list[str]:
    """The splits of ``task`` present under ROOT, in SPLITS order (files listed, not read).

    Example:
        >>> available_splits("/nonexistent-3dpc", "depth", "release")
        []
    """
    task, root = task_name(task), Path(root)
    layout = layout or detect_layout(root)
    folder, config = TASKS[task]
    if layout == "parquet":
        return [s for s in SPLITS if _parquet_files(root, config, s)]
    if folder is None:
        return []
    return [s for s in SPLITS if any(next((root / folder / s / lab).glob("*.png"), None) for lab in "01")]
