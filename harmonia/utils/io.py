"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


class AtomicFile:
    """A binary file written under a temporary name and moved onto ``path`` on :meth:`commit`.

    The one way harmonia creates output files: the temporary file sits in the same folder
    (so the rename is atomic), gets the usual permissions (``0666 & ~umask``; mkstemp alone
    gives 0600), is fsynced before the rename, and :meth:`abort` removes it. Streaming
    writers (TFRecord shards) keep one open; :func:`atomic_write` wraps the rest.

    Example:
        >>> import tempfile, pathlib, stat
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> f = AtomicFile(p); _ = f.file.write(b"abc"); f.commit()
        >>> p.read_bytes(), stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask()
        (b'abc', True)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.chmod(self.tmp, 0o666 & ~_umask())
        self.file: BinaryIO | None = os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Flush, fsync and move the file into place."""
        if self.file is None:
            return
        f, self.file = self.file, None
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            f.close()
            _unlink_quietly(self.tmp)
            raise

    def abort(self) -> None:
        """Drop the temporary file; ``path`` is untouched."""
        if self.file is not None:
            self.file.close()
            self.file = None
        _unlink_quietly(self.tmp)


def _unlink_quietly(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` onto ``path``.

    A crash at any point leaves either the old file or the new one, never half of one.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> atomic_write(p, lambda tmp: pathlib.Path(tmp).write_text("hi"))
        >>> p.read_text()
        'hi'
    """
    out = AtomicFile(path)
    out.file.close()  # type: ignore[union-attr]  # ``write`` opens the path itself
    out.file = None
    try:
        write(out.tmp)
        with open(out.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(out.tmp, out.path)
    except BaseException:
        _unlink_quietly(out.tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_save_npy(path: str | os.PathLike, array) -> None:
    """Atomically write a ``.npy`` file (np.save on a path would append '.npy' to the temp name)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)

    atomic_write(path, write)
