"""httpx transports that fail the way networks do, for the clients' retry and resume paths."""

from __future__ import annotations

import socket
import threading

import httpx


class DropsFirstPatch(httpx.HTTPTransport):
    """The first PATCH delivers 4 KiB to the service, then the connection "drops" before the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and not self.dropped:
            self.dropped = True
            first = b"".join(request.stream)[:4096]  # type: ignore[union-attr]
            headers = {k: v for k, v in request.headers.items() if k.lower() != "transfer-encoding"}
            partial = httpx.Request("PATCH", request.url, headers=headers, content=first)
            super().handle_request(partial).close()
            raise httpx.ReadError("connection dropped", request=request)
        return super().handle_request(request)


class HoldsFirstPatch(httpx.HTTPTransport):
    """The first PATCH sends 4 KiB of a longer announced body and "drops" at once, while its connection
    stays open for ``hold`` seconds: the service is still inside that PATCH when the client resumes."""

    def __init__(self, hold: float = 1.0) -> None:
        super().__init__()
        self.hold = hold
        self.dropped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and not self.dropped:
            self.dropped = True
            body = b"".join(request.stream)  # type: ignore[union-attr]
            headers = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()
                              if k.lower() not in ("transfer-encoding", "content-length", "connection"))
            head = (f"PATCH {request.url.raw_path.decode()} HTTP/1.1\r\n{headers}"
                    f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
            sock = socket.create_connection((request.url.host, request.url.port or 80))
            sock.sendall(head + body[:4096])
            threading.Timer(self.hold, sock.close).start()
            raise httpx.ReadError("connection dropped", request=request)
        return super().handle_request(request)
