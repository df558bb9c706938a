"""The data directory: where models' and jobs' files live, and atomic writes into it.

    <data_dir>/jobs.sqlite3            records of blobs, models and jobs (storage.jobs, storage.models)
    <data_dir>/blobs/<ab>/<sha256>     uploaded files, stored once by content (ContentStore)
    <data_dir>/models/<id>/stored.json what reading the model found (formats.stored), for later freezes
    <data_dir>/models/<id>/report.json the model's report as it is
    <data_dir>/jobs/<id>/report.json   a job's report
    <data_dir>/jobs/<id>/patch.json    a job's output as segments over its input blob
    <data_dir>/jobs/<id>/output        a full copy (jobs finished before stored models existed)
    <data_dir>/tmp/                    files being written; emptied at start

Every file becomes visible under its final name only once complete and fsynced (temp + fsync + rename),
so a crash at any moment leaves either the old state or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import time
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it to ``final`` and fsync the directory: the file appears whole or not at all."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def publish_all(renames: list[tuple[Path, Path]]) -> None:
    """``publish`` for several files of one directory, with a single directory fsync."""
    for tmp, _final in renames:
        fsync_file(tmp)
    for tmp, final in renames:
        os.replace(tmp, final)
    for parent in {final.parent for _tmp, final in renames}:
        fsync_dir(parent)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file (not yet fsynced: ``publish``/``publish_all`` do that)."""
    with open(path, "xb") as f:
        f.write(data)


FINAL_NAMES = ("input", "output", "report.json", "patch.json")


class ContentStore:
    """Files addressed by their sha256: ``path``, ``adopt`` (a complete temporary file), ``remove``,
    ``shas``. Which blobs are still referenced is the database's business (storage.models)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def adopt(self, tmp: Path, sha256: str) -> bool:
        """Publish ``tmp`` as the blob ``sha256``; True when new, False (``tmp`` removed) when the
        content was already stored."""
        final = self.path(sha256)
        if final.is_file():
            tmp.unlink(missing_ok=True)
            return False
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        publish(tmp, final)
        return True

    def remove(self, sha256: str) -> None:
        with contextlib.suppress(OSError):
            self.path(sha256).unlink()

    def shas(self) -> set[str]:
        return {p.name for d in self.root.iterdir() if d.is_dir() for p in d.iterdir() if len(p.name) == 64}


STALE_TMP_S = 24 * 3600  # a temporary folder of another host untouched this long belongs to no one


def _stale(entry: Path) -> bool:
    """A temporary folder ``<host>.<pid>.<random>`` whose process is gone: on this host, no such pid;
    elsewhere (or a name of another shape), untouched for STALE_TMP_S."""
    parts = entry.name.split(".")
    if len(parts) >= 3 and parts[-2].isdigit() and ".".join(parts[:-2]) == socket.gethostname():
        try:
            os.kill(int(parts[-2]), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    try:
        return time.time() - entry.stat().st_mtime > STALE_TMP_S
    except OSError:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # gone meanwhile: nothing to remove


class BlobStore:
    """Paths of model and job files under one data directory."""

    def __init__(self, root: Path, private_tmp: bool = False) -> None:
        """``private_tmp``: several processes share the directory (the distributed mode); this one
        writes its temporary files into a folder of its own, ``tmp/<host>.<pid>.<random>/``."""
        self.root = Path(root).resolve()
        self.jobs_dir = self.root / "jobs"
        self.models_dir = self.root / "models"
        self.shared_tmp = self.root / "tmp"
        self.private_tmp = private_tmp
        self.tmp_dir = (self.shared_tmp / f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
                        if private_tmp else self.shared_tmp)
        self.content = ContentStore(self.root / "blobs")

    def prepare(self) -> None:
        """Create the layout and drop leftovers of interrupted writes: all of ``tmp/``, or with a private
        temporary folder, only those of processes known to be gone (``_stale``)."""
        self.content.prepare()
        for d in (self.root, self.jobs_dir, self.models_dir, self.shared_tmp, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.shared_tmp.iterdir():
            if self.private_tmp and (leftover == self.tmp_dir or not _stale(leftover)):
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def sweep(self, known_ids: set[str], known_models: set[str] | None = None,
              older_than: float | None = None) -> int:
        """At start-up, before any worker runs: remove job and model directories without a record (a
        crash between storing an upload and recording it, or during a deletion) and half-written
        ``.part`` files. Returns how many directories were removed.

        ``older_than`` (a time): while other processes work on the directory (the distributed mode),
        only directories untouched since then go, and no ``.part`` file does (it may be being written)."""
        def unknown(entry: Path, known: set[str]) -> bool:
            return entry.name not in known and (older_than is None or _mtime(entry) < older_than)

        removed = 0
        if known_models is not None:
            for entry in self.models_dir.iterdir():
                if unknown(entry, known_models):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        for entry in self.jobs_dir.iterdir():
            if unknown(entry, known_ids):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
            elif older_than is None and entry.name in known_ids:
                self.discard_partials(entry.name)
        return removed

    def discard_partials(self, job_id: str, keep: tuple[str, ...] = FINAL_NAMES) -> None:
        """Remove whatever a job's directory holds besides its final files (temporary names of an
        interrupted write, whoever wrote them)."""
        with contextlib.suppress(OSError):
            for entry in self.job_dir(job_id).iterdir():
                if entry.name not in keep:
                    with contextlib.suppress(OSError):
                        entry.unlink()

    @property
    def db_path(self) -> Path:
        return self.root / "jobs.sqlite3"

    def temp_path(self, hint: str = "upload") -> Path:
        return self.tmp_dir / f"{hint}.{secrets.token_hex(8)}.part"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def input_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "input"

    def output_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "output"

    def report_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "report.json"

    def patch_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "patch.json"

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / model_id

    def model_stored_path(self, model_id: str) -> Path:
        return self.model_dir(model_id) / "stored.json"

    def model_report_path(self, model_id: str) -> Path:
        return self.model_dir(model_id) / "report.json"

    def remove_model(self, model_id: str) -> None:
        shutil.rmtree(self.model_dir(model_id), ignore_errors=True)

    def adopt_upload(self, tmp: Path, job_id: str) -> Path:
        """Move a complete upload from tmp/ to its job directory."""
        d = self.job_dir(job_id)
        d.mkdir(parents=True, exist_ok=False)
        final = self.input_path(job_id)
        publish(tmp, final)
        fsync_dir(self.jobs_dir)
        return final

    def remove_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def writable(self) -> bool:
        probe = self.tmp_dir / f"probe.{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError:
            return False
        return True
