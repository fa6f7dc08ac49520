"""Neural recordings: harmonia's own format and the published spatially resolved IT layout.

A :class:`NeuralRecording` holds stimuli (float32 images in [0, 1], N x 3 x H x W) and
responses, either ``flat`` (N stimuli x K neuroids, Brain-Score's presentation x neuroid)
or ``spatial`` (N images x K neurons x Gy x Gx: a response map over the grid of positions
at which each image was shown). Optional ``repeats`` (R x the responses' shape) give
split-half ceilings.

Our own format is a folder::

    neural.json      {"format": "harmonia-neural", "version": 1, "kind": "flat"|"spatial",
                      "name", "synthetic", "description", "stimulus_ids", "neuroid_ids",
                      "stimuli": [file names under stimuli/], "meta": {...}}
    responses.npz    responses (float32), optionally repeats
    stimuli/         one image file per stimulus (PNG/JPEG; any size)

Example:
    >>> import tempfile, numpy as np
    >>> rec = NeuralRecording(np.zeros((2, 3, 8, 8), np.float32), np.ones((2, 4), np.float32),
    ...                       ["a", "b"], [f"n{i}" for i in range(4)], name="toy", synthetic=True)
    >>> d = tempfile.mkdtemp()
    >>> save_recording(rec, d)
    >>> load_recording(d).responses.shape
    (2, 4)
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harmonia.utils.io import atomic_write, atomic_write_text

FORMAT = "harmonia-neural"
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5")
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class NeuralRecording:
    """Stimuli + responses + ids + metadata (see the module docstring for shapes)."""

    images: np.ndarray
    responses: np.ndarray
    stimulus_ids: list[str]
    neuroid_ids: list[str]
    name: str = "recording"
    synthetic: bool = False
    description: str = ""
    repeats: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.responses = np.asarray(self.responses, dtype=np.float32)
        n = len(self.stimulus_ids)
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.shape[0] != n:
            raise ValueError(f"images must be N x 3 x H x W with N={n} stimuli, got {self.images.shape}")
        if self.responses.ndim not in (2, 4) or self.responses.shape[:2] != (n, len(self.neuroid_ids)):
            raise ValueError(
                f"responses must be N x K (flat) or N x K x Gy x Gx (spatial) with N={n}, "
                f"K={len(self.neuroid_ids)}, got {self.responses.shape}"
            )
        if self.repeats is not None:
            self.repeats = np.asarray(self.repeats, dtype=np.float32)
            if self.repeats.shape[1:] != self.responses.shape or self.repeats.shape[0] < 2:
                raise ValueError(f"repeats must be R x {self.responses.shape} with R >= 2, got {self.repeats.shape}")

    @property
    def kind(self) -> str:
        return "spatial" if self.responses.ndim == 4 else "flat"

    @property
    def grid(self) -> tuple[int, int] | None:
        return tuple(self.responses.shape[2:]) if self.kind == "spatial" else None  # type: ignore[return-value]

    def select_neuroids(self, index: Sequence[int] | np.ndarray) -> "NeuralRecording":
        """A copy with only these neuroids (e.g. one cortical region)."""
        idx = np.asarray(index)
        return NeuralRecording(
            self.images, self.responses[:, idx], self.stimulus_ids, [self.neuroid_ids[i] for i in idx],
            self.name, self.synthetic, self.description,
            None if self.repeats is None else self.repeats[:, :, idx], dict(self.meta),
        )

    def fingerprint_settings(self) -> dict[str, Any]:
        """Content description for cache keys (hash of arrays, not of file names)."""
        from harmonia.store.keys import array_digest

        arrays = (self.images, self.responses) + (() if self.repeats is None else (self.repeats,))
        return {"content": array_digest(*arrays), "neuroids": self.neuroid_ids, "stimuli": self.stimulus_ids}


# -- harmonia's own format -------------------------------------------------------------------


def save_recording(rec: NeuralRecording, root: str | Path) -> None:
    """Write ``rec`` in harmonia's neural format (stimuli as 8-bit PNG)."""
    from PIL import Image

    root = Path(root)
    (root / "stimuli").mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(len(rec.stimulus_ids)):
        name = f"{i:05d}.png"
        arr = (np.clip(rec.images[i].transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        atomic_write(root / "stimuli" / name, lambda tmp, b=buf.getvalue(): Path(tmp).write_bytes(b))
        files.append(name)
    arrays = {"responses": rec.responses}
    if rec.repeats is not None:
        arrays["repeats"] = rec.repeats

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(root / "responses.npz", write_npz)
    info = {
        "format": FORMAT, "version": 1, "kind": rec.kind, "name": rec.name, "synthetic": rec.synthetic,
        "description": rec.description, "stimulus_ids": rec.stimulus_ids, "neuroid_ids": rec.neuroid_ids,
        "stimuli": files, "meta": rec.meta,
    }
    atomic_write_text(root / "neural.json", json.dumps(info, indent=1))


def load_recording(root: str | Path) -> NeuralRecording:
    """Read a folder in harmonia's neural format."""
    root = Path(root)
    path = root / "neural.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no neural.json (not a harmonia neural recording)")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {info.get('format')!r}, expected {FORMAT!r}")
    with np.load(root / "responses.npz") as z:
        responses = z["responses"]
        repeats = z["repeats"] if "repeats" in z.files else None
    images = read_images([root / "stimuli" / f for f in info["stimuli"]])
    return NeuralRecording(
        images, responses, list(info["stimulus_ids"]), list(info["neuroid_ids"]), info.get("name", root.name),
        bool(info.get("synthetic", False)), info.get("description", ""), repeats, dict(info.get("meta", {})),
    )


def read_images(paths: Sequence[Path], size: tuple[int, int] | None = None) -> np.ndarray:
    """Images as float32 N x 3 x H x W in [0, 1]; all must share a size unless ``size`` is given."""
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"stimulus {p} not found")
    return decode_images([lambda p=p: open(p, "rb") for p in paths], size, [str(p) for p in paths])


