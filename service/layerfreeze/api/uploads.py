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
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from layerfreeze.api.numbers import parse_uint
from layerfreeze.errors import BadRequest, InvalidForm, UnsupportedMediaType, UploadTooLarge, storage_error

if TYPE_CHECKING:  # python-multipart defines this TypedDict for type checkers only
    from python_multipart.multipart import MultipartCallbacks

BATCH_BYTES = 4 * 1024 * 1024  # hand the writer thread this much at a time
WRITEBACK_BYTES = 16 * 1024 * 1024  # start the disk writeback of every this much, without waiting
MAX_PARTS = 16
FORM_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the fields themselves


@dataclass
class UploadedFile:
    """One file part of a form, complete in ``path``; ``name`` is the filename as sent (a relative path
    for a model directory's files)."""

    path: Path
    name: str
    bytes: int
    sha256: str


@dataclass
class Upload:
    """A received form: the model file (complete, in ``path``) and the small text fields. A form that may
    carry several file parts (``max_files`` > 1) lists them all in ``files``; ``path`` and the rest describe
    the first."""

    path: Path
    filename: str
    bytes: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # parts under names the caller does not take
    files: list[UploadedFile] = field(default_factory=list)


def clean_filename(raw: str | None) -> str:
    """The base name a client sent, without directories or control characters, bounded."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().strip(".")
    name = re.sub(r"\s+", " ", name)[:200]
    return name or "model"


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


class _FormReader:
    """Callbacks for python-multipart: the file part goes to a ``_FileSink``, small fields to memory."""

    def __init__(self, tmp_path: Path, file_field: str, max_file_bytes: int, max_field_bytes: int,
                 text_fields: frozenset[str] | None = None, max_files: int = 1) -> None:
        self.tmp_path = tmp_path
        self.file_field = file_field
        self.max_files = max_files
        self.sinks: list[tuple[str, _FileSink]] = []  # every file part: (filename as sent, its sink)
        self.total = 0
        self.text_fields = text_fields
        self.unknown: list[str] = []
        self.max_file_bytes = max_file_bytes
        self.max_field_bytes = max_field_bytes
        self.parts = 0
        self.fields: dict[str, bytearray] = {}
        self.headers: dict[bytes, bytes] = {}
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.name = ""
        self.in_file = False
        self.sink: _FileSink | None = None
        self.filename = "model"
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        most = MAX_PARTS if self.max_files == 1 else MAX_PARTS + self.max_files
        if self.parts > most:
            raise BadRequest(f"the form has more than {most} parts")
        self.headers.clear()
        self.in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _disposition, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = opts.get(b"name", b"").decode("utf-8", "replace")
        if self.name == self.file_field:
            if self.sink is not None and self.max_files == 1:
                raise BadRequest(f"the form has more than one '{self.file_field}' part")
            if len(self.sinks) >= self.max_files:
                raise UploadTooLarge(f"the form has more than {self.max_files} '{self.file_field}' parts",
                                     limit="max_model_files", maximum=self.max_files)
            raw = opts.get(b"filename")
            sent = raw.decode("utf-8", "replace") if raw else ""
            if not self.sinks:
                self.filename = clean_filename(sent or None)
            path = self.tmp_path if not self.sinks else self.tmp_path.with_name(
                f"{self.tmp_path.name}.{len(self.sinks)}")
            self.sink = _FileSink(path)
            self.sinks.append((sent, self.sink))
            self.in_file = True
        elif self.name in self.fields or self.name in self.unknown:
            raise BadRequest(f"the form field '{self.name}' appears more than once")
        elif self.text_fields is not None and self.name not in self.text_fields:
            self.unknown.append(self.name)  # read past it (not kept): refused once the body is complete
        else:
            self.fields[self.name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            assert self.sink is not None
            self.total += end - start
            if self.total > self.max_file_bytes:
                what = "the model file is" if self.max_files == 1 else "the model's files are"
                raise UploadTooLarge(f"{what} larger than the limit of {self.max_file_bytes} bytes",
                                     limit="max_upload_bytes", maximum=self.max_file_bytes)
            self.sink.add(memoryview(data)[start:end])  # no copy: the chunk is immutable bytes
            return
        buf = self.fields.get(self.name)
        if buf is None:
            return  # an unknown part
        if len(buf) + (end - start) > self.max_field_bytes:
            raise UploadTooLarge(f"form field '{self.name}' is larger than {self.max_field_bytes} bytes",
                                 limit="max_form_field_bytes", maximum=self.max_field_bytes)
        buf.extend(data[start:end])

    def on_end(self) -> None:
        self.ended = True


async def receive_upload(request: Request, tmp_path: Path, *, max_file_bytes: int,
                         max_field_bytes: int, file_field: str = "model",
                         text_fields: frozenset[str] | None = None, max_files: int = 1) -> Upload:
    """Receive the form. With ``text_fields``, parts under other names are read past, not kept, and
    listed in ``Upload.unknown`` for the caller to refuse. Up to ``max_files`` file parts are taken, each
    to its own temporary file beside ``tmp_path`` (``Upload.files``); ``max_file_bytes`` bounds their
    total."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        alternative = " (or a JSON body naming a stored model)" if file_field == "model" else ""
        raise UnsupportedMediaType(
            f"this request takes multipart/form-data with a '{file_field}' file part{alternative}")
    max_body = max_file_bytes + MAX_PARTS * max_field_bytes + FORM_OVERHEAD * max_files
    declared = request.headers.get("content-length")
    if declared is not None:
        length = parse_uint(declared.strip())
        if length is None:
            raise BadRequest("invalid Content-Length")
        if length > max_body:
            raise UploadTooLarge(f"the upload is larger than the limit of {max_file_bytes} bytes",
                                 limit="max_upload_bytes", value=length, maximum=max_file_bytes)

    form = _FormReader(tmp_path, file_field, max_file_bytes, max_field_bytes, text_fields, max_files)
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    received = 0
    try:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body:
                    raise UploadTooLarge(f"the upload is larger than the limit of {max_file_bytes} bytes",
                                         limit="max_upload_bytes", maximum=max_file_bytes)
                parser.write(chunk)
                for _name, done in form.sinks[:-1]:  # file parts that ended in this chunk: finish them
                    if done.fd >= 0:
                        await done.flush(force=True)
                        await done.close()
                if form.sink is not None:
                    await form.sink.flush()
            parser.finalize()
        except FormParserError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        except ClientDisconnect as exc:
            raise BadRequest("the client disconnected before the upload was complete") from exc
        if not form.ended:
            raise BadRequest("the multipart body ended before its closing boundary")
        if form.sink is None and form.unknown:
            raise InvalidForm(f"the form has no '{file_field}' file part, and fields this request does not "
                              f"take: {', '.join(repr(n) for n in form.unknown)}", fields=form.unknown)
        if form.sink is None:
            raise BadRequest(f"the form has no '{file_field}' file part")
        for _name, sink in form.sinks:
            await sink.flush(force=True)
            await sink.close()
    except BaseException as exc:
        for _name, sink in form.sinks:
            with contextlib.suppress(OSError):
                await sink.close()
            with contextlib.suppress(OSError):
                sink.path.unlink()
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and (ours := storage_error(exc)) is not None:
            raise ours from exc
        raise
    text = {}
    for k, v in form.fields.items():
        try:
            text[k] = v.decode("utf-8")
        except UnicodeDecodeError as exc:
            for _name, sink in form.sinks:
                sink.path.unlink(missing_ok=True)
            raise BadRequest(f"form field '{k}' is not UTF-8") from exc
    files = [UploadedFile(path=sink.path, name=name, bytes=sink.size, sha256=sink.hash.hexdigest())
             for name, sink in form.sinks]
    first = files[0]
    return Upload(path=first.path, filename=form.filename, bytes=first.bytes, sha256=first.sha256,
                  fields=text, unknown=form.unknown, files=files)
