"""Write a challenge generator's samples as a fixed dataset in harmonia's format, and read it back.

Layout (docs/data-format.md, "Challenge datasets")::

    OUT/harmonia.json        synthetic: true; extra.challenge = the generator's config,
                             extra.modality = "image" or "video"
    OUT/SPLIT/index.csv      id,label,image,map,subjects,video,masks,meta (map, subjects empty)
    OUT/SPLIT/images/ID.png  image modality: H x W grayscale or H x W x 3 RGB
    OUT/SPLIT/videos/ID.npy  video modality: uint8 T x H x W x 3
    OUT/SPLIT/masks/ID.npy   optional uint8 T x H x W per-frame object ids (FeatureTracker)
    OUT/SPLIT/meta/ID.json   the sample's metadata (trajectories, target, markers, ...)

Every file is written atomically and ``index.csv`` last, so an interrupted write never looks
complete; run the same command again and it resumes (samples are deterministic, so a file that
exists is a finished sample). A split written from another configuration is refused unless
``overwrite=True``.

Example:
    >>> import tempfile, harmonia.challenges as hc
    >>> root = write_challenge(hc.create("pathtracker", frames=32), tempfile.mkdtemp(), n=4)
    >>> ds = ChallengeFolder(root, "train")
    >>> len(ds), ds[0]["video"].shape, ds.info.synthetic
    (4, (32, 32, 32, 3), True)
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from harmonia.challenges.base import Challenge
from harmonia.data.format import INDEX_FILE, META_FILE, DatasetFormatError, DatasetInfo, read_info, resolve_split
from harmonia.utils.io import atomic_save_npy, atomic_write, atomic_write_text

CHALLENGE_COLUMNS = ["id", "label", "image", "map", "subjects", "video", "masks", "meta"]
_STAMP = ".challenge.json"
_CHUNK = 32  # samples drawn at once  # the split's generator config, written first: resuming checks it


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return (obj.astype(np.uint8) if obj.dtype == bool else obj).tolist()  # 0/1: a third of true/false
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _save_png(path: Path, array: np.ndarray) -> None:
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"image must be uint8 H x W or H x W x 3, got {array.dtype} {array.shape}")
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _sample_files(modality: str, sid: str, with_masks: bool) -> dict[str, str]:
    files = {"image": f"images/{sid}.png"} if modality == "image" else {"video": f"videos/{sid}.npy"}
    if with_masks:
        files["masks"] = f"masks/{sid}.npy"
    files["meta"] = f"meta/{sid}.json"
    return files


def _index_rows(split_dir: Path) -> int:
    with (split_dir / INDEX_FILE).open(newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def write_challenge(
    gen: Challenge,
    out: str | Path,
    n: int,
    split: str = "train",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write samples ``0 .. n-1`` of ``gen`` as split ``split`` of the dataset at ``out``; returns ``out``.

    Resumes an interrupted write of the same configuration (and grows or shrinks a finished
    one to ``n``); refuses a different configuration unless ``overwrite`` (which deletes that
    split first). ``progress(done, total)`` is called as it goes.

    Example:
        >>> import tempfile, harmonia.challenges as hc
        >>> out = write_challenge(hc.create("pathtracker", frames=32), tempfile.mkdtemp(), n=2, split="val")
        >>> sorted(p.name for p in (out / "val").iterdir())
        ['.challenge.json', 'index.csv', 'meta', 'videos']
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > len(gen):
        raise ValueError(f"n={n} is more than the generator's {len(gen)} samples; create it with length >= n")
    if gen.modality not in ("image", "video"):
        raise ValueError(f"cannot write modality {gen.modality!r} (image or video)")
    root = Path(out)
    split_dir = root / split
    stamp = {"config": _jsonable(gen.config()), "modality": gen.modality}
    meta_file = root / META_FILE
    if meta_file.is_file():
        info = read_info(root)
        if not info.synthetic:
            raise DatasetFormatError(f"{root} holds a real (non-synthetic) dataset; write the challenge elsewhere")
        old = info.extra.get("challenge", {})
        if old and old.get("challenge") != gen.name:
            raise ValueError(f"{root} holds challenge {old.get('challenge')!r}, not {gen.name!r}; use another --out")
    elif root.exists() and any(p.name != split for p in root.iterdir()) and not overwrite:
        raise ValueError(f"{root} exists and is not a harmonia dataset; use an empty or new --out")
    if split_dir.exists():
        old_stamp = split_dir / _STAMP
        same = old_stamp.is_file() and json.loads(old_stamp.read_text()) == stamp
        if not same:
            if not overwrite:
                raise ValueError(f"{split_dir} was written with other settings; use --overwrite to replace it")
            shutil.rmtree(split_dir)
        elif (split_dir / INDEX_FILE).is_file() and _index_rows(split_dir) == n:
            if progress:
                progress(n, n)
            return root  # already complete
    split_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(split_dir / _STAMP, json.dumps(stamp, sort_keys=True) + "\n")

    rows: list[dict[str, Any]] = []
    width = max(6, len(str(n - 1)))
    with_masks = "masks" in gen[0]
    todo: dict[int, dict[str, Any]] = {}  # drawn ahead, a chunk at a time (vectorised generators)
    for i in range(n):
        sid = f"{i:0{width}d}"
        files = _sample_files(gen.modality, sid, with_masks)
        label = int(gen.label_of(i))
        if not all((split_dir / f).is_file() for f in files.values()):
            if i not in todo:
                ahead = [i] + [j for j in range(i + 1, min(i + _CHUNK, n))
                         if not (split_dir / _sample_files(gen.modality, f"{j:0{width}d}", with_masks)["meta"]).is_file()]
                todo = dict(zip(ahead, gen.samples(ahead)))
            sample = todo.pop(i)
            label = int(sample["label"])
            for sub in {f.split("/")[0] for f in files.values()}:
                (split_dir / sub).mkdir(exist_ok=True)
            if gen.modality == "image":
                _save_png(split_dir / files["image"], np.asarray(sample["image"]))
            else:
                atomic_save_npy(split_dir / files["video"], np.asarray(sample["video"], dtype=np.uint8))
            if with_masks:
                atomic_save_npy(split_dir / files["masks"], np.asarray(sample["masks"], dtype=np.uint8))
            # meta last: its presence marks the sample complete
            meta = {"label": label, **_jsonable(sample.get("meta", {}))}
            atomic_write_text(split_dir / files["meta"], json.dumps(meta) + "\n")
        rows.append({"id": sid, "label": label, "image": files.get("image", ""), "map": "", "subjects": "",
                     "video": files.get("video", ""), "masks": files.get("masks", ""), "meta": files["meta"]})
        if progress and (i % 64 == 63 or i == n - 1):
            progress(i + 1, n)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CHALLENGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(split_dir / INDEX_FILE, buf.getvalue())
    info = read_info(root) if meta_file.is_file() else DatasetInfo(
        name=gen.name, synthetic=True, classes=["negative", "positive"],
        description=f"SYNTHETIC {gen.name} challenge samples drawn by harmonia.challenges ({gen!r})")
    info.extra.update({"modality": gen.modality, "challenge": _jsonable({k: v for k, v in gen.config().items()})})
    info.extra.setdefault("split_configs", {})[split] = stamp["config"]
    if split not in info.splits:
        info.splits.append(split)
    atomic_write_text(meta_file, json.dumps(info.to_json(), indent=2) + "\n")
    return root


class ChallengeFolder:
    """A written challenge split: ``ds[i]`` is a dict like ``gen[i]`` (array, ``label``, ``meta``, ``id``).

    Wrap it in :class:`harmonia.challenges.dataset.ChallengeDataset`-style conversion with
    :func:`harmonia.challenges.dataset.to_tensor` for training.

    Example:
        >>> ChallengeFolder("pt/", "val")[0]["label"]  # doctest: +SKIP
        0
    """

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root)
        self.info = read_info(self.root)
        self.modality = self.info.extra.get("modality")
        if self.modality not in ("image", "video"):
            raise DatasetFormatError(f"{self.root}: not a challenge dataset (no extra.modality image/video)")
        self.split = resolve_split(self.info, split, self.root)
        self.split_dir = self.root / self.split
        index = self.split_dir / INDEX_FILE
        if not index.is_file():
            raise DatasetFormatError(f"{self.split_dir}: missing {INDEX_FILE} (split not written, or interrupted)")
        with index.open(newline="") as f:
            self.rows = list(csv.DictReader(f))
        self.name = str(self.info.extra.get("challenge", {}).get("challenge", self.info.name))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        if self.modality == "video":
            array = np.load(self.split_dir / row["video"], allow_pickle=False)
        else:
            with Image.open(self.split_dir / row["image"]) as im:
                array = np.asarray(im)
        item: dict[str, Any] = {self.modality: array, "label": int(row["label"]), "id": row["id"]}
        if row.get("masks"):
            item["masks"] = np.load(self.split_dir / row["masks"], allow_pickle=False)
        if row.get("meta"):
            meta = json.loads((self.split_dir / row["meta"]).read_text())
            meta.pop("label", None)
            item["meta"] = meta
        return item
