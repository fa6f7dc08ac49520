"""Convert between ClickMe TFRecord shards and harmonia's own dataset format.

* ClickMe shards (any of the three published layouts) -> harmonia format: images as PNG,
  maps as ``.npy``. With ``preprocess="release"`` (default) the stored items are exactly
  what :class:`~harmonia.data.clickme.ClickMeDataset` yields (224 x 224, blurred maps; the
  image is rounded to uint8 by PNG, at most 0.5/255 off), so evaluating the converted
  folder scores like the release. ``"none"`` stores the records as they are.
* harmonia format (or ClickMe shards) -> harmonization-style shards: JPEG image 256 x 256,
  JPEG heatmap 256 x 256 x 1 (the map scaled to 0..255), int64 label; the shards load in
  the release's loader. A synthetic source is marked with an extra int64 feature
  ``synthetic = 1`` (ignored by the release, read back by this converter).

Example:
    >>> import tempfile
    >>> from harmonia.data.tfrecord import TFRecordWriter
    >>> tmp = Path(tempfile.mkdtemp())
    >>> with TFRecordWriter(tmp / "val" / "val-0.tfrecords") as w:
    ...     w.write(encode_harmonization_record(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8), 5))
    >>> convert(tmp / "val", tmp / "data", to="harmonia").count
    1
    >>> [p.name for p in convert(tmp / "data", tmp / "shards", to="harmonization").files]
    ['val-0.tfrecords']
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harmonia.data.clickme import ClickMeDataset, ClickMeFormatError, detect_file_format, list_shards
from harmonia.data.clickme_preprocess import ClickMePreprocess
from harmonia.data.example import decode_example, encode_example
from harmonia.data.format import META_FILE, DatasetWriter, HarmoniaDataset
from harmonia.data.tfrecord import TFRecordError, TFRecordWriter, iter_records

TARGETS = ("harmonia", "harmonization")
HARMONIZATION_SIDE = 256
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- record encoders


def _jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_harmonization_record(
    image: np.ndarray, heatmap: np.ndarray, label: int, quality: int = 95, extra: dict[str, Any] | None = None
) -> bytes:
    """A harmonization-layout Example: JPEG ``image`` (uint8 H x W x 3), JPEG ``heatmap``
    (uint8 H x W), int64 ``label``.

    Example:
        >>> rec = encode_harmonization_record(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), 1)
        >>> sorted(decode_example(rec))
        ['heatmap', 'image', 'label']
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 H x W x 3, got {image.dtype} {image.shape}")
    if heatmap.dtype != np.uint8 or heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap must be uint8 H x W matching the image, got {heatmap.dtype} {heatmap.shape}")
    features: dict[str, Any] = {
        "image": _jpeg(image, quality),
        "heatmap": _jpeg(heatmap, quality),
        "label": ("int64", [int(label)]),
    }
    features.update(extra or {})
    return encode_example(features)


def encode_raw_record(
    image: np.ndarray, heatmap: np.ndarray, label: int, click_count: int | None = None
) -> bytes:
    """A raw-float layout Example (ClickMe 1.0 at 256, adversarial-alignment at 224):
    float32 H x W x 3 ``image`` and H x W ``heatmap`` as raw bytes, int64 ``label`` (and
    ``click_count``).

    Example:
        >>> rec = encode_raw_record(np.zeros((224, 224, 3), np.float32), np.zeros((224, 224), np.float32), 0)
        >>> len(decode_example(rec)["image"][0]) == 224 * 224 * 3 * 4
        True
    """
    img = np.ascontiguousarray(image, dtype="<f4")
    hm = np.ascontiguousarray(heatmap, dtype="<f4")
    if img.ndim != 3 or img.shape[2] != 3 or hm.shape[:2] != img.shape[:2]:
        raise ValueError(f"image must be H x W x 3 and heatmap H x W, got {img.shape} and {hm.shape}")
    features: dict[str, Any] = {"image": img.tobytes(), "heatmap": hm.tobytes(), "label": ("int64", [int(label)])}
    if click_count is not None:
        features["click_count"] = ("int64", [int(click_count)])
    return encode_example(features)


# --------------------------------------------------------------------------- conversion


