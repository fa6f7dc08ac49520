"""harmonia's own on-disk dataset format (format version 1).

Layout of a dataset directory::

    DIR/
      harmonia.json          metadata: name, synthetic flag, description, classes, splits
      SPLIT/                 one folder per split (e.g. train, test)
        index.csv            id,label,image,map,subjects  (paths relative to SPLIT/)
        images/ID.png        RGB image, any size (PNG or JPEG)
        maps/ID.npy          float32 H x W human feature-importance map, same H, W as the image
        subjects/ID.npy      optional float32 S x H x W per-subject maps (for ceilings)

Maps may have any non-negative scale; metrics are rank-based or normalise themselves.
Files are written first and ``index.csv`` last, atomically, so a half-written split is
never mistaken for a complete one.

Example:
    >>> import numpy as np, tempfile
    >>> root = tempfile.mkdtemp()
    >>> with DatasetWriter(root, "test", name="tiny", synthetic=True, classes=["a", "b"]) as w:
    ...     w.add("img0", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.float32), label=1)
    >>> ds = HarmoniaDataset(root)
    >>> len(ds), ds[0]["image"].shape, ds[0]["map"].shape, ds[0]["label"]
    (1, torch.Size([3, 8, 8]), torch.Size([8, 8]), 1)
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harmonia.utils.io import atomic_write_text

FORMAT_NAME = "harmonia-dataset"
FORMAT_VERSION = 1
META_FILE = "harmonia.json"
INDEX_FILE = "index.csv"
INDEX_COLUMNS = ["id", "label", "image", "map", "subjects"]
_ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class DatasetFormatError(ValueError):
    """The directory is not a valid harmonia dataset (message says what is wrong and where)."""


@dataclass
class DatasetInfo:
    """Metadata stored in ``harmonia.json``."""

    name: str
    synthetic: bool
    description: str = ""
    classes: list[str] | None = None
    splits: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "synthetic": self.synthetic,
            "description": self.description,
            "classes": self.classes,
            "splits": sorted(self.splits),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: Path) -> "DatasetInfo":
        if obj.get("format") != FORMAT_NAME:
            raise DatasetFormatError(f"{where}: not a harmonia dataset (format={obj.get('format')!r})")
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise DatasetFormatError(
                f"{where}: format version {obj['format_version']} is newer than this harmonia "
                f"reads ({FORMAT_VERSION}); upgrade harmonia"
            )
        return cls(
            name=str(obj.get("name", where.parent.name)),
            synthetic=bool(obj.get("synthetic", False)),
            description=str(obj.get("description", "")),
            classes=obj.get("classes"),
            splits=list(obj.get("splits", [])),
            extra=dict(obj.get("extra", {})),
        )


def read_info(root: str | os.PathLike) -> DatasetInfo:
    """Read ``harmonia.json`` of a dataset directory, with a clear error if it is missing."""
    root = Path(root)
    meta = root / META_FILE
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: no such dataset directory")
    if not meta.is_file():
        raise DatasetFormatError(
            f"{root}: missing {META_FILE}; not a harmonia dataset (see docs/data-format.md, "
            "or convert with `harmonia data convert`)"
        )
    try:
        obj = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{meta}: corrupt JSON ({e})") from e
    return DatasetInfo.from_json(obj, meta)


@dataclass(frozen=True)
class Record:
    """One row of ``index.csv`` with absolute paths."""

    id: str
    label: int
    image: Path
    map: Path
    subjects: Path | None


def _index_file(split_dir: Path) -> Path:
    """The split's ``index.csv``; DatasetFormatError if it is not there."""
    index = split_dir / INDEX_FILE
    if not index.is_file():
        raise DatasetFormatError(f"{split_dir}: missing {INDEX_FILE} (split not written, or interrupted)")
    return index


def read_index(split_dir: Path) -> list[Record]:
    """Parse a split's ``index.csv``; raises DatasetFormatError naming the file and row."""
    index = _index_file(split_dir)
    records: list[Record] = []
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "label", "image", "map"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetFormatError(f"{index}: missing columns {sorted(missing)}")
        for row_no, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise DatasetFormatError(f"{index}:{row_no}: label {row['label']!r} is not an integer") from None
            subjects = row.get("subjects") or None
            records.append(
                Record(
                    id=row["id"],
                    label=label,
                    image=split_dir / row["image"],
                    map=split_dir / row["map"],
                    subjects=split_dir / subjects if subjects else None,
                )
            )
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise DatasetFormatError(f"{index}: duplicate ids")
    return records


