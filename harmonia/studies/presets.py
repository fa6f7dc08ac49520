"""Study files shipped with the package (``harmonia/resources/studies/NAME.toml``), by name.

``harmonia study run demo`` runs the preset ``demo`` (the baseline-vs-harmonized comparison of
``harmonia demo``) with the current folder as its root: its data and store are made there,
as if the file lay in that folder. :func:`study_text` writes a study document back as TOML
(the standard library reads TOML but does not write it), so ``harmonia demo`` leaves the
study it ran, with its options applied, as a file beside its results.

Example:
    >>> "demo" in preset_names()
    True
    >>> import tempfile
    >>> s = resolve_study("demo", root=Path(tempfile.mkdtemp()))
    >>> s.name, [m.label for m in s.models], s.store.name
    ('demo', ['cnn'], 'demo.sqlite')
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from harmonia.studies.spec import Study, load_study, parse_study


def _folder() -> Any:
    return resources.files("harmonia") / "resources" / "studies"


def preset_names() -> list[str]:
    """The names of the shipped study files."""
    return sorted(p.name[: -len(".toml")] for p in _folder().iterdir() if p.name.endswith(".toml"))


def preset_path(name: str) -> Path:
    """The shipped file of preset ``name`` (read it as an example; copy it to change it)."""
    if name not in preset_names():
        raise FileNotFoundError(f"no study file {name} and no preset of that name (presets: {', '.join(preset_names())})")
    return Path(str(_folder() / f"{name}.toml"))


def resolve_study(file: str | Path, root: Path | None = None) -> Study:
    """An existing study file, else the preset of that name rooted at ``root`` (default: the current folder)."""
    path = Path(file)
    if path.is_file() or path.suffix == ".toml" or len(path.parts) > 1:
        return load_study(path)
    text = preset_path(str(file)).read_text(encoding="utf-8")
    return parse_study(tomllib.loads(text), (root or Path.cwd()) / f"{file}.toml", text)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML here takes finite numbers, got {v}")
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML value for {type(v).__name__}")


def study_text(doc: dict[str, Any], header: str = "") -> str:
    """A study document (``[study]``, ``[[models]]`` with ``[models.train]``, ``[[data]]``,
    ``[[measurements]]``) as TOML text that :func:`tomllib.loads` reads back equal.

    Example:
        >>> doc = {"study": {"name": "s"}, "models": [{"name": "m", "train": {"data": "d", "settings": {"lr": 0.1}}}]}
        >>> tomllib.loads(study_text(doc)) == doc
        True
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for table, body in doc.items():
        entries = body if isinstance(body, list) else [body]
        for entry in entries:
            lines += ["", f"[[{table}]]" if isinstance(body, list) else f"[{table}]"]
            subtables = {k: v for k, v in entry.items() if k == "train" and isinstance(v, dict)}
            lines += [f"{k} = {_value(v)}" for k, v in entry.items() if k not in subtables]
            for k, v in subtables.items():
                lines.append(f"[{table}.{k}]")
                lines += [f"{kk} = {_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines).lstrip("\n") + "\n"