@dataclass
class ConvertResult:
    """What a conversion wrote."""

    count: int
    out: Path
    target: str
    files: list[Path] = field(default_factory=list)
    synthetic: bool = False
    source_formats: list[str] = field(default_factory=list)


def _is_harmonia(path: Path) -> bool:
    return path.is_dir() and (path / META_FILE).is_file()


def _default_split(src: Path) -> str:
    name = src.name.lower()
    for split in ("train", "val", "test"):
        if split in name:
            return split
    return "test"


def _shards_synthetic(shards: list[Path]) -> bool:
    """True if any shard's first record carries the ``synthetic = 1`` mark of this converter."""
    for path in shards:
        try:
            for _, data in iter_records(path):
                flag = decode_example(data).get("synthetic")
                if isinstance(flag, np.ndarray) and flag.size and int(flag[0]) == 1:
                    return True
                break
        except TFRecordError as e:
            raise ClickMeFormatError(str(e)) from None
    return False


def _iterate(dataset: Any, num_workers: int) -> Iterator[dict[str, Any]]:
    if num_workers <= 0:
        if isinstance(dataset, torch.utils.data.IterableDataset):
            yield from dataset
        else:
            yield from (dataset[i] for i in range(len(dataset)))
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
    yield from loader


def _map_to_u8(m: torch.Tensor) -> np.ndarray:
    m = m.float()
    m = m - min(float(m.min()), 0.0)
    top = float(m.max())
    if top > 0:
        m = m * (255.0 / top)
    return m.round().clamp(0, 255).to(torch.uint8).numpy()


def _resize_for_shard(t: torch.Tensor, side: int) -> torch.Tensor:
    if tuple(t.shape[-2:]) == (side, side):
        return t
    x = t[None] if t.ndim == 3 else t[None, None]
    # antialias: a clean down-sampling for storage (reading follows the release, not this)
    x = F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return x[0] if t.ndim == 3 else x[0, 0]


