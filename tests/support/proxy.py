"""A reverse proxy in front of the real registry: fault injection, and the place Harbor's own endpoints
(played by the stand-in) sit beside /v2, as they do in Harbor.  Loopback only; bounded by its plan."""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class FaultPlan:
    """Each /v2 request draws a fault with probability ``rate``, until ``budget`` faults were injected."""

    rate: float = 0.0
    budget: int = 0
    seed: int = 7
    kinds: tuple[str, ...] = ("500", "503", "429", "cut")
    injected: list[tuple[str, str, str]] = field(default_factory=list)
    #: seconds a "slow" fault holds the reply back
    slow: float = 0.3

    def __post_init__(self) -> None:
        self._rnd = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self, method: str, path: str) -> str | None:
        with self._lock:
            if len(self.injected) >= self.budget or self._rnd.random() >= self.rate:
                return None
            kind = self._rnd.choice(self.kinds)
            self.injected.append((kind, method, path))
            return kind


Route = Callable[[BaseHTTPRequestHandler], bool]


class Proxy:
    def __init__(
        self, upstream: str | None, *, faults: FaultPlan | None = None, route: Route | None = None
    ) -> None:
        self.upstream = upstream  # host:port of the real registry
        self.faults = faults or FaultPlan()
        self.route = route
        self.requests = 0
        #: (method, path) of every request, in arrival order
        self.log: list[tuple[str, str]] = []

    def start(self) -> Proxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _simple(self, status: int, headers: dict[str, str] | None = None) -> None:
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if self.command != "HEAD":  # a body after a HEAD answer would corrupt the connection
                    self.wfile.write(body)

            def _handle(self) -> None:
                proxy.requests += 1
                proxy.log.append((self.command, self.path))
                if proxy.route is not None and proxy.route(self):
                    return
                if proxy.upstream is None:
                    self._simple(404)
                    return
                fault = (
                    proxy.faults.draw(self.command, self.path)
                    if self.path.startswith("/v2/") and self.path != "/v2/"
                    else None
                )
                length = int(self.headers.get("Content-Length") or 0)
                if fault == "cut":
                    # read part of what the client sends, then drop the connection without an answer
                    self.rfile.read(min(length, max(1, length // 2))) if length else None
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "slow":
                    time.sleep(proxy.faults.slow)  # a reply late enough to overlap others, then the real one
                    fault = None
                if fault in ("500", "503", "429"):
                    self._body()
                    self._simple(int(fault), {"Retry-After": "1"} if fault == "429" else None)
                    return
                self.forward(length, truncate=fault == "truncate")

            def forward(self, length: int, *, truncate: bool = False) -> None:
                assert proxy.upstream is not None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=300)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in HOP:
                            conn.putheader(k, v)
                    conn.endheaders()
                    left = length
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        conn.send(chunk)
                        left -= len(chunk)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
                        self.end_headers()
                    else:
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        if truncate and len(data) > 1:
                            # the answer breaks off halfway through its body: a dropped download
                            self.wfile.write(data[: len(data) // 2])
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # a killed client leaves handler threads waiting on it
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
