"""Raw ClickMe clicks to human feature-importance maps (the ClickMe 2.0 processing pipeline).

A *click table* has one row per trial: the image shown, the participant, the lists of
click x (column) and y (row) coordinates in the image's native pixels, the participant's
catch-trial accuracy and whether they played on a phone. Processing, vectorised across
trials (no Python loop over clicks or trials):

1. filters, in this order, each counted in a :class:`FilterReport`: image unknown
   (no size / file), catch accuracy < ``min_catch_accuracy`` (missing counts as failing),
   mobile trials, repeated (user, image) pairs (the first is kept), trials with
   <= ``min_clicks`` clicks; then each trial is trimmed to its first ``max_clicks`` clicks;
2. geometry: the image is resized (``resize``: short side, as torchvision's ``resize(int)``,
   or an exact (H, W)) and centre-cropped (``crop``); each click is moved to the resized
   pixel grid (nearest pixel centre) instead of building native-size maps and resizing
   them, which keeps counts exact and memory small; out-of-bounds clicks are dropped;
3. images with fewer than ``min_subjects`` trials are dropped;
4. the image map is the mean of its trials' count maps on the resized grid, blurred
   (disk twice by default, with :func:`~harmonia.humans.blur.native_blur_size` of the
   resized short side, i.e. 21 at 256: the native-size rule expressed on the output grid),
   then centre-cropped (blur before crop, so clicks near the crop edge still count).

What is kept per subject (``ClickMaps.subjects(i)``, the dataset's ``subjects/ID.npy``):
each valid trial's **raw, unblurred click-count map on the final (resized and cropped)
grid**, float32 S x H x W. The split-half ceiling (:mod:`harmonia.humans.ceiling`)
averages raw halves and then blurs them with the same kernel, which this layout allows;
``blur(mean(subjects))`` equals the stored map except within a kernel radius of the crop
border, where the stored map also saw clicks just outside the crop.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"image": ["a.png"] * 3, "user": ["u1", "u2", "u3"],
    ...                    "x": [[1, 2, 3]] * 3, "y": [[4, 5, 6]] * 3,
    ...                    "catch_accuracy": [1.0, 1.0, 0.5], "is_mobile": [False] * 3})
    >>> cm = process_clicks(ClickTable.from_frame(df), {"a.png": (8, 8)},
    ...                     ClickFilter(min_clicks=0, min_subjects=2), resize=None, crop=None, blur_size=3)
    >>> cm.ids, cm.subjects(0).shape, cm.report.dropped["catch accuracy"]
    (['a'], (2, 8, 8), 1)
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from harmonia.humans.blur import BLUR_METHODS, MAX_NATIVE_BLUR, blur_maps, native_blur_size
from harmonia.utils.device import resolve_device

# Canonical field -> accepted column names (first present wins; `columns=` overrides).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "file_pointer", "image_name"),
    "user": ("user", "user_id", "participant", "subject"),
    "x": ("x", "clicks_x", "click_x", "clickmap_x"),
    "y": ("y", "clicks_y", "click_y", "clickmap_y"),
    "catch": ("catch_accuracy", "user_catch_trial", "catch"),
    "mobile": ("is_mobile", "mobile"),
    "label": ("label",),
}
REQUIRED_FIELDS = ("image", "user", "x", "y")

Size = tuple[int, int]


# --------------------------------------------------------------------------------------
# Click tables
# --------------------------------------------------------------------------------------
@dataclass
class ClickTable:
    """Trials in columnar form; the clicks of trial i are ``x[offsets[i]:offsets[i+1]]``.

    ``catch`` is None when the table has no catch-accuracy column, ``mobile`` when it has
    no mobile flag, ``label`` when it has no label column.
    """

    image: np.ndarray  # (N,) object array of str
    user: np.ndarray  # (N,) object array of str
    x: np.ndarray  # (total clicks,) float64
    y: np.ndarray
    offsets: np.ndarray  # (N + 1,) int64
    catch: np.ndarray | None = None  # (N,) float64, NaN where unknown
    mobile: np.ndarray | None = None  # (N,) bool
    label: np.ndarray | None = None  # (N,) int64
    source: str = "<table>"

    def __len__(self) -> int:
        return len(self.image)

    @property
    def n_clicks(self) -> np.ndarray:
        """Clicks per trial (N,)."""
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray, max_clicks: int | None = None) -> "ClickTable":
        """Subset of trials (boolean mask or indices), optionally trimmed to ``max_clicks``."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64)
        lens = self.n_clicks[rows]
        if max_clicks is not None:
            lens = np.minimum(lens, max_clicks)
        idx = _ranges(self.offsets[rows], lens)
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return ClickTable(
            image=self.image[rows], user=self.user[rows], x=self.x[idx], y=self.y[idx],
            offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            catch=pick(self.catch), mobile=pick(self.mobile), label=pick(self.label), source=self.source,
        )

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, columns: Mapping[str, str] | None = None, source: str = "<frame>"
    ) -> "ClickTable":
        """Build from a DataFrame whose click cells are lists, arrays or strings like "[1, 2]".

        Example:
            >>> t = ClickTable.from_frame(pd.DataFrame({"image": ["a"], "user": ["u"], "x": ["[1, 2]"], "y": [[3, 4]]}))
            >>> len(t), t.n_clicks.tolist(), t.catch is None
            (1, [2], True)
        """
        names = _resolve_columns(list(df.columns), columns, source)
        xs, xl = _parse_lists(df[names["x"]].to_numpy(dtype=object), f"{source}: column {names['x']!r}")
        ys, yl = _parse_lists(df[names["y"]].to_numpy(dtype=object), f"{source}: column {names['y']!r}")
        return cls._assemble(df, names, xs, xl, ys, yl, source)

    @classmethod
    def _assemble(cls, df, names, xs, xl, ys, yl, source) -> "ClickTable":
        bad = np.flatnonzero(xl != yl)
        if bad.size:
            r = int(bad[0])
            raise ValueError(f"{source}: row {r}: {xl[r]} x coordinates but {yl[r]} y coordinates")
        image = df[names["image"]]
        if image.isna().any():
            raise ValueError(f"{source}: row {int(np.flatnonzero(image.isna().to_numpy())[0])}: empty image name")
        catch = mobile = label = None
        if "catch" in names:
            catch = pd.to_numeric(df[names["catch"]], errors="coerce").to_numpy(dtype=np.float64)
        if "mobile" in names:
            mobile = _to_bool(df[names["mobile"]], f"{source}: column {names['mobile']!r}")
        if "label" in names:
            lab = pd.to_numeric(df[names["label"]], errors="coerce")
            if lab.isna().any():
                raise ValueError(f"{source}: column {names['label']!r} has missing or non-integer labels")
            label = lab.to_numpy().astype(np.int64)
        return cls(
            image=image.astype(str).to_numpy(dtype=object),
            user=df[names["user"]].astype(str).to_numpy(dtype=object),
            x=xs, y=ys, offsets=np.concatenate([[0], np.cumsum(xl)]).astype(np.int64),
            catch=catch, mobile=mobile, label=label, source=source,
        )