def decode_images(openers: Sequence[Any], size: tuple[int, int] | None = None, names: Sequence[str] | None = None) -> np.ndarray:
    """Decode images from callables that each return an open binary file (a path's or a zip member's).

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 2)).save(buf, format="PNG")
        >>> decode_images([lambda: io.BytesIO(buf.getvalue())]).shape
        (1, 3, 2, 4)
    """
    from PIL import Image

    out = []
    for opener in openers:
        with opener() as f, Image.open(f) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            out.append(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise ValueError(f"stimuli have different sizes {sorted(shapes)}; pass a size to resize them")
    return np.stack(out) if out else np.zeros((0, 3, 1, 1), np.float32)


# -- the published spatially resolved IT layout (Arcaro 2020 style) ---------------------------

# Release presets. Channels are 0-based here; the release describes George's channels
# 1-32 as posterior IT and 33-63 as central IT (1-based), i.e. 0..31 and 32..62. The
# reference code's split is off by one relative to that description; ours follows it.
ARCARO_PRESETS: dict[str, dict[str, Any]] = {
    "george-ml": {"mat": "George/george_060118_data.mat", "stimuli": "George/natural_test", "window": (130, 170), "channels": (32, 63)},
    "george-pl": {"mat": "George/george_060118_data.mat", "stimuli": "George/natural_test", "window": (90, 130), "channels": (0, 32)},
    "red": {"mat": "Red/red_062419_data.mat", "stimuli": "Red/red_naturalface", "window": (90, 130), "channels": None},
}


def read_arcaro(
    mat_path: str | Path,
    stimuli_dir: str | Path | None = None,
    window: tuple[int, int] = (90, 130),
    channels: tuple[int, int] | None = None,
    time_origin_ms: int = 0,
    image_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> NeuralRecording:
    """Read a .mat file in the published layout into a spatial :class:`NeuralRecording`.

    ``imageRF`` is x, y, time (one bin per ms, the first bin at ``time_origin_ms``),
    channel, image; ``UniqueNames`` the stimulus file names. Responses are averaged over
    the time window [a, b) ms, put images first (image, channel, y, x) and flipped in x
    and y as the release's loader does. ``channels`` is a 0-based [start, stop) range.
    ``stimuli_dir`` defaults to the folder next to the .mat that holds the named files.
    """
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"{mat_path} not found")
    m = loadmat(mat_path, squeeze_me=False)
    if "imageRF" not in m or "UniqueNames" not in m:
        raise KeyError(f"{mat_path}: needs variables imageRF and UniqueNames (has {sorted(k for k in m if not k.startswith('__'))})")
    rf = np.asarray(m["imageRF"], dtype=np.float64)
    if rf.ndim != 5:
        raise ValueError(f"{mat_path}: imageRF must be x, y, time, channel, image; got shape {rf.shape}")
    a, b = window[0] - time_origin_ms, window[1] - time_origin_ms
    if not 0 <= a < b <= rf.shape[2]:
        raise ValueError(f"time window {window} ms is outside the recording (0..{rf.shape[2]} bins from {time_origin_ms} ms)")
    resp = rf[:, :, a:b].mean(axis=2)  # x, y, channel, image
    resp = resp.transpose(3, 2, 1, 0)[:, :, ::-1, ::-1]  # image, channel, y, x; flipped like the release
    if channels is not None:
        resp = resp[:, channels[0] : channels[1]]
        ch_ids = [f"ch{c + 1}" for c in range(channels[0], min(channels[1], rf.shape[3]))]
    else:
        ch_ids = [f"ch{c + 1}" for c in range(rf.shape[3])]
    names = [_mat_str(x) for x in np.asarray(m["UniqueNames"]).reshape(-1)]
    if len(names) != resp.shape[0]:
        raise ValueError(f"{mat_path}: {len(names)} UniqueNames for {resp.shape[0]} images")
    sdir = Path(stimuli_dir) if stimuli_dir is not None else _find_stimuli(mat_path.parent, names)
    images = read_images([_stimulus_file(sdir, n) for n in names], size=image_size)
    synthetic = "synthetic" in m  # our simulator marks its files; the release's have no such variable
    return NeuralRecording(
        images, np.ascontiguousarray(resp, dtype=np.float32), [Path(n).stem for n in names], ch_ids,
        name=name or mat_path.stem, synthetic=synthetic, description=_mat_str(m["synthetic"]) if synthetic else "",
        meta={"synthetic": synthetic, "source": str(mat_path), "window_ms": list(window), "channels": list(channels) if channels else None},
    )


def _mat_str(x: Any) -> str:
    while isinstance(x, np.ndarray):  # MATLAB cell arrays nest strings in object arrays
        x = x.reshape(-1)[0] if x.size else ""
    return str(x).strip()


def _stimulus_file(folder: Path, name: str) -> Path:
    p = folder / name
    if p.is_file():
        return p
    for ext in _IMAGE_EXT:  # names are sometimes given without their extension
        if (q := folder / (Path(name).stem + ext)).is_file():
            return q
    raise FileNotFoundError(f"stimulus {name!r} not found in {folder}")


def _find_stimuli(parent: Path, names: list[str]) -> Path:
    for d in [parent, *sorted(p for p in parent.iterdir() if p.is_dir())]:
        try:
            _stimulus_file(d, names[0])
            return d
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"no folder next to the .mat holds stimulus {names[0]!r}; pass the stimuli folder")


