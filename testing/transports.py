"""httpx transports that fail the way networks do, for the clients' retry and resume paths."""

from __future__ import annotations

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
