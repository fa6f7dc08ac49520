"""Brain-Score public assemblies as users download them: a netCDF-4 file + its StimulusSet.

The assembly (brainio's ``NeuroidAssembly`` convention) is one data variable with dims
``presentation`` x ``neuroid`` [x ``time_bin``] (any order). brainio writes it after
``reset_index``, so each MultiIndex level is a plain coordinate variable along its dim:
``stimulus_id`` (legacy files: ``image_id``), ``repetition``, ``object_name``, ... on
``presentation``; ``neuroid_id``, ``region``, ``animal``, ... on ``neuroid``;
``time_bin_start`` / ``time_bin_end`` (ms) on ``time_bin``. Global attributes
``identifier`` and ``stimulus_set_identifier`` name the assembly and its stimuli.

The StimulusSet is a CSV with ``stimulus_id`` (or ``image_id``) and ``filename`` columns;
the files lie in the CSV's folder (brainio unzips them there) or in a zip next to it
(``filename`` = the member name). brainio's cache keeps them in separate folders,
e.g. ``~/.brainio/assy_dicarlo_MajajHong2015_public/assy_dicarlo_MajajHong2015_public.nc``
and ``~/.brainio/image_dicarlo_hvm-public/image_dicarlo_hvm-public.csv``; we look next to
the .nc first, then in sibling folders named after ``stimulus_set_identifier``.

Example:
    >>> _store_names("dicarlo.hvm-public")
    ['image_dicarlo_hvm-public', 'stimulus_dicarlo_hvm-public', 'dicarlo.hvm-public']
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harmonia.neural.data import NeuralRecording, decode_images

_DIMS = ({"presentation", "neuroid"}, {"presentation", "neuroid", "time_bin"})


def read_brainscore(
    nc_path: str | Path,
    stimuli: str | Path | None = None,
    region: str | None = None,
    window: tuple[float, float] | None = None,
    image_size: tuple[int, int] | None = None,
    name: str | None = None,
    variable: str | None = None,
) -> NeuralRecording:
    """Read a Brain-Score ``NeuroidAssembly`` netCDF file into a flat :class:`NeuralRecording`.

    ``region`` keeps the neuroids whose ``region`` coord equals it (e.g. ``"IT"``).
    ``window`` (ms) averages the time bins with ``start >= a`` and ``end <= b``; without it,
    all bins are averaged. Repetitions of a stimulus are averaged into ``responses``
    (stimuli in order of first presentation); the first R presentations of each stimulus
    (R = the smallest count, ordered by ``repetition`` when present) are kept as
    ``repeats`` for the split-half ceiling when R >= 2. ``stimuli`` is the StimulusSet
    CSV, its folder or its zip (default: found next to the file, see the module doc).

    Example:
        >>> read_brainscore("missing.nc")
        Traceback (most recent call last):
        ...
        FileNotFoundError: missing.nc not found
    """
    import xarray as xr

    nc_path = Path(nc_path)
    if not nc_path.is_file():
        raise FileNotFoundError(f"{nc_path} not found")
    try:
        ds = xr.open_dataset(nc_path, engine="h5netcdf")
    except (OSError, ValueError) as e:
        raise ValueError(f"{nc_path}: not a netCDF-4 (HDF5) assembly file ({e})") from None
    with ds:
        da = ds[_data_variable(ds, nc_path, variable)]
        stim_coord = next((c for c in ("stimulus_id", "image_id") if _on(da, c, "presentation")), None)
        if stim_coord is None:
            raise KeyError(f"{nc_path}: no stimulus_id (or legacy image_id) coordinate on 'presentation'; "
                           f"presentation coords: {_coords_on(da, 'presentation')}")
        if not _on(da, "neuroid_id", "neuroid"):
            raise KeyError(f"{nc_path}: no neuroid_id coordinate on 'neuroid'; neuroid coords: {_coords_on(da, 'neuroid')}")
        keep = np.arange(da.sizes["neuroid"])
        if region is not None:
            if not _on(da, "region", "neuroid"):
                raise KeyError(f"{nc_path}: no 'region' coordinate on 'neuroid' to select {region!r}; "
                               f"neuroid coords: {_coords_on(da, 'neuroid')}")
            regions = _strings(da["region"].values)
            keep = np.flatnonzero(np.asarray(regions) == region)
            if keep.size == 0:
                raise ValueError(f"{nc_path}: no neuroid in region {region!r}; regions: {sorted(set(regions))}")
        da = da.isel(neuroid=keep)
        bins = _time_bins(da, window, nc_path)
        if "time_bin" in da.dims:
            da = da.isel(time_bin=bins).mean("time_bin")
        values = np.asarray(da.transpose("presentation", "neuroid").values, dtype=np.float32)
        stim = _strings(da[stim_coord].values)
        rep = np.asarray(da["repetition"].values) if _on(da, "repetition", "presentation") else None
        neuroids = _strings(da["neuroid_id"].values)
        attrs = dict(ds.attrs)
    ids, mean, repeats, counts = average_repetitions(values, stim, rep)
    set_id = attrs.get("stimulus_set_identifier")
    images = _load_stimuli(nc_path, stimuli, ids, None if set_id is None else str(set_id), image_size)
    ident = str(attrs.get("identifier", nc_path.stem))
    synthetic = bool(attrs.get("synthetic", False))
    meta = {
        "synthetic": synthetic, "source": str(nc_path), "identifier": ident,
        "stimulus_set_identifier": None if "stimulus_set_identifier" not in attrs else str(attrs["stimulus_set_identifier"]),
        "region": region,
        "window_ms": list(window) if window is not None else None, "time_bins": None if bins is None else [int(b) for b in bins],
        "presentations": int(values.shape[0]), "repetitions_min": int(counts.min()), "repetitions_max": int(counts.max()),
    }
    return NeuralRecording(images, mean, ids, neuroids, name=name or ident, synthetic=synthetic,
                           description=str(attrs.get("description", "")), repeats=repeats, meta=meta)


def average_repetitions(
    values: np.ndarray, stimulus_ids: Sequence[str], repetition: np.ndarray | None = None
) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray]:
    """Per-stimulus means of presentations x neuroids (NaNs ignored), per-repetition data and counts.

    Returns (stimulus ids in order of first presentation, N x K means, R x N x K repeats or
    None when some stimulus has a single presentation, presentation counts per stimulus).

    Example:
        >>> ids, m, reps, n = average_repetitions(np.array([[1.0], [5.0], [3.0], [7.0]]), ["a", "b", "a", "b"])
        >>> ids, m[:, 0].tolist(), reps.shape, n.tolist()
        (['a', 'b'], [2.0, 6.0], (2, 2, 1), [2, 2])
    """
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(stimulus_ids, dtype=object))
    keys = (codes,) if repetition is None else (np.asarray(repetition), codes)
    order = np.lexsort(keys)  # grouped by stimulus, by repetition within (stable otherwise)
    vals = values[order]
    counts = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    finite = np.isfinite(vals)
    sums = np.add.reduceat(np.where(finite, vals, 0.0), starts, axis=0, dtype=np.float64)
    n_ok = np.add.reduceat(finite, starts, axis=0, dtype=np.int64)
    if (n_ok == 0).any():
        i, k = np.argwhere(n_ok == 0)[0]
        raise ValueError(f"stimulus {uniques[i]!r}, neuroid #{k}: no finite response in any repetition")
    mean = (sums / n_ok).astype(np.float32)
    r = int(counts.min())
    repeats = vals[starts[:, None] + np.arange(r)].transpose(1, 0, 2) if r >= 2 else None
    return [str(u) for u in uniques], mean, repeats, counts


def _data_variable(ds: Any, path: Path, variable: str | None) -> str:
    if variable is not None:
        if variable not in ds.data_vars:
            raise KeyError(f"{path}: no variable {variable!r}; variables: {list(ds.data_vars)}")
        cands = [variable]
    else:
        cands = [v for v in ds.data_vars if {"presentation", "neuroid"} <= set(ds[v].dims)]
        if not cands:
            dims = {v: list(ds[v].dims) for v in ds.data_vars}
            raise ValueError(f"{path}: no variable with dims presentation x neuroid [x time_bin] "
                             f"(a Brain-Score NeuroidAssembly); found {dims}")
        if len(cands) > 1:  # brainio names it 'data' (compressed) or xarray's default name
            pref = [v for v in ("data", "__xarray_dataarray_variable__") if v in cands]
            if not pref:
                raise ValueError(f"{path}: several assembly variables {cands}; pass variable=")
            cands = pref[:1]
    dims = set(ds[cands[0]].dims)
    if dims not in _DIMS:
        raise ValueError(f"{path}: variable {cands[0]!r} has dims {sorted(dims)}; expected presentation x neuroid [x time_bin]")
    return cands[0]


def _time_bins(da: Any, window: tuple[float, float] | None, path: Path) -> np.ndarray | None:
    if "time_bin" not in da.dims:
        if window is not None:
            raise ValueError(f"{path}: the assembly has no time_bin dimension, so no time window can be selected")
        return None
    n = da.sizes["time_bin"]
    if window is None:
        return np.arange(n)
    if not (_on(da, "time_bin_start", "time_bin") and _on(da, "time_bin_end", "time_bin")):
        raise KeyError(f"{path}: time_bin needs time_bin_start and time_bin_end coordinates to select a window; "
                       f"time_bin coords: {_coords_on(da, 'time_bin')}")
    start = np.asarray(da["time_bin_start"].values, dtype=float)
    end = np.asarray(da["time_bin_end"].values, dtype=float)
    bins = np.flatnonzero((start >= window[0]) & (end <= window[1]))
    if bins.size == 0:
        have = ", ".join(f"{s:g}-{e:g}" for s, e in zip(start, end))
        raise ValueError(f"{path}: no time bin lies within {window[0]:g}-{window[1]:g} ms; bins: {have}")
    return bins


def _on(da: Any, name: str, dim: str) -> bool:
    return name in da.coords and da[name].dims == (dim,)


def _coords_on(da: Any, dim: str) -> list[str]:
    return sorted(str(c) for c in da.coords if da[c].dims == (dim,))


def _strings(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]


# -- the StimulusSet ----------------------------------------------------------------------------


def _store_names(stimulus_set_identifier: str) -> list[str]:
    """Folder / file stems brainio uses for a stimulus set (legacy ``image_``, newer ``stimulus_``)."""
    flat = stimulus_set_identifier.replace(".", "_")
    return [f"image_{flat}", f"stimulus_{flat}", stimulus_set_identifier]


def find_stimulus_csv(nc_path: str | Path, stimuli: str | Path | None = None, stimulus_set_identifier: str | None = None) -> Path:
    """The StimulusSet CSV: ``stimuli`` (a CSV, its folder or its zip), else next to the .nc,
    else in a sibling folder named after the stimulus set (brainio's cache layout).

    Example:
        >>> find_stimulus_csv("a.nc", "nowhere.csv")
        Traceback (most recent call last):
        ...
        FileNotFoundError: stimulus set nowhere.csv not found
    """
    if stimuli is not None:
        p = Path(stimuli)
        if p.suffix.lower() == ".csv":
            if not p.is_file():
                raise FileNotFoundError(f"stimulus set {p} not found")
            return p
        if p.suffix.lower() == ".zip":
            folder, stems = p.parent, [p.stem]
        elif p.is_dir():
            folder, stems = p, []
        else:
            raise FileNotFoundError(f"stimulus set {p} not found (give its CSV, folder or zip)")
        found = _csv_in(folder, stems or None)
        if found is None:
            raise FileNotFoundError(f"no single StimulusSet CSV (with stimulus_id/image_id and filename columns) in {folder}; "
                                    "pass the CSV itself")
        return found
    nc_path = Path(nc_path)
    names = _store_names(stimulus_set_identifier) if stimulus_set_identifier else None
    found = _csv_in(nc_path.parent, names) or _csv_in(nc_path.parent, None)
    if found is None and names:
        for d in [nc_path.parent.parent / n for n in names]:
            if d.is_dir() and (found := _csv_in(d, names) or _csv_in(d, None)) is not None:
                break
    if found is None:
        raise FileNotFoundError(
            f"no StimulusSet CSV next to {nc_path}"
            + (f" or in a sibling folder {names[0]}/" if names else "")
            + "; pass the stimulus set (its CSV, folder or zip)")
    return found


def _csv_in(folder: Path, stems: Sequence[str] | None) -> Path | None:
    if not folder.is_dir():
        return None
    csvs = sorted(folder.glob("*.csv"))
    if stems is not None:
        csvs = [c for c in csvs if c.stem in stems]
    good = [c for c in csvs if _id_column(_header(c)) and _file_column(_header(c))]
    return good[0] if len(good) == 1 or (good and stems) else None


def _header(csv: Path) -> list[str]:
    with open(csv, newline="") as f:
        return f.readline().strip().split(",")


def _id_column(cols: Sequence[str]) -> str | None:
    return next((c for c in ("stimulus_id", "image_id") if c in cols), None)


def _file_column(cols: Sequence[str]) -> str | None:
    return next((c for c in ("filename", "image_file_name") if c in cols), None)


def _load_stimuli(nc_path: Path, stimuli: str | Path | None, ids: list[str], set_id: str | None,
                  image_size: tuple[int, int] | None) -> np.ndarray:
    import pandas as pd

    csv = find_stimulus_csv(nc_path, stimuli, set_id)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    id_col, file_col = _id_column(list(table.columns)), _file_column(list(table.columns))
    if id_col is None or file_col is None:
        raise KeyError(f"{csv}: a StimulusSet needs stimulus_id (or image_id) and filename columns; has {list(table.columns)}")
    files = dict(zip(table[id_col], table[file_col]))
    missing = [s for s in ids if s not in files]
    if missing:
        raise KeyError(f"{csv}: {len(missing)} of the assembly's {len(ids)} stimuli are not in the stimulus set "
                       f"(e.g. {missing[:3]})")
    wanted = [files[s] for s in ids]
    folder = csv.parent
    if all((folder / f).is_file() for f in wanted):
        return decode_images([lambda p=folder / f: open(p, "rb") for f in wanted], image_size, wanted)
    zips = [Path(stimuli)] if stimuli is not None and Path(stimuli).suffix.lower() == ".zip" else []
    zips += [folder / (csv.stem + ".zip")] + sorted(folder.glob("*.zip"))
    for zp in dict.fromkeys(z for z in zips if z.is_file()):
        with zipfile.ZipFile(zp) as zf:
            members = {n: n for n in zf.namelist()}
            members.update({Path(n).name: n for n in zf.namelist() if Path(n).name not in members})
            if all(f in members or Path(f).name in members for f in wanted):
                names = [members.get(f) or members[Path(f).name] for f in wanted]
                return decode_images([lambda n=n: zf.open(n) for n in names], image_size, wanted)
    absent = next(f for f in wanted if not (folder / f).is_file())
    raise FileNotFoundError(f"stimulus file {absent!r} (from {csv.name}) is neither in {folder} nor in a zip there")


def write_brainscore_assembly(
    rec: NeuralRecording, nc_path: str | Path, region: str = "IT", time_bin: tuple[int, int] = (70, 170),
    identifier: str = "harmonia.Simulated", stimulus_set_identifier: str = "harmonia.simulated",
) -> None:
    """Write a flat recording as brainio does: one presentation per repetition (or per stimulus
    without ``repeats``), MultiIndex levels reset to plain coords, zlib-compressed variable
    ``data``, and a StimulusSet (CSV + zip of PNGs) in the sibling folder brainio's cache uses.
    Used for the SYNTHETIC example data; needs xarray and h5netcdf.

    Example:
        >>> import tempfile
        >>> from harmonia.neural.simulate import simulate_flat
        >>> d = Path(tempfile.mkdtemp())
        >>> write_brainscore_assembly(simulate_flat(n_stimuli=6, n_neurons=2), d / "assy" / "assy.nc")
        >>> read_brainscore(d / "assy" / "assy.nc", region="IT").repeats.shape
        (4, 6, 2)
    """
    import io

    import pandas as pd
    import xarray as xr
    from PIL import Image

    from harmonia.utils.io import atomic_write, atomic_write_text

    if rec.kind != "flat":
        raise ValueError("only flat recordings (stimuli x neuroids) have a Brain-Score assembly form")
    reps = rec.repeats if rec.repeats is not None else rec.responses[None]
    r, n, k = reps.shape
    data = reps.reshape(r * n, k)[:, :, None]  # presentation (repetition-major) x neuroid x time_bin
    da = xr.DataArray(data, dims=["presentation", "neuroid", "time_bin"], coords={
        "stimulus_id": ("presentation", np.tile(rec.stimulus_ids, r)), "repetition": ("presentation", np.repeat(np.arange(r), n)),
        "neuroid_id": ("neuroid", rec.neuroid_ids), "region": ("neuroid", [region] * k),
        "time_bin_start": ("time_bin", [time_bin[0]]), "time_bin_end": ("time_bin", [time_bin[1]]),
    })
    da = da.set_index(presentation=["stimulus_id", "repetition"], neuroid=["neuroid_id", "region"],
                      time_bin=["time_bin_start", "time_bin_end"])
    ds = da.reset_index(list(da.indexes)).to_dataset(name="data")
    ds.attrs.update(identifier=identifier, stimulus_set_identifier=stimulus_set_identifier,
                    synthetic=int(rec.synthetic), description=rec.description or "")
    nc_path = Path(nc_path)
    nc_path.parent.mkdir(parents=True, exist_ok=True)
    enc = {v: {"zlib": True, "complevel": 1} for v in ds.variables}
    atomic_write(nc_path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf", encoding=enc))
    stem = _store_names(stimulus_set_identifier)[0]
    sdir = nc_path.parent.parent / stem
    sdir.mkdir(parents=True, exist_ok=True)
    files = [f"{s}.png" for s in rec.stimulus_ids]

    def write_zip(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            for img, f in zip(rec.images, files):
                buf = io.BytesIO()
                Image.fromarray((np.clip(img.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
                zf.writestr(f, buf.getvalue())

    atomic_write(sdir / f"{stem}.zip", write_zip)
    atomic_write_text(sdir / f"{stem}.csv", pd.DataFrame({"stimulus_id": rec.stimulus_ids, "filename": files}).to_csv(index=False))