def load_click_table(path: str | os.PathLike, columns: Mapping[str, str] | None = None) -> ClickTable:
    """Read a click table from CSV (click lists as strings "[1, 2, 3]") or parquet (list columns).

    Columns are found by name (see :data:`COLUMN_ALIASES`: image, user, x, y required;
    catch accuracy, mobile flag, label optional); ``columns`` maps a field to another
    name, e.g. ``{"image": "file", "x": "cx"}``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "clicks.csv"
        >>> _ = p.write_text('image,user,x,y\\na.png,u1,"[1, 2]","[3, 4]"\\n')
        >>> t = load_click_table(p); len(t), t.x.tolist()
        (1, [1.0, 2.0])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such click table")
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith(".parquet") or suffix.endswith(".pq"):
        return _load_parquet(path, columns)
    if suffix.endswith((".csv", ".csv.gz", ".tsv")):
        try:
            df = pd.read_csv(path, sep="\t" if ".tsv" in suffix else ",", dtype=str, keep_default_na=True)
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot parse as CSV ({e})") from e
        return ClickTable.from_frame(df, columns, source=str(path))
    raise ValueError(f"{path}: unknown click-table format (expected .csv, .tsv or .parquet)")


def _load_parquet(path: Path, columns: Mapping[str, str] | None) -> ClickTable:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: cannot read parquet ({e})") from e
    names = _resolve_columns(table.column_names, columns, str(path))
    parsed = []
    for key in ("x", "y"):
        col = table.column(names[key]).combine_chunks()
        where = f"{path}: column {names[key]!r}"
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            # Arrow already stores lists as flat values + offsets: no per-row work at all.
            lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
            flat = pc.list_flatten(col)
            if flat.null_count:
                raise ValueError(f"{where}: null click coordinates")
            vals = flat.to_numpy(zero_copy_only=False).astype(np.float64)
            parsed.append((vals, lens))
        else:
            parsed.append(_parse_lists(col.to_pandas().to_numpy(dtype=object), where))
    other = [names[k] for k in names if k not in ("x", "y")]
    df = table.select(other).to_pandas()
    (xs, xl), (ys, yl) = parsed
    return ClickTable._assemble(df, names, xs, xl, ys, yl, str(path))


def _resolve_columns(available: Sequence[str], columns: Mapping[str, str] | None, source: str) -> dict[str, str]:
    columns = dict(columns or {})
    unknown = set(columns) - set(COLUMN_ALIASES)
    if unknown:
        raise ValueError(f"unknown click-table field(s) {sorted(unknown)}; fields are {list(COLUMN_ALIASES)}")
    out: dict[str, str] = {}
    for key, aliases in COLUMN_ALIASES.items():
        if key in columns:
            if columns[key] not in available:
                raise ValueError(f"{source}: no column {columns[key]!r} (for {key}); columns are {list(available)}")
            out[key] = columns[key]
            continue
        found = next((a for a in aliases if a in available), None)
        if found is not None:
            out[key] = found
        elif key in REQUIRED_FIELDS:
            raise ValueError(
                f"{source}: no {key} column (looked for {', '.join(aliases)}); columns are {list(available)}; "
                f"name it with columns={{'{key}': NAME}} (CLI: --col {key}=NAME)"
            )
    return out


def _parse_lists(cells: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Cells holding lists / arrays / "[1, 2]" strings (missing = no clicks) -> flat values, lengths."""
    lists: list[Any] | None = None
    if all(isinstance(c, str) or _is_missing(c) for c in cells):
        texts = ["[]" if _is_missing(c) else c for c in cells]
        try:  # one JSON parse for the whole column: ~50x faster than a parse per row
            lists = json.loads("[" + ",".join(texts) + "]")
            if len(lists) != len(texts) or not all(isinstance(v, list) for v in lists):
                lists = None
        except (json.JSONDecodeError, RecursionError):
            lists = None
        if lists is None:
            lists = [_parse_one(t, where, r) for r, t in enumerate(texts)]
    else:
        lists = []
        for r, c in enumerate(cells):
            if _is_missing(c):
                lists.append([])
            elif isinstance(c, str):
                lists.append(_parse_one(c, where, r))
            else:
                lists.append(c)
    lens = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    try:
        flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.float64, count=int(lens.sum()))
    except (TypeError, ValueError):
        for r, v in enumerate(lists):
            try:
                np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: row {r}: click coordinates are not numbers: {str(v)[:60]}") from None
        raise
    if not np.isfinite(flat).all():
        r = int(np.searchsorted(np.cumsum(lens), np.flatnonzero(~np.isfinite(flat))[0], side="right"))
        raise ValueError(f"{where}: row {r}: NaN or infinite click coordinate")
    return flat, lens


