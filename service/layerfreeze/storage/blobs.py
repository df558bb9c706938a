"""The data directory: where each job's files live, and atomic writes into it.

    <data_dir>/jobs.sqlite3          job records (storage.jobs)
    <data_dir>/jobs/<id>/input       the upload, renamed into place once complete
    <data_dir>/jobs/<id>/output      the modified checkpoint (not for dry runs)
    <data_dir>/jobs/<id>/report.json the report
    <data_dir>/tmp/                  files being written; emptied at start

Every file becomes visible under its final name only once complete and fsynced (temp + fsync + rename),
so a crash at any moment leaves either the old state or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
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


FINAL_NAMES = ("input", "output", "report.json")


class BlobStore:
    """Paths of job files under one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.jobs_dir = self.root / "jobs"
        self.tmp_dir = self.root / "tmp"

    def prepare(self) -> None:
        """Create the layout and drop leftovers of interrupted writes."""
        for d in (self.root, self.jobs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def sweep(self, known_ids: set[str]) -> int:
        """At start-up, before any worker runs: remove job directories without a record (a crash
        between storing an upload and recording its job, or during a deletion) and half-written
        ``.part`` files. Returns how many directories were removed."""
        removed = 0
        for entry in self.jobs_dir.iterdir():
            if entry.name not in known_ids:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
                continue
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
