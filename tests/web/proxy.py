"""A TCP relay on 127.0.0.1 whose connections can be cut: a dropped connection, for real.

It also reads the requests that pass (method, target, headers), so a test sees what the page sent. It can
cut one chosen request part-way through its body (the service receives exactly the bytes before the cut
and then the end of the connection, the browser a reset, as when a network drops mid-upload), and it can
answer 404 itself to the requests under a path, as a gateway that does not pass them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close with a reset
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nnot found"


@dataclass
class Request:
    """A request that passed: its method, its target and its header fields (names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def length(self) -> int:
        return int(self.headers.get("content-length") or 0)


@dataclass
class _CutRule:
    method: str
    longer_than: int
    after: int


class _Connection:
    """One browser connection's requests, split by their Content-Length (a browser sends one with every
    body it has). Each request's head is held until complete, then forwarded, or answered here."""

    def __init__(self, proxy: CuttingProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.head = bytearray()
        self.body_left = 0
        self.swallow = False  # the body of a request answered here goes nowhere
        self.cut_in: int | None = None

    def feed(self, chunk: bytes) -> bool:
        """Relay ``chunk``; False once the connection was cut."""
        pos = 0
        while pos < len(chunk):
            if self.body_left:
                take = min(self.body_left, len(chunk) - pos)
                if self.cut_in is not None and self.cut_in <= take:
                    self.upstream.sendall(chunk[pos:pos + self.cut_in])
                    self._cut()
                    return False
                if self.cut_in is not None:
                    self.cut_in -= take
                if not self.swallow:
                    self.upstream.sendall(chunk[pos:pos + take])
                self.body_left -= take
                pos += take
                continue
            self.head += chunk[pos:]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return True
            pos = len(chunk) - (len(self.head) - end - 4)
            head = bytes(self.head[:end + 4])
            self.head.clear()
            line, *fields = head[:-4].decode("latin-1").split("\r\n")
            method, _, rest = line.partition(" ")
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
            request = Request(method, rest.rpartition(" ")[0], headers)
            self.body_left = request.length
            self.swallow = self.proxy._refused(request)
            self.cut_in = None if self.swallow else self.proxy._on_request(request)
            if self.swallow:
                self.client.sendall(_NOT_FOUND)
            else:
                self.upstream.sendall(head)
        return True

    def _cut(self) -> None:
        # The service gets the bytes so far and time to store them, then the end of the stream; the
        # browser gets a reset. The other pump closes both once the service hangs up.
        time.sleep(self.proxy.CUT_PAUSE_S)
        self.upstream.shutdown(socket.SHUT_WR)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.client.shutdown(socket.SHUT_RDWR)


class CuttingProxy:
    """Relays every connection to ``target``; ``cut()`` closes the ones open now (new ones still work);
    ``cut_request(...)`` cuts one future request part-way; ``refuse(prefix)`` answers 404 to the requests
    whose path starts with ``prefix``; ``requests`` lists the requests relayed."""

    CUT_PAUSE_S = 1.0  # time for the service to read and keep the bytes before the cut

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[Request] = []
        self.refused: list[Request] = []
        self._rule: _CutRule | None = None
        self._refuse: str | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_request(self, method: str, *, longer_than: int, after: int) -> None:
        """Cut the next ``method`` request whose body is longer than ``longer_than`` bytes, after ``after``
        bytes of its body (once)."""
        assert after < longer_than
        with self._lock:
            self._rule = _CutRule(method, longer_than, after)

    def refuse(self, prefix: str) -> None:
        with self._lock:
            self._refuse = prefix

    def _refused(self, request: Request) -> bool:
        with self._lock:
            if self._refuse is not None and request.target.startswith(self._refuse):
                self.refused.append(request)
                return True
        return False

    def _on_request(self, request: Request) -> int | None:
        """Record the request; how many of its body's bytes to relay before cutting, or None."""
        with self._lock:
            self.requests.append(request)
            rule = self._rule
            if rule and request.method == rule.method and request.length > rule.longer_than:
                self._rule = None
                return rule.after
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            connection = _Connection(self, client, upstream)
            threading.Thread(target=self._requests, args=(connection,), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    def _requests(self, connection: _Connection) -> None:
        try:
            while chunk := connection.client.recv(65536):
                if not connection.feed(chunk):
                    return  # cut: the other pump closes both
        except OSError:
            pass
        self._close(connection.client, connection.upstream)

    def _answers(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
            with self._lock:
                self._open.discard(s)

    def cut(self) -> int:
        """Reset every open connection; how many there were."""
        with self._lock:
            victims = list(self._open)
        for s in victims:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                s.shutdown(socket.SHUT_RDWR)
        return len(victims)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()
