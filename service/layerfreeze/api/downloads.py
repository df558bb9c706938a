"""Serving a stored artifact: strong ETag and Repr-Digest from its sha256, conditional requests,
byte ranges, and large reads (4 MiB, off the event loop) instead of Starlette's 64 KiB chunks.

Behind nginx (setting ``accel_redirect``), a download that is one stored file byte for byte is handed to
the proxy with ``X-Accel-Redirect``: the service still decides who may read it and what its headers are,
and nginx sends the bytes from the shared data volume with sendfile (see ``deploy/nginx/``)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from layerfreeze.api.numbers import MAX_DIGITS, ascii_digits, parse_uint
from layerfreeze.errors import RangeNotSatisfiable

CHUNK = 4 * 1024 * 1024
MAX_RANGES = 8


def content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def repr_digest(sha256_hex: str) -> str:
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def _offset(digits: str) -> int:
    """A byte position; any number of more than 18 digits lies beyond every file (no huge int())."""
    return parse_uint(digits) if len(digits) <= MAX_DIGITS else _BEYOND  # type: ignore[return-value]


_BEYOND = 10**MAX_DIGITS


def accel_uri(prefix: str, data_dir: Path, path: Path) -> str | None:
    """The internal URI under ``prefix`` at which the proxy serves ``path`` of the data directory; None
    when the setting is off or the file lies elsewhere. ``data_dir`` and ``path`` are both absolute paths
    built from the data directory's root (no symlinks to resolve)."""
    if not prefix:
        return None
    try:
        relative = path.relative_to(data_dir)
    except ValueError:
        return None
    return prefix + quote(relative.as_posix())


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges as inclusive (start, end) pairs; None to ignore the header (send everything).

    Raises RangeNotSatisfiable when no range overlaps the file or there are too many ranges.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    items = [s.strip() for s in spec.split(",")]
    if len(items) > MAX_RANGES:
        raise RangeNotSatisfiable(f"at most {MAX_RANGES} ranges per request", size=size)
    ranges: list[tuple[int, int]] = []
    for item in items:
        first, dash, last = item.partition("-")
        if not dash or (first and not ascii_digits(first)) or (last and not ascii_digits(last)):
            return None  # syntactically invalid: RFC 9110 says ignore the header
        if not first:
            suffix = _offset(last) if last else 0
            if suffix == 0:
                continue
            ranges.append((max(0, size - suffix), size - 1))
            continue
        start = _offset(first)
        end = _offset(last) if last else max(start, size - 1)
        if end < start:
            return None
        if start >= size:
            continue  # unsatisfiable on its own; 416 if no other range is
        ranges.append((start, min(end, size - 1)))
    if not ranges:
        raise RangeNotSatisfiable(f"no requested range lies within the {size} bytes of the artifact",
                                  size=size)
    return ranges