def _parse_one(text: str, where: str, row: int) -> list:
    text = text.strip()
    if not text:
        return []
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        try:
            v = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{where}: row {row}: cannot read click list {text[:60]!r}") from None
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{where}: row {row}: expected a list of numbers, got {text[:60]!r}")
    return list(v)


def _is_missing(c: Any) -> bool:
    return c is None or (isinstance(c, float) and math.isnan(c)) or c is pd.NA


def _to_bool(col: pd.Series, where: str) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    text = col.astype(str).str.strip().str.lower()
    truthy = text.isin(["true", "1", "1.0", "yes", "t", "y"])
    falsy = text.isin(["false", "0", "0.0", "no", "f", "n", "", "nan", "none", "<na>"])
    bad = ~(truthy | falsy)
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{where}: row {r}: {col.iloc[r]!r} is not a true/false value")
    return truthy.to_numpy()


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lens)
    return np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lens), lens) + np.arange(total, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Count maps
# --------------------------------------------------------------------------------------
def _count_maps(subject: np.ndarray, flat: np.ndarray, n_subjects: int, size: Size) -> np.ndarray:
    h, w = size
    counts = np.bincount(subject.astype(np.int64) * (h * w) + flat, minlength=n_subjects * h * w)
    return counts.astype(np.float32).reshape(n_subjects, h, w)


def subject_click_maps(
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    size: tuple[int, int],
    max_clicks: int | None = None,
) -> np.ndarray:
    """Per-subject click-count maps: float32 (S, H, W), +1 at each in-bounds click.

    ``xs[s]``, ``ys[s]``: subject s's click columns and rows (pixel indices; floats are
    floored). Clicks outside the H x W image are dropped; each subject keeps only its
    first ``max_clicks`` clicks. One ``bincount`` over all clicks, no Python loop over clicks.

    Example:
        >>> m = subject_click_maps([np.array([0, 1, 1, 9]), np.array([2])], [np.array([0, 0, 0, 0]), np.array([3])], (4, 4))
        >>> m.shape, m[0, 0].tolist(), m[1, 3, 2].item()
        ((2, 4, 4), [1.0, 2.0, 0.0, 0.0], 1.0)
    """
    h, w = int(size[0]), int(size[1])
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x lists but {len(ys)} y lists")
    lens = np.array([len(x) for x in xs], dtype=np.int64)
    if any(len(x) != len(y) for x, y in zip(xs, ys)):
        raise ValueError("each subject needs as many x as y coordinates")
    keep = lens if max_clicks is None else np.minimum(lens, max_clicks)
    x = np.concatenate([np.asarray(a, dtype=np.float64)[:k] for a, k in zip(xs, keep)]) if len(xs) else np.zeros(0)
    y = np.concatenate([np.asarray(a, dtype=np.float64)[:k] for a, k in zip(ys, keep)]) if len(ys) else np.zeros(0)
    subj = np.repeat(np.arange(len(xs)), keep)
    col, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return _count_maps(subj[ok], row[ok] * w + col[ok], len(xs), (h, w))


# --------------------------------------------------------------------------------------
# Filters, geometry, processing
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClickFilter:
    """Trial and image filters of the pipeline (defaults: the public ClickMe 2.0 configs).

    Attributes:
        min_catch_accuracy: keep trials whose participant's catch-trial accuracy is >= this
            (None: no catch filter, needed when the table has no catch column).
        drop_mobile: drop trials played on a phone.
        drop_duplicates: keep only the first trial of each (user, image) pair.
        min_clicks: drop trials with **<=** this many clicks.
        max_clicks: keep the first ``max_clicks`` clicks of a trial (None: all).
        min_subjects: drop images with fewer valid trials (ImageNet val used 5).
    """

    min_catch_accuracy: float | None = 0.95
    drop_mobile: bool = True
    drop_duplicates: bool = True
    min_clicks: int = 10
    max_clicks: int | None = 75
    min_subjects: int = 5

    def __post_init__(self) -> None:
        if self.min_clicks < 0:
            raise ValueError("min_clicks must be >= 0")
        if self.max_clicks is not None and self.max_clicks < 1:
            raise ValueError("max_clicks must be >= 1 (or None)")
        if self.min_subjects < 1:
            raise ValueError("min_subjects must be >= 1")


@dataclass
class FilterReport:
    """How many trials (and images) each step removed, in pipeline order."""

    trials_in: int
    images_in: int
    dropped: dict[str, int] = field(default_factory=dict)  # step -> trials dropped
    trials_trimmed: int = 0  # trials cut to max_clicks
    clicks_out_of_bounds: int = 0
    images_dropped: int = 0  # images below min_subjects
    trials_out: int = 0
    images_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, one line per step."""
        out = [f"{self.trials_in} trials on {self.images_in} images"]
        out += [f"  - {n} trials: {step}" for step, n in self.dropped.items()]
        out.append(f"  {self.trials_trimmed} trials trimmed to max_clicks; {self.clicks_out_of_bounds} clicks out of bounds")
        out.append(f"  {self.images_dropped} images below min_subjects")
        out.append(f"= {self.trials_out} trials on {self.images_out} images")
        return out


@dataclass(frozen=True)
class Geometry:
    """Native size -> resized size -> centre crop (top, left, out size)."""

    native: Size
    resized: Size
    top: int
    left: int
    out: Size


def _geometry_arrays(h0: np.ndarray, w0: np.ndarray, resize: int | Size | None, crop: int | Size | None):
    h0, w0 = np.asarray(h0, np.int64), np.asarray(w0, np.int64)
    if resize is None:
        h1, w1 = h0.copy(), w0.copy()
    elif isinstance(resize, (int, np.integer)):
        # torchvision resize(int): short side -> resize, long side int(resize * long / short).
        short = np.minimum(h0, w0)
        h1 = np.where(h0 <= w0, resize, (resize * h0 / short).astype(np.int64))
        w1 = np.where(w0 <= h0, resize, (resize * w0 / short).astype(np.int64))
    else:
        h1, w1 = np.full_like(h0, int(resize[0])), np.full_like(w0, int(resize[1]))
    if crop is None:
        return h1, w1, np.zeros_like(h1), np.zeros_like(w1), h1.copy(), w1.copy()
    ch, cw = (int(crop), int(crop)) if isinstance(crop, (int, np.integer)) else (int(crop[0]), int(crop[1]))
    if (h1 < ch).any() or (w1 < cw).any():
        raise ValueError(f"crop {ch}x{cw} is larger than a resized image ({int(h1.min())}x{int(w1.min())}); lower --crop or raise --resize")
    top = np.round((h1 - ch) / 2.0).astype(np.int64)  # torchvision centre_crop rounding
    left = np.round((w1 - cw) / 2.0).astype(np.int64)
    return h1, w1, top, left, np.full_like(h1, ch), np.full_like(w1, cw)


def geometry(native: Size, resize: int | Size | None = 256, crop: int | Size | None = 224) -> Geometry:
    """Where an image of size ``native`` (H, W) ends up after resize and centre crop.

    Example:
        >>> geometry((375, 500))
        Geometry(native=(375, 500), resized=(256, 341), top=16, left=58, out=(224, 224))
    """
    if resize is not None and not isinstance(resize, (int, np.integer)) and len(resize) != 2:
        raise ValueError("resize must be an int (short side), (H, W) or None")
    h1, w1, top, left, hc, wc = _geometry_arrays(np.array([native[0]]), np.array([native[1]]), resize, crop)
    return Geometry((int(native[0]), int(native[1])), (int(h1[0]), int(w1[0])), int(top[0]), int(left[0]), (int(hc[0]), int(wc[0])))


def default_blur_size(method: str, short_side: int) -> int:
    """Kernel size for a grid whose short side is ``short_side``: disk 21 and Gaussian 22
    at 256 (the pipeline's two settings), scaled with the short side (disk: forced odd)."""
    if method == "gaussian":
        return max(1, min(int(round(22 * short_side / 256)), MAX_NATIVE_BLUR))
    return native_blur_size(short_side)


@dataclass
class ClickMaps:
    """Output of :func:`process_clicks`, one entry per kept image (sorted by image name).

    ``maps[i]``: float32 H x W, blur(mean of the subjects' count maps) on the resized grid,
    then cropped. ``subjects(i)``: float32 S x H x W raw (unblurred) count maps on the final
    grid, built on demand from the stored clicks (see the module docstring).
    """

    ids: list[str]
    names: list[str]  # image names as in the table
    labels: list[int]  # -1 where the table has no label column
    maps: list[np.ndarray]
    n_subjects: list[int]
    report: FilterReport
    settings: dict[str, Any]
    subject_clicks: list[tuple[np.ndarray, np.ndarray]] = field(repr=False, default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subjects(self, i: int) -> np.ndarray:
        """Raw per-subject count maps of image i, float32 (S, H, W) on the final grid."""
        subj, flat = self.subject_clicks[i]
        return _count_maps(subj, flat, self.n_subjects[i], self.maps[i].shape)


@dataclass
class _Item:
    id: str
    name: str
    label: int
    map: np.ndarray
    n_subjects: int
    subject_clicks: tuple[np.ndarray, np.ndarray]
    native: Size


def image_id(name: str) -> str:
    """A dataset id for an image name/path: extension dropped, '/' -> '__', other odd characters -> '_'.

    Example:
        >>> image_id("n01440764/ILSVRC2012_val_00000293.JPEG"), image_id("cat photo (1).png")
        ('n01440764__ILSVRC2012_val_00000293', 'cat_photo__1_')
    """
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name.strip().replace("\\", "/").lstrip("/"))
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem.replace("/", "__")) or "_"


def _settings(filt: ClickFilter, blur: str, blur_size: int | None, sigma: float | None, resize, crop) -> dict[str, Any]:
    return {
        "filter": asdict(filt), "blur": blur, "blur_size": blur_size, "sigma": sigma,
        "resize": list(resize) if isinstance(resize, tuple) else resize,
        "crop": list(crop) if isinstance(crop, tuple) else crop,
    }


def _iter_processed(
    table: ClickTable,
    image_sizes: Mapping[str, Size] | Size,
    filt: ClickFilter,
    blur: str,
    blur_size: int | None,
    sigma: float | None,
    resize: int | Size | None,
    crop: int | Size | None,
    report: FilterReport,
    batch: int = 128,
    device: str | torch.device | None = None,
) -> Iterator[_Item]:
    """The pipeline, yielding images one by one (fills ``report`` before the first)."""
    if blur not in BLUR_METHODS:
        raise ValueError(f"blur must be one of {BLUR_METHODS}, got {blur!r}")
    n = len(table)
    keep = np.ones(n, dtype=bool)

    def drop(step: str, bad: np.ndarray) -> None:
        report.dropped[step] = int((keep & bad).sum())
        keep[bad] = False

    if isinstance(image_sizes, Mapping):
        known = np.fromiter((name in image_sizes for name in table.image), dtype=bool, count=n)
    else:
        known = np.ones(n, dtype=bool)
    drop("image unknown or missing", ~known)
    if filt.min_catch_accuracy is not None:
        if table.catch is None:
            raise ValueError(f"{table.source}: no catch-accuracy column; map one or disable the filter (--min-catch none)")
        drop("catch accuracy", ~(table.catch >= filt.min_catch_accuracy))  # NaN fails
    if filt.drop_mobile:
        if table.mobile is None:
            raise ValueError(f"{table.source}: no mobile column; map one or keep mobile trials (--keep-mobile)")
        drop("mobile", table.mobile)
    if filt.drop_duplicates:
        rows = np.flatnonzero(keep)
        dup = pd.DataFrame({"u": table.user[rows], "i": table.image[rows]}).duplicated(keep="first").to_numpy()
        bad = np.zeros(n, dtype=bool)
        bad[rows[dup]] = True
        drop("duplicate (user, image)", bad)
    drop(f"<= {filt.min_clicks} clicks", table.n_clicks <= filt.min_clicks)

    kept = table.take(keep, max_clicks=filt.max_clicks)
    report.trials_trimmed = 0 if filt.max_clicks is None else int((table.n_clicks[keep] > filt.max_clicks).sum())
    names, trial_img = np.unique(kept.image.astype(str), return_inverse=True) if len(kept) else (np.array([], dtype=str), np.zeros(0, np.int64))
    counts = np.bincount(trial_img, minlength=len(names))
    big = counts >= filt.min_subjects
    report.images_dropped = int((~big).sum())
    report.dropped["image below min_subjects"] = int(counts[~big].sum())

    # Only images with enough subjects go on; trials sorted by image (stable: table order within).
    img_keep = np.flatnonzero(big)
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[img_keep] = np.arange(len(img_keep))
    trial_new = remap[trial_img]
    order = np.argsort(trial_new, kind="stable")
    order = order[trial_new[order] >= 0]
    kept = kept.take(order)
    t_img = trial_new[order]
    names = names[img_keep]
    n_img = len(names)
    counts = np.bincount(t_img, minlength=n_img)
    report.trials_out, report.images_out = int(len(kept)), int(n_img)
    if n_img == 0:
        return

    # Geometry per image, then per click.
    if isinstance(image_sizes, Mapping):
        hw = np.array([image_sizes[nm] for nm in names], dtype=np.int64).reshape(-1, 2)
    else:
        hw = np.tile(np.array(image_sizes, dtype=np.int64), (n_img, 1))
    h0, w0 = hw[:, 0], hw[:, 1]
    h1, w1, top, left, hc, wc = _geometry_arrays(h0, w0, resize, crop)
    first_trial = np.concatenate([[0], np.cumsum(counts)])
    subj_of_trial = np.arange(len(kept)) - first_trial[t_img]
    nclk = kept.n_clicks
    c_img = np.repeat(t_img, nclk)
    c_subj = np.repeat(subj_of_trial, nclk)
    col0, row0 = np.floor(kept.x).astype(np.int64), np.floor(kept.y).astype(np.int64)
    inb = (col0 >= 0) & (col0 < w0[c_img]) & (row0 >= 0) & (row0 < h0[c_img])
    report.clicks_out_of_bounds = int((~inb).sum())
    c_img, c_subj, col0, row0 = c_img[inb], c_subj[inb], col0[inb], row0[inb]
    # Pixel centre (c + 0.5) scaled to the resized grid, floored: nearest resized pixel.
    col1 = np.minimum(((col0 + 0.5) * (w1[c_img] / w0[c_img])).astype(np.int64), w1[c_img] - 1)
    row1 = np.minimum(((row0 + 0.5) * (h1[c_img] / h0[c_img])).astype(np.int64), h1[c_img] - 1)
    colc, rowc = col1 - left[c_img], row1 - top[c_img]
    incrop = (colc >= 0) & (colc < wc[c_img]) & (rowc >= 0) & (rowc < hc[c_img])
    click_start = np.searchsorted(c_img, np.arange(n_img + 1))  # clicks stay grouped by image

    labels = np.full(n_img, -1, dtype=np.int64)
    if kept.label is not None:
        labels = kept.label[first_trial[:-1]]
    dev = resolve_device(device) if device is not None else torch.device("cpu")

    for b0 in range(0, n_img, batch):
        imgs = np.arange(b0, min(b0 + batch, n_img))
        shapes = {}
        for i in imgs:
            shapes.setdefault((int(h1[i]), int(w1[i])), []).append(int(i))
        out: dict[int, np.ndarray] = {}
        for (H, W), group in shapes.items():
            g = np.asarray(group)
            sl = _ranges(click_start[g], click_start[g + 1] - click_start[g])
            local = np.repeat(np.arange(len(g)), click_start[g + 1] - click_start[g])
            # Mean of the subjects' count maps = each click weighted by 1 / S.
            mean = np.bincount(local * (H * W) + row1[sl] * W + col1[sl], weights=1.0 / counts[c_img[sl]], minlength=len(g) * H * W)
            maps = torch.from_numpy(mean.reshape(len(g), H, W)).to(dev)
            size = blur_size if blur_size is not None else default_blur_size(blur, min(H, W))
            maps = blur_maps(maps, blur, size, sigma).float().cpu().numpy()
            for j, i in enumerate(g):
                t, l = int(top[i]), int(left[i])
                out[int(i)] = np.ascontiguousarray(maps[j, t : t + int(hc[i]), l : l + int(wc[i])])
        for i in imgs:
            sl = slice(click_start[i], click_start[i + 1])
            m = incrop[sl]
            flat = (rowc[sl][m] * wc[i] + colc[sl][m]).astype(np.int64)
            yield _Item(
                id=image_id(str(names[i])), name=str(names[i]), label=int(labels[i]), map=out[int(i)],
                n_subjects=int(counts[i]), subject_clicks=(c_subj[sl][m].astype(np.int32), flat),
                native=(int(h0[i]), int(w0[i])),
            )


def process_clicks(
    table: ClickTable | pd.DataFrame | str | os.PathLike,
    image_sizes: Mapping[str, tuple[int, int]] | tuple[int, int],
    filter: ClickFilter | None = None,
    blur: str = "disk",
    resize: int | tuple[int, int] | None = 256,
    crop: int | tuple[int, int] | None = 224,
    *,
    blur_size: int | None = None,
    sigma: float | None = None,
    device: str | torch.device | None = None,
) -> ClickMaps:
    """Run the click pipeline (see the module docstring) and keep every image in memory.

    Args:
        table: a :class:`ClickTable`, a DataFrame, or a CSV/parquet path.
        image_sizes: image name -> native (H, W), or one (H, W) for all; trials on images
            not in the mapping are dropped (counted in the report).
        filter: :class:`ClickFilter` (default: the public ClickMe 2.0 settings).
        blur: "disk" (twice), "gaussian" or "none".
        resize: short side after resizing (int), exact (H, W), or None for native size.
        crop: centre-crop size (int or (H, W)), or None.
        blur_size: kernel size; default :func:`default_blur_size` of the resized short side
            (disk 21 at 256).
        sigma: Gaussian sigma (default sqrt(size)).
        device: where to blur (e.g. "cuda"); default CPU.

    Example:
        >>> df = pd.DataFrame({"image": ["a", "a"], "user": ["u1", "u2"], "x": [[0, 5]] * 2, "y": [[0, 5]] * 2})
        >>> f = ClickFilter(min_catch_accuracy=None, drop_mobile=False, min_clicks=0, min_subjects=2)
        >>> cm = process_clicks(df, (10, 10), f, resize=None, crop=None, blur="none")
        >>> float(cm.maps[0][5, 5]), cm.subjects(0)[:, 5, 5].tolist()
        (1.0, [1.0, 1.0])
    """
    filt = filter or ClickFilter()
    if isinstance(table, pd.DataFrame):
        table = ClickTable.from_frame(table)
    elif not isinstance(table, ClickTable):
        table = load_click_table(table)
    report = FilterReport(trials_in=len(table), images_in=int(len(np.unique(table.image.astype(str)))) if len(table) else 0)
    items = list(_iter_processed(table, image_sizes, filt, blur, blur_size, sigma, resize, crop, report, device=device))
    _check_unique_ids(items)
    return ClickMaps(
        ids=[it.id for it in items], names=[it.name for it in items], labels=[it.label for it in items],
        maps=[it.map for it in items], n_subjects=[it.n_subjects for it in items], report=report,
        settings=_settings(filt, blur, blur_size, sigma, resize, crop),
        subject_clicks=[it.subject_clicks for it in items],
    )


def _check_unique_ids(items: Sequence[_Item]) -> None:
    seen: dict[str, str] = {}
    for it in items:
        if it.id in seen:
            raise ValueError(f"images {seen[it.id]!r} and {it.name!r} both map to dataset id {it.id!r}; rename one")
        seen[it.id] = it.name


# --------------------------------------------------------------------------------------
# Writing a harmonia dataset
# --------------------------------------------------------------------------------------
def _find_image(images_dir: Path, name: str) -> Path | None:
    p = Path(name)
    candidates = [p] if p.is_absolute() else []
    parts = Path(name.replace("\\", "/")).parts
    candidates += [images_dir / name, images_dir / Path(*parts[-2:]), images_dir / parts[-1]] if parts else []
    return next((c for c in candidates if c.is_file()), None)


def clicks_to_dataset(
    table: ClickTable | pd.DataFrame | str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "test",
    name: str | None = None,
    filter: ClickFilter | None = None,
    blur: str = "disk",
    blur_size: int | None = None,
    sigma: float | None = None,
    resize: int | tuple[int, int] | None = 256,
    crop: int | tuple[int, int] | None = 224,
    keep_subjects: bool = True,
    columns: Mapping[str, str] | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FilterReport:
    """Process a click table and write a harmonia dataset (real data: ``synthetic=False``).

    Images are looked up under ``images_dir`` by the table's image names (also by their
    last two path parts, then the file name); trials on images not found are dropped and
    counted. Each image is resized and cropped exactly as its clicks; ``maps/ID.npy`` is
    the blurred mean map, ``subjects/ID.npy`` the raw per-subject count maps (see module
    docstring). The processing settings and the filter report go to ``harmonia.json``
    (``extra.clicks``), and ``extra.subjects_blur`` tells ceilings which blur to use.

    Example:
        >>> clicks_to_dataset("clicks.csv", "images/", "data/clickme2")  # doctest: +SKIP
    """
    from PIL import Image

    from harmonia.data.format import DatasetWriter, load_image

    filt = filter or ClickFilter()
    if device is not None:
        resolve_device(device)  # an unusable device is an error before the table is read
    if isinstance(table, pd.DataFrame):
        table = ClickTable.from_frame(table, columns)
    elif not isinstance(table, ClickTable):
        table = load_click_table(table, columns)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: no such images folder")
    uniq = np.unique(table.image.astype(str)) if len(table) else np.array([], dtype=str)
    paths: dict[str, Path] = {}
    sizes: dict[str, Size] = {}
    for nm in uniq:
        p = _find_image(images_dir, str(nm))
        if p is None:
            continue
        try:
            with Image.open(p) as im:
                sizes[str(nm)] = (im.height, im.width)
        except OSError as e:
            raise ValueError(f"{p}: cannot read image ({e})") from e
        paths[str(nm)] = p
    if len(uniq) and not paths:
        raise FileNotFoundError(f"{images_dir}: none of the table's {len(uniq)} images found (e.g. {uniq[0]!r})")

    report = FilterReport(trials_in=len(table), images_in=len(uniq))
    items = _iter_processed(table, sizes, filt, blur, blur_size, sigma, resize, crop, report, device=device)
    first = next(items, None)  # runs the filters, so the report is complete from here on
    items = itertools.chain([first], items) if first is not None else iter(())
    if report.images_out == 0:
        raise ValueError(f"{table.source}: no image is left after filtering ({'; '.join(report.lines()[1:-1])})")

    blur_sizes = set()
    ids_seen: dict[str, str] = {}
    has_labels = table.label is not None
    extra = {
        "source": "clicks",
        "clicks": {"table": table.source, "settings": _settings(filt, blur, blur_size, sigma, resize, crop),
                   "report": report.to_dict()},
        "subjects": "raw per-trial click counts on the final grid (unblurred)",
        "labels": "from the click table" if has_labels else "unknown (-1)",
    }
    dataset_name = name or Path(str(table.source)).stem or "clicks"
    done = 0
    with DatasetWriter(out_dir, split, name=dataset_name, synthetic=False,
                       description=f"ClickMe-style maps from raw clicks ({table.source})", extra=extra,
                       inputs=[images_dir]) as writer:
        for it in items:
            if it.id in ids_seen:
                raise ValueError(f"images {ids_seen[it.id]!r} and {it.name!r} both map to dataset id {it.id!r}; rename one")
            ids_seen[it.id] = it.name
            g = geometry(it.native, resize, crop)
            blur_sizes.add(blur_size if blur_size is not None else default_blur_size(blur, min(g.resized)))
            img = load_image(paths[it.name])
            if tuple(img.shape[-2:]) != g.resized:
                img = torch.nn.functional.interpolate(img[None], size=g.resized, mode="bilinear", align_corners=False, antialias=True)[0]
            img = img[:, g.top : g.top + g.out[0], g.left : g.left + g.out[1]].clamp(0, 1)
            subj = _count_maps(*it.subject_clicks, it.n_subjects, it.map.shape) if keep_subjects else None
            writer.add(it.id, img, it.map, label=it.label, subjects=subj)
            done += 1
            if progress:
                progress(done, report.images_out)
        # A single kernel size is recorded; None means "default_blur_size of each image's grid".
        writer.info.extra["subjects_blur"] = {
            "method": blur, "size": blur_sizes.pop() if len(blur_sizes) == 1 else None, "sigma": sigma,
        }
    return report
