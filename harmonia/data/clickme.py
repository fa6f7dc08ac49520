"""Readers of the published ClickMe TFRecord shards, without TensorFlow.

Three published layouts of ``tf.train.Example`` records (features ``image``, ``heatmap``,
``label`` and sometimes ``click_count``), detected per file from its first record:

* ``harmonization`` (serre-lab/Harmonization shards): JPEG image 256 x 256 x 3, JPEG
  heatmap 256 x 256 x 1, int64 label;
* ``clickme1`` (ClickMe 1.0 records): raw float32 256 x 256 x 3 image and 256 x 256 map,
  label, click_count;
* ``adversarial`` (serre-lab/Adversarial-Alignment subset): raw float32 224 x 224 x 3
  image and 224 x 224 map, label.

Items are the same dicts as :class:`harmonia.data.HarmoniaDataset`'s: ``image`` float32
3 x H x W in [0, 1], ``map`` float32 H x W, ``label`` int, ``id`` ``"{shard stem}-{record
index}"``, plus ``click_count`` when the record has one. By default each format gets the
preprocessing its own release applies (:func:`release_preprocess`): for harmonization
and ClickMe 1.0 the harmonizer loader (resize to 224, map blurred at 64 x 64), so scores
are comparable with published ones. The release keeps images in 0..255; we divide by 255
after the same resize. Raw float images are taken as 0..1 if their maximum is <= 1, else
as 0..255 (values outside 0..255 are an error).

Any problem with a record (bad CRC, truncated file, undecodable JPEG, wrong raw byte
count, missing feature) raises :class:`ClickMeFormatError` naming the file and the record.

Example:
    >>> ds = ClickMeDataset("clickme/val")                       # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=4)  # doctest: +SKIP
    >>> next(iter(loader))["image"].shape                         # doctest: +SKIP
    torch.Size([64, 3, 224, 224])

(runnable examples with a generated shard are on each function and class below)
"""

from __future__ import annotations

import bisect
import glob
import io
import os
import random
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from harmonia.data.clickme_preprocess import ClickMePreprocess, release_preprocess
from harmonia.data.example import ExampleDecodeError, decode_example
from harmonia.data.tfrecord import TFRecordError, iter_records, read_record_at, record_offsets

