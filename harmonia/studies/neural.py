"""Neural data in a study: a ``[[data]]`` table with ``kind = "neural"`` names a recording.

The recording is anything ``harmonia neural`` reads (:func:`harmonia.neural.options.open_recording`:
a harmonia neural folder, a published-layout .mat, the Arcaro archive with a ``preset``, a
Brain-Score .nc assembly), with the table's reading options (``preset``, ``window``,
``stimuli``, ``region``; ``size`` resizes the stimuli). ``simulate`` makes a SYNTHETIC
recording in harmonia's neural format at ``path`` when it is absent: a read-out of the
ground-truth network ``simulated:<net_seed>`` (:mod:`harmonia.neural.simulate`).

Example:
    >>> import tempfile, pathlib
    >>> cfg = check_simulation({"kind": "flat", "n_stimuli": 20, "n_neurons": 4})
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "it"
    >>> make_simulated(folder, cfg), make_simulated(folder, cfg)
    (True, False)
    >>> rec = open_data(folder.parent, {"path": "it", "read": {}, "size": None})
    >>> rec.synthetic, rec.kind, rec.responses.shape
    (True, 'flat', (20, 4))
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

DATA_KINDS = ("images", "neural")  # a [[data]] table's kind: a harmonia image dataset, or a neural recording
READ_KEYS = ("preset", "window", "stimuli", "region")  # open_recording's reading options (``size``: image_size)
SIMULATED_KINDS = ("spatial", "flat")


class DataSettingError(ValueError):
    """A bad neural data setting; ``key`` names it (the study file's error points at its line)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _simulator(kind: str) -> Callable[..., Any]:
    from harmonia.neural.simulate import simulate_flat, simulate_spatial

    return simulate_spatial if kind == "spatial" else simulate_flat


def check_read_options(read: dict[str, Any]) -> None:
    """Check the reading options a study file gives (before any file is opened)."""
    from harmonia.neural.data import ARCARO_PRESETS
    from harmonia.neural.options import parse_window

    for key, value in read.items():
        if not isinstance(value, str):
            raise DataSettingError(key, f"expected a string, got {type(value).__name__} {value!r}")
    if "preset" in read and read["preset"] not in ARCARO_PRESETS:
        raise DataSettingError("preset", f"unknown preset {read['preset']!r}; one of {', '.join(sorted(ARCARO_PRESETS))}")
    try:
        parse_window(read.get("window"))
    except ValueError as e:
        raise DataSettingError("window", str(e).replace("--window", "window")) from None


def check_simulation(cfg: dict[str, Any]) -> dict[str, Any]:
    """The simulated recording's settings, checked: ``kind`` (spatial | flat, default spatial)
    and the keyword arguments of :func:`~harmonia.neural.simulate.simulate_spatial` or
    :func:`~harmonia.neural.simulate.simulate_flat`. Returns them with ``kind`` filled in."""
    from harmonia.neural.simulate import LAYERS

    cfg = dict(cfg)
    kind = cfg.pop("kind", "spatial")
    if kind not in SIMULATED_KINDS:
        raise DataSettingError("simulate", f"kind must be {' or '.join(SIMULATED_KINDS)}, got {kind!r}")
    params = inspect.signature(_simulator(kind)).parameters
    for key, value in cfg.items():
        if key not in params:
            raise DataSettingError("simulate", f"{kind} recordings have no setting {key!r}; settings: {', '.join(params)}")
        default = params[key].default
        if isinstance(default, tuple):
            ok = isinstance(value, list) and len(value) == len(default) and all(isinstance(v, int) and v >= 1 for v in value)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if "seed" in key else value >= 1)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
        else:
            ok = value in LAYERS
        if not ok:
            raise DataSettingError("simulate", f"bad {key} = {value!r} (default {default!r})")
    if kind == "flat" and cfg.get("n_repeats", 4) < 2:
        raise DataSettingError("simulate", "n_repeats must be >= 2 (the split-half ceiling needs repeats)")
    return {"kind": kind, **cfg}


def make_simulated(folder: Path, cfg: dict[str, Any]) -> bool:
    """Write the SYNTHETIC recording ``cfg`` describes into ``folder`` unless it is there;
    returns whether it was made. A folder holding anything else is refused."""
    import json

    from harmonia.neural.data import save_recording

    info = folder / "neural.json"  # written last by save_recording: present means complete
    if info.is_file():
        if json.loads(info.read_text()).get("meta", {}).get("simulation") == cfg:
            return False
        raise ValueError(f"{folder} holds another recording than this [[data]] simulates; move it or change 'path'")
    if folder.exists() and any(folder.iterdir()) and not (folder / "stimuli").is_dir():
        raise ValueError(f"{folder} is not empty and holds no simulated recording; move it or change 'path'")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k != "kind"}
    rec = _simulator(cfg["kind"])(**settings)
    rec.meta["simulation"] = cfg
    save_recording(rec, folder)
    return True


def open_data(root: Path, data: dict[str, Any]) -> Any:
    """The :class:`~harmonia.neural.NeuralRecording` of a plan's neural data entry (paths
    relative to the study file's folder ``root``)."""
    from harmonia.neural.options import open_recording

    read = dict(data.get("read") or {})
    if "stimuli" in read:
        read["stimuli"] = root / read["stimuli"]
    return open_recording(root / data["path"], image_size=data.get("size"), **read)