def _write_shards(
    items: Iterable[dict[str, Any]],
    out: Path,
    prefix: str,
    shard_size: int,
    side: int,
    quality: int,
    synthetic: bool,
    total: int,
    progress: Progress | None,
    inputs: Iterable[Path] = (),
) -> tuple[int, list[Path]]:
    """Write ``{prefix}-{i}.tfrecords`` into ``out``: all of them appear at the end, or none.

    Shards are written into ``OUT/.{prefix}.partial/`` (locked: a second writer refuses),
    then moved into place, and shards of an earlier conversion with that prefix that the
    new set does not replace are removed; a partial folder a killed run left is removed by
    the next one. Names that would replace an input or a file harmonia did not write are
    refused before anything is read.
    """
    import math
    import shutil
    import warnings

    from harmonia.data.format import partial_split_dir
    from harmonia.errors import HarmoniaWarning
    from harmonia.utils.io import OutputFolder
    from harmonia.utils.lock import PathLock

    pattern = re.compile(rf"^{re.escape(prefix)}-\d+\.tfrecords$")
    stale = sorted(p.name for p in out.iterdir() if pattern.match(p.name)) if out.is_dir() else []
    names = [f"{prefix}-{i}.tfrecords" for i in range(math.ceil(total / shard_size))]
    OutputFolder(out, inputs=inputs, option="OUT").claim(list(dict.fromkeys([*names, *stale])))
    stage = partial_split_dir(out, prefix)
    with PathLock(Path(f"{stage}.lock"), f"shards {prefix!r} in {out}"):
        if stage.exists():
            warnings.warn(f"{stage}: removing half-written shards left by an interrupted conversion",
                          HarmoniaWarning, stacklevel=3)
            shutil.rmtree(stage)
        written: list[str] = []
        writer: TFRecordWriter | None = None
        n = 0
        extra = {"synthetic": ("int64", [1])} if synthetic else None
        try:
            for item in items:
                if writer is None or writer.count >= shard_size:
                    if writer is not None:
                        writer.close()
                    writer = TFRecordWriter(stage / f"{prefix}-{len(written)}.tfrecords")
                    written.append(writer.path.name)
                image = _resize_for_shard(item["image"], side).clamp(0, 1)
                img_u8 = image.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
                hm_u8 = _map_to_u8(_resize_for_shard(item["map"], side))
                writer.write(encode_harmonization_record(img_u8, hm_u8, int(item["label"]), quality, extra))
                n += 1
                if progress:
                    progress(n, total)
            if writer is not None:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            shutil.rmtree(stage, ignore_errors=True)
            raise
        for name in written:
            os.replace(stage / name, out / name)
        for name in stale:
            if name not in written:
                (out / name).unlink(missing_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
    return n, [out / name for name in written]


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    to: str = "harmonia",
    split: str | None = None,
    preprocess: str | ClickMePreprocess | None = None,
    shard_size: int = 256,
    image_size: int = HARMONIZATION_SIDE,
    quality: int = 95,
    name: str | None = None,
    num_workers: int = 0,
    verify_crc: bool = True,
    progress: Progress | None = None,
) -> ConvertResult:
    """Convert ClickMe shards or a harmonia dataset into harmonia format or harmonization shards.

    ``src``: ClickMe shard file(s)/folder/glob, or a harmonia dataset folder.
    ``to``: "harmonia" (``out`` is the dataset folder, ``split`` the split to write,
    default guessed from the source name: train/val/test) or "harmonization" (``out`` is
    a folder of ``{split}-{i}.tfrecords`` shards of ``shard_size`` records).
    ``preprocess``: for ClickMe sources; default "release" when writing harmonia format
    and "none" when writing shards (the release's loader blurs at read time).

    Example:
        >>> convert("data/sim", "shards/", to="harmonization", split="test")   # doctest: +SKIP

    (a runnable example is in the module docstring)
    """
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    if shard_size < 1:
        raise ValueError("shard size must be >= 1")
    src_p, out_p = Path(src), Path(out)
    if _is_harmonia(src_p):
        if to == "harmonia":
            raise ValueError(f"{src_p}: already in harmonia format (use --to harmonization to write shards)")
        if preprocess not in (None, "none"):
            raise ValueError("--preprocess applies to ClickMe sources only; harmonia datasets are read as stored")
        ds = HarmoniaDataset(src_p, split=split)
        total = len(ds)
        if total == 0:
            raise ValueError(f"{src_p}: split {ds.split!r} has no images; nothing to convert")
        n, files = _write_shards(
            _iterate(ds, num_workers), out_p, split or ds.split, shard_size, image_size, quality,
            ds.info.synthetic, total, progress, inputs=[p for r in ds.records for p in (r.image, r.map)],
        )
        return ConvertResult(n, out_p, to, files, ds.info.synthetic, ["harmonia"])

    shards = list_shards(src_p if src_p.exists() else str(src))
    # Every file must hold records: a 0-byte "shard" is a broken copy, never an empty split.
    formats = sorted({detect_file_format(s, verify_crc=verify_crc) for s in shards})
    synthetic = _shards_synthetic(shards)
    if preprocess is None:
        preprocess = "release" if to == "harmonia" else "none"
    if to == "harmonization" and preprocess == "release":
        raise ValueError(
            "--preprocess release with --to harmonization would blur the maps twice "
            "(the release's loader blurs when reading); use --preprocess none"
        )
    ds_c = ClickMeDataset(shards, preprocess=preprocess, verify_crc=verify_crc)
    total = len(ds_c)
    split = split or _default_split(src_p)
    if to == "harmonization":
        n, files = _write_shards(
            _iterate(ds_c, num_workers), out_p, split, shard_size, image_size, quality, synthetic, total, progress,
            inputs=shards,
        )
        return ConvertResult(n, out_p, to, files, synthetic, formats)

    pre_desc = preprocess.config() if isinstance(preprocess, ClickMePreprocess) else preprocess
    n = 0
    with DatasetWriter(
        out_p,
        split,
        name=name or (src_p.name if src_p.exists() else "clickme"),
        synthetic=synthetic,
        description=f"Converted from ClickMe TFRecord shards ({', '.join(formats)}) by `harmonia data convert`.",
        extra={"source": "clickme", "clickme_formats": formats, "preprocess": pre_desc},
        inputs=shards,
    ) as writer:
        for item in _iterate(ds_c, num_workers):
            writer.add(_BAD_ID_CHARS.sub("_", item["id"]), item["image"], item["map"], int(item["label"]))
            n += 1
            if progress:
                progress(n, total)
    return ConvertResult(n, out_p, to, [out_p / split], synthetic, formats)
