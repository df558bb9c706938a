"""When to retry and how long to wait: exponential backoff with jitter, honouring ``Retry-After``.

Retried: connection failures and timeouts, 429 and 503. Never another 4xx (the same request would be refused
again) and never another 5xx (the service reported a bug, repeating it would hide it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

__all__ = ["Retry"]

RETRY_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


@dataclass(frozen=True, slots=True)
class Retry:
    """``retries`` extra attempts; the n-th waits ``backoff * 2**n`` (capped), scaled by a random jitter."""

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 20.0
    jitter: float = 0.5
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("retries, backoff and max_backoff must be >= 0 and jitter within [0, 1]")

    def backoff_delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (1 - self.jitter * random.random())

    def delay_for_response(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None when it must not be retried."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        after = parse_retry_after(response.headers.get("Retry-After"))
        if after is None:
            return self.backoff_delay(attempt)
        if after > self.max_retry_after:
            return None  # the service asks for longer than we are willing to block: report it instead
        return after + self.backoff * self.jitter * random.random()  # spread clients told the same time

    def delay_for_error(self, exc: Exception, attempt: int, *, replayable: bool = True) -> float | None:
        if attempt >= self.retries or not replayable:
            return None
        if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
            return self.backoff_delay(attempt)
        return None
