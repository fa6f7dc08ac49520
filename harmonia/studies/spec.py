"""The study file: a TOML file (read with :mod:`tomllib`) declaring models, data, measurements.

Every mistake is reported as ``FILE:LINE: <where> key 'k': <what>`` so the user can jump to
it: tomllib gives no positions for values, so :class:`_Lines` scans the text once for the
line of every table header and key.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.toml"
    >>> _ = p.write_text('[study]\\nname = "z"\\n[[models]]\\nname = "efficientnet_lite0"\\n'
    ...                  '[[data]]\\nname = "d"\\npath = "d"\\n[[measurements]]\\nkind = "accuracy"\\n')
    >>> s = load_study(p)
    >>> s.name, s.store.name, [m.name for m in s.models], s.measurements[0].kind
    ('z', 'z.sqlite', ['efficientnet_lite0'], 'accuracy')
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmonia.errors import UserError

VARIANTS = ("baseline", "harmonized")

_STUDY_KEYS = {"name", "store", "seeds", "device", "batch_size", "description"}
_MODEL_KEYS = {"name", "pattern", "label", "pretrained", "num_classes", "kwargs", "family", "all", "train", "seed"}
_TRAIN_KEYS = {"data", "split", "variants", "epochs", "preset", "settings"}
_DATA_KEYS = {"name", "path", "split", "limit", "size", "simulate", "kind", "preset", "window", "stimuli",
              "region"}
_MEASUREMENT_COMMON = {"kind", "name", "models", "data", "batch_size"}  # besides the kind's own settings


class StudyFileError(UserError):
    """A study file that cannot be used; the message names the file, line and key."""


class _Lines:
    """Line numbers of table headers and keys, by path (``("models", 1, "pattern")``)."""

    _header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self.at: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        where: tuple = ()
        for n, line in enumerate(text.splitlines(), 1):
            h = self._header.match(line)
            if h:
                parts = [p.strip().strip("\"'") for p in h.group(2).split(".")]
                if h.group(1) == "[[":  # an array of tables: one more entry
                    counts[parts[0]] = counts.get(parts[0], -1) + 1
                    where = (parts[0], counts[parts[0]], *parts[1:])
                elif parts[0] in counts:  # [models.train]: a sub-table of the last [[models]]
                    where = (parts[0], counts[parts[0]], *parts[1:])
                else:
                    where = tuple(parts)
                self.at.setdefault(where, n)
                continue
            k = self._key.match(line)
            if k:
                self.at.setdefault((*where, k.group(1).strip("\"'")), n)

    def line(self, *path: Any) -> int | None:
        """The line of ``path`` or of its closest enclosing table."""
        for cut in range(len(path), 0, -1):
            if tuple(path[:cut]) in self.at:
                return self.at[tuple(path[:cut])]
        return None


@dataclass
class TrainSpec:
    """A training stage: the model is trained on ``data`` once per variant (and seed)."""

    data: str
    split: str = "train"
    variants: tuple[str, ...] = VARIANTS
    epochs: int = 2
    preset: str = "adamw"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """One ``[[models]]`` entry (a name, or a pattern expanded by the plan)."""

    index: int
    name: str | None = None
    pattern: str | None = None
    label: str | None = None
    pretrained: bool = True
    num_classes: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    all: bool = False  # pattern over every architecture, not only cached weights
    train: TrainSpec | None = None
    seed: int | None = None


@dataclass
class DataSpec:
    """One ``[[data]]`` entry: a dataset folder in harmonia's format (relative to the file), or
    with ``kind = "neural"`` a neural recording (:mod:`harmonia.studies.neural`)."""

    name: str
    path: Path
    split: str | None = "test"  # None for neural recordings
    limit: int | None = None
    size: int | None = None
    simulate: dict[str, Any] | None = None  # make it with harmonia's ClickMe simulator when absent (SYNTHETIC)
    text_path: str = ""  # as written in the file (plan keys must not depend on where the file lies)
    kind: str = "images"  # or "neural"
    read: dict[str, Any] = field(default_factory=dict)  # a neural recording's reading options (preset, window, ...)


@dataclass
class MeasurementSpec:
    """One ``[[measurements]]`` entry: its kind and settings (everything else of its table)."""

    kind: str
    name: str
    settings: dict[str, Any]
    data: tuple[str, ...] | None = None  # None: every [[data]] entry
    batch_size: int | None = None
    models: tuple[str, ...] | None = None  # model labels or shell patterns of labels; None: every model


@dataclass
class Study:
    """A parsed study file."""

    name: str
    path: Path
    store: Path
    models: list[ModelSpec]
    data: list[DataSpec]
    measurements: list[MeasurementSpec]
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"
    batch_size: int = 32
    description: str = ""

    @property
    def root(self) -> Path:
        return self.path.parent


class _Reader:
    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, _Lines(text)

    def fail(self, path: tuple, message: str) -> StudyFileError:
        line = self.lines.line(*path)
        table = path[0] if path else "file"
        where = f"[[{table}]] #{path[1] + 1}" if len(path) > 1 and isinstance(path[1], int) else f"[{table}]"
        key = [p for p in path[2 if len(path) > 1 and isinstance(path[1], int) else 1:]]
        what = f"{where} key '{'.'.join(map(str, key))}'" if key else where
        return StudyFileError(f"{self.path}:{line if line else '?'}: {what}: {message}")

    def table(self, value: Any, path: tuple, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail((*path, unknown[0]), f"unknown key; known keys: {', '.join(sorted(allowed))}")
        return value

    def get(self, table: dict, path: tuple, key: str, types: type | tuple, default: Any = None, required: bool = False) -> Any:
        if key not in table:
            if required:
                raise self.fail(path, f"missing key '{key}'")
            return default
        v = table[key]
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail((*path, key), f"expected {_names(types)}, got a boolean")
        if not isinstance(v, types):
            raise self.fail((*path, key), f"expected {_names(types)}, got {type(v).__name__} {v!r}")
        return v


def _names(types: type | tuple) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def load_study(path: str | Path) -> Study:
    """Read and check a study file; raises :class:`StudyFileError` naming the line and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no study file {path}")
    text = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyFileError(f"{path}: not valid TOML: {e}") from None
    return parse_study(doc, path, text)


