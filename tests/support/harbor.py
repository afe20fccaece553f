"""A STAND-IN for Harbor's own REST endpoints (not Harbor): written from Harbor's API docs, it plays only
the parts ferry calls (systeminfo, projects, the 1.x internal sync calls), records every call, and checks
basic auth.  Registry traffic never goes here: the registry in the tests is the real docker-registry."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class HarborStandIn:
    version: str = "v1.10.19"
    username: str = "admin"
    password: str = "Harbor12345"
    projects: set[str] = field(default_factory=lambda: {"library"})
    calls: list[tuple[str, str, object]] = field(default_factory=list)
    cookies_seen: list[str] = field(default_factory=list)

    def start(self) -> HarborStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Cookie"):
                    stand_in.cookies_seen.append(self.headers["Cookie"])
                want = base64.b64encode(f"{stand_in.username}:{stand_in.password}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {want}"

            def do_GET(self) -> None:
                stand_in.calls.append(("GET", self.path, None))
                if self.path == "/api/systeminfo":
                    # Harbor sets a session cookie; a client that keeps it is treated as a browser
                    self._reply(200, {"harbor_version": stand_in.version}, {"Set-Cookie": "sid=abc; Path=/"})
                else:
                    self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                stand_in.calls.append(("POST", self.path, body))
                if not self._authorized():
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                elif self.path == "/api/projects":
                    name = body["project_name"]
                    if name in stand_in.projects:
                        self._reply(409, {"errors": [{"code": "CONFLICT", "message": "conflict project"}]})
                    else:
                        stand_in.projects.add(name)
                        self._reply(201, None, {"Location": f"/api/projects/{len(stand_in.projects)}"})
                elif self.path in ("/api/internal/syncregistry", "/api/internal/syncquota"):
                    self._reply(200)
                else:
                    self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
