"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable


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


# --------------------------------------------------------------------------- never over a user's file

OUTPUTS_MANIFEST = ".harmonia-outputs"  # FOLDER/.harmonia-outputs: names harmonia wrote there, one a line


class OutputFolder:
    """The files a command writes into ``folder``, checked before they are written.

    The one rule every command that writes follows: an output path may not resolve to one of
    the command's ``inputs`` (however either is spelled: ``realpath``, and the same inode for
    hard links), and may not replace a file harmonia did not write. What harmonia writes in a
    folder is listed in ``FOLDER/.harmonia-outputs`` (before the file is written), so
    re-running a command replaces its own outputs and nothing else. Refusals are one-line
    :class:`FileExistsError` s naming ``option``.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "cat.png").write_bytes(b"photo")
        >>> out = OutputFolder(d, inputs=[d / "cat.png"], option="--out")
        >>> out.claim(["cat.npy"])[0].name
        'cat.npy'
        >>> out.claim(["../" + d.name + "/cat.png"])
        Traceback (most recent call last):
        ...
        FileExistsError: --out: ... would write over the input ...cat.png; choose another folder
    """

    def __init__(self, folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option: str = "--out") -> None:
        self.folder = Path(folder)
        self.option = option
        self._known: set[str] | None = None
        self._input_paths = {os.path.realpath(p): Path(p) for p in inputs}
        self._input_inodes = {}
        for real, p in self._input_paths.items():
            try:
                st = os.stat(real)
            except OSError:
                continue
            self._input_inodes[(st.st_dev, st.st_ino)] = p

    def _owned(self) -> set[str]:
        if self._known is None:  # read once; claim() keeps it up to date
            try:
                self._known = set((self.folder / OUTPUTS_MANIFEST).read_text().splitlines())
            except FileNotFoundError:
                self._known = set()
        return self._known

    def check(self, names: Iterable[str]) -> list[Path]:
        """The output paths for ``names``; raise if one would replace an input or a user's file."""
        owned = self._owned()
        paths = []
        for name in names:
            path = self.folder / name
            real = os.path.realpath(path)
            hit = self._input_paths.get(real)
            if hit is None and os.path.exists(real):
                st = os.stat(real)
                hit = self._input_inodes.get((st.st_dev, st.st_ino))
            if hit is not None:
                raise FileExistsError(f"{self.option}: {path} would write over the input {hit}; choose another folder")
            if os.path.lexists(path) and (os.path.islink(path) or name not in owned):
                raise FileExistsError(f"{self.option}: {path} exists and was not written by harmonia; "
                                      f"refusing to replace it (move it or choose another folder)")
            paths.append(path)
        return paths

    def claim(self, names: Iterable[str]) -> list[Path]:
        """:meth:`check` ``names``, then list them as harmonia's (so a re-run may replace them)."""
        names = list(names)
        paths = self.check(names)
        owned = self._owned()
        new = list(dict.fromkeys(n for n in names if n not in owned))
        if new:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Appended, not rewritten: a torn last line only forgets one name (the file is then refused).
            with open(self.folder / OUTPUTS_MANIFEST, "ab+") as f:
                end = f.seek(0, os.SEEK_END)
                torn = end > 0 and (f.seek(end - 1), f.read(1))[1] != b"\n"
                f.write(("\n" if torn else "").encode() + "".join(f"{n}\n" for n in new).encode())
            owned.update(new)
        return paths


def claim_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option: str = "--out") -> Path:
    """:meth:`OutputFolder.claim` for a single output file.

    Example:
        >>> import tempfile, pathlib
        >>> claim_output_file(pathlib.Path(tempfile.mkdtemp()) / "runs.csv").name
        'runs.csv'
    """
    p = Path(path)
    return OutputFolder(p.parent, inputs, option).claim([p.name])[0]


def unique_stems(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Output name stems, one per input and all different: the file's stem, or stem_EXT when
    two inputs share a stem (``coffee.png``, ``coffee.jpg`` -> ``coffee_png``, ``coffee_jpg``).

    Example:
        >>> unique_stems(["a/coffee.png", "a/coffee.jpg", "a/tea.png"])
        ['coffee_png', 'coffee_jpg', 'tea']
    """
    paths = [Path(p) for p in paths]
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem.lower()] = counts.get(p.stem.lower(), 0) + 1
    out: list[str] = []
    taken: set[str] = set()
    for p in paths:
        stem = p.stem if counts[p.stem.lower()] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        candidate, k = stem, 2
        while candidate.lower() in taken:  # case-insensitive file systems too
            candidate, k = f"{stem}-{k}", k + 1
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def unique_labels(names: Iterable[str]) -> list[str]:
    """File-name-safe labels for models (or other specs), all different: the last path part,
    with as many parent folders as it takes to tell them apart.

    Example:
        >>> unique_labels(["runs/a/final.pt", "runs/b/final.pt", "timm:resnet18"])
        ['a_final.pt', 'b_final.pt', 'timm_resnet18']
    """
    import re

    names = list(names)
    parts = [[re.sub(r"[^A-Za-z0-9._-]", "_", x) for x in Path(n).parts if x not in ("/", ".", "..")] or ["model"]
             for n in names]
    depth = [1] * len(names)

    def label(i: int) -> str:
        return "_".join(parts[i][-depth[i]:])

    while True:
        groups: dict[str, list[int]] = {}
        for i in range(len(names)):
            groups.setdefault(label(i), []).append(i)
        grown = False
        for members in groups.values():
            if len(members) > 1:
                for i in members:
                    if depth[i] < len(parts[i]):
                        depth[i] += 1
                        grown = True
        if not grown:
            break
    out, seen = [], {}
    for i in range(len(names)):
        lab = label(i)
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}-{seen[lab]}")
    return out


def records_csv(records: Iterable[dict]) -> str:
    r"""CSV text of dict records: the columns of every record, in first-seen order.

    Example:
        >>> records_csv([{"id": "a", "x": 1}, {"id": "b", "x": 2, "y": 3}])
        'id,x,y\na,1,\nb,2,3\n'
    """
    import csv
    import io

    records = list(records)
    columns: list[str] = []
    for r in records:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    return buf.getvalue()
