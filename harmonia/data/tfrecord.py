"""TFRecord files without TensorFlow: streaming reader with CRC32C checks, and a writer.

A TFRecord file is a sequence of records, each::

    uint64 length (little endian) | uint32 masked CRC32C of those 8 bytes
    length bytes of data          | uint32 masked CRC32C of the data

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8  (mod 2**32)``.
Every problem (bad CRC, truncated file, gzip file) raises :class:`TFRecordError`
naming the file and the 0-based record index, never silently wrong data.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.tfrecords"
    >>> with TFRecordWriter(path) as w:
    ...     w.write(b"hello"); w.write(b"world")
    >>> [(i, bytes(r)) for i, r in iter_records(path)]
    [(0, b'hello'), (1, b'world')]
    >>> count_records(path)
    2
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

try:
    from crc32c import crc32c as _crc32c
except ImportError:  # pragma: no cover - crc32c is a declared dependency
    _crc32c = None

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length
_FOOTER = struct.Struct("<I")  # masked CRC of the data
_GZIP_MAGIC = b"\x1f\x8b"
# No real record is this large; a corrupt length must not make us allocate petabytes.
_MAX_RECORD = 1 << 34


class TFRecordError(ValueError):
    """A TFRecord file is corrupt or unreadable; ``path`` and ``index`` say where."""

    def __init__(self, path: str | os.PathLike, index: int | None, reason: str) -> None:
        self.path = str(path)
        self.index = index
        self.reason = reason
        where = f"{path}: record {index}" if index is not None else str(path)
        super().__init__(f"{where}: {reason}")


def _crc(data: bytes | memoryview) -> int:
    if _crc32c is None:  # pragma: no cover
        raise ImportError("reading TFRecords with CRC checks needs the 'crc32c' package (pip install crc32c)")
    return _crc32c(data)


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C of ``data``.

    Example:
        >>> hex(masked_crc32c(b""))
        '0xa282ead8'
    """
    crc = _crc(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _open(path: Path) -> BinaryIO:
    try:
        f = open(path, "rb", buffering=1 << 16)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if f.read(2) == _GZIP_MAGIC:
        f.close()
        raise TFRecordError(path, None, "gzip-compressed TFRecord files are not supported; decompress it first")
    f.seek(0)
    return f


def _read_header(f: BinaryIO, path: Path, index: int, size: int, verify_crc: bool) -> int | None:
    """Read one record header at the current position; None at a clean end of file."""
    head = f.read(_HEADER.size)
    if not head:
        return None
    if len(head) < _HEADER.size:
        raise TFRecordError(path, index, f"truncated file: header has {len(head)} of {_HEADER.size} bytes")
    length, length_crc = _HEADER.unpack(head)
    if verify_crc and masked_crc32c(head[:8]) != length_crc:
        raise TFRecordError(path, index, "length CRC mismatch (corrupt file, or not a TFRecord file)")
    end = f.tell() + length + _FOOTER.size
    if length > _MAX_RECORD or (size >= 0 and end > size):
        raise TFRecordError(
            path, index, f"truncated file: record needs {length + _FOOTER.size} more bytes, file ends first"
        )
    return length


def iter_records(
    path: str | os.PathLike, *, verify_crc: bool = True, start: int = 0, step: int = 1
) -> Iterator[tuple[int, bytes]]:
    """Stream ``(index, data)`` for records ``start, start + step, ...`` of one file.

    Records that are not selected are skipped by seeking (their length CRC is still
    checked), so ``step`` splits one file between workers cheaply.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     for r in (b"a", b"b", b"c"): w.write(r)
        >>> [(i, bytes(r)) for i, r in iter_records(path, start=1, step=2)]
        [(1, b'b')]
    """
    if start < 0 or step < 1:
        raise ValueError("start must be >= 0 and step >= 1")
    path = Path(path)
    size = path.stat().st_size if path.exists() else -1
    with _open(path) as f:
        index = 0
        while True:
            length = _read_header(f, path, index, size, verify_crc)
            if length is None:
                return
            if index < start or (index - start) % step:
                f.seek(length + _FOOTER.size, os.SEEK_CUR)
            else:
                data = f.read(length)
                footer = f.read(_FOOTER.size)
                if len(data) < length or len(footer) < _FOOTER.size:
                    raise TFRecordError(path, index, "truncated file: record data cut short")
                if verify_crc and masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
                    raise TFRecordError(path, index, "data CRC mismatch (corrupt record)")
                yield index, data
            index += 1


def record_offsets(path: str | os.PathLike, *, verify_crc: bool = True) -> list[int]:
    """Byte offset of every record, from a header-only scan (data CRCs are not checked here).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(b"abc"); w.write(b"de")
        >>> record_offsets(path)     # 8 + 4 + 3 + 4 bytes for the first record
        [0, 19]
    """
    path = Path(path)
    size = path.stat().st_size if path.exists() else -1
    offsets: list[int] = []
    with _open(path) as f:
        while True:
            pos = f.tell()
            length = _read_header(f, path, len(offsets), size, verify_crc)
            if length is None:
                return offsets
            offsets.append(pos)
            f.seek(length + _FOOTER.size, os.SEEK_CUR)


def count_records(path: str | os.PathLike, *, verify_crc: bool = True) -> int:
    """Number of records in a file, reading only the 12-byte headers (cheap, no decoding).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(b"abc")
        >>> count_records(path)
        1
    """
    return len(record_offsets(path, verify_crc=verify_crc))


def read_record_at(
    f: BinaryIO, offset: int, *, path: str | os.PathLike = "<file>", index: int | None = None, verify_crc: bool = True
) -> bytes:
    """Read the record starting at byte ``offset`` of an open file (for random access).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.tfrecords"
        >>> with TFRecordWriter(path) as w:
        ...     w.write(b"abc"); w.write(b"de")
        >>> with open(path, "rb") as f:
        ...     read_record_at(f, record_offsets(path)[1], path=path, index=1)
        b'de'
    """
    f.seek(offset)
    path = Path(path)
    size = os.fstat(f.fileno()).st_size
    length = _read_header(f, path, -1 if index is None else index, size, verify_crc)
    if length is None:
        raise TFRecordError(path, index, f"no record at offset {offset} (end of file)")
    data = f.read(length)
    footer = f.read(_FOOTER.size)
    if len(data) < length or len(footer) < _FOOTER.size:
        raise TFRecordError(path, index, "truncated file: record data cut short")
    if verify_crc and masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
        raise TFRecordError(path, index, "data CRC mismatch (corrupt record)")
    return data


def encode_record(data: bytes | memoryview) -> bytes:
    """One framed record (header, data, footer) as bytes.

    Example:
        >>> len(encode_record(b"abc"))
        19
    """
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc32c(length)) + bytes(data) + _FOOTER.pack(masked_crc32c(data))


class TFRecordWriter:
    """Write a TFRecord file; it appears atomically (temp file + rename) on :meth:`close`.

    On an exception inside ``with``, the partial file is deleted and ``path`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> with TFRecordWriter(pathlib.Path(tempfile.mkdtemp()) / "a.tfrecords") as w:
        ...     w.write(b"payload")
        >>> w.count
        1
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from harmonia.utils.io import AtomicFile

        self.path = Path(path)
        self._out = AtomicFile(self.path)  # the shared writer: same permissions as every other output
        self.count = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append one record."""
        if self._out.file is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._out.file.write(encode_record(data))
        self.count += 1

    def close(self) -> None:
        """Flush, fsync and move the file into place."""
        self._out.commit()

    def abort(self) -> None:
        """Drop the partial file."""
        self._out.abort()

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