FORMATS = ("harmonization", "clickme1", "adversarial")
# "float32": preprocessed items (the release's numbers); "uint8": decoded pixels only, the
# preprocessing deferred to whole batches on the device (``finish_batch``), ffcv-style.
OUTPUTS = ("float32", "uint8")
RAW_SIDE = {"clickme1": 256, "adversarial": 224}
_RAW_BY_BYTES = {side * side * 3 * 4: fmt for fmt, side in RAW_SIDE.items()}
_ENCODED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG (the release's decoder takes both)
# Files in a shard folder that are certainly not shards (index files, notes, images).
_SKIP_SUFFIXES = {".index", ".json", ".csv", ".txt", ".md", ".npy", ".npz", ".py", ".gz", ".zip", ".tar",
                  ".jpg", ".jpeg", ".png", ".log", ".yaml", ".yml"}

class ClickMeFormatError(ValueError):
    """A ClickMe file or record is corrupt or not in a supported format (names file and record)."""


# --------------------------------------------------------------------------- files


def _natural_key(p: Path) -> list:
    # train-2 before train-10
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def _is_shard_name(p: Path) -> bool:
    # Shards may have no suffix at all (the release caches them as e.g. "clickme_val_0").
    return not p.name.startswith(".") and p.suffix.lower() not in _SKIP_SUFFIXES


def list_shards(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, directories (their shard files) and glob patterns into a sorted list.

    Sorting is natural (``val-2`` before ``val-10``); duplicates are dropped.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for name in ("val-10.tfrecords", "val-2.tfrecords", "notes.txt"): _ = (d / name).write_bytes(b"")
        >>> [p.name for p in list_shards(d)]
        ['val-2.tfrecords', 'val-10.tfrecords']
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise FileNotFoundError("no ClickMe files given")
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            shards = [f for f in p.iterdir() if f.is_file() and _is_shard_name(f)]
            if not shards:
                raise FileNotFoundError(f"{p}: no TFRecord shards in this folder")
            found.extend(sorted(shards, key=_natural_key))
        elif p.is_file():
            found.append(p)
        elif any(c in str(item) for c in "*?["):
            matches = sorted((Path(m) for m in glob.glob(str(item)) if Path(m).is_file()), key=_natural_key)
            if not matches:
                raise FileNotFoundError(f"{item}: no files match this pattern")
            found.extend(matches)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


# --------------------------------------------------------------------------- records


def detect_format(features: dict[str, Any], where: str = "record") -> str:
    """Which published layout a decoded record has: from its ``image`` bytes and their length.

    Example:
        >>> detect_format({"image": [b"\\xff\\xd8\\xff\\xe0"], "heatmap": [b""], "label": [0]})
        'harmonization'
    """
    image = features.get("image")
    if not isinstance(image, list) or len(image) != 1:
        raise ClickMeFormatError(f"{where}: no single bytes feature 'image' (features: {sorted(features)})")
    data = image[0]
    if data.startswith(_ENCODED_MAGIC):
        return "harmonization"
    fmt = _RAW_BY_BYTES.get(len(data))
    if fmt is None:
        raise ClickMeFormatError(
            f"{where}: 'image' is {len(data)} bytes: neither JPEG/PNG nor raw float32 "
            f"256x256x3 ({256 * 256 * 12} bytes) or 224x224x3 ({224 * 224 * 12} bytes)"
        )
    return fmt


def _where(path: Path | str, index: int) -> str:
    return f"{path}: record {index}"


def _bytes_feature(features: dict[str, Any], name: str, where: str) -> bytes:
    v = features.get(name)
    if not isinstance(v, list) or len(v) != 1:
        raise ClickMeFormatError(f"{where}: missing or malformed bytes feature {name!r} (features: {sorted(features)})")
    return v[0]


def _int_feature(features: dict[str, Any], name: str, where: str, required: bool = True) -> int | None:
    v = features.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, np.ndarray) or v.dtype != np.int64 or v.size < 1:
        raise ClickMeFormatError(f"{where}: missing or malformed int64 feature {name!r}")
    return int(v[0])


_JPEG_MAGIC = b"\xff\xd8\xff"
_tv_decode_jpeg: Any = None


def _torchvision_jpeg(data: bytes, channels: int) -> torch.Tensor | None:
    """libjpeg-turbo through ``torchvision.io.decode_jpeg`` (about 1.2x PIL's speed on these
    256 x 256 JPEGs, same pixels: both use libjpeg-turbo's defaults), as H x W x C uint8;
    None when it cannot give what PIL would (errors, CMYK, colour where grey is expected),
    so that PIL decides, and words the error."""
    global _tv_decode_jpeg
    if _tv_decode_jpeg is None:
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError:  # pragma: no cover - torchvision is a dependency
            _tv_decode_jpeg = False
            return None
        _tv_decode_jpeg = lambda t: decode_jpeg(t, mode=ImageReadMode.UNCHANGED)  # noqa: E731
    if _tv_decode_jpeg is False:
        return None
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs (for torchcodec) and warns on
            # every call; if they go away, the import above fails and PIL does the work.
            warnings.simplefilter("ignore", DeprecationWarning)
            out = _tv_decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError:
        return None
    c = out.shape[0]
    if c == channels:
        return out.permute(1, 2, 0)
    if c == 1 and channels == 3:  # greyscale image: PIL's convert("RGB") repeats the grey level
        return out.permute(1, 2, 0).expand(-1, -1, 3)
    return None


def _decode_encoded(data: bytes, where: str, what: str, channels: int) -> torch.Tensor:
    """JPEG/PNG bytes -> uint8 tensor H x W x C (C = 3 for images, 1 for heatmaps).

    JPEGs go through torchvision's libjpeg-turbo decoder, everything else (PNG, JPEGs it
    declines) through PIL; both decode with libjpeg-turbo's defaults (accurate integer IDCT,
    fancy upsampling), as TensorFlow's decode_jpeg does by default (tests check that the
    two give identical pixels). For PIL, ``tobytes`` + ``frombuffer`` skips the slower
    numpy array-interface route.
    """
    if data.startswith(_JPEG_MAGIC):
        out = _torchvision_jpeg(data, channels)
        if out is not None:
            return out
    try:
        with Image.open(io.BytesIO(data)) as im:
            if channels == 3 and im.mode != "RGB":
                im = im.convert("RGB")
            im.load()
            bands = len(im.getbands())
            if bands != channels:
                # the release reshapes the decoded heatmap to H x W x 1: a colour map fails there too
                raise ClickMeFormatError(f"{where}: {what} has {bands} channels, expected {channels}")
            w, h = im.size
            raw = bytearray(im.tobytes())
    except ClickMeFormatError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise ClickMeFormatError(f"{where}: cannot decode {what} ({e})") from None
    return torch.frombuffer(raw, dtype=torch.uint8).view(h, w, channels)


def _decode_raw(data: bytes, side: int, channels: int, where: str, what: str) -> np.ndarray:
    expected = side * side * channels * 4
    if len(data) != expected:
        raise ClickMeFormatError(
            f"{where}: raw {what} is {len(data)} bytes, expected {expected} (float32 {side}x{side}x{channels})"
        )
    arr = np.frombuffer(data, dtype="<f4").reshape((side, side, channels) if channels > 1 else (side, side))
    if not np.isfinite(arr).all():
        raise ClickMeFormatError(f"{where}: raw {what} contains NaN or infinite values")
    return arr


def decode_clickme(
    features: dict[str, Any], fmt: str, preprocess: ClickMePreprocess, where: str, output: str = "float32"
) -> dict[str, Any]:
    """Decoded Example features of one record -> item dict (without ``id``).

    ``output="uint8"`` (JPEG/PNG records only) skips the preprocessing: ``image`` is the
    decoded uint8 3 x H x W, ``map`` the uint8 H x W; :meth:`ClickMePreprocess.from_uint8`
    finishes whole batches later (on the device), to the same numbers.

    Example:
        >>> import numpy as np
        >>> from harmonia.data.convert import encode_harmonization_record
        >>> rec = encode_harmonization_record(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8), 3)
        >>> item = decode_clickme(decode_example(rec), "harmonization", ClickMePreprocess(), "x")
        >>> tuple(item["image"].shape), tuple(item["map"].shape), item["label"]
        ((3, 224, 224), (224, 224), 3)
    """
    image_bytes = _bytes_feature(features, "image", where)
    heatmap_bytes = _bytes_feature(features, "heatmap", where)
    label = _int_feature(features, "label", where)
    click_count = _int_feature(features, "click_count", where, required=False)
    if fmt == "harmonization":
        if not image_bytes.startswith(_ENCODED_MAGIC):
            raise ClickMeFormatError(f"{where}: 'image' is not JPEG/PNG but this file's first record was")
        image_u8 = _decode_encoded(image_bytes, where, "image", 3).permute(2, 0, 1)
        heatmap_u8 = _decode_encoded(heatmap_bytes, where, "heatmap", 1)[..., 0]
        if output == "uint8":
            if tuple(heatmap_u8.shape) != tuple(image_u8.shape[-2:]):
                raise ClickMeFormatError(f"{where}: heatmap is {tuple(heatmap_u8.shape)}, image is "
                                         f"{tuple(image_u8.shape[-2:])}; they must match")
            item = {"image": image_u8.contiguous(), "map": heatmap_u8.contiguous(), "label": label}
            if click_count is not None:
                item["click_count"] = click_count
            return item
        heatmap = heatmap_u8.float()
        # One pass each: HWC uint8 -> contiguous CHW float32 (contiguous items collate faster).
        image = torch.empty(image_u8.shape, dtype=torch.float32)
        if preprocess.image_size is None or tuple(image_u8.shape[-2:]) == (preprocess.image_size,) * 2:
            image = torch.div(image_u8, 255.0, out=image)  # no resize: convert and scale together
            scale = 1.0
        else:
            image.copy_(image_u8)  # 0..255 as the release; divided by 255 after the resize
            scale = 255.0
        clamp = False  # bilinear resizing cannot leave 0..255
    elif fmt in RAW_SIDE:
        if output == "uint8":
            raise ClickMeFormatError(f"{where}: output='uint8' needs JPEG/PNG records (harmonization layout); "
                                     f"{fmt} records are raw float32: read them with output='float32'")
        side = RAW_SIDE[fmt]
        img = _decode_raw(image_bytes, side, 3, where, "image")
        hm = _decode_raw(heatmap_bytes, side, 1, where, "heatmap")
        lo, hi = float(img.min()), float(img.max())
        if lo < -1e-3 or hi > 255.0 + 1e-3:
            raise ClickMeFormatError(f"{where}: image values span [{lo:g}, {hi:g}]; expected 0..1 or 0..255")
        scale, clamp = (255.0 if hi > 1.0 else 1.0), True
        image = torch.from_numpy(img.transpose(2, 0, 1).copy())
        heatmap = torch.from_numpy(hm.copy())
    else:
        raise ValueError(f"unknown ClickMe format {fmt!r} ({', '.join(FORMATS)})")
    if tuple(heatmap.shape) != tuple(image.shape[-2:]):
        raise ClickMeFormatError(
            f"{where}: heatmap is {tuple(heatmap.shape)}, image is {tuple(image.shape[-2:])}; they must match"
        )
    image = preprocess.image(image)  # a fresh tensor either way: safe to modify in place
    if scale != 1.0:
        image = image.div_(scale)
    if clamp:
        image = image.clamp_(0.0, 1.0)
    item: dict[str, Any] = {"image": image, "map": preprocess.heatmap(heatmap).contiguous(), "label": label}
    if click_count is not None:
        item["click_count"] = click_count
    return item


def _resolve_preprocess(preprocess: ClickMePreprocess | str | None, fmt: str) -> ClickMePreprocess:
    if preprocess is None or preprocess == "release":
        return release_preprocess(fmt)
    if preprocess == "none":
        return ClickMePreprocess.none()
    if isinstance(preprocess, ClickMePreprocess):
        return preprocess
    raise ValueError(f"preprocess must be a ClickMePreprocess, 'release', 'none' or None, got {preprocess!r}")


def _check_format_arg(format: str, output: str = "float32") -> None:
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")


def _finish_batch(batch: dict[str, Any], preprocess: ClickMePreprocess | str | None, output: str) -> dict[str, Any]:
    if output == "float32":
        return batch
    pre = _resolve_preprocess(preprocess, "harmonization")  # uint8 output: JPEG/PNG records only
    out = dict(batch)
    out["image"], out["map"] = pre.from_uint8(batch["image"], batch["map"])
    return out


def _config(preprocess: ClickMePreprocess | str | None, format: str, output: str) -> dict[str, Any]:
    config = {
        "format": "clickme",
        "clickme_format": format,
        "preprocess": preprocess.config() if isinstance(preprocess, ClickMePreprocess) else (preprocess or "release"),
    }
    if output != "float32":  # batched preprocessing agrees to ~1e-5, not bit for bit: its own key
        config["output"] = output
    return config


def _decode_example(data: bytes, where: str) -> dict[str, Any]:
    try:
        return decode_example(data)
    except ExampleDecodeError as e:
        raise ClickMeFormatError(f"{where}: not a valid tf.train.Example ({e})") from None


def iter_clickme_file(
    path: str | os.PathLike,
    preprocess: ClickMePreprocess | str | None = None,
    format: str = "auto",
    verify_crc: bool = True,
    start: int = 0,
    step: int = 1,
    output: str = "float32",
) -> Iterator[dict[str, Any]]:
    """Stream the items of one ClickMe file (records ``start, start + step, ...``).

    ``output``: "float32" (preprocessed) or "uint8" (decoded only; see :func:`decode_clickme`).

    Example:
        >>> import tempfile, numpy as np
        >>> from harmonia.data.convert import encode_harmonization_record
        >>> from harmonia.data.tfrecord import TFRecordWriter
        >>> path = Path(tempfile.mkdtemp()) / "val-0.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(encode_harmonization_record(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8), 7))
        >>> next(iter_clickme_file(path))["id"]
        'val-0-0'
    """
    _check_format_arg(format, output)
    path = Path(path)
    fmt = None if format == "auto" else format
    pre: ClickMePreprocess | None = None
    try:
        for index, data in iter_records(path, verify_crc=verify_crc, start=start, step=step):
            where = _where(path, index)
            features = _decode_example(data, where)
            if fmt is None:
                fmt = detect_format(features, where)
            if pre is None:
                pre = _resolve_preprocess(preprocess, fmt)
            item = decode_clickme(features, fmt, pre, where, output)
            item["id"] = f"{path.stem}-{index}"
            yield item
    except TFRecordError as e:
        raise ClickMeFormatError(str(e)) from None


def detect_file_format(path: str | os.PathLike, verify_crc: bool = True) -> str:
    """The layout of a ClickMe file, from its first record (no image decoding).

    Example:
        >>> import tempfile, numpy as np
        >>> from harmonia.data.convert import encode_harmonization_record
        >>> from harmonia.data.tfrecord import TFRecordWriter
        >>> path = Path(tempfile.mkdtemp()) / "val-0.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(encode_harmonization_record(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8), 7))
        >>> detect_file_format(path)
        'harmonization'
    """
    path = Path(path)
    try:
        for index, data in iter_records(path, verify_crc=verify_crc):
            return detect_format(_decode_example(data, _where(path, index)), _where(path, index))
    except TFRecordError as e:
        raise ClickMeFormatError(str(e)) from None
    raise ClickMeFormatError(f"{path}: empty file ({path.stat().st_size} bytes, no records): not a ClickMe shard "
                             "(an interrupted download or copy?)")


# --------------------------------------------------------------------------- datasets


def _check_unique_stems(shards: list[Path]) -> None:
    # ids are "{stem}-{index}": two shards with one stem (train/x-0, val/x-0) would collide
    seen: dict[str, Path] = {}
    for p in shards:
        if p.stem in seen:
            raise ValueError(f"{seen[p.stem]} and {p} have the same name {p.stem!r}: their record ids would collide")
        seen[p.stem] = p


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _split(files: list[Path], part: int, parts: int, start: int, step: int) -> tuple[list[Path], int, int]:
    """Give part ``part`` of ``parts`` whole files when there are enough, else every ``parts``-th record."""
    if parts == 1:
        return files, start, step
    if step == 1 and len(files) >= parts:
        return files[part::parts], 0, 1
    return files, start + part * step, step * parts


class ClickMeDataset(torch.utils.data.IterableDataset):
    """Stream ClickMe shards lazily, file by file, split across DataLoader workers and DDP ranks.

    ``paths``: a file, a folder of shards, a glob, or a list of those (sorted naturally).
    ``preprocess``: None / "release" (each format's release preprocessing), "none" (as
    stored, images scaled to [0, 1]) or a :class:`ClickMePreprocess` used for every file.
    ``format``: "auto" (per file, from its first record) or one of :data:`FORMATS`.
    Files are shared out whole when there are at least as many as consumers (ranks x
    workers), else records are strided. ``shuffle`` permutes the file order per epoch
    (seeded; call :meth:`set_epoch`). ``len()`` counts records from headers only.
    ``output="uint8"`` (JPEG/PNG shards): items carry the decoded uint8 image and map, a
    quarter of the bytes to collate and pass between processes; call :meth:`finish_batch`
    on each batch (after moving it to the device) for the preprocessed float32 tensors.

    Example:
        >>> import tempfile, numpy as np
        >>> from harmonia.data.convert import encode_harmonization_record
        >>> from harmonia.data.tfrecord import TFRecordWriter
        >>> path = Path(tempfile.mkdtemp()) / "val-0.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(encode_harmonization_record(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8), 7))
        >>> ds = ClickMeDataset(path.parent)
        >>> item = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
        >>> len(ds), item["id"], tuple(item["image"].shape), item["label"].tolist()
        (1, ['val-0-0'], (1, 3, 224, 224), [7])
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        preprocess: ClickMePreprocess | str | None = None,
        format: str = "auto",
        verify_crc: bool = True,
        shuffle: bool = False,
        seed: int = 0,
        output: str = "float32",
    ) -> None:
        super().__init__()
        _check_format_arg(format, output)
        _resolve_preprocess(preprocess, "harmonization")  # validate early
        self.output = output
        self.shards = list_shards(paths)
        _check_unique_stems(self.shards)
        self.preprocess = preprocess
        self.format = format
        self.verify_crc = verify_crc
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._counts: dict[Path, int] = {}

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (changes the shuffled file order)."""
        self.epoch = int(epoch)

    def _ordered_files(self) -> list[Path]:
        files = list(self.shards)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(files)
        return files

    def _rank_share(self) -> tuple[list[Path], int, int]:
        rank, world = _rank_world()
        return _split(self._ordered_files(), rank, world, 0, 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        files, start, step = self._rank_share()
        info = torch.utils.data.get_worker_info()
        if info is not None:
            files, start, step = _split(files, info.id, info.num_workers, start, step)
        for path in files:
            yield from iter_clickme_file(path, self.preprocess, self.format, self.verify_crc, start, step, self.output)

    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The preprocessing deferred to batches (``output="uint8"``), on the batch's device;
        the batch unchanged otherwise. Same numbers as the float32 items (to ~1e-5)."""
        return _finish_batch(batch, self.preprocess, self.output)

    def count(self, path: Path) -> int:
        if path not in self._counts:
            try:
                self._counts[path] = len(record_offsets(path, verify_crc=self.verify_crc))
            except TFRecordError as e:
                raise ClickMeFormatError(str(e)) from None
        return self._counts[path]

    def __len__(self) -> int:
        """Records this process (this DDP rank, all its workers) will yield."""
        files, start, step = self._rank_share()
        return sum(len(range(start, self.count(f), step)) for f in files)

    def files(self) -> Iterator[Path]:
        """Every file the content depends on (for content hashing)."""
        return iter(self.shards)

    def config(self) -> dict[str, Any]:
        """Reading settings that change what items look like (part of cache keys)."""
        return _config(self.preprocess, self.format, self.output)


class ClickMeIndexedDataset(torch.utils.data.Dataset):
    """Map-style (random access) view of ClickMe shards, for samplers, ``Subset`` and evaluation.

    Builds a record index from a header-only scan at construction (no decoding); items
    are read by seeking. Same items, ids and options as :class:`ClickMeDataset`.

    Example:
        >>> import tempfile, numpy as np
        >>> from harmonia.data.convert import encode_harmonization_record
        >>> from harmonia.data.tfrecord import TFRecordWriter
        >>> path = Path(tempfile.mkdtemp()) / "val-0.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(encode_harmonization_record(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8), 7))
        >>> ds = ClickMeIndexedDataset(path, preprocess="none")
        >>> len(ds), ds[0]["id"], tuple(ds[0]["map"].shape)
        (1, 'val-0-0', (256, 256))
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        preprocess: ClickMePreprocess | str | None = None,
        format: str = "auto",
        verify_crc: bool = True,
        output: str = "float32",
    ) -> None:
        _check_format_arg(format, output)
        _resolve_preprocess(preprocess, "harmonization")
        self.output = output
        self.shards = list_shards(paths)
        _check_unique_stems(self.shards)
        self.preprocess = preprocess
        self.format = format
        self.verify_crc = verify_crc
        self.offsets: list[list[int]] = []
        for f in self.shards:
            try:
                self.offsets.append(record_offsets(f, verify_crc=verify_crc))
            except TFRecordError as e:
                raise ClickMeFormatError(str(e)) from None
        self._starts = np.cumsum([0] + [len(o) for o in self.offsets]).tolist()
        self.root = Path(os.path.commonpath([str(f.resolve().parent) for f in self.shards]))
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        self._formats: dict[int, str] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def ids(self) -> list[str]:
        return [f"{f.stem}-{i}" for f, offs in zip(self.shards, self.offsets) for i in range(len(offs))]

    def _handle(self, k: int):
        if os.getpid() != self._pid:  # a forked DataLoader worker must not share file positions
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            self._handles[k] = open(self.shards[k], "rb")
        return self._handles[k]

    def _read(self, k: int, index: int) -> dict[str, Any]:
        path = self.shards[k]
        where = _where(path, index)
        try:
            data = read_record_at(
                self._handle(k), self.offsets[k][index], path=path, index=index, verify_crc=self.verify_crc
            )
        except TFRecordError as e:
            raise ClickMeFormatError(str(e)) from None
        return _decode_example(data, where)

    def _format(self, k: int) -> str:
        if self.format != "auto":
            return self.format
        if k not in self._formats:
            self._formats[k] = detect_format(self._read(k, 0), _where(self.shards[k], 0))
        return self._formats[k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} records")
        k = bisect.bisect_right(self._starts, i) - 1
        index = i - self._starts[k]
        fmt = self._format(k)
        item = decode_clickme(
            self._read(k, index), fmt, _resolve_preprocess(self.preprocess, fmt), _where(self.shards[k], index),
            self.output,
        )
        item["id"] = f"{self.shards[k].stem}-{index}"
        return item

    def config(self) -> dict[str, Any]:
        """Reading settings that change what items look like (part of cache keys)."""
        return _config(self.preprocess, self.format, self.output)

    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The preprocessing deferred to batches (``output="uint8"``), on the batch's device;
        the batch unchanged otherwise. Same numbers as the float32 items (to ~1e-5)."""
        return _finish_batch(batch, self.preprocess, self.output)

    def files(self) -> Iterator[Path]:
        """Every file the content depends on (for content hashing)."""
        return iter(self.shards)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open files do not pickle (spawned workers reopen them)
        return state

    def __del__(self) -> None:
        for h in getattr(self, "_handles", {}).values():
            try:
                h.close()
            except Exception:
                pass
