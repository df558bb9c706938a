"""The running service's parts, held by the app (``app.state.service``) and handed to routes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio

from layerfreeze.errors import TooManyUploads
from layerfreeze.metrics import Metrics
from layerfreeze.settings import Settings
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobStore
from layerfreeze.storage.models import ModelStore
from layerfreeze.worker.broker import CeleryQueue
from layerfreeze.worker.digests import Digester
from layerfreeze.worker.pool import LocalWorkerPool


class Waiters:
    """Lets requests await a job's end; notified from worker supervisor threads."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def register(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._events[job_id].add(event)
        return event

    def unregister(self, job_id: str, event: asyncio.Event) -> None:
        with self._lock:
            events = self._events.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[job_id]

    def notify(self, job_id: str) -> None:
        with self._lock:
            events = list(self._events.get(job_id, ()))
        if events and self.loop is not None and not self.loop.is_closed():
            for event in events:
                self.loop.call_soon_threadsafe(event.set)


    async def wait(self, job_id: str, event: asyncio.Event, timeout: float) -> None:
        """Until the job has finished or ``timeout`` has passed (an event set by ``notify``)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class PollingWaiters(Waiters):
    """The distributed mode: a job ends in a worker on another host, so a waiting request reads the
    job's record, more rarely the longer it waits (50 ms, growing to 0.5 s). Any replica answers."""

    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self.store = store

    async def wait(self, job_id: str, event: asyncio.Event, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            record = await anyio.to_thread.run_sync(self.store.get, job_id)
            left = deadline - time.monotonic()
            if record.finished or left <= 0:
                return
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, 0.5)


class UploadSlots:
    """Uploads being received at once, per tenant: over its share a tenant gets a 429 with Retry-After,
    and the other tenants are unaffected. Used from the event loop only, so it needs no lock."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._busy: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        if self._busy[tenant] >= self.per_tenant:
            raise TooManyUploads(f"{self.per_tenant} uploads of this tenant are already being received; "
                                 "retry when one has finished", retry_after=2)
        self._busy[tenant] += 1
        try:
            yield
        finally:
            self._busy[tenant] -= 1
            if not self._busy[tenant]:
                del self._busy[tenant]


@dataclass
class Service:
    settings: Settings
    blobs: BlobStore
    store: JobStore
    pool: LocalWorkerPool | CeleryQueue
    metrics: Metrics
    models: ModelStore
    digests: Digester
    waiters: Waiters = field(default_factory=Waiters)
    uploads: UploadSlots = field(init=False)

    def __post_init__(self) -> None:
        self.uploads = UploadSlots(self.settings.max_uploads_per_tenant)
