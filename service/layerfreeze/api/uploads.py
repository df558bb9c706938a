"""Streaming ``multipart/form-data`` into the data directory, without spooling or copying.

The ``model`` part is written straight to a temporary file under ``<data_dir>/tmp`` while it is hashed;
the hashing and writing run in a thread (both release the GIL), overlapping with the event loop's
receiving and parsing of the next chunks. Size caps are enforced by ``Content-Length`` before reading and
again on every chunk, so an over-size body is refused without storing it; on any failure the temporary
file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from layerfreeze.api.problems import BadRequest, UnsupportedMediaType, UploadTooLarge, storage_error

BATCH_BYTES = 4 * 1024 * 1024  # hand the writer thread this much at a time
WRITEBACK_BYTES = 16 * 1024 * 1024  # start the disk writeback of every this much, without waiting
MAX_PARTS = 16
FORM_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the fields themselves


@dataclass
class Upload:
    """A received form: the model file (complete, in ``path``) and the small text fields."""

    path: Path
    filename: str
    bytes: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


def clean_filename(raw: str | None) -> str:
    """The base name a client sent, without directories or control characters, bounded."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().strip(".")
    name = re.sub(r"\s+", " ", name)[:200]
    return name or "model"


def output_filename(input_name: str) -> str:
    """``resnet.pt`` -> ``resnet.frozen.pt``; ``model`` -> ``model.frozen``."""
    stem, dot, suffix = input_name.rpartition(".")
    if not dot or not stem:
        return f"{input_name}.frozen"
    return f"{stem}.frozen.{suffix}"


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux ``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)``: start writeback, do not wait."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    sync_file_range_write = 2

    def call(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, sync_file_range_write)  # advisory: a failure only costs speed

    return call


_WRITEBACK = _sync_file_range()


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    if _WRITEBACK is not None:
        _WRITEBACK(fd, offset, nbytes)


class _FileSink:
    """Writes and hashes batches of chunks in a thread, one batch in flight at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.hash = hashlib.sha256()
        self.size = 0
        self.written = self.flushed = 0
        self.batch: list[memoryview] = []
        self.batch_bytes = 0
        self.pending: asyncio.Future[None] | None = None

    def add(self, chunk: memoryview) -> None:
        self.batch.append(chunk)
        self.batch_bytes += len(chunk)
        self.size += len(chunk)

    def _write(self, batch: list[memoryview]) -> None:
        for chunk in batch:
            self.hash.update(chunk)
            view = chunk
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        self.written += sum(len(c) for c in batch)
        if self.written - self.flushed >= WRITEBACK_BYTES:
            # Let the disk work while the rest arrives: the final fsync then waits only for the tail,
            # and the page cache never fills with one upload's dirty pages.
            start_writeback(self.fd, self.flushed, self.written - self.flushed)
            self.flushed = self.written

    async def flush(self, force: bool = False) -> None:
        if not force and self.batch_bytes < BATCH_BYTES:
            return
        if self.pending is not None:
            await self.pending
            self.pending = None
        if self.batch:
            batch, self.batch, self.batch_bytes = self.batch, [], 0
            self.pending = asyncio.get_running_loop().run_in_executor(None, self._write, batch)
        if force and self.pending is not None:
            await self.pending
            self.pending = None

    async def close(self) -> None:
        if self.pending is not None:
            with contextlib.suppress(Exception):
                await self.pending
            self.pending = None
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


async def receive_upload(request: Request, tmp_path: Path, *, max_file_bytes: int,
                         max_field_bytes: int, file_field: str = "model") -> Upload:
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType("POST /v1/jobs takes multipart/form-data with a 'model' file part")
    max_body = max_file_bytes + MAX_PARTS * max_field_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("invalid Content-Length")
        if int(declared) > max_body:
            raise UploadTooLarge(f"the upload is larger than the limit of {max_file_bytes} bytes",
                                 limit="max_upload_bytes", value=int(declared), maximum=max_file_bytes)

    state: dict[str, object] = {"parts": 0}
    fields: dict[str, bytearray] = {}
    header_name = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    current: dict[str, object] = {}
    sink: _FileSink | None = None
    file_name: list[str] = []
    ended = [False]

    def on_part_begin() -> None:
        state["parts"] = int(state["parts"]) + 1  # type: ignore[arg-type]
        if int(state["parts"]) > MAX_PARTS:  # type: ignore[arg-type]
            raise BadRequest(f"the form has more than {MAX_PARTS} parts")
        headers.clear()
        current.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal sink
        _disp, opts = parse_options_header(headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        current["name"] = name
        if name == file_field:
            if sink is not None:
                raise BadRequest(f"the form has more than one '{file_field}' part")
            raw = opts.get(b"filename")
            file_name.append(clean_filename(raw.decode("utf-8", "replace") if raw else None))
            sink = _FileSink(tmp_path)
            current["file"] = True
        else:
            if name in fields:
                raise BadRequest(f"the form field '{name}' appears more than once")
            fields[name] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current.get("file"):
            assert sink is not None
            if sink.size + (end - start) > max_file_bytes:
                raise UploadTooLarge(f"the model file is larger than the limit of {max_file_bytes} bytes",
                                     limit="max_upload_bytes", maximum=max_file_bytes)
            sink.add(memoryview(data)[start:end])
        else:
            buf = fields[str(current["name"])]
            if len(buf) + (end - start) > max_field_bytes:
                raise UploadTooLarge(f"form field '{current['name']}' is larger than {max_field_bytes} bytes",
                                     limit="max_form_field_bytes", maximum=max_field_bytes)
            buf.extend(data[start:end])

    def on_end() -> None:
        ended[0] = True

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_end": on_end,
    })
    received = 0
    try:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body:
                    raise UploadTooLarge(f"the upload is larger than the limit of {max_file_bytes} bytes",
                                         limit="max_upload_bytes", maximum=max_file_bytes)
                parser.write(chunk)
                if sink is not None:
                    await sink.flush()
            parser.finalize()
        except FormParserError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        except ClientDisconnect as exc:
            raise BadRequest("the client disconnected before the upload was complete") from exc
        if not ended[0]:
            raise BadRequest("the multipart body ended before its closing boundary")
        if sink is None:
            raise BadRequest(f"the form has no '{file_field}' file part")
        await sink.flush(force=True)
        await sink.close()
    except BaseException as exc:
        if sink is not None:
            with contextlib.suppress(OSError):
                await sink.close()
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and (ours := storage_error(exc)) is not None:
            raise ours from exc
        raise
    text = {}
    for k, v in fields.items():
        try:
            text[k] = v.decode("utf-8")
        except UnicodeDecodeError as exc:
            tmp_path.unlink(missing_ok=True)
            raise BadRequest(f"form field '{k}' is not UTF-8") from exc
    return Upload(path=tmp_path, filename=file_name[0], bytes=sink.size, sha256=sink.hash.hexdigest(),
                  fields=text)
