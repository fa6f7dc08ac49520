"""Exclusive locks on things being written (a run folder, a store run, a dataset split).

A lock is a small file holding the holder's pid (removed on release), locked with a POSIX
record lock (``lockf``): the kernel drops it when the holder dies however it dies (kill -9
included), so a lock file left behind by a dead process is simply taken over, while a live
holder makes the next writer refuse at once with a message naming its pid. Within one
process a lock is re-entrant (a second :class:`PathLock` on the same file just counts), so
code that opens the same run twice in one process does not lock itself out. (A POSIX lock
is dropped when its process closes *any* descriptor of the file: nothing here opens a lock
file it holds.)

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with PathLock(path, "run folder /x") as lock:
    ...     lock.held, path.exists()
    (True, True)
    >>> path.exists()  # removed on release
    False
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: fall back to pid files only
    fcntl = None  # type: ignore[assignment]


class LockedError(OSError):
    """Someone else is writing this; the message names what and the holder's pid."""


# realpath of the lock file -> [open file, count]: locks this process holds
_HELD: dict[str, list[Any]] = {}
_GUARD = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: Path) -> int | None:
    try:
        first = path.read_text().split()
        return int(first[0]) if first else None
    except (OSError, ValueError):
        return None


class PathLock:
    """Hold an exclusive lock on ``path`` (created if missing) while in use.

    ``what`` names the locked thing in the refusal, e.g. "run folder runs/a".
    :meth:`acquire` raises :class:`LockedError` if another live process holds it.
    """

    def __init__(self, path: str | os.PathLike, what: str, remove_empty_parent: bool = False) -> None:
        self.path = Path(path)
        self.what = what
        self.remove_empty_parent = remove_empty_parent  # for a folder that holds only locks
        self._key: str | None = None

    def acquire(self) -> "PathLock":
        if self._key is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = os.path.join(os.path.realpath(self.path.parent), self.path.name)
        with _GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
                self._key = key
                return self
            f = self._open_locked()
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            _HELD[key] = [f, 1]
            self._key = key
        return self

    def _open_locked(self) -> Any:
        # The file is removed on release; a file we locked after its holder removed it is stale: retry.
        while True:
            try:
                f = open(self.path, "a+")
            except FileNotFoundError:  # a releasing holder removed the (empty) lock folder
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                self._lock(f)
                try:
                    same = os.path.samestat(os.fstat(f.fileno()), os.stat(self.path))
                except FileNotFoundError:
                    same = False
            except BaseException:
                f.close()
                raise
            if same:
                return f
            f.close()

    def _lock(self, f: Any) -> None:
        if fcntl is not None:
            try:
                # A POSIX record lock, not flock: it belongs to this process only, so DataLoader
                # workers forked while it is held do not keep it alive after a kill -9 of their parent.
                fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held by another process
                pass
            holder = _read_holder(self.path)
        else:  # no fcntl: the pid in the file decides; a dead holder's file is taken over
            holder = _read_holder(self.path)
            if holder is None or holder == os.getpid() or not _pid_alive(holder):
                return
        who = f"pid {holder}" if holder is not None else "another process"
        raise LockedError(f"{self.what} is being written by {who} (lock {self.path}); "
                          f"wait for it to finish or stop it")

    def release(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        with _GUARD:
            held = _HELD.get(key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[key]
            f = held[0]
            # Remove the file while still holding it, then unlock (see _open_locked).
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            f.close()
            if self.remove_empty_parent:
                try:
                    os.rmdir(self.path.parent)
                except OSError:  # not empty: other locks are held
                    pass

    @property
    def held(self) -> bool:
        return self._key is not None

    def __enter__(self) -> "PathLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release (an exception path)
        try:
            self.release()
        except Exception:
            pass


LOCK_FILE = ".harmonia.lock"


def folder_lock(folder: str | os.PathLike, what: str = "folder") -> PathLock:
    """The lock of a folder being written (``FOLDER/.harmonia.lock``); acquire it before writing.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with folder_lock(d, "run folder"), folder_lock(d) as again:  # the same process may re-enter
        ...     again.held
        True
    """
    return PathLock(Path(folder) / LOCK_FILE, f"{what} {folder}")
