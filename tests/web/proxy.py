"""A TCP relay on 127.0.0.1 whose connections can be cut: a dropped connection, for real.

It also reads the requests that pass (method, target, headers), so a test sees what the page sent, and it can
cut one chosen request part-way through its body: the service receives exactly the bytes before the cut
and then the end of the connection, the browser a reset, as when a network drops mid-upload.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close with a reset


@dataclass
class Request:
    """A request that passed: its method, its target and its header fields (names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]


@dataclass
class _CutRule:
    method: str
    longer_than: int
    after: int


class _RequestReader:
    """Splits a client's bytes into HTTP/1.1 requests by their Content-Length (a browser sends one with
    every body it has). ``feed`` says where in a chunk to cut, if the request under way is to be cut."""

    def __init__(self, on_request: Callable[[Request, int], int | None]) -> None:
        self.on_request = on_request
        self.head = bytearray()
        self.body_left = 0
        self.cut_in: int | None = None

    def feed(self, chunk: bytes) -> int | None:
        pos = 0
        while pos < len(chunk):
            if self.body_left:
                take = min(self.body_left, len(chunk) - pos)
                if self.cut_in is not None and self.cut_in <= take:
                    return pos + self.cut_in
                if self.cut_in is not None:
                    self.cut_in -= take
                self.body_left -= take
                pos += take
                continue
            self.head += chunk[pos:]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return None
            pos = len(chunk) - (len(self.head) - end - 4)
            head = bytes(self.head[:end]).decode("latin-1")
            self.head.clear()
            line, *fields = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
            method, _, rest = line.partition(" ")
            length = int(headers.get("content-length", "0") or "0")
            self.body_left = length
            self.cut_in = self.on_request(Request(method, rest.rpartition(" ")[0], headers), length)
            if self.cut_in == 0:
                return pos
        return None


class CuttingProxy:
    """Relays every connection to ``target``; ``cut()`` closes the ones open now (new ones still work);
    ``cut_request(...)`` cuts one future request part-way; ``requests`` lists the requests seen."""

    CUT_PAUSE_S = 0.5

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[Request] = []
        self._rule: _CutRule | None = None
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

    def _on_request(self, request: Request, length: int) -> int | None:
        with self._lock:
            self.requests.append(request)
            rule = self._rule
            if rule and request.method == rule.method and length > rule.longer_than:
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
            reader = _RequestReader(self._on_request)
            threading.Thread(target=self._pump, args=(client, upstream, reader), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, reader: _RequestReader | None) -> None:
        try:
            while chunk := source.recv(65536):
                cut_at = reader.feed(chunk) if reader else None
                if cut_at is not None:
                    sink.sendall(chunk[:cut_at])
                    # The service gets the bytes so far and time to store them, then the end of the
                    # stream; the browser gets a reset. The other pump closes both once the service
                    # hangs up.
                    time.sleep(self.CUT_PAUSE_S)
                    sink.shutdown(socket.SHUT_WR)
                    source.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    source.shutdown(socket.SHUT_RDWR)
                    return
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
