"""httpx transports that fail the way networks do, for the clients' retry and resume paths: each in a
sync form (for ``Client``) and an async form (for ``AsyncClient``) that fail the same way."""

from __future__ import annotations

import socket
import threading

import httpx


def _patch_with(request: httpx.Request, body: bytes) -> httpx.Request:
    """The PATCH carrying ``body`` (with its own Content-Length)."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("transfer-encoding",
                                                                             "content-length")}
    return httpx.Request("PATCH", request.url, headers=headers, content=body)


def _held_patch(request: httpx.Request, body: bytes, hold: float) -> None:
    """Announce the whole body, send its first 4 KiB and keep the connection open for ``hold`` seconds."""
    headers = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()
                      if k.lower() not in ("transfer-encoding", "content-length", "connection"))
    head = (f"PATCH {request.url.raw_path.decode()} HTTP/1.1\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    sock = socket.create_connection((request.url.host, request.url.port or 80))
    sock.sendall(head + body[:4096])
    threading.Timer(hold, sock.close).start()


class _BreaksFirstPatch:
    """Breaks the first PATCH of more than 4 KiB (so that it breaks off inside the file); counts PATCHes."""

    patches = 0
    dropped = False

    def _breaks(self, body: bytes) -> bool:
        self.patches += 1
        if self.dropped or len(body) <= 4096:
            return False
        self.dropped = True
        return True


class DropsFirstPatch(_BreaksFirstPatch, httpx.HTTPTransport):
    """The first PATCH delivers 4 KiB to the service, then the connection "drops" before the answer."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "PATCH":
            return super().handle_request(request)
        body = b"".join(request.stream)  # type: ignore[arg-type]
        if not self._breaks(body):
            return super().handle_request(_patch_with(request, body))
        super().handle_request(_patch_with(request, body[:4096])).close()
        raise httpx.ReadError("connection dropped", request=request)


class AsyncDropsFirstPatch(_BreaksFirstPatch, httpx.AsyncHTTPTransport):
    """``DropsFirstPatch`` for ``AsyncClient``."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "PATCH":
            return await super().handle_async_request(request)
        body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        if not self._breaks(body):
            return await super().handle_async_request(_patch_with(request, body))
        await (await super().handle_async_request(_patch_with(request, body[:4096]))).aclose()
        raise httpx.ReadError("connection dropped", request=request)


class HoldsFirstPatch(_BreaksFirstPatch, httpx.HTTPTransport):
    """The first PATCH sends 4 KiB of a longer announced body and "drops" at once, while its connection
    stays open for ``hold`` seconds: the service is still inside that PATCH when the client resumes."""

    def __init__(self, hold: float = 1.0) -> None:
        super().__init__()
        self.hold = hold

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "PATCH":
            return super().handle_request(request)
        body = b"".join(request.stream)  # type: ignore[arg-type]
        if not self._breaks(body):
            return super().handle_request(_patch_with(request, body))
        _held_patch(request, body, self.hold)
        raise httpx.ReadError("connection dropped", request=request)


class AsyncHoldsFirstPatch(_BreaksFirstPatch, httpx.AsyncHTTPTransport):
    """``HoldsFirstPatch`` for ``AsyncClient``."""

    def __init__(self, hold: float = 1.0) -> None:
        super().__init__()
        self.hold = hold

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "PATCH":
            return await super().handle_async_request(request)
        body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        if not self._breaks(body):
            return await super().handle_async_request(_patch_with(request, body))
        _held_patch(request, body, self.hold)
        raise httpx.ReadError("connection dropped", request=request)


class AsyncGateway(httpx.AsyncHTTPTransport):
    """Passes requests on and records them; ``refuse`` is a path prefix it answers with 404 itself, as a
    gateway that does not route it (e.g. ``/v1/uploads``)."""

    def __init__(self, refuse: str | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.requests: list[httpx.Request] = []

    @property
    def calls(self) -> list[tuple[str, str]]:
        """Each request's method and path."""
        return [(r.method, r.url.path) for r in self.requests]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.refuse is not None and request.url.path.startswith(self.refuse):
            return httpx.Response(404, text="not found", request=request)
        return await super().handle_async_request(request)