class ArtifactResponse(Response):
    """A file response for GET and HEAD with the file's content hash as its validator."""

    def __init__(self, path: Path, *, size: int, sha256: str | None, filename: str, method: str,
                 request_headers: dict[str, str], on_sent: object = None,
                 opener: Callable[[], Any] | None = None, etag: str | None = None,
                 media_type: str = "application/octet-stream", accel: str | None = None) -> None:
        """``accel``: the internal URI of ``path`` (:func:`accel_uri`), when the bytes to send are that
        file's, whole: a GET is then answered with ``X-Accel-Redirect`` and the proxy sends them."""
        super().__init__(content=None, status_code=200, media_type=media_type)
        self.path = path
        # Something with pread(n, pos) and close(): the file itself, or a stored model plus a patch.
        self.opener = opener or (lambda: _Reader(path))
        self.size = size
        self.send_body = method != "HEAD"
        self.on_sent = on_sent
        # Without a sha256 (a composed response, e.g. an archive), ``etag`` names the exact bytes instead.
        etag = f'"{sha256}"' if sha256 else f'"{etag}"'
        self.headers.update({
            "etag": etag, "accept-ranges": "bytes",
            "content-disposition": content_disposition(filename), "cache-control": "private, no-cache",
        })
        if sha256:
            self.headers["repr-digest"] = repr_digest(sha256)
        self.ranges: list[tuple[int, int]] | None = None
        self.boundary = ""
        self.accel_bytes = 0  # what the proxy is told to send, when it sends the file
        inm = request_headers.get("if-none-match")
        if inm is not None and (inm.strip() == "*" or etag in [t.strip().removeprefix("W/")
                                                                for t in inm.split(",")]):
            self.status_code = 304
            self.send_body = False
            self.headers["content-length"] = "0"
            return
        rng = request_headers.get("range")
        if_range = request_headers.get("if-range")
        if rng is not None and (if_range is None or if_range.strip() == etag):
            self.ranges = parse_range(rng, size)  # 416 here, as without the proxy
        if accel is not None and method == "GET":
            # The proxy serves the file at ``accel`` under these headers (its range filter answers the
            # request's Range: 206, multipart, If-Range against this ETag); no body from here.
            self.accel_bytes = sum(e - s + 1 for s, e in self.ranges) if self.ranges else size
            self.ranges = None
            self.send_body = False
            self.headers["x-accel-redirect"] = accel
            self.headers["content-length"] = "0"
            del self.headers["accept-ranges"]  # nginx's static handler sends its own
            return
        if not self.ranges:
            self.ranges = None
            self.headers["content-length"] = str(size)
            return
        self.status_code = 206
        if len(self.ranges) == 1:
            start, end = self.ranges[0]
            self.headers["content-range"] = f"bytes {start}-{end}/{size}"
            self.headers["content-length"] = str(end - start + 1)
            return
        self.boundary = secrets.token_hex(16)
        self.headers["content-type"] = f"multipart/byteranges; boundary={self.boundary}"
        self.headers["content-length"] = str(sum(len(h) + (e - s + 1) for h, s, e in self._parts())
                                             + len(self._closing()))

    def _parts(self) -> list[tuple[bytes, int, int]]:
        assert self.ranges is not None
        return [
            (f"\r\n--{self.boundary}\r\nContent-Type: application/octet-stream\r\n"
             f"Content-Range: bytes {s}-{e}/{self.size}\r\n\r\n".encode(), s, e)
            for s, e in self.ranges
        ]

    def _closing(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if not self.send_body:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if self.accel_bytes and callable(self.on_sent):
                self.on_sent(self.accel_bytes)  # what the proxy was told to send
            return
        async with anyio.create_task_group() as tg:
            async def watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_disconnect)
            await self._stream(send)
            tg.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        reader = await loop.run_in_executor(None, self.opener)
        ahead: asyncio.Future[bytes] | None = None
        sent = 0
        try:
            if self.ranges is None:
                segments: list[tuple[bytes, int, int]] = [(b"", 0, self.size - 1)]
                closing = b""
            elif len(self.ranges) == 1:
                segments = [(b"", *self.ranges[0])]
                closing = b""
            else:
                segments = self._parts()
                closing = self._closing()
            for head, start, end in segments:
                if head:
                    await send({"type": "http.response.body", "body": head, "more_body": True})
                # Read the next chunk in a thread while the current one is being sent.
                pos = start
                ahead = loop.run_in_executor(None, reader.pread, min(CHUNK, end - pos + 1), pos)
                while ahead is not None:
                    chunk = await ahead
                    if not chunk:
                        raise OSError(f"{self.path} is shorter than recorded")
                    pos += len(chunk)
                    ahead = (loop.run_in_executor(None, reader.pread, min(CHUNK, end - pos + 1), pos)
                             if pos <= end else None)
                    sent += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": closing, "more_body": False})
        finally:
            if ahead is not None and not ahead.done():  # cancelled (client gone) with a read in flight
                ahead.add_done_callback(lambda f: f.cancelled() or f.exception())
                loop.run_in_executor(None, reader.close)  # runs after that read: the lock orders them
            else:
                reader.close()
            if callable(self.on_sent):
                self.on_sent(sent)


class _Reader:
    """A file descriptor that a read in flight in another thread can never see closed under it."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.lock = threading.Lock()

    def pread(self, n: int, pos: int) -> bytes:
        with self.lock:
            return os.pread(self.fd, n, pos) if self.fd >= 0 else b""

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class ConcatReader:
    """``pread(n, pos)`` over pieces laid end to end: literal bytes, or (reader, size) where the reader has
    ``pread`` and ``close`` (e.g. a ``SegmentReader`` per file of a directory's output)."""

    def __init__(self, pieces: list[bytes | tuple[Any, int]]) -> None:
        self.pieces = pieces
        self.starts: list[int] = []
        pos = 0
        for piece in pieces:
            self.starts.append(pos)
            pos += len(piece) if isinstance(piece, bytes) else piece[1]
        self.size = pos

    def pread(self, n: int, pos: int) -> bytes:
        import bisect

        parts: list[bytes] = []
        end = min(pos + n, self.size)
        i = bisect.bisect_right(self.starts, pos) - 1
        while pos < end and 0 <= i < len(self.pieces):
            piece, rel = self.pieces[i], pos - self.starts[i]
            if isinstance(piece, bytes):
                data = piece[rel:rel + end - pos]
            else:
                data = piece[0].pread(min(end - pos, piece[1] - rel), rel)
                if not data:
                    return b"".join(parts)
            parts.append(data)
            pos += len(data)
            if rel + len(data) >= (len(piece) if isinstance(piece, bytes) else piece[1]):
                i += 1
        return b"".join(parts)

    def close(self) -> None:
        for piece in self.pieces:
            if not isinstance(piece, bytes):
                piece[0].close()
