"""The output sha256 of stored-model jobs, computed after the job, off its critical path.

A job on a stored model finishes as soon as its report and patch are written; its output's digest
needs one read of the whole model, so a background thread computes it right after (``submit``) and a
download that comes first computes or awaits it (``ensure``). Until then the job shows
``output.sha256: null``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import Any

from layerfreeze.formats.segments import from_patch_segments, sha256_of
from layerfreeze.storage.blobs import BlobStore, publish, write_file
from layerfreeze.storage.jobs import JobStore

log = logging.getLogger("layerfreeze.digests")


class Digester:
    def __init__(self, store: JobStore, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Event] = {}
        self._thread = threading.Thread(target=self._loop, name="layerfreeze-digests", daemon=True)

    def start(self, catch_up: bool = True) -> None:
        """Start the background thread; ``catch_up``: first queue every job still without a digest
        (the embedded mode; in the distributed mode workers compute digests and downloads the rest)."""
        self._thread.start()
        if catch_up:
            for job_id in self.store.undigested():
                self.submit(job_id)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self.ensure(job_id)
            except Exception:  # the job may have been deleted meanwhile; a download retries
                log.debug("digest of job %s not computed", job_id, exc_info=True)

    def ensure(self, job_id: str) -> str | None:
        """The job's output sha256, computed now unless known or in progress (then awaited). None for
        jobs without a stored-model artifact. Blocks: call it from a thread."""
        record = self.store.get(job_id)
        if record.output_sha256 or record.status != "succeeded" or record.dry_run:
            return record.output_sha256
        with self._lock:
            event = self._inflight.get(job_id)
            mine = event is None
            if mine:
                event = self._inflight[job_id] = threading.Event()
        assert event is not None
        if not mine:
            event.wait()
            return self.store.get(job_id).output_sha256
        try:
            patch_path = self.blobs.patch_path(job_id)
            if not patch_path.is_file():
                return None
            patch = json.loads(patch_path.read_bytes())
            if isinstance(patch.get("files"), list):
                sha = self._directory(job_id, patch)
            else:
                segments = from_patch_segments(patch["segments"])
                _size, sha = sha256_of(self.blobs.content.path(record.input_sha256), segments)
                self._update_report(job_id, sha)  # first: once the record has the digest, so has the report
            self.store.set_output_digest(job_id, sha)
            return sha
        finally:
            with self._lock:
                del self._inflight[job_id]
            event.set()

    def _directory(self, job_id: str, patch: dict[str, Any]) -> str:
        """A model directory's job: hash each changed output file (segments over its stored input file),
        write them into the patch and the report, and return the output listing's digest."""
        from layerfreeze.freeze import listing_sha256

        digests: dict[str, str] = {}
        for entry in patch["files"]:
            if entry["output"]["sha256"] is None:
                base = self.blobs.content.path(entry["base"]["sha256"])
                entry["output"]["sha256"] = sha256_of(base, from_patch_segments(entry["segments"]))[1]
            digests[entry["path"]] = entry["output"]["sha256"]
        sha = listing_sha256(digests)
        assert sha is not None
        path = self.blobs.patch_path(job_id)
        _replace_json(path, patch)
        report = json.loads(self.blobs.report_path(job_id).read_bytes())
        for item in (report.get("files") or {}).get("files") or []:
            item["sha256"] = digests.get(item["path"], item["sha256"])
        if report.get("output"):
            report["output"]["sha256"] = sha
        _replace_json(self.blobs.report_path(job_id), report)
        return sha

    def _update_report(self, job_id: str, sha: str) -> None:
        path = self.blobs.report_path(job_id)
        report = json.loads(path.read_bytes())
        if report.get("output"):
            report["output"]["sha256"] = sha
            # A name of its own: another process (an API replica, a worker) may be doing the same.
            part = path.with_name(f"report.json.digest.{os.getpid()}.{secrets.token_hex(4)}.part")
            write_file(part, json.dumps(report, separators=(",", ":")).encode())
            publish(part, path)


def _replace_json(path: Path, doc: Any) -> None:
    part = path.with_name(path.name + ".digest.part")
    part.unlink(missing_ok=True)
    write_file(part, json.dumps(doc, separators=(",", ":")).encode())
    publish(part, path)
