"""Human split-half ceiling and cross-image floor of per-subject maps.

For an image with n >= 2 subject maps (raw click counts, see :mod:`harmonia.humans.clicks`),
each of K repeats: shuffle the subjects; the first half is the first floor(n/2) of them,
the second half the rest; each half is bootstrapped to m = ceil(n/2) maps (drawn with
replacement), so both halves are equally noisy and for odd n the smaller one is brought
"back up to n/2"; each half is averaged, blurred (the maps' own kernel), optionally
centre-cropped, and the two are scored with the metric. The image's ceiling is the mean
over the K repeats (NaN repeats, e.g. a constant half, are skipped; all-NaN gives NaN);
the dataset ceiling is the mean over images, NaNs counted by :func:`harmonia.metrics.summarize`.

The floor is the same score with the second half taken from a random *other* image (a
new one each repeat): it is the alignment expected from "a generic human map". To batch
the work, images are processed in chunks of ``chunk_size`` drawn by a seeded shuffle, and
the other image is drawn from the same chunk; since chunks are a uniformly random
partition, the other image is still uniform over the whole dataset. Its half is built like
its own second half (bootstrapped to its own ceil(n_j/2)); if its maps have another size
they are resized to the image's.

K defaults to 10, the public pipeline's number of split-half iterations: with ~10+
subjects per image the K-average's standard error is well below the spread across images.
Everything is seeded: same data + settings + seed -> same numbers, in any chunk order.

Example:
    >>> import torch
    >>> blob = torch.zeros(6, 32, 32); blob[:, 10:20, 12:22] = 1.0
    >>> round(split_half_ceiling(blob, blur_size=5), 4)  # identical subjects
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harmonia.humans.blur import BLUR_METHODS, blur_maps
from harmonia.measurements.base import Batch, Measurement
from harmonia.metrics import Summary, dice_top, iou_top, spearman, summarize
from harmonia.settings import CeilingSettings
from harmonia.utils.device import resolve_device

DEFAULT_REPEATS = CeilingSettings.repeats
DEFAULT_CHUNK = CeilingSettings.chunk_size
# No recorded blur: the disk rule for the maps' own short side (21 at 256, 5 at 64).
DEFAULT_BLUR = {"method": "disk", "size": None, "sigma": None}

METRIC_FUNCS: dict[str, Callable[..., torch.Tensor]] = {
    "spearman": spearman,
    "dice": dice_top,
    "iou": iou_top,
}
_ALIASES = {"dice_top": "dice", "iou_top": "iou"}

Metric = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MapPreparation:
    """What evaluation does to a human map before scoring it, applied to both halves.

    Resize to ``size`` (as :class:`~harmonia.data.HarmoniaDataset` resizes its maps), then
    the scorer's Gaussian blur of ``blur_sigma`` px and average-pooling by ``downsample``
    (:func:`harmonia.metrics.prepare_maps`). Blurring and pooling make maps smoother and
    easier to agree on, for halves of human maps as for model maps, so alignment under
    these settings is only comparable to a ceiling computed with them.

    Example:
        >>> prep = MapPreparation(size=(32, 32), blur_sigma=2.0, downsample=4)
        >>> tuple(prep(torch.rand(3, 64, 64)).shape), prep.describe()
        ((3, 8, 8), '--size 32, --blur 2.0, --downsample 4')
    """

    size: tuple[int, int] | None = None
    blur_sigma: float | None = None
    downsample: int | None = None

    @classmethod
    def of(cls, dataset: Any, scorer: Any = None) -> "MapPreparation | None":
        """The preparation of ``dataset``'s maps by ``scorer`` (a MapScorer); None if it changes nothing."""
        size = getattr(dataset, "size", None)
        if size is not None and getattr(dataset, "records", None):
            from harmonia.data.format import load_map

            if tuple(load_map(dataset.records[0].map).shape) == tuple(size):
                size = None  # the native size: resizing is a no-op
        prep = cls(tuple(size) if size is not None else None, getattr(scorer, "blur_sigma", None),
                   getattr(scorer, "downsample", None))
        return None if prep == cls() else prep

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        from harmonia.data.format import _resize
        from harmonia.metrics import prepare_maps

        if self.size is not None:
            maps = _resize(maps, self.size)
        return prepare_maps(maps, self.blur_sigma, self.downsample)

    def config(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "blur_sigma": self.blur_sigma,
                "downsample": self.downsample}

    def describe(self) -> str:
        """The settings in the CLI's spelling, e.g. ``--blur 2.0``."""
        parts = [f"--size {self.size[0]}" if self.size and self.size[0] == self.size[1] else
                 (f"--size {self.size[0]}x{self.size[1]}" if self.size else ""),
                 f"--blur {self.blur_sigma}" if self.blur_sigma is not None else "",
                 f"--downsample {self.downsample}" if self.downsample is not None else ""]
        return ", ".join(p for p in parts if p)