def parse_study(doc: dict[str, Any], path: Path, text: str = "") -> Study:
    """A :class:`Study` from a parsed TOML document (``text``: the file, for line numbers)."""
    r = _Reader(path, text)
    unknown = sorted(set(doc) - {"study", "models", "data", "measurements"})
    if unknown:
        raise r.fail((unknown[0],), "unknown table; a study has [study], [[models]], [[data]], [[measurements]]")
    head = r.table(doc.get("study", {}), ("study",), _STUDY_KEYS)
    name = r.get(head, ("study",), "name", str, default=path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", name):
        raise r.fail(("study", "name"), f"use letters, digits, '.', '_' or '-', got {name!r}")
    store = Path(r.get(head, ("study",), "store", str, default=f"{name}.sqlite"))
    seeds = r.get(head, ("study",), "seeds", (list, int), default=[0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise r.fail(("study", "seeds"), f"expected distinct integers, got {seeds!r}")
    batch_size = r.get(head, ("study",), "batch_size", int, default=32)
    if batch_size < 1:
        raise r.fail(("study", "batch_size"), f"must be >= 1, got {batch_size}")
    data = [_data(r, t, i, path) for i, t in enumerate(_array(r, doc, "data"))]
    _unique(r, [d.name for d in data], "data")
    data_kinds = {d.name: d.kind for d in data}
    models = [_model(r, t, i, data_kinds) for i, t in enumerate(_array(r, doc, "models"))]
    measurements = [_measurement(r, t, i, data_kinds) for i, t in enumerate(_array(r, doc, "measurements"))]
    _unique(r, [m.name for m in measurements], "measurements")
    return Study(name, path.resolve(), (path.parent / store).resolve(), models, data, measurements, tuple(seeds),
                 r.get(head, ("study",), "device", str, default="cpu"), batch_size,
                 r.get(head, ("study",), "description", str, default=""))


def _array(r: _Reader, doc: dict, name: str) -> list[dict]:
    value = doc.get(name)
    if value is None:
        raise r.fail((name,), f"the study needs at least one [[{name}]] table")
    if not isinstance(value, list) or not value:
        raise r.fail((name,), f"expected [[{name}]] tables")
    return value


def _unique(r: _Reader, names: list[str], table: str) -> None:
    for i, n in enumerate(names):
        if n in names[:i]:
            raise r.fail((table, i, "name"), f"name {n!r} is used twice; give each entry its own 'name'")


def _data(r: _Reader, t: Any, i: int, file: Path) -> DataSpec:
    p = ("data", i)
    t = r.table(t, p, _DATA_KEYS)
    name = r.get(t, p, "name", str, required=True)
    text_path = r.get(t, p, "path", str, default=name)
    from harmonia.studies.neural import DATA_KINDS, READ_KEYS

    kind = r.get(t, p, "kind", str, default="images")
    if kind not in DATA_KINDS:
        raise r.fail((*p, "kind"), f"expected {' or '.join(DATA_KINDS)}, got {kind!r}")
    if kind == "neural":
        return _neural_data(r, t, p, name, text_path, file)
    for key in READ_KEYS:
        if key in t:
            raise r.fail((*p, key), "a neural recording's reading option: set kind = \"neural\" for a recording")
    limit = r.get(t, p, "limit", int)
    if limit is not None and limit < 1:
        raise r.fail((*p, "limit"), f"must be >= 1, got {limit}")
    simulate = r.get(t, p, "simulate", dict)
    if simulate is not None:
        from harmonia.humans.simulate import SimulationConfig

        try:
            SimulationConfig(**simulate).validate()
        except (TypeError, ValueError) as e:
            raise r.fail((*p, "simulate"), str(e).splitlines()[0]) from None
    folder = (file.parent / text_path).resolve()
    return DataSpec(name, folder, r.get(t, p, "split", str, default="test"), limit, r.get(t, p, "size", int),
                    simulate, text_path)


def _neural_data(r: _Reader, t: dict[str, Any], p: tuple, name: str, text_path: str, file: Path) -> DataSpec:
    """A ``kind = "neural"`` entry: a recording and its reading options, or a simulated one."""
    from harmonia.studies.neural import READ_KEYS, DataSettingError, check_read_options, check_simulation

    for key in ("split", "limit"):
        if key in t:
            raise r.fail((*p, key), "applies to image data sets only (a neural recording is scored whole)")
    read = {k: t[k] for k in READ_KEYS if k in t}
    simulate = r.get(t, p, "simulate", dict)
    try:
        check_read_options(read)
        if simulate is not None:
            simulate = check_simulation(simulate)
    except DataSettingError as e:
        raise r.fail((*p, e.key), str(e).split(": ", 1)[1]) from None
    return DataSpec(name, (file.parent / text_path).resolve(), None, None, r.get(t, p, "size", int), simulate, text_path,
                    "neural", read)


def _model(r: _Reader, t: Any, i: int, data_names: dict[str, str]) -> ModelSpec:
    p = ("models", i)
    t = r.table(t, p, _MODEL_KEYS)
    name, pattern = r.get(t, p, "name", str), r.get(t, p, "pattern", str)
    if (name is None) == (pattern is None):
        raise r.fail(p, "give exactly one of 'name' or 'pattern'")
    if name is not None and not _is_path(name):
        from harmonia.models import ModelNotFoundError, resolve_name

        try:
            resolve_name(name)  # names are checked now (cheap); weights only when the task runs
        except ModelNotFoundError as e:
            raise r.fail((*p, "name"), str(e)) from None
    train = None
    if "train" in t:
        tp = (*p, "train")
        tt = r.table(t["train"], tp, _TRAIN_KEYS)
        tdata = r.get(tt, tp, "data", str, required=True)
        if tdata not in data_names:
            raise r.fail((*tp, "data"), f"no [[data]] named {tdata!r}; known: {', '.join(sorted(data_names))}")
        if data_names[tdata] != "images":
            raise r.fail((*tp, "data"), f"[[data]] {tdata!r} is a neural recording; training needs an image data set")
        variants = tuple(r.get(tt, tp, "variants", list, default=list(VARIANTS)))
        bad = [v for v in variants if v not in VARIANTS]
        if bad or not variants:
            raise r.fail((*tp, "variants"), f"expected a list of {', '.join(VARIANTS)}, got {list(variants)!r}")
        train = TrainSpec(tdata, r.get(tt, tp, "split", str, default="train"), variants,
                          r.get(tt, tp, "epochs", int, default=2), r.get(tt, tp, "preset", str, default="adamw"),
                          dict(r.get(tt, tp, "settings", dict, default={})))
        if pattern is not None:
            raise r.fail((*p, "train"), "a training stage needs one model 'name', not a pattern")
        from harmonia.training.trainer import PRESETS

        if train.preset not in PRESETS:
            raise r.fail((*tp, "preset"), f"unknown preset {train.preset!r} (choose from {', '.join(PRESETS)})")
    pretrained = r.get(t, p, "pretrained", bool, default=train is None)
    return ModelSpec(i, name, pattern, r.get(t, p, "label", str), pretrained, r.get(t, p, "num_classes", int),
                     dict(r.get(t, p, "kwargs", dict, default={})), r.get(t, p, "family", str), r.get(t, p, "all", bool, default=False),
                     train, r.get(t, p, "seed", int))


def _is_path(name: str) -> bool:
    from harmonia.models.registry import is_checkpoint_path

    return is_checkpoint_path(name)


def _measurement(r: _Reader, t: Any, i: int, data_names: dict[str, str]) -> MeasurementSpec:
    p = ("measurements", i)
    if not isinstance(t, dict):
        raise r.fail(p, "expected a table")
    from harmonia.studies.measures import STUDY_MEASUREMENTS, data_kind, measurement_settings

    kind = r.get(t, p, "kind", str, required=True)
    if kind not in STUDY_MEASUREMENTS:
        raise r.fail((*p, "kind"), f"unknown kind {kind!r}; kinds: {', '.join(STUDY_MEASUREMENTS.names())}")
    kind = STUDY_MEASUREMENTS.resolve(kind)
    t = r.table(t, p, _MEASUREMENT_COMMON | set(measurement_settings(kind)))
    data = r.get(t, p, "data", (list, str))
    if data is not None:
        data = (data,) if isinstance(data, str) else tuple(data)
        for d in data:
            if d not in data_names:
                raise r.fail((*p, "data"), f"no [[data]] named {d!r}; known: {', '.join(sorted(data_names))}")
            if data_names[d] != data_kind(kind):
                raise r.fail((*p, "data"), f"[[data]] {d!r} is {data_names[d]} data; a {kind} measurement takes "
                                           f"{data_kind(kind)} data (a [[data]] kind)")
    if not any(k == data_kind(kind) for n, k in data_names.items() if data is None or n in data):
        raise r.fail((*p, "kind"), f"no [[data]] of kind {data_kind(kind)!r}, which {kind} measurements need")
    models = r.get(t, p, "models", (list, str))
    if models is not None:
        models = (models,) if isinstance(models, str) else tuple(models)
        if not models or not all(isinstance(m, str) for m in models):
            raise r.fail((*p, "models"), f"expected model labels or patterns, got {list(models)!r}")
    settings = {k: v for k, v in t.items() if k not in ("kind", "name", "data", "batch_size", "models")}
    limit = settings.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise r.fail((*p, "limit"), f"must be an integer >= 1, got {limit!r}")
    from harmonia.studies.measures import SettingError, build_measurement

    try:
        build_measurement(kind, settings)  # every setting checked now, before any model loads
    except SettingError as e:
        raise r.fail((*p, e.key), str(e).split(": ", 1)[1]) from None
    return MeasurementSpec(kind, r.get(t, p, "name", str, default=kind), settings, data,
                           r.get(t, p, "batch_size", int), models)
