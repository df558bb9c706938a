"""Write an output described by segments over its source, hashing source and output, in constant memory.

Three things run at once: the kernel copies the bytes (``os.copy_file_range``, falling back to
``os.sendfile`` and then to plain reads and writes), one thread hashes the source and one thread hashes
the output as it will be (the same bytes with the patches applied). hashlib and the copy release the GIL,
so on two cores this costs about as much as hashing alone; memory stays at a few chunk buffers.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from layerfreeze.formats.base import WrittenFile
from layerfreeze.formats.segments import Segment, check, from_patches, output_size

CHUNK = 4 * 1024 * 1024


def stream_copy(
    src: Path, dst: Path, patches: Mapping[int, bytes] | None = None, *, head: bytes = b"", skip: int = 0,
    source_sha256: str | None = None,
) -> WrittenFile:
    """Write ``head`` then ``src[skip:]`` to ``dst`` with ``patches`` (source offset -> bytes) applied;
    return the output's size and sha256 and the whole source's sha256 (``source_sha256`` when the
    caller already knows it: then only the output is hashed)."""
    size = os.stat(src).st_size
    return write_segments(src, dst, from_patches(size, patches, head=head, skip=skip),
                          source_sha256=source_sha256)


def _copy_segments(src: Path, dst: Path, segments: Sequence[Segment]) -> None:
    """``dst`` made of ``segments``: literal bytes, and byte ranges of ``src`` copied in the kernel."""
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        for seg in segments:
            if isinstance(seg, bytes):
                _write_all(fout.fileno(), seg)
            else:
                _copy_range(fin.fileno(), fout.fileno(), seg[0], seg[1] - seg[0])


def write_segments(src: Path, dst: Path, segments: Sequence[Segment], *,
                   source_sha256: str | None = None, hash_source: bool = True,
                   hash_output: bool = True) -> WrittenFile:
    """Write the output that ``segments`` describe over ``src`` to ``dst``; hash the output (unless
    ``hash_output`` is False: its sha256 is then "") and the source (unless ``hash_source`` is False:
    then ``source_sha256`` is returned as given, or "")."""
    size = os.stat(src).st_size
    check(segments, size)
    if not hash_output and not (hash_source and source_sha256 is None):
        _copy_segments(src, dst, segments)
        return WrittenFile(bytes=output_size(segments), sha256="", source_sha256=source_sha256 or "")
    src_hash = hashlib.sha256()
    out_hash = hashlib.sha256()
    errors: list[BaseException] = []
    # Up to the first changed byte the output equals the source, so one hash serves both there
    # (a TorchScript archive keeps data.pkl after the tensors; an unchanged file needs one hash only).
    first = segments[0] if segments else None
    hash_source = hash_source and source_sha256 is None
    shared = first[1] if isinstance(first, tuple) and first[0] == 0 and hash_source else 0
    split = threading.Event()

    # Named apart from the flags: a nested def of the same name would rebind the flag to a function,
    # which is always true (the source would then be hashed in full even when its digest is known).
    def hash_source_thread() -> None:
        nonlocal out_hash
        try:
            for _, chunk in _chunks(src, 0, shared):
                src_hash.update(chunk)
            out_hash = src_hash.copy()
        finally:
            split.set()
        if hash_source:
            for _, chunk in _chunks(src, shared, size):
                src_hash.update(chunk)

    def hash_output_thread() -> None:
        split.wait()
        for i, seg in enumerate(segments):
            if isinstance(seg, bytes):
                out_hash.update(seg)
                continue
            start = seg[0] if i or not shared else shared
            for _, chunk in _chunks(src, start, seg[1]):
                out_hash.update(chunk)

    threads = [threading.Thread(target=_guard(fn, errors), daemon=True)
               for fn in (hash_source_thread, hash_output_thread)]
    for thread in threads:
        thread.start()
    try:
        _copy_segments(src, dst, segments)
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return WrittenFile(bytes=output_size(segments), sha256=out_hash.hexdigest(),
                       source_sha256=src_hash.hexdigest() if hash_source else (source_sha256 or ""))


def _guard(fn: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    return run


def _chunks(path: Path, start: int, end: int) -> Iterator[tuple[int, bytearray]]:
    """(offset, bytearray) chunks of ``path[start:end]``; the buffer is reused between chunks."""
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        position = start
        while position < end:
            n = f.readinto(memoryview(buf)[: min(CHUNK, end - position)])
            if not n:
                raise OSError(f"{path} shrank while being copied")
            yield position, buf if n == CHUNK else buf[:n]
            position += n


def _copy_range(fin: int, fout: int, start: int, count: int) -> None:
    offset = start
    end = start + count
    try:
        while offset < end:
            n = os.copy_file_range(fin, fout, min(end - offset, 1 << 30), offset)
            if n == 0:
                raise OSError("source ended early")
            offset += n
        return
    except (AttributeError, OSError):
        pass  # not supported here (other platform, file systems): fall back
    try:
        while offset < end:
            n = os.sendfile(fout, fin, offset, min(end - offset, 1 << 30))
            if n == 0:
                raise OSError("source ended early")
            offset += n
        return
    except (AttributeError, OSError):
        pass
    while offset < end:
        data = os.pread(fin, min(CHUNK, end - offset), offset)
        if not data:
            raise OSError("source ended early")
        _write_all(fout, data)
        offset += len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
