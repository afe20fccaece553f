"""A STAND-IN for Harbor's own REST endpoints (not Harbor), written from Harbor's API docs.

Harbor behaviour is tested against real Harbor (tests/support/realharbor.py, ../shared/harbor/).  This
stand-in is kept only for what a real Harbor cannot be made to do in a test: a token that expires within
one push (Harbor's shortest expiry is a minute), a manifest size limit below Harbor's 4 MiB (413), and
faults injected into Harbor's own paths (5xx, 429, cut connections) at a chosen rate.

It plays only what ferry calls (and, in front of /v2, the refusals Harbor's core adds: immutable tags,
quota, manifest size): ``/api/systeminfo``, ``/api/projects`` and the 1.x internal sync calls;
``/api/v2.0/systeminfo`` and ``/api/v2.0/projects``; and the token service ``/service/token``, which like
Harbor's grants no actions on a repository whose project does not exist, and (unlike Harbor, as the
distribution token spec's OAuth2 endpoint and cloud registries do) exchanges an identity token, a refresh
token, given by POST: the one token service at hand that ferry's identitytoken support can be tested on.  Everything else (/v2) is
forwarded to the real docker-registry behind it, which verifies the tokens this stand-in signs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ferry.localregistry import Registry
from ferry.shared.manifest import MANIFEST_TYPES

from .proxy import FaultPlan, Proxy

ISSUER = "ferry-test-issuer"
SERVICE = "ferry-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Signs registry tokens (RS256, certificate in x5c) the way Docker Distribution verifies them."""

    def __init__(self, workdir: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def token(self, subject: str, access: list[dict[str, object]], ttl: int) -> str:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + ttl,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def registry_config(self, realm: str) -> str:
        return (
            f"auth: {{token: {{realm: '{realm}', service: {SERVICE}, issuer: {ISSUER}, "
            f"rootcertbundle: {self.cert_path}}}}}\n"
        )


@dataclass
class HarborStandIn:
    version: str = "v1.10.19"
    username: str = "admin"
    password: str = "Harbor12345"
    projects: set[str] = field(default_factory=lambda: {"library"})
    allow_create: bool = True
    token_ttl: int = 300
    upstream: str | None = None  # host:port of the real registry behind it
    issuer: TokenIssuer | None = None
    faults: FaultPlan | None = None
    #: Harbor's policies that refuse pushes: immutable tags ("repo:tag"), projects whose quota is used up,
    #: a manifest size limit (Harbor's is 4 MiB); each refusal is recorded as (status, path)
    immutable: set[str] = field(default_factory=set)
    quota_full: set[str] = field(default_factory=set)
    max_manifest: int | None = None
    refused: list[tuple[int, str]] = field(default_factory=list)
    calls: list[tuple[str, str, object]] = field(default_factory=list)
    cookies_seen: list[str] = field(default_factory=list)
    tokens_issued: int = 0
    #: identity (refresh) tokens the token service takes by POST, and the user each stands for
    refresh_tokens: dict[str, str] = field(default_factory=dict)

    def start(self) -> HarborStandIn:
        self.proxy = Proxy(self.upstream, faults=self.faults, route=self._route).start()
        self.url = self.proxy.url
        return self

    def stop(self) -> None:
        self.proxy.stop()

    # -- routing ---------------------------------------------------------------------------------
    def _authorized(self, h: BaseHTTPRequestHandler) -> str | None:
        if h.headers.get("Cookie"):
            self.cookies_seen.append(h.headers["Cookie"])
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, pw) == (self.username, self.password):
                return user
        return None

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _route(self, h: BaseHTTPRequestHandler) -> bool:
        url = urllib.parse.urlsplit(h.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        if path.startswith("/v2/"):
            return self._policy(h, path, query)
        if not (path.startswith("/api/") or path.startswith("/service/")):
            return False
        length = int(h.headers.get("Content-Length") or 0)
        if path == "/service/token" and h.command == "POST":
            form = urllib.parse.parse_qs(h.rfile.read(length).decode())
            self.calls.append(("POST", path, form))
            refresh = form.get("refresh_token", [""])[0]
            who = self.refresh_tokens.get(refresh) if form.get("grant_type") == ["refresh_token"] else None
            if who is None:
                self._reply(
                    h, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid refresh token"}]}
                )
            else:
                self._token(h, who, {"scope": [x for x in form.get("scope", [""])[0].split(" ") if x]})
            return True
        body = json.loads(h.rfile.read(length) or b"null") if length else None
        self.calls.append((h.command, path, body))
        user = self._authorized(h)
        if path in ("/api/systeminfo", "/api/v2.0/systeminfo"):
            # Harbor sets a session cookie; a client that sends it back is treated as a browser (CSRF)
            self._reply(h, 200, {"harbor_version": self.version}, {"Set-Cookie": "sid=abc; Path=/"})
        elif path == "/service/token":
            self._token(h, user, query)
        elif path in ("/api/projects", "/api/v2.0/projects") and h.command == "HEAD":
            self._reply(h, 200 if query.get("project_name", [""])[0] in self.projects else 404)
        elif path in ("/api/projects", "/api/v2.0/projects") and h.command == "POST":
            if user is None:
                self._reply(h, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]})
            elif not self.allow_create:
                self._reply(
                    h,
                    403,
                    {"errors": [{"code": "FORBIDDEN", "message": "Only system admin can create project"}]},
                )
            elif body["project_name"] in self.projects:
                self._reply(h, 409, {"errors": [{"code": "CONFLICT", "message": "conflict project"}]})
            else:
                self.projects.add(body["project_name"])
                self._reply(h, 201, None, {"Location": f"/api/v2.0/projects/{len(self.projects)}"})
        elif path in ("/api/internal/syncregistry", "/api/internal/syncquota") and h.command == "POST":
            self._reply(h, 200 if user else 401)
        else:
            self._reply(h, 404, {"errors": [{"code": "NOT_FOUND"}]})
        return True

    def _policy(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]) -> bool:
        """Harbor core's checks in front of the registry (errors as Harbor words them); True if refused."""
        manifest = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
        upload = re.fullmatch(r"/v2/(.+)/blobs/uploads/.*", path)
        length = int(h.headers.get("Content-Length") or 0)
        refusal: tuple[int, str, str] | None = None
        if manifest and h.command == "PUT":
            repo, ref = manifest.groups()
            if self.max_manifest is not None and length > self.max_manifest:
                refusal = (413, "REQUEST_ENTITY_TOO_LARGE", "the manifest is too large")
            elif f"{repo}:{ref}" in self.immutable and self._upstream_has(h, repo, ref):
                refusal = (
                    412,
                    "PRECONDITION",
                    f"Failed to process request due to '{repo}:{ref}' configured as immutable.",
                )
        elif (
            upload
            and upload.group(1).split("/", 1)[0] in self.quota_full
            and (h.command == "PUT" or (h.command == "POST" and "mount" in query))
        ):
            refusal = (
                403,
                "DENIED",
                "adding 1.0 KiB of storage resource, which when updated to current usage of 10.0 MiB "
                "will exceed the configured upper limit of 10.0 MiB.",
            )
        if refusal is None:
            return False
        if length:
            h.rfile.read(length)
        status, code, message = refusal
        self.refused.append((status, path))
        self._reply(h, status, {"errors": [{"code": code, "message": message}]})
        return True

    def _upstream_has(self, h: BaseHTTPRequestHandler, repo: str, ref: str) -> bool:
        assert self.upstream is not None
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request(
                "HEAD",
                f"/v2/{repo}/manifests/{ref}",
                headers={
                    "Authorization": h.headers.get("Authorization", ""),
                    "Accept": ", ".join(sorted(MANIFEST_TYPES)),
                },
            )
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def _token(self, h: BaseHTTPRequestHandler, user: str | None, query: dict[str, list[str]]) -> None:
        if h.headers.get("Authorization") and user is None:
            self._reply(h, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
            return
        assert self.issuer is not None
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            project = name.split("/", 1)[0]
            # Harbor's token service: no project, no actions (core/service/token/creator.go)
            granted = actions.split(",") if user is not None and project in self.projects else []
            access.append({"type": kind, "name": name, "actions": granted})
        token = self.issuer.token(user or "anonymous", access, self.token_ttl)
        self.tokens_issued += 1
        self._reply(
            h,
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": self.token_ttl,
                "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
            },
        )


@contextlib.contextmanager
def token_auth_registry(tmp: Path) -> Iterator[HarborStandIn]:
    """A real docker-registry that takes its tokens from the stand-in's token service (which grants exactly
    the actions a challenge asks for, as Harbor does), reached through the stand-in; both stopped on exit,
    also when the test fails."""
    issuer = TokenIssuer(tmp)
    service = HarborStandIn(version="v2.10.0", issuer=issuer, faults=FaultPlan(), projects={"library"})
    reg = Registry(tmp / "storage")
    service.upstream = reg.host
    service.start()
    try:
        reg.extra_config = issuer.registry_config(f"{service.url}/service/token")
        with reg:
            yield service
    finally:
        service.stop()
