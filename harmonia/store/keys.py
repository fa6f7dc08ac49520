"""Content-based cache keys.

A result is keyed on *what was computed*, never on names: the model's weight and
preprocessing hash (:func:`model_key`), the dataset files' content, the measurement's
settings and its own version (:class:`harmonia.measurements.Measurement`), not the
package version, so a release does not invalidate stored results. Renaming a checkpoint reuses its results; changing one weight, the input
size or a data file does not.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from harmonia import __version__

_CHUNK = 1 << 20
DATASET_KEY_VERSION = "dataset/1"  # bump only if what a dataset fingerprint covers changes


class FingerprintedDataset(Protocol):
    def files(self) -> Iterable[Path]: ...


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces); tuples become lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"cannot put {type(o).__name__} in a cache key")


def cache_key(settings: dict[str, Any], *, version: str = __version__) -> str:
    """Hex digest of ``settings`` plus a version (measurements pass their own ``KIND/VERSION``;
    the default, the package version, is for in-process caches only).

    Example:
        >>> cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
        True
    """
    payload = canonical_json({"settings": settings, "harmonia_version": version})
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def model_key(model: Any) -> str:
    """The content key of a model: its ``fingerprint()`` when it has one, else a digest of
    its class and weights (``state_dict``), so two differently initialised plain modules
    never share a key. Anything else is refused: a result keyed on nothing would be served
    to every other model.

    Example:
        >>> import torch, torch.nn as nn
        >>> torch.manual_seed(0); a = nn.Linear(2, 2); b = nn.Linear(2, 2)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model_key(a) == model_key(a), model_key(a) == model_key(b)
        (True, False)
    """
    fp = getattr(model, "fingerprint", None)
    if callable(fp):
        value = fp()
        if not value:
            raise ValueError(f"{type(model).__name__}.fingerprint() gave {value!r}: a model needs a content key")
        return str(value)
    import torch

    if isinstance(model, torch.nn.Module):
        return module_digest(model)
    raise ValueError(f"cannot key a model of type {type(model).__name__} by its content: pass a torch.nn.Module "
                     "or an object with a fingerprint() method")


def module_digest(module: Any) -> str:
    """blake2b digest of a module's class, structure (``repr``) and ``state_dict`` bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(module).__module__}.{type(module).__qualname__}\0{module!r}".encode())
    hash_state_dict(h, module.state_dict())
    return h.hexdigest()


def hash_state_dict(h: Any, state: dict[str, Any]) -> None:
    """Feed a ``state_dict`` (names, dtypes, shapes and bytes of its tensors) into hash ``h``."""
    import torch

    for key, value in state.items():
        h.update(key.encode())
        if not isinstance(value, torch.Tensor):
            h.update(repr(value).encode())
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def array_digest(*arrays: Any) -> str:
    """blake2b digest of NumPy arrays' shapes and bytes (C order), for keys on in-memory data.

    Example:
        >>> import numpy as np
        >>> array_digest(np.zeros((2, 3))) == array_digest(np.zeros((3, 2)))
        False
    """
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """blake2b digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_fingerprint(
    files: Iterable[str | os.PathLike],
    root: str | os.PathLike | None = None,
    digest: Callable[[Path], str] = lambda p: file_digest(p),
) -> str:
    """Hash of the content of ``files`` (and their paths relative to ``root``).

    ``digest`` lets a caller reuse per-file digests (the store caches them by size and
    modification time so that a second evaluation does not re-read every file).
    """
    h = hashlib.blake2b(digest_size=16)
    for p in files:
        p = Path(p)
        rel = os.path.relpath(p, root) if root is not None else p.name
        h.update(rel.encode() + b"\0" + digest(p).encode() + b"\n")
    return h.hexdigest()


def dataset_fingerprint(dataset: FingerprintedDataset, digest: Callable[[Path], str] | None = None) -> str:
    """Content hash of a dataset: every file it reads plus its reading settings.

    The dataset must have ``files()``; if it has ``config()`` (e.g. resize size, split),
    that is hashed too.
    """
    root = getattr(dataset, "root", None)
    content = files_fingerprint(dataset.files(), root=root, digest=digest or (lambda p: file_digest(p)))
    config = dataset.config() if hasattr(dataset, "config") else {}
    return cache_key({"files": content, "config": config}, version=DATASET_KEY_VERSION)
