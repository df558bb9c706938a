"""Connection-level limits on top of uvicorn's httptools protocol (the fastest parser, which has none).

``guarded_protocol(limits)`` returns a protocol class for ``uvicorn.Config(http=...)`` that adds:

* **a request-head size limit** (431): bytes are counted before the parser sees them, so a 100 MiB header
  is refused after ``max_header_bytes``, never accumulated (httptools concatenates a header value piece by
  piece, which costs seconds of one core for tens of megabytes);
* **a request-head timeout** (408, or a silent close when nothing was sent): the request line and every
  header must arrive within ``header_timeout_s`` of the connection opening or of the previous response;
* **a connection cap**: over ``max_connections``, a new connection evicts the connection that has waited
  longest for a request head (a half-sent head or an idle keep-alive, never a request in progress); if
  every connection is busy with a request, the newcomer gets a 503. So connections that never finish
  their headers cannot lock out ``/healthz`` or anyone else, while real requests are never cut.

The keep-alive timeout is uvicorn's own option (``timeout_keep_alive``). uvicorn's ``limit_concurrency``
is not used: it answers 503 only after a complete head, so half-sent heads still hold every descriptor,
and over its limit it refuses ``/healthz`` as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("layerfreeze.transport")

FD_RESERVE = 64  # descriptors kept for the job database, worker pipes, logs and files being served
LINGER_S = 1.0  # after refusing a head that is still arriving, how long to wait before closing
DISCARD_BYTES = 1 << 20  # and how much of the rest to read and drop meanwhile
FDS_PER_CONNECTION = 2  # the socket, and the upload or artifact file it may have open


class TransportLimits(BaseModel):
    """The connection limits; :class:`layerfreeze.settings.Settings` inherits them as settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_header_bytes: int = Field(128 * 1024, ge=1024, le=16 * 1024**2, description=(
        "Bytes of a request line and headers; more is refused with 431 before the parser sees them."))
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description=(
        "Seconds for the request line and headers to arrive (from the connection opening or the previous "
        "response); past it 408, or a silent close when nothing arrived."))
    max_connections: int = Field(1000, ge=1, description=(
        "Open connections; over it, the one waiting longest for its headers is evicted, and only when "
        "every connection is busy with a request does the newcomer get 503. Lowered at start-up to fit "
        "the file descriptor limit."))


def _raw_response(status: int, reason: str, detail: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/problem+json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered so that every connection fits in the process's file descriptor limit (the soft
    limit is raised to the hard one first, as most servers do)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - FD_RESERVE) // FDS_PER_CONNECTION))


def guarded_protocol(limits: TransportLimits) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass enforcing ``limits``; its connections share one waiting list."""
    # Imported here: the settings (which the workers load) import this module for TransportLimits alone.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    # Connections now waiting for a request head, oldest first (dicts keep insertion order).
    waiting: dict[GuardedProtocol, float] = {}
    too_large = _raw_response(431, "Request Header Fields Too Large",
                              f"the request line and headers exceed {limits.max_header_bytes} bytes")
    too_slow = _raw_response(408, "Request Timeout",
                             f"the request headers did not arrive within {limits.header_timeout_s:g} s")
    busy = _raw_response(503, "Service Unavailable",
                         f"the server has {limits.max_connections} connections busy; retry shortly",
                         retry_after=1)

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._counting = True  # the bytes arriving now belong to a request head
            self._head_bytes = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._refused = False  # answered with an error: what still arrives is dropped
            self._discard_left = 0  # and read only up to this many bytes

        # -- waiting for a head (no request in progress on this connection) ---------------------------
        def _await_head(self) -> None:
            waiting.pop(self, None)
            waiting[self] = time.monotonic()
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timed_out)

        def _stop_waiting(self) -> None:
            waiting.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _reject(self, response: bytes | None, *, linger: bool = False) -> None:
            self._stop_waiting()
            if self.transport.is_closing() or self._refused:
                return
            if response is None or not self._idle():
                self.transport.close()
                return
            self.transport.write(response)
            if linger and self.transport.can_write_eof():
                # The client is still sending: closing now would reset the connection and could destroy
                # the answer before it is read. Finish our side, drop what still arrives (up to
                # DISCARD_BYTES: reading costs the event loop too), close shortly.
                self.transport.write_eof()
                self._refused = True
                self._discard_left = DISCARD_BYTES
                self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()

        def _head_timed_out(self) -> None:
            self._head_timer = None
            self._reject(too_slow if self._head_bytes else None)

        # -- uvicorn's protocol hooks -----------------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                oldest = next(iter(waiting), None)
                if oldest is None:
                    self._reject(busy)
                    return
                oldest._reject(None)  # it has not sent a complete head: nothing is cut short
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._discard_left -= len(data)
                if self._discard_left <= 0:
                    self.transport.pause_reading()
                return
            if not self._counting:  # a request body
                super().data_received(data)
                return
            room = limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # Let the parser see only what the limit allows; if that does not complete the head, refuse.
            self._head_bytes += room
            super().data_received(data[:room])
            if self._counting:
                self._reject(too_large, linger=True)
            elif not self.transport.is_closing():
                self.data_received(data[room:])

        def on_headers_complete(self) -> None:
            self._counting = False
            self._stop_waiting()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._counting = True  # what follows is the next request's head
            self._head_bytes = 0

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._idle() and not self.transport.is_closing():
                self._await_head()

    return GuardedProtocol


__all__ = ["TransportLimits", "connection_cap", "guarded_protocol"]
