"""The neural benchmark from text options (what ``harmonia neural`` takes), for any caller.

:func:`open_recording` opens a recording with a ``"a,b"`` time window; :func:`sweep_options`
turns the read-out options (``"cv:1,10"`` ridge grids, ``"pca:50"`` reductions) into the
keyword arguments of :func:`harmonia.neural.run_neural`; :func:`write_simulated_recordings`
writes the SYNTHETIC recordings of ``harmonia neural --make-sim``. Error messages name the
CLI options (``--alpha``), as the other option parsers of the library do.

Example:
    >>> parse_alpha("cv:0.1,10"), parse_alpha("2"), parse_window("70,170"), parse_reduce("pca:50", None)
    ({'alphas': [0.1, 10.0]}, {'alpha': 2.0}, (70.0, 170.0), (50, None))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harmonia.settings import NeuralSettings

if TYPE_CHECKING:
    import numpy as np

    from harmonia.neural.data import NeuralRecording

REGRESSIONS = ("pls", "ridge")
DEFAULT_WINDOW = (90, 130)  # ms, a published-layout .mat without a preset


def check_regression(regression: str) -> str:
    """``regression`` if it is one harmonia fits (pls, ridge); else a one-line error."""
    if regression not in REGRESSIONS:
        raise ValueError(f"unknown regression {regression!r}: use 'pls' or 'ridge'")
    return regression


def parse_alpha(text: str) -> dict[str, Any]:
    """Ridge's penalty: a number -> ``{"alpha": x}``; ``"cv"`` or ``"cv:A,B,..."`` -> ``{"alphas": grid}``."""
    from harmonia.neural.regression import DEFAULT_ALPHAS

    if text == "cv":
        return {"alphas": list(DEFAULT_ALPHAS)}
    try:
        if text.startswith("cv:"):
            grid = [float(a) for a in text[3:].split(",")]
            if not grid or min(grid) < 0:
                raise ValueError
            return {"alphas": grid}
        return {"alpha": float(text)}
    except ValueError:
        raise ValueError(f"--alpha must be a number, 'cv' or 'cv:A,B,...' (non-negative), got {text!r}") from None


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``"a,b"`` (ms) -> (a, b); None stays None."""
    if text is None:
        return None
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--window must be two numbers 'a,b' (ms), got {text!r}") from None
    return a, b


def parse_reduce(text: str | None, projection: int | None) -> tuple[int | None, int | None]:
    """``"pca:N"`` or ``"random:D"`` (= a projection to D) -> (pca components, projection)."""
    if text is None:
        return None, projection
    kind, _, num = text.partition(":")
    if kind not in ("pca", "random") or not num.isdigit() or int(num) < 1:
        raise ValueError(f"--reduce must be 'pca:N' or 'random:D' with a positive integer, got {text!r}")
    return (int(num), projection) if kind == "pca" else (None, int(num))


def open_recording(data: str | os.PathLike, *, preset: str | None = None, window: str | None = None,
                   stimuli: str | os.PathLike | None = None, region: str | None = None,
                   image_size: int | None = None) -> NeuralRecording:
    """Any recording :func:`harmonia.neural.load_neural` opens, with the CLI's options: ``window``
    ``"a,b"`` ms (.mat without a preset: 90,130 by default; .nc: all bins), ``stimuli`` and
    ``region`` for Brain-Score assemblies only, stimuli resized to ``image_size`` squared."""
    from harmonia.neural.data import NETCDF_SUFFIXES, load_neural

    data = Path(data)
    win = parse_window(window)
    size = (image_size, image_size) if image_size else None
    kw: dict[str, Any] = {}
    is_nc = data.suffix.lower() in NETCDF_SUFFIXES
    if not is_nc and (stimuli is not None or region is not None):
        raise ValueError("--stimuli and --region apply to Brain-Score .nc assemblies only")
    if is_nc:
        kw = {"window": win, "stimuli": stimuli, "region": region, "image_size": size}
    elif preset or not data.is_dir():
        kw = {"image_size": size} if preset else {"window": tuple(int(v) for v in (win or DEFAULT_WINDOW)), "image_size": size}
    return load_neural(data, preset=preset, **kw)


def read_image_folder(folder: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """The images of ``folder`` (at least 2), resized to ``size``: N x 3 x H x W in [0, 1]."""
    from harmonia.neural.data import _IMAGE_EXT, read_images

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT) if folder.is_dir() else []
    if len(files) < 2:
        raise ValueError(f"--pca-images {folder}: need a folder with at least 2 images")
    return read_images(files, size=tuple(size))


def sweep_options(rec: NeuralRecording, *, layers: list[str] | None = None, regression: str = NeuralSettings.regression,
                  components: int = NeuralSettings.n_components, alpha: str = f"{NeuralSettings.alpha:g}",
                  folds: int = NeuralSettings.folds, projection: int | None = None, pool: int | None = None,
                  reduce: str | None = None, pca_images: str | os.PathLike | None = None,
                  batch_size: int = NeuralSettings.batch_size, ceiling: float | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`harmonia.neural.run_neural` for ``rec`` from text options.

    ``alpha`` is checked even for PLS, so a typo is never silently ignored; ``reduce``,
    ``projection``, ``pool`` and ``pca_images`` apply to flat recordings only.
    """
    check_regression(regression)
    alpha_kw = parse_alpha(alpha)
    reg_kw = {"n_components": components} if regression == "pls" else alpha_kw
    opts: dict[str, Any] = dict(layers=layers or None, regression=regression, batch_size=batch_size, ceiling=ceiling, **reg_kw)
    pca, projection = parse_reduce(reduce, projection)
    if pca_images is not None and pca is None:
        raise ValueError("--pca-images needs --reduce pca:N")
    if rec.kind == "flat":
        opts.update(folds=folds, projection=projection, pool=pool, pca=pca)
        if pca_images is not None:
            opts["pca_images"] = read_image_folder(pca_images, rec.images.shape[2:])
    elif reduce is not None:
        raise ValueError("--reduce applies to flat recordings (spatial maps use at most 600 grouped channels)")
    return opts


def write_simulated_recordings(out: str | os.PathLike) -> dict[str, Path]:
    """SYNTHETIC recordings in every format under ``out``: ``flat/`` (true layer block2 of
    ``simulated:0``, reliability 0.8), the same as a Brain-Score assembly in ``brainscore/``
    (region IT) and ``spatial/sim_data.mat`` (true layer block3, window 90-130 ms).
    Never written over a user's folders. Returns the paths by format."""
    from harmonia.neural.brainscore import write_brainscore_assembly
    from harmonia.neural.data import save_recording
    from harmonia.neural.simulate import simulate_flat, simulate_spatial, write_arcaro_mat
    from harmonia.utils.io import OutputFolder

    out = Path(out)
    OutputFolder(out, option="--make-sim").claim(["flat", "brainscore", "spatial"])
    paths = {"flat": out / "flat", "brainscore": out / "brainscore" / "assy_harmonia_Simulated" / "assy_harmonia_Simulated.nc",
             "spatial": out / "spatial" / "sim_data.mat"}
    flat = simulate_flat(n_stimuli=200, n_neurons=20, layer="block2", seed=0)
    save_recording(flat, paths["flat"])
    write_brainscore_assembly(flat, paths["brainscore"])
    spatial = simulate_spatial(n_images=14, n_neurons=16, grid=(9, 9), layer="block3", seed=0)
    write_arcaro_mat(spatial, paths["spatial"], out / "spatial" / "stimuli", window=DEFAULT_WINDOW)
    return paths