@dataclass
class CeilingResult:
    """Per-image ceilings and floors, and their dataset summaries."""

    per_image: dict[str, float]
    per_image_floor: dict[str, float]
    n_subjects: dict[str, int]
    ceiling: Summary
    floor: Summary
    settings: dict[str, Any] = field(default_factory=dict)

    def aggregates(self) -> dict[str, Any]:
        """JSON-able summary (what the results store keeps for a ceiling run)."""
        return {"ceiling": self.ceiling.to_dict(), "floor": self.floor.to_dict(), "n_images": len(self.per_image),
                "settings": self.settings}


def resolve_metric(metric: Metric) -> tuple[str, Callable[..., torch.Tensor]]:
    """``"spearman"``, ``"dice"``/``"dice_top"``, ``"iou"``/``"iou_top"`` or a callable ``(a, b) -> (N,)``.

    Example:
        >>> resolve_metric("dice_top")[0]
        'dice'
    """
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    name = _ALIASES.get(str(metric), str(metric))
    if name not in METRIC_FUNCS:
        raise ValueError(f"unknown ceiling metric {metric!r}; valid: {', '.join(METRIC_FUNCS)}")
    return name, METRIC_FUNCS[name]


# --------------------------------------------------------------------------------------
# Core: halves, blur, score
# --------------------------------------------------------------------------------------
def _half_weights(n: int, repeats: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(K, n) averaging weights of the bootstrapped first and second halves."""
    if n < 2:
        raise ValueError(f"a split-half ceiling needs >= 2 subject maps per image, got {n}")
    m = (n + 1) // 2
    w1 = np.zeros((repeats, n))
    w2 = np.zeros((repeats, n))
    for k in range(repeats):
        perm = rng.permutation(n)
        first, second = perm[: n // 2], perm[n // 2 :]
        w1[k] = np.bincount(first[rng.integers(0, len(first), m)], minlength=n) / m
        w2[k] = np.bincount(second[rng.integers(0, len(second), m)], minlength=n) / m
    return w1, w2


def _center_crop(x: torch.Tensor, crop: int | tuple[int, int] | None) -> torch.Tensor:
    if crop is None:
        return x
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        raise ValueError(f"crop {ch}x{cw} is larger than the maps ({h}x{w})")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


def _blur_settings(blur: str, blur_size: int | None, shape: tuple[int, int]) -> tuple[str, int]:
    from harmonia.humans.clicks import default_blur_size

    return blur, int(blur_size) if blur_size is not None else default_blur_size(blur, min(shape))


def _blurred_halves(s: torch.Tensor, w1: np.ndarray, w2: np.ndarray, blur: str, blur_size: int | None,
                    sigma: float | None, crop) -> tuple[torch.Tensor, torch.Tensor]:
    """Blurred, cropped half means (K, h, w) x 2 of one image's subjects (n, H, W)."""
    n, k = s.shape[0], w1.shape[0]
    method, size = _blur_settings(blur, blur_size, tuple(s.shape[-2:]))
    w = torch.from_numpy(np.concatenate([w1, w2])).to(device=s.device, dtype=torch.float64)
    x = s.to(torch.float64)
    if n < 2 * k:
        # Averaging and blurring are both linear: blurring the n subject maps once and then
        # averaging costs n blurs instead of 2K (same numbers up to rounding).
        x = _center_crop(blur_maps(x, method, size, sigma), crop)
        halves = (w @ x.reshape(n, -1)).reshape(2 * k, *x.shape[1:])
    else:
        halves = (w @ x.reshape(n, -1)).reshape(2 * k, *x.shape[1:])
        halves = _center_crop(blur_maps(halves, method, size, sigma), crop)
    halves = halves.float()  # float32 like stored maps; also merges FFT-level near-ties
    return halves[:k], halves[k:]


def _chunk_scores(
    subjects: list[torch.Tensor],
    rng: np.random.Generator,
    repeats: int,
    metric_fn: Callable[..., torch.Tensor],
    blur: str,
    blur_size: int | None,
    sigma: float | None,
    crop,
    floor: bool,
    prepare: MapPreparation | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ceiling and floor (c,) of a chunk of images, each (S_i, H_i, W_i); floor NaN if c < 2."""
    c = len(subjects)
    a, b = [], []
    for s in subjects:
        # Half means as one matrix product: weights (2K, n) @ maps (n, H*W).
        h1, h2 = _blurred_halves(s, *_half_weights(s.shape[0], repeats, rng), blur, blur_size, sigma, crop)
        if prepare is not None:
            h1, h2 = prepare(h1), prepare(h2)
        a.append(h1)
        b.append(h2)
    ceil = _score(a, b, metric_fn, repeats)
    flo = np.full(c, math.nan)
    if floor and c >= 2:
        # Other image for each (image, repeat): uniform over the chunk's other images.
        donor = (np.arange(c)[:, None] + rng.integers(1, c, size=(c, repeats))) % c
        b_other = []
        for i in range(c):
            maps = []
            for k in range(repeats):
                m = b[donor[i, k]][k]
                if m.shape != a[i].shape[1:]:
                    m = F.interpolate(m[None, None], size=tuple(a[i].shape[1:]), mode="bilinear", align_corners=False)[0, 0]
                maps.append(m)
            b_other.append(torch.stack(maps))
        flo = _score(a, b_other, metric_fn, repeats)
    return ceil, flo


def _score(a: list[torch.Tensor], b: list[torch.Tensor], metric_fn, repeats: int) -> np.ndarray:
    """Per-image NaN-skipping mean over repeats of metric(a_i[k], b_i[k]); one metric call per shape."""
    out = np.full(len(a), math.nan)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(a):
        groups.setdefault(tuple(x.shape), []).append(i)
    for _, idx in groups.items():
        xa = torch.cat([a[i] for i in idx])
        xb = torch.cat([b[i] for i in idx])
        s = torch.as_tensor(metric_fn(xa, xb), dtype=torch.float64).reshape(len(idx), repeats).cpu().numpy()
        finite = ~np.isnan(s)
        cnt = finite.sum(1)
        means = np.where(cnt > 0, np.where(finite, s, 0.0).sum(1) / np.maximum(cnt, 1), math.nan)
        out[idx] = means
    return out


def split_half_ceiling(
    subjects: torch.Tensor | np.ndarray,
    metric: Metric = CeilingSettings.metric,
    repeats: int = DEFAULT_REPEATS,
    blur: str = "disk",
    blur_size: int | None = 21,
    sigma: float | None = None,
    crop: int | tuple[int, int] | None = None,
    seed: int | np.random.Generator = 0,
    device: str | torch.device | None = None,
) -> float:
    """Split-half ceiling of one image's subject maps (S, H, W): mean over ``repeats`` of
    metric(blur(mean of bootstrapped half 1), blur(mean of bootstrapped half 2)).

    ``blur_size=None`` picks the disk rule for the maps' short side; use ``blur="none"``
    for maps that are blurred already. ``crop`` removes the rim that the zero-padded blur
    darkens in both halves alike (which alone correlates them). ``seed`` may be a numpy Generator.

    Example:
        >>> g = np.random.default_rng(0)
        >>> noise = g.random((10, 24, 24)).astype(np.float32)  # independent subjects
        >>> abs(split_half_ceiling(noise, blur_size=3, crop=20, repeats=5)) < 0.3
        True
    """
    s = torch.as_tensor(np.asarray(subjects) if isinstance(subjects, np.ndarray) else subjects)
    if s.ndim != 3:
        raise ValueError(f"subjects must be S x H x W, got shape {tuple(s.shape)}")
    _check(blur, repeats)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if device is not None:
        s = s.to(resolve_device(device))
    _, fn = resolve_metric(metric)
    ceil, _ = _chunk_scores([s], rng, repeats, fn, blur, blur_size, sigma, crop, floor=False)
    return float(ceil[0])


def _check(blur: str, repeats: int) -> None:
    if blur not in BLUR_METHODS:
        raise ValueError(f"blur must be one of {BLUR_METHODS}, got {blur!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------
class _Source:
    """Ids and lazily loaded subject maps of a dataset, a mapping or a sequence of pairs."""

    def __init__(self, data: Any) -> None:
        self.info = getattr(data, "info", None)
        if hasattr(data, "records") and hasattr(data, "split_dir"):  # HarmoniaDataset
            from harmonia.data.format import load_map

            missing = [r.id for r in data.records if r.subjects is None]
            if missing:
                raise ValueError(f"{data.split_dir}: {len(missing)} images have no per-subject maps (e.g. {missing[0]!r})")
            recs = list(data.records)
            self.ids = [r.id for r in recs]
            self._load = lambda i: load_map(recs[i].subjects, ndim=3)
        elif isinstance(data, Mapping):
            self.ids = [str(k) for k in data]
            vals = list(data.values())
            self._load = lambda i: _as_maps(vals[i], self.ids[i])
        else:
            pairs = [(str(p["id"]), p["subjects"]) if isinstance(p, Mapping) else (str(p[0]), p[1]) for p in data]
            self.ids = [p[0] for p in pairs]
            self._load = lambda i: _as_maps(pairs[i][1], self.ids[i])
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("duplicate image ids")

    def load(self, i: int) -> torch.Tensor:
        return self._load(i)


def _as_maps(x: Any, id: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 3:
        raise ValueError(f"{id}: subject maps must be S x H x W, got shape {tuple(t.shape)}")
    return t


def blur_from_metadata(info: Any) -> dict[str, Any]:
    """Blur the dataset's maps were made with (``extra.subjects_blur``: method, size, sigma),
    else a disk whose size (None) follows :func:`~harmonia.humans.blur.native_blur_size`
    of the maps' short side.

    Example:
        >>> blur_from_metadata(None)
        {'method': 'disk', 'size': None, 'sigma': None}
    """
    extra = getattr(info, "extra", None) or {}
    rec = extra.get("subjects_blur")
    if not isinstance(rec, Mapping):
        return dict(DEFAULT_BLUR)
    out = {"method": rec.get("method", "disk"), "size": rec.get("size"), "sigma": rec.get("sigma")}
    if out["method"] not in BLUR_METHODS:
        raise ValueError(f"dataset metadata names an unknown blur {out['method']!r}")
    return out


def _resolve_blur(info: Any, blur: str | None, blur_size: int | None, sigma: float | None) -> tuple[str, int | None, float | None]:
    """Explicit settings win; otherwise the recorded ones (only if the method is the recorded one)."""
    rec = blur_from_metadata(info)
    method = blur or rec["method"]
    same = method == rec["method"]
    size = blur_size if blur_size is not None else (rec["size"] if same else None)
    sig = sigma if sigma is not None else (rec["sigma"] if same else None)
    return method, size, sig


def _chunks(ids: Sequence[str], seed: int, chunk_size: int) -> list[np.ndarray]:
    """Seeded random partition of the images (independent of their listed order)."""
    if chunk_size < 2:
        raise ValueError("chunk_size must be >= 2 (the floor needs another image in the chunk)")
    n = len(ids)
    base = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    perm = base[np.random.default_rng(seed).permutation(n)]
    return np.array_split(perm, max(1, math.ceil(n / chunk_size))) if n else []


def iter_ceiling_rows(
    data: Any,
    metric: Metric = CeilingSettings.metric,
    repeats: int = DEFAULT_REPEATS,
    blur: str | None = None,
    blur_size: int | None = None,
    sigma: float | None = None,
    crop: int | tuple[int, int] | None = None,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device | None = None,
    skip: set[str] | None = None,
    prepare: MapPreparation | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Rows ``{image_id, ceiling, floor, n_subjects}`` chunk by chunk (for stores and progress).

    A chunk whose images are all in ``skip`` is not computed; results are identical
    whatever is skipped (each chunk has its own seeded generator), so runs can resume.
    ``prepare``: resize, blur and pool both blurred halves as evaluation prepares maps.

    Example:
        >>> data = {f"im{i}": np.random.default_rng(i).random((4, 8, 8)) for i in range(4)}
        >>> rows = [r for rows in iter_ceiling_rows(data, blur="none", repeats=2) for r in rows]
        >>> sorted(r["image_id"] for r in rows)
        ['im0', 'im1', 'im2', 'im3']
    """
    src = data if isinstance(data, _Source) else _Source(data)
    method, size, sig = _resolve_blur(src.info, blur, blur_size, sigma)
    _check(method, repeats)
    if seed < 0:
        raise ValueError("seed must be >= 0")
    _, fn = resolve_metric(metric)
    device = resolve_device(device) if device is not None else None
    skip = skip or set()
    for c, idx in enumerate(_chunks(src.ids, seed, chunk_size)):
        if all(src.ids[i] in skip for i in idx):
            continue
        yield _chunk_rows(src, c, idx, fn, repeats, (method, size, sig), crop, seed, device, prepare)


def _chunk_rows(src: "_Source", c: int, idx: Sequence[int], fn: Callable, repeats: int, blur: tuple,
                crop: Any, seed: int, device: Any, prepare: MapPreparation | None = None) -> list[dict[str, Any]]:
    """The rows of chunk ``c`` (images ``idx``): its own seeded generator, so any chunk can be
    computed alone (resuming) with the same numbers."""
    subs = [src.load(int(i)) for i in idx]
    if device is not None:
        subs = [s.to(device) for s in subs]
    for i, s in zip(idx, subs):
        if s.shape[0] < 2:
            raise ValueError(f"{src.ids[i]}: a split-half ceiling needs >= 2 subject maps, got {s.shape[0]}")
    rng = np.random.default_rng([seed, c])
    ceil, flo = _chunk_scores(subs, rng, repeats, fn, *blur, crop, floor=True, prepare=prepare)
    return [
        {"image_id": src.ids[i], "ceiling": float(ceil[j]), "floor": float(flo[j]), "n_subjects": int(subs[j].shape[0])}
        for j, i in enumerate(idx)
    ]


def result_from_rows(rows: Iterable[Mapping[str, Any]], settings: dict[str, Any] | None = None) -> CeilingResult:
    """Assemble a :class:`CeilingResult` from per-image rows (e.g. read back from the store)."""
    rows = sorted(rows, key=lambda r: str(r["image_id"]))
    ceil = {str(r["image_id"]): float(r["ceiling"]) for r in rows}
    flo = {str(r["image_id"]): float(r["floor"]) for r in rows}
    return CeilingResult(
        per_image=ceil, per_image_floor=flo, n_subjects={str(r["image_id"]): int(r["n_subjects"]) for r in rows},
        ceiling=summarize(list(ceil.values())), floor=summarize(list(flo.values())), settings=dict(settings or {}),
    )


def dataset_ceiling(
    data: Any,
    metric: Metric = CeilingSettings.metric,
    repeats: int = DEFAULT_REPEATS,
    blur: str | None = None,
    blur_size: int | None = None,
    sigma: float | None = None,
    crop: int | tuple[int, int] | None = None,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
    prepare: MapPreparation | None = None,
) -> CeilingResult:
    """Split-half ceiling and cross-image floor of every image, and their dataset means.

    ``data``: a :class:`~harmonia.data.HarmoniaDataset` with per-subject maps, a mapping
    id -> (S, H, W) maps, or a sequence of (id, maps) pairs / {"id", "subjects"} dicts.
    ``blur=None`` takes the blur recorded in the dataset metadata (``extra.subjects_blur``,
    written by ``harmonia data clicks``), else a disk sized by the maps' short side (21 at
    256 px). Maps are used at their stored size, unless ``prepare`` (a
    :class:`MapPreparation`) resizes, blurs or pools the halves as evaluation does.

    Example:
        >>> g = np.random.default_rng(0)
        >>> data = {f"im{i}": g.random((6, 16, 16)) for i in range(6)}
        >>> res = dataset_ceiling(data, blur_size=3, crop=12, repeats=3)  # crop: drop the zero-padded rim
        >>> res.ceiling.n, res.floor.n, abs(res.ceiling.mean) < 0.3
        (6, 6, True)
    """
    src = data if isinstance(data, _Source) else _Source(data)
    rows: list[dict[str, Any]] = []
    if progress:
        progress(0, len(src.ids))
    for chunk in iter_ceiling_rows(src, metric, repeats, blur, blur_size, sigma, crop, seed, chunk_size, device,
                                   prepare=prepare):
        rows.extend(chunk)
        if progress:
            progress(len(rows), len(src.ids))
    settings = ceiling_settings(src, metric, repeats, blur, blur_size, sigma, crop, seed, chunk_size, prepare)
    return result_from_rows(rows, settings)


def ceiling_settings(data: Any, metric: Metric, repeats: int, blur: str | None, blur_size: int | None,
                     sigma: float | None, crop, seed: int, chunk_size: int,
                     prepare: MapPreparation | None = None) -> dict[str, Any]:
    """The settings that determine a ceiling's numbers (blur resolved from metadata)."""
    method, size, sig = _resolve_blur(getattr(data, "info", None), blur, blur_size, sigma)
    settings = {
        "metric": resolve_metric(metric)[0], "repeats": int(repeats), "blur": method, "blur_size": size, "sigma": sig,
        "crop": list(crop) if isinstance(crop, tuple) else crop, "seed": int(seed), "chunk_size": int(chunk_size),
        "bootstrap": "ceil(n/2) per half",
    }
    if prepare is not None:  # only when set: the keys of plain ceilings stay as they were
        settings["prepare"] = prepare.config()
    return settings


# --------------------------------------------------------------------------------------
# Store-backed runs
# --------------------------------------------------------------------------------------
class _SubjectFiles:
    """The files a ceiling depends on (metadata, index, subject maps: not images) for the key."""

    def __init__(self, ds: Any) -> None:
        self.root = Path(ds.root)
        self._ds = ds

    def files(self) -> Iterator[Path]:
        from harmonia.data.format import INDEX_FILE, META_FILE

        yield self.root / META_FILE
        yield self._ds.split_dir / INDEX_FILE
        for r in self._ds.records:
            yield r.subjects

    def config(self) -> dict[str, Any]:
        return {"split": self._ds.split, "what": "subjects"}


@dataclass
class CeilingRun:
    key: str
    cached: bool
    result: CeilingResult


class HumanCeiling(Measurement):
    """Split-half ceiling and cross-image floor per image, as a measurement (no model).

    Items are images; a batch is one of the seeded chunks (``chunk_size`` is a setting: the
    chunks decide which images the floor compares), computed whole, so a resumed run gives
    the numbers of an uninterrupted one.

    Example:
        >>> g = np.random.default_rng(0)
        >>> data = {f"im{i}": g.random((4, 8, 8)) for i in range(4)}
        >>> from harmonia.measurements import run
        >>> res = run(HumanCeiling(blur="none", repeats=2), None, data)
        >>> len(res.rows), sorted(res.headline)
        (4, ['ceiling_mean', 'floor_mean', 'n_images'])
    """

    kind = "ceiling"
    version = "1"
    uses_model = False
    default_batch_size = None  # batches are the seeded chunks

    def __init__(self, metric: Metric = CeilingSettings.metric, repeats: int = DEFAULT_REPEATS, blur: str | None = None,
                 blur_size: int | None = None, sigma: float | None = None, crop: int | tuple[int, int] | None = None,
                 seed: int = 0, chunk_size: int = DEFAULT_CHUNK, device: str | torch.device | None = None,
                 map_prep: MapPreparation | None = None) -> None:
        resolve_metric(metric)  # validate before any work
        self.map_prep = map_prep  # resize / blur / pool both halves as evaluation prepares maps
        self.metric, self.repeats, self.blur, self.blur_size, self.sigma = metric, repeats, blur, blur_size, sigma
        self.crop, self.seed, self.chunk_size = crop, seed, chunk_size
        self.device = resolve_device(device) if device is not None else None  # checked before any work
        self._src: _Source | None = None
        self._src_of: Any = None

    def _options(self) -> tuple:
        return (self.metric, self.repeats, self.blur, self.blur_size, self.sigma, self.crop, self.seed, self.chunk_size,
                self.map_prep)

    def source(self, data: Any) -> "_Source":
        if self._src is None or self._src_of is not data:
            self._src, self._src_of = (data if isinstance(data, _Source) else _Source(data)), data
        return self._src

    def check(self, model: Any, data: Any) -> None:
        src = self.source(data)
        method, _, _ = _resolve_blur(src.info, self.blur, self.blur_size, self.sigma)
        _check(method, self.repeats)
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        _chunks(src.ids, self.seed, self.chunk_size)  # validates chunk_size

    def settings(self) -> dict[str, Any]:
        return {"metric": resolve_metric(self.metric)[0], "repeats": int(self.repeats), "blur": self.blur,
                "blur_size": self.blur_size, "sigma": self.sigma,
                "crop": list(self.crop) if isinstance(self.crop, tuple) else self.crop, "seed": int(self.seed),
                "chunk_size": int(self.chunk_size),
                **({"prepare": self.map_prep.config()} if self.map_prep is not None else {})}

    def data_key(self, data: Any, store: Any) -> Any:
        from harmonia.store import array_digest, dataset_fingerprint

        if store is None:
            return None
        if callable(self.metric):
            raise ValueError("a custom metric function cannot be cached in the store; pass its name or store=None")
        if hasattr(data, "records") and hasattr(data, "split_dir"):  # the subject files, not the images
            return dataset_fingerprint(_SubjectFiles(data), digest=store.file_digest)
        src = self.source(data)
        return {"ids": src.ids, "maps": array_digest(*(src.load(i).cpu().numpy() for i in range(len(src.ids))))}

    def items(self, data: Any) -> list[str]:
        return list(self.source(data).ids)

    def meta(self, model: Any, data: Any) -> dict[str, Any]:
        return {"dataset": str(getattr(data, "root", "")), "split": getattr(data, "split", None),
                "synthetic": bool(getattr(getattr(data, "info", None), "synthetic", False)),
                **ceiling_settings(self.source(data), *self._options())}

    def prepare(self, model: Any, data: Any, data_key: Any) -> "_Source":
        return self.source(data)

    def batches(self, data: Any, ids: list[str], index: list[int], batch_size: int | None) -> Iterator[Batch]:
        src, todo = self.source(data), set(ids)
        for c, idx in enumerate(_chunks(src.ids, self.seed, self.chunk_size)):
            if any(src.ids[i] in todo for i in idx):
                yield Batch([src.ids[i] for i in idx], [int(i) for i in idx], c)

    def compute(self, src: "_Source", batch: Batch) -> list[dict[str, Any]]:
        method, size, sig = _resolve_blur(src.info, self.blur, self.blur_size, self.sigma)
        return _chunk_rows(src, batch.data, batch.index, resolve_metric(self.metric)[1], self.repeats,
                           (method, size, sig), self.crop, self.seed, self.device, self.map_prep)

    def result(self, rows: list[dict[str, Any]], data: Any) -> CeilingResult:
        return result_from_rows(rows, ceiling_settings(self.source(data), *self._options()))

    def aggregate(self, rows: list[dict[str, Any]], data: Any) -> dict[str, Any]:
        return self.result(rows, data).aggregates()

    def headline(self, agg: dict[str, Any]) -> dict[str, Any]:
        return {"n_images": agg["n_images"], "ceiling_mean": agg["ceiling"]["mean"], "floor_mean": agg["floor"]["mean"]}

    def reaggregate_cached(self) -> bool:
        return False  # rows and settings decide the aggregates


def run_ceiling(
    dataset: Any,
    store: Any | None = None,
    *,
    metric: Metric = CeilingSettings.metric,
    repeats: int = DEFAULT_REPEATS,
    blur: str | None = None,
    blur_size: int | None = None,
    sigma: float | None = None,
    crop: int | tuple[int, int] | None = None,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device | None = None,
    recompute: bool = False,
    progress: Callable[[int, int], None] | None = None,
    prepare: MapPreparation | None = None,
) -> CeilingRun:
    """:func:`dataset_ceiling` of a :class:`HarmoniaDataset`, cached and resumable in a results store
    (:class:`HumanCeiling` through :func:`harmonia.measurements.run`).

    The key covers the subject files' content (not the images), the split and every
    setting; per-image rows are committed chunk by chunk, so an interrupted run resumes.

    Example:
        >>> run = run_ceiling(HarmoniaDataset("data/clicks"), ResultStore("r.sqlite"))  # doctest: +SKIP
        >>> run.result.ceiling.mean, run.cached  # doctest: +SKIP
    """
    from harmonia.measurements import progress_events, run

    m = HumanCeiling(metric, repeats, blur, blur_size, sigma, crop, seed, chunk_size, device, map_prep=prepare)
    res = run(m, None, dataset, store=store, recompute=recompute, on_event=progress_events(progress))
    return CeilingRun(res.key, res.cached, m.result(res.rows, dataset))


def ceiling_for(dataset: Any, store: Any | None = None, **settings: Any) -> float | None:
    """The dataset's computed split-half ceiling (mean over images) if it has per-subject
    maps, else None (callers then use 0.65753 for the released ClickMe maps).

    Uses the store as a cache when given; ``settings`` go to :func:`run_ceiling`.
    Raises ValueError when every image's ceiling is NaN (e.g. all-constant maps).

    Example:
        >>> ceiling_for(HarmoniaDataset("data/clicks"), store=ResultStore())  # doctest: +SKIP
        0.71...
    """
    if not getattr(dataset, "has_subjects", False):
        return None
    res = run_ceiling(dataset, store, **settings).result
    if not math.isfinite(res.ceiling.mean):
        raise ValueError(f"{getattr(dataset, 'root', 'dataset')}: human ceiling is undefined "
                         f"(all {res.ceiling.n_nan} images give NaN: constant subject maps?)")
    return float(res.ceiling.mean)