def load_neural(path: str | Path, preset: str | None = None, **kw: Any) -> NeuralRecording:
    """Open any supported recording: a harmonia neural folder, a published-layout .mat, the
    archive root with a ``preset`` (``george-ml``, ``george-pl``, ``red``), or a Brain-Score
    assembly (``.nc``; ``kw``: ``stimuli``, ``region``, ``window``, ``image_size``, see
    :func:`harmonia.neural.brainscore.read_brainscore`).

    Example:
        >>> sorted(ARCARO_PRESETS)
        ['george-ml', 'george-pl', 'red']
    """
    path = Path(path)
    if preset is not None:
        if preset not in ARCARO_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; one of {sorted(ARCARO_PRESETS)}")
        p = ARCARO_PRESETS[preset]
        return read_arcaro(path / p["mat"], path / p["stimuli"], window=p["window"], channels=p["channels"], name=preset, **kw)
    if path.is_dir():
        return load_recording(path)
    if path.suffix.lower() == ".mat":
        return read_arcaro(path, **kw)
    if path.suffix.lower() in NETCDF_SUFFIXES:
        from harmonia.neural.brainscore import read_brainscore  # imports xarray: only when needed

        return read_brainscore(path, **kw)
    raise FileNotFoundError(f"{path}: neither a harmonia neural folder, a .mat file nor a Brain-Score .nc assembly")
