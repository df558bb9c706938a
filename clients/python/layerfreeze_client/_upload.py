"""A multipart/form-data body streamed from disk: constant memory, exact Content-Length, re-streamable.

The body is the text fields, then the file part read in chunks, then the closing boundary. Its length is
known before the first byte is sent, so the service can refuse an oversized upload by ``Content-Length``
alone; and because the file is re-opened (or re-seeked) for each attempt, a failed upload can be retried.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from ._progress import Progress

__all__ = ["FileTail", "MultipartFiles", "MultipartUpload"]

CHUNK_SIZE = 1 << 20


def _quote(value: str) -> str:
    # RFC 7578 4.2: the name and filename are quoted strings; escape what would end them.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartUpload:
    """One file plus text fields; iterate ``sync_body`` or ``async_body`` to send it."""

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        fields: dict[str, str],
        *,
        file_field: str = "model",
        filename: str | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.chunk_size = chunk_size
        self._path: Path | None = None
        self._file: BinaryIO | None = None
        self._start = 0
        if isinstance(source, str | os.PathLike):
            self._path = Path(source)
            self.file_size = self._path.stat().st_size
            name = filename or self._path.name
        else:
            self._file = source
            self._start = source.tell() if source.seekable() else 0
            self.file_size = self._remaining(source)
            name = filename or Path(str(getattr(source, "name", "") or "upload.bin")).name
        self.filename = name
        self.boundary = "layerfreeze-" + secrets.token_hex(16)
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(k)}"\r\n\r\n'.encode()
            + v.encode() + b"\r\n"
            for k, v in fields.items()
        )
        self._head = head + (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(file_field)}"; '
            f'filename="{_quote(name)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._used = False

    def _remaining(self, f: BinaryIO) -> int:
        if not f.seekable():
            raise ValueError("a model given as a file object must be seekable (its size goes in the request)")
        end = f.seek(0, os.SEEK_END)
        f.seek(self._start)
        return end - self._start

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return len(self._head) + self.file_size + len(self._tail)

    @property
    def restreamable(self) -> bool:
        """Whether the body can be sent again from the start (a path, or a seekable file object)."""
        return self._path is not None or (self._file is not None and self._file.seekable())

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Content-Length": str(self.content_length)}

    def _open(self) -> tuple[BinaryIO, bool]:
        if self._path is not None:
            return self._path.open("rb"), True
        assert self._file is not None
        if self._used:
            self._file.seek(self._start)
        self._used = True
        return self._file, False

    def _read_exact(self, f: BinaryIO, left: int) -> bytes:
        chunk = f.read(min(self.chunk_size, left))
        if not chunk:
            raise OSError(f"{self.filename}: the file shrank while it was being uploaded")
        return chunk

    def sync_body(self, progress: Progress | None = None) -> Iterator[bytes]:
        f, owned = self._open()
        try:
            yield self._head
            left = self.file_size
            while left > 0:
                chunk = self._read_exact(f, left)
                left -= len(chunk)
                if progress is not None:
                    progress.update(len(chunk))
                yield chunk
            yield self._tail
        finally:
            if owned:
                f.close()

    async def async_body(self, progress: Progress | None = None) -> AsyncIterator[bytes]:
        from anyio import to_thread  # httpx depends on anyio; reads leave the event loop free

        f, owned = self._open()
        try:
            yield self._head
            left = self.file_size
            while left > 0:
                chunk = await to_thread.run_sync(self._read_exact, f, left)
                left -= len(chunk)
                if progress is not None:
                    progress.update(len(chunk))
                yield chunk
            yield self._tail
        finally:
            if owned:
                f.close()


class MultipartFiles:
    """Several files as ``file`` parts of one form, each part's filename its relative path (a model
    directory); streamed from disk like ``MultipartUpload``, with the same interface for sending."""

    def __init__(self, files: dict[str, Path], *, file_field: str = "file",
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self.boundary = "layerfreeze-" + secrets.token_hex(16)
        self.filename = f"{len(files)} files"
        self._parts = [(
            (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(file_field)}"; '
             f'filename="{_quote(rel)}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode(),
            Path(path), Path(path).stat().st_size) for rel, path in files.items()]
        self.file_size = sum(size for _h, _p, size in self._parts)
        self._tail = f"--{self.boundary}--\r\n".encode()
        self.restreamable = True

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return sum(len(h) + size + 2 for h, _p, size in self._parts) + len(self._tail)

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Content-Length": str(self.content_length)}

    def sync_body(self, progress: Progress | None = None) -> Iterator[bytes]:
        for head, path, size in self._parts:
            yield head
            with path.open("rb") as f:
                left = size
                while left > 0:
                    chunk = f.read(min(self.chunk_size, left))
                    if not chunk:
                        raise OSError(f"{path}: the file shrank while it was being uploaded")
                    left -= len(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
                    yield chunk
            yield b"\r\n"
        yield self._tail

    async def async_body(self, progress: Progress | None = None) -> AsyncIterator[bytes]:
        from anyio import to_thread  # reads leave the event loop free

        for head, path, size in self._parts:
            yield head
            f = await to_thread.run_sync(path.open, "rb")
            try:
                left = size
                while left > 0:
                    chunk = await to_thread.run_sync(f.read, min(self.chunk_size, left))
                    if not chunk:
                        raise OSError(f"{path}: the file shrank while it was being uploaded")
                    left -= len(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
                    yield chunk
            finally:
                f.close()
            yield b"\r\n"
        yield self._tail


class FileTail:
    """A file's bytes from ``start`` to its end, read in chunks: the body of a tus PATCH."""

    def __init__(self, path: Path, start: int, progress: Progress, chunk_size: int = CHUNK_SIZE) -> None:
        self.path, self.start, self.progress, self.chunk_size = path, start, progress, chunk_size

    def _open(self) -> BinaryIO:
        f = self.path.open("rb")
        f.seek(self.start)
        return f

    def sync_body(self) -> Iterator[bytes]:
        with self._open() as f:
            while chunk := f.read(self.chunk_size):
                self.progress.update(len(chunk))
                yield chunk

    async def async_body(self) -> AsyncIterator[bytes]:
        from anyio import to_thread  # reads leave the event loop free

        f = await to_thread.run_sync(self._open)
        try:
            while chunk := await to_thread.run_sync(f.read, self.chunk_size):
                self.progress.update(len(chunk))
                yield chunk
        finally:
            f.close()
