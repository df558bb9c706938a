"""Writing a download safely: stream to a temporary file beside the target, hash on the way, verify, rename.

The target only ever appears complete and verified; a failed or corrupted download leaves no file behind.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote

from ._errors import IntegrityError

__all__ = ["DownloadSink", "digest_from_headers", "filename_from_disposition"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def digest_from_headers(headers: dict[str, str] | object) -> dict[str, str]:
    """sha256 hex digests the answer promises: ``{"etag": ..., "repr-digest": ...}`` (those present)."""
    get = headers.get  # type: ignore[attr-defined]
    found: dict[str, str] = {}
    etag = get("etag")
    if etag and not etag.startswith("W/"):  # a weak ETag says nothing about the bytes
        value = etag.strip().strip('"').lower()
        if _HEX64.match(value):
            found["etag"] = value
    digest = get("repr-digest")
    if digest:
        for item in digest.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == "sha-256" and value.startswith(":") and value.endswith(":"):
                try:
                    found["repr-digest"] = base64.b64decode(value[1:-1], validate=True).hex()
                except (binascii.Error, ValueError):
                    raise IntegrityError(f"malformed Repr-Digest header {digest!r}") from None
    return found


def filename_from_disposition(value: str | None) -> str | None:
    """The file name from ``Content-Disposition`` reduced to a bare name (never a path)."""
    if not value:
        return None
    star = re.search(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", value, re.I)
    if star:
        name = unquote(star.group(2).strip(), encoding=star.group(1) or "utf-8")
    else:
        plain = re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"|filename\s*=\s*([^;]+)', value, re.I)
        if not plain:
            return None
        name = plain.group(1) if plain.group(1) is not None else plain.group(2).strip()
    name = os.path.basename(name.replace("\\", "/")).strip()
    return name if name not in ("", ".", "..") else None


def _new_file_mode() -> int:
    """``0o666`` less the umask, as ``open()`` creates files; read from /proc where it exists, since
    setting the umask to read it is not thread-safe."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadSink:
    """Receives the body in order (possibly over several resumed requests) and commits it atomically."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.fchmod(fd, _new_file_mode())  # the finished file gets the mode cp would give it, not 0600
        self.tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash: Any = hashlib.sha256()  # None once bytes were copied in the kernel: hashed at commit
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        if self._hash is not None:
            self._hash.update(chunk)
        self.written += len(chunk)

    def copy_range(self, src: BinaryIO, start: int, stop: int) -> bool:
        """Append ``src[start:stop]`` by an in-kernel copy (``copy_file_range``: no trip through this
        process); False, with nothing written, where the system cannot. The sha256 is then taken from
        the file as written, at ``commit``."""
        if not hasattr(os, "copy_file_range") or stop <= start:
            return stop <= start
        self._file.flush()
        out = self._file.fileno()
        done = 0
        try:
            while start + done < stop:
                n = os.copy_file_range(src.fileno(), out, stop - start - done, start + done)
                if n <= 0:
                    raise OSError(errno.EIO, "the base ended early")
                done += n
        except OSError as exc:
            if done or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            return False
        self._file.seek(0, os.SEEK_END)
        self._hash = None  # hashed from the file at commit
        self.written += done
        return True

    def restart(self) -> None:
        """The service sent the whole body again (no Range support): start over."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.written = 0

    def commit(self, expected: dict[str, str], size: int | None = None) -> str:
        """Verify against every promised digest (``{source: hex}``) and the size, then rename into place."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        actual = self._hash.hexdigest() if self._hash is not None else _sha256_of(self.tmp)
        try:
            if size is not None and size != self.written:
                raise IntegrityError(f"downloaded {self.written} bytes, expected {size}",
                                     expected=str(size), actual=str(self.written))
            for source, want in expected.items():
                if want.lower() != actual:
                    raise IntegrityError(
                        f"sha256 of the download ({actual}) does not match the {source} ({want.lower()})",
                        expected=want.lower(), actual=actual)
            os.replace(self.tmp, self.target)
        except BaseException:
            self.discard()
            raise
        return actual

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)
