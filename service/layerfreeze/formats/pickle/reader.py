"""A read-only window onto part of a file, so a pickle parser can never read past its member or limit."""

from __future__ import annotations

from typing import BinaryIO

from layerfreeze.errors import LimitExceeded


class BoundedReader:
    """Reads ``file`` from ``start`` for at most ``length`` bytes; ``tell()`` gives absolute file offsets.

    Reading beyond ``length`` looks like end of file, unless ``limit_name`` is set, in which case
    crossing it raises LimitExceeded (a pickle longer than allowed, rather than a truncated one).
    """

    def __init__(self, file: BinaryIO, start: int, length: int, limit_name: str | None = None) -> None:
        self._file = file
        self._end = start + length
        self._limit_name = limit_name
        self._length = length
        file.seek(start)

    def tell(self) -> int:
        return self._file.tell()

    def _room(self, n: int) -> int:
        room = self._end - self._file.tell()
        if n > room and self._limit_name is not None:
            raise LimitExceeded(
                f"pickle is larger than {self._length} bytes", limit=self._limit_name, maximum=self._length
            )
        return max(0, min(n, room))

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._end - self._file.tell()
        return self._file.read(self._room(n))

    def readline(self, size: int = -1) -> bytes:
        room = self._end - self._file.tell()
        if size is None or size < 0 or size > room:
            size = room
        line = self._file.readline(size)
        if self._limit_name is not None and not line.endswith(b"\n") and self._file.tell() >= self._end:
            self._room(room + 1)
        return line
