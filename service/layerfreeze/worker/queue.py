"""The interface between the API and whatever runs jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PoolHealth:
    workers: int  # configured
    alive: int  # processes currently alive
    busy: int  # running a job now
    queued: int  # waiting for a worker
    restarts: int  # processes replaced since start


class JobQueue(Protocol):
    """What the API needs from whatever runs jobs. It reports each job's end through the store (and,
    for waiting requests, a callback given at construction)."""

    running: bool  # accepting work (False before start and while stopping)

    def start(self) -> None:
        """Start the workers. Called once, after the store has recovered from a restart."""

    def stop(self) -> None:
        """Stop the workers; jobs still queued stay queued in the store for the next start."""

    def submit(self, job_id: str) -> None:
        """Queue a stored job (status ``queued``). Never blocks."""

    def health(self) -> PoolHealth: ...