def read_index_column(split_dir: Path, column: str) -> dict[str, str]:
    """{image id: value} of an extra ``index.csv`` column (e.g. per-image attack targets).

    Example:
        >>> read_index_column(Path("data/test"), "goal")  # doctest: +SKIP
        {'img0': '3', ...}
    """
    index = _index_file(split_dir)
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise DatasetFormatError(f"{index} has no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        return {row["id"]: row[column] for row in reader}


def load_image(path: Path) -> torch.Tensor:
    """RGB image file -> float32 tensor 3 x H x W in [0, 1]."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: image file missing") from None
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot read image ({e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_map(path: Path, ndim: int = 2) -> torch.Tensor:
    """``.npy`` map file -> float32 tensor; checks dimensionality and finiteness."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: map file missing") from None
    except (OSError, ValueError) as e:
        raise DatasetFormatError(f"{path}: cannot read map ({e})") from e
    if arr.ndim != ndim:
        raise DatasetFormatError(f"{path}: expected a {ndim}-D map, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DatasetFormatError(f"{path}: map contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a C x H x W (or H x W) tensor."""
    squeeze = t.ndim == 2
    x = t[None, None] if squeeze else t[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0, 0] if squeeze else x[0]


def _check_size(size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    """``size`` as (H, W), checked before any file is read (``--size 0`` is an error, not a crash)."""
    from harmonia.errors import UserError

    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise UserError(f"--size must be a positive number of pixels, got {size!r}")
    return pair  # type: ignore[return-value]


class HarmoniaDataset(torch.utils.data.Dataset):
    """A split of a dataset in harmonia's format.

    Each item is a dict: ``image`` (float32 3 x H x W in [0, 1]), ``map`` (float32 H x W),
    ``label`` (int), ``id`` (str) and, with ``with_subjects=True``, ``subjects``
    (float32 S x H x W). ``size`` resizes image and maps (bilinear) so batches stack.

    Example:
        >>> ds = HarmoniaDataset("path/to/dataset", split="test", size=(224, 224))  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        size: tuple[int, int] | int | None = None,
        with_subjects: bool = False,
    ) -> None:
        self.root = Path(root)
        self.info = read_info(self.root)
        if self.info.extra.get("modality") in ("image", "video"):
            raise DatasetFormatError(f"{self.root} is a challenge dataset (no human maps); read it with "
                                     "harmonia.challenges.writer.ChallengeFolder")
        self.split = resolve_split(self.info, split, self.root)
        self.split_dir = self.root / self.split
        self.records = read_index(self.split_dir)
        self.size = _check_size(size)
        self.with_subjects = with_subjects
        if with_subjects and any(r.subjects is None for r in self.records):
            raise DatasetFormatError(f"{self.split_dir}: some images have no per-subject maps")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def has_subjects(self) -> bool:
        return bool(self.records) and all(r.subjects is not None for r in self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        image = load_image(rec.image)
        hmap = load_map(rec.map)
        if tuple(hmap.shape) != tuple(image.shape[-2:]):
            raise DatasetFormatError(
                f"{rec.map}: map shape {tuple(hmap.shape)} differs from image shape {tuple(image.shape[-2:])}"
            )
        item: dict[str, Any] = {"id": rec.id, "label": rec.label}
        if self.size is not None:
            image, hmap = _resize(image, self.size), _resize(hmap, self.size)
        item["image"], item["map"] = image, hmap
        if self.with_subjects:
            subj = load_map(rec.subjects, ndim=3)  # type: ignore[arg-type]
            if self.size is not None:
                subj = _resize(subj, self.size)
            item["subjects"] = subj
        return item

    def config(self) -> dict[str, Any]:
        """Reading settings that change what items look like (part of the cache key)."""
        return {"format": FORMAT_NAME, "split": self.split, "size": self.size, "with_subjects": self.with_subjects}

    def files(self) -> Iterator[Path]:
        """Every file the split's content depends on (for content hashing)."""
        yield self.root / META_FILE
        yield self.split_dir / INDEX_FILE
        for r in self.records:
            yield r.image
            yield r.map
            if r.subjects is not None:
                yield r.subjects


def open_split(root: str | os.PathLike, split: str | None = None, size: tuple[int, int] | int | None = None
               ) -> HarmoniaDataset:
    """A :class:`HarmoniaDataset` split that has images (an empty one is a :class:`~harmonia.errors.UserError`).

    Example:
        >>> open_split("path/to/dataset", "test", size=224)  # doctest: +SKIP
    """
    from harmonia.errors import UserError

    ds = HarmoniaDataset(root, split=split, size=size)
    if len(ds) == 0:
        raise UserError(f"{root}: split {ds.split!r} has no images")
    return ds


def resolve_split(info: DatasetInfo, split: str | None, root: Path) -> str:
    """Pick the split to read: the named one, else the only one, else 'test', else 'val'."""
    available = info.splits or sorted(p.name for p in root.iterdir()
                                      if (p / INDEX_FILE).is_file() and not p.name.startswith("."))
    if split is not None:
        if split not in available:
            raise DatasetFormatError(f"{root}: no split {split!r} (available: {', '.join(available) or 'none'})")
        return split
    if len(available) == 1:
        return available[0]
    for default in ("test", "val"):
        if default in available:
            return default
    raise DatasetFormatError(f"{root}: several splits ({', '.join(available)}); choose one with split=")


PARTIAL_SUFFIX = ".partial"  # ROOT/.SPLIT.partial: a split being written (or left by a killed writer)


def partial_split_dir(root: str | os.PathLike, split: str) -> Path:
    """Where a split is written before it is moved into place: ``ROOT/.SPLIT.partial``."""
    return Path(root) / f".{split}{PARTIAL_SUFFIX}"


def is_partial_entry(path: Path) -> bool:
    """True for what a split writer leaves while writing (its staging folder and lock file)."""
    return path.name.startswith(".") and path.name.endswith((PARTIAL_SUFFIX, PARTIAL_SUFFIX + ".lock"))


class DatasetWriter:
    """Write one split of a harmonia dataset; the split appears whole on close, or not at all.

    Files go to ``ROOT/.SPLIT.partial/`` (locked against a second writer, which refuses
    naming this process's pid); :meth:`close` writes ``index.csv`` there, moves the folder
    onto ``ROOT/SPLIT`` (replacing an older split of that name) and adds the split to
    ``harmonia.json`` (created if absent). An exception inside ``with`` removes the partial
    folder; one left by a killed writer is recognised and removed by the next writer of
    that split (with a :class:`~harmonia.errors.HarmoniaWarning`). ``inputs`` are the files or
    folders the caller reads while writing: one inside the split being replaced is refused,
    since the move on close would delete it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        name: str,
        synthetic: bool,
        description: str = "",
        classes: list[str] | None = None,
        image_format: str = "png",
        extra: dict[str, Any] | None = None,
        inputs: Iterable[str | os.PathLike] = (),
    ) -> None:
        if not _ID_RE.match(split):
            raise ValueError(f"split name {split!r} must use letters, digits, '.', '_' or '-'")
        if image_format not in ("png", "jpg"):
            raise ValueError("image_format must be 'png' or 'jpg'")
        from harmonia.utils.lock import PathLock

        self.root = Path(root)
        self.split = split
        self.final_dir = self.root / split
        self.split_dir = partial_split_dir(self.root, split)  # where files go until close
        final = Path(os.path.realpath(self.final_dir))
        for src in inputs:
            real = Path(os.path.realpath(src))
            if real == final or final in real.parents:
                raise FileExistsError(f"{src}: lies inside {self.final_dir}, the split this would replace; "
                                      "write to another output folder or split name")
        if self.final_dir.is_dir() and any(self.final_dir.iterdir()) and not (self.final_dir / INDEX_FILE).is_file():
            # Only a split harmonia wrote is ever replaced (this may be the folder the data comes from).
            raise FileExistsError(f"{self.final_dir}: exists and is not a harmonia split; refusing to replace it "
                                  "(choose another output folder or split name)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = PathLock(Path(f"{self.split_dir}.lock"), f"split {split!r} of dataset {self.root}").acquire()
        if self.split_dir.exists():
            import shutil
            import warnings

            from harmonia.errors import HarmoniaWarning

            warnings.warn(f"{self.split_dir}: removing a half-written split {split!r} left by an interrupted run",
                          HarmoniaWarning, stacklevel=2)
            shutil.rmtree(self.split_dir)
        for sub in ("images", "maps"):
            (self.split_dir / sub).mkdir(parents=True, exist_ok=True)
        self.image_format = image_format
        self.rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        meta = self.root / META_FILE
        if meta.is_file():
            self.info = read_info(self.root)
            if self.info.synthetic != synthetic:
                raise DatasetFormatError(f"{meta}: synthetic flag differs from the existing dataset")
        else:
            self.info = DatasetInfo(name=name, synthetic=synthetic, description=description, classes=classes)
        if extra:
            self.info.extra.update(extra)

    def add(
        self,
        id: str,
        image: np.ndarray | torch.Tensor,
        map: np.ndarray | torch.Tensor,
        label: int,
        subjects: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Add one sample. ``image``: uint8 H x W x 3 array, or float 3 x H x W tensor in [0, 1]."""
        if not _ID_RE.match(id):
            raise ValueError(f"id {id!r} must use letters, digits, '.', '_' or '-'")
        if id in self._ids:
            raise ValueError(f"duplicate id {id!r}")
        img = _to_uint8_hwc(image)
        hmap = np.asarray(map.detach().cpu() if isinstance(map, torch.Tensor) else map, dtype=np.float32)
        if hmap.shape != img.shape[:2]:
            raise ValueError(f"{id}: map shape {hmap.shape} differs from image shape {img.shape[:2]}")
        if not np.isfinite(hmap).all():
            raise ValueError(f"{id}: map contains NaN or infinite values")
        img_rel = f"images/{id}.{self.image_format}"
        Image.fromarray(img).save(self.split_dir / img_rel, quality=95)
        map_rel = f"maps/{id}.npy"
        np.save(self.split_dir / map_rel, hmap)
        subj_rel = ""
        if subjects is not None:
            s = np.asarray(subjects.detach().cpu() if isinstance(subjects, torch.Tensor) else subjects, np.float32)
            if s.ndim != 3 or s.shape[1:] != hmap.shape:
                raise ValueError(f"{id}: subject maps must be S x H x W matching the map, got {s.shape}")
            (self.split_dir / "subjects").mkdir(exist_ok=True)
            subj_rel = f"subjects/{id}.npy"
            np.save(self.split_dir / subj_rel, s)
        self._ids.add(id)
        self.rows.append({"id": id, "label": int(label), "image": img_rel, "map": map_rel, "subjects": subj_rel})

    def close(self) -> None:
        """Write the index and move the split into place (replacing an older one of that name)."""
        import io
        import shutil

        if not self._lock.held:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.split_dir / INDEX_FILE, buf.getvalue())
        old = self.root / f".{self.split}.replaced{PARTIAL_SUFFIX}"
        if old.exists():
            shutil.rmtree(old)
        if self.final_dir.exists():
            os.replace(self.final_dir, old)
        os.replace(self.split_dir, self.final_dir)
        self.split_dir = self.final_dir
        if old.exists():
            shutil.rmtree(old)
        # Splits another writer added meanwhile are kept (each writer locks only its own split).
        on_disk = read_info(self.root).splits if (self.root / META_FILE).is_file() else []
        self.info.splits = list(dict.fromkeys([*on_disk, *self.info.splits, self.split]))
        atomic_write_text(self.root / META_FILE, json.dumps(self.info.to_json(), indent=2) + "\n")
        self._lock.release()

    def abort(self) -> None:
        """Drop the partial split; an existing split of that name is untouched."""
        import shutil

        if self._lock.held:
            shutil.rmtree(self.split_dir, ignore_errors=True)
            self._lock.release()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _to_uint8_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"image tensor must be 3 x H x W, got {tuple(t.shape)}")
        return (t.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()).copy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image array must be H x W x 3, got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {arr.dtype}")
    return arr
