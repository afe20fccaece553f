"""A Registry V2 (OCI distribution) client over one pooled ``httpx.Client``.

* Auth: anonymous, basic, and the bearer challenge (``WWW-Authenticate: Bearer realm,service,scope`` →
  token service → retry), with tokens cached per repository and refreshed before they expire or when a
  401 says they have.  A streamed body cannot be sent twice, so callers open every upload with a bodyless
  request (the POST that starts the session), which takes the challenge first.
* No cookies, ever: Harbor treats a client that sends its session cookie as a browser (CSRF).
* ``Accept-Encoding: identity``: ferry never wants a registry to re-compress what it serves.
* Every failure becomes a :class:`~ferry.shared.errors.RegistryError` carrying the status, the spec error codes and
  a redacted URL, and saying whether another try can help; :func:`with_retries` retries only those.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import httpx

from ..errors import AuthError, Diagnostic, RegistryError, RegistryUnreachable, UsageError
from ..manifest import MANIFEST_TYPES
from .credentials import Credentials

log = logging.getLogger(__name__)
T = TypeVar("T")
ERROR_BODY_MAX = 64 << 10
_REPO_RE = re.compile(r"^/v2/(.+?)/(blobs|manifests|tags)/")
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Accept no cookie, send no cookie."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


@dataclass(frozen=True)
class ClientConfig:
    url: str  # https://harbor.example.com or http://127.0.0.1:5000
    credentials: Credentials | None = None
    #: the credential sources looked at (credentials.resolve), named when the registry answers 401
    credentials_tried: tuple[str, ...] = ()
    ca_cert: str | None = None
    insecure: bool = False
    timeout: float = 300.0
    connections: int = 16


class RegistryAuth(httpx.Auth):
    # not True: that reads every answer whole, a downloaded blob's too, before anyone streams it.  The
    # token answer is read here; httpx reads an answer the flow answers with another request itself
    requires_response_body = False

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self._lock = threading.Lock()
        #: repository -> (token, expires at, grants push).  Per repository and not per scope: one token
        #: serves a repository's reads and writes once it grants push.  A pull-only token never replaces a
        #: live push token (a HEAD in another thread would otherwise leave a streamed upload holding a
        #: token that is refused, and a streamed body cannot be sent again), and no write is sent with one
        self._tokens: dict[str, tuple[str, float, bool]] = {}
        self._basic = False

    def _basic_header(self) -> str:
        assert self.credentials is not None
        return self.credentials.basic_header()

    def _live(self, repo: str, write: bool) -> str | None:
        with self._lock:
            token = self._tokens.get(repo)
        if token is not None and token[1] > time.monotonic() and (token[2] or not write):
            return token[0]
        return None

    def header_for(self, repo: str, write: bool = False) -> str | None:
        """The Authorization value a request to ``repo`` carries now (a live token that grants what the
        request needs, or basic once the registry asked for it), or None: what a lean request path sends
        without the auth flow."""
        token = self._live(repo, write)
        if token is not None:
            return f"Bearer {token}"
        return self._basic_header() if self._basic else None

    def _apply(self, request: httpx.Request, repo: str) -> None:
        auth = self.header_for(repo, write=request.method not in ("GET", "HEAD"))
        if auth is not None:
            request.headers["Authorization"] = auth

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "Authorization" in request.headers:  # the caller chose (Harbor's /api takes basic auth)
            yield request
            return
        m = _REPO_RE.match(request.url.path)
        repo = m.group(1) if m else ""
        self._apply(request, repo)
        response = yield request
        if response.status_code != 401:
            return
        sent = request.headers.get("Authorization", "")
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        scopes = [s for s in params.get("scope", "").split(" ") if s]
        if sent.startswith("Bearer ") and (
            scheme != "bearer" or all(s.startswith(f"repository:{repo}:") for s in scopes)
        ):
            # the cached token does not (or no longer) grant what it should: one asked for before a Harbor
            # project existed grants nothing in it, and Harbor then challenges with basic.  Never sent
            # again.  Kept when the challenge names another repository too (a mount's source): it still
            # grants this one, and an upload in another thread is sending it now; the token that grants
            # both replaces it in a moment
            with self._lock:
                if self._tokens.get(repo, ("",))[0] == sent[7:]:
                    del self._tokens[repo]
        if scheme == "basic":
            if self.credentials is None or (self._basic and not sent.startswith("Bearer ")):
                return
            self._basic = True
            request.headers["Authorization"] = self._basic_header()
            yield request
            return
        if scheme != "bearer" or "realm" not in params:
            return
        query: list[tuple[str, str | int | float | bool | None]] = [("service", params.get("service", ""))]
        query += [("scope", s) for s in scopes]
        # a challenge that names no scope for this repository says nothing of what the token grants: it is
        # taken to grant writes, as it was before scopes were looked at
        own = [s.rsplit(":", 1)[-1].split(",") for s in scopes if s.startswith(f"repository:{repo}:")]
        push = not own or any("push" in actions or "*" in actions for actions in own)
        creds = self.credentials
        if creds is not None and creds.identity_token:
            # an identity token is an OAuth2 refresh token: exchanged by POST (the distribution token spec)
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": params.get("service", ""),
                "scope": params.get("scope", ""),
                "client_id": "ferry",
            }
            token_request = httpx.Request("POST", params["realm"], data=form)
        else:
            token_request = httpx.Request("GET", params["realm"], params=query)
            if creds is not None:
                token_request.headers["Authorization"] = self._basic_header()
        token_response = yield token_request
        token_response.read()
        if token_response.status_code != 200:
            return  # the original 401 stands and is reported
        try:
            doc = json.loads(token_response.content)
            token = str(doc.get("token") or doc.get("access_token"))
            expires_in = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError):
            return
        now = time.monotonic()
        with self._lock:
            held = self._tokens.get(repo)
            if push or held is None or held[1] <= now or not held[2]:
                # refresh 30 s early: a token that expires mid-upload fails the upload
                self._tokens[repo] = (token, now + max(expires_in - 30, expires_in / 2), push)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(rest))


def parse_url(text: str, *, option: str = "--registry", registry: bool = True) -> str:
    """The base URL an option names, or a :class:`UsageError` saying what is wrong with it.

    Registry references as operators write them are accepted: ``host[:port]`` and ``docker://host`` mean
    https (as skopeo's ``docker://`` transport does); only http and https are spoken."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "https", raw
    scheme = scheme.lower()
    if registry and scheme == "docker":
        scheme = "https"
    if scheme not in ("http", "https"):
        accepted = "https://, http://, docker:// or a bare host[:port]" if registry else "https:// or http://"
        raise UsageError(f"{option} {text!r}: unsupported scheme {scheme!r}", hint=f"Use {accepted}.")
    url = f"{scheme}://{rest}".rstrip("/")
    try:
        parsed = httpx.URL(url)
        host = parsed.host
        _ = parsed.port  # a port that is not a number fails here
    except (httpx.InvalidURL, ValueError) as e:
        raise UsageError(f"{option} {text!r}: not a valid URL ({e})") from None
    if not host:
        raise UsageError(f"{option} {text!r}: no host in the URL", hint="Example: https://harbor.example.com")
    if parsed.query or parsed.fragment:
        raise UsageError(f"{option} {text!r}: a registry URL has no query or fragment")
    return url


def ssl_context(ca_cert: str | None, insecure: bool, *, option: str = "--ca-cert") -> ssl.SSLContext | bool:
    """TLS verification as asked: a CA bundle that is missing or holds no certificate is a usage error
    now, not a TLS failure on the first request."""
    if insecure:
        return False
    if not ca_cert:
        return True
    try:
        return ssl.create_default_context(cafile=ca_cert)
    except FileNotFoundError:
        raise UsageError(f"{option} {ca_cert}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as e:
        raise UsageError(
            f"{option} {ca_cert}: not a PEM certificate bundle ({e})",
            hint="Pass the CA certificate(s) of the registry in PEM form (-----BEGIN CERTIFICATE-----).",
        ) from None


def redact(url: str) -> str:
    """Drop credentials and upload-session state from a URL before it appears in any message."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _log_response(r: httpx.Response) -> None:
    """One debug line per request (``-vv``): method, URL without credentials, status, time to headers."""
    if log.isEnabledFor(logging.DEBUG):
        started = r.request.extensions.get("ferry_started")
        took = f" {time.monotonic() - started:.3f}s" if isinstance(started, float) else ""
        log.debug("%s %s %d%s", r.request.method, redact(str(r.request.url)), r.status_code, took)


def _mark_request(request: httpx.Request) -> None:
    request.extensions["ferry_started"] = time.monotonic()


class RegistryClient:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/")
        verify = ssl_context(config.ca_cert, config.insecure)
        self.auth = RegistryAuth(config.credentials)
        self.http = httpx.Client(
            auth=self.auth,
            verify=verify,
            timeout=httpx.Timeout(config.timeout, connect=30.0),
            limits=httpx.Limits(
                max_connections=config.connections, max_keepalive_connections=config.connections
            ),
            headers={"Accept-Encoding": "identity", "User-Agent": "ferry"},
            follow_redirects=True,  # blob GETs/HEADs may redirect to storage
            event_hooks={"request": [_mark_request], "response": [_log_response]},
        )
        self.http.cookies.jar.set_policy(NoCookies())

    def close(self) -> None:
        self.http.close()

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        expect: tuple[int, ...],
        what: str,
        headers: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            r = self.http.request(method, url, headers=headers, content=content, params=params)
        except httpx.ConnectError as e:
            raise _transport_error(e, method, url, what) from None
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
            raise RegistryError(
                f"{what}: connection failed ({type(e).__name__}: {e})",
                method=method,
                url=redact(url),
                transport=True,
            ) from None
        except httpx.StreamConsumed:
            # the token expired while a streamed body was on its way: the caller restarts the upload
            raise RegistryError(
                f"{what}: authorization expired mid-request", method=method, url=redact(url), transport=True
            ) from None
        if r.status_code not in expect:
            err = error_from(r, what)
            if isinstance(err, AuthError):
                err.hint = self.auth_hint()
            raise err
        return r

    def auth_hint(self) -> str:
        """What to do about a 401, naming where the credentials came from, or every place looked at."""
        creds = self.config.credentials
        if creds is not None:
            return (
                f"The registry refused the credentials from {creds.source or 'the options'}: check them, or log "
                "in again (docker login / podman login), or pass -u USER --password-stdin."
            )
        tried = ", ".join(self.config.credentials_tried) or "--username, FERRY_REGISTRY_USERNAME/PASSWORD"
        return (
            f"No credentials for {self.base.split('://', 1)[-1]} were found (tried {tried}): pass -u USER "
            "--password-stdin, --authfile FILE, or log in with docker login / podman login."
        )

    def head(
        self,
        path: str,
        *,
        what: str,
        attempts: int,
        backoff: float = 0.5,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """``HEAD path`` (200 or 404 expected), retried on retryable errors: the one way every part of
        ferry asks a registry whether it has a blob or a manifest."""
        return with_retries(
            lambda: self.request("HEAD", self.url(path), expect=(200, 404), what=what, headers=headers),
            attempts=attempts,
            backoff=backoff,
            what=what,
        )

    def get_manifest(self, repo: str, ref: str, *, attempts: int, backoff: float = 0.5) -> httpx.Response:
        """``GET`` a manifest by tag or digest with every media type a bundle can hold accepted, retried
        on retryable errors (a 404 raises, with its status)."""
        sep = "@" if ":" in ref else ":"
        return with_retries(
            lambda: self.request(
                "GET",
                self.url(f"/v2/{repo}/manifests/{ref}"),
                expect=(200,),
                what=f"get {repo}{sep}{ref}",
                headers=MANIFEST_ACCEPT,
            ),
            attempts=attempts,
            backoff=backoff,
            what=f"manifest {repo}{sep}{ref}",
        )

    def head_many(
        self,
        paths: list[str],
        *,
        attempts: int,
        headers: dict[str, str] | None = None,
        jobs: int = 16,
        refused_as_absent: bool = False,
    ) -> list[tuple[int, str | None]]:
        """``HEAD`` each path (200 or 404 expected); returns, in order, (status, Docker-Content-Digest).

        For tens of thousands of HEADs (``ferry diff``, a delta push's check): each through httpx costs
        about 1 ms of Python under one interpreter lock, on a machine where the registry needs the cores.
        So the requests are pipelined (HTTP/1.1: up to :data:`PIPELINE` written at once on a connection,
        the answers read back in order) on a few plain connections, one thread each.  The first request
        to each repository goes through :meth:`head` (the auth flow, a token for that repository); the
        rest reuse its Authorization.  Anything but a plain 200 or 404 (401, a redirect, 5xx, a dropped
        connection, a server that closes instead of pipelining) is asked again through :meth:`head`,
        with its retries.  With ``refused_as_absent``, a refusal (a project that does not exist yet
        answers 401 or 403 on Harbor) is returned as its status instead of raised."""
        from concurrent.futures import ThreadPoolExecutor

        def slow(path: str) -> tuple[int, str | None]:
            try:
                r = self.head(path, what=f"check {path}", attempts=attempts, headers=headers)
            except RegistryError as e:
                if refused_as_absent and e.status in (401, 403):
                    return e.status, None
                raise
            return r.status_code, r.headers.get("Docker-Content-Digest")

        out: list[tuple[int, str | None] | None] = [None] * len(paths)
        # the first request to each repository: through the auth flow, in parallel
        first: dict[str, int] = {}
        for i, path in enumerate(paths):
            m = _REPO_RE.match(path)
            first.setdefault(m.group(1) if m else "", i)
        with ThreadPoolExecutor(max(1, min(jobs, 8)), thread_name_prefix="ferry-head") as pool:
            for i, got in zip(first.values(), pool.map(lambda i: slow(paths[i]), first.values())):
                out[i] = got
            rest = [i for i in range(len(paths)) if out[i] is None]
            lanes = max(1, min(jobs, 8, -(-len(rest) // PIPELINE)))
            pipe = _Pipeline(self, headers or {})
            for done in pool.map(pipe.run, [[(i, paths[i]) for i in rest[k::lanes]] for k in range(lanes)]):
                for i, got in done.items():
                    out[i] = got
            again = [i for i in range(len(paths)) if out[i] is None]
            for i, got in zip(again, pool.map(lambda i: slow(paths[i]), again)):
                out[i] = got
        return [x for x in out if x is not None]

    def repositories(self) -> set[str] | None:
        """Every repository the registry lists (``GET /v2/_catalog``, following ``Link: rel="next"``), or
        None when it will not say: Harbor lists it to system administrators only, and a registry may
        disable it.  Distribution lists a repository once a blob landed in it (it has ``_layers``)."""
        names: set[str] = set()
        url = self.url("/v2/_catalog?n=1000")
        while True:
            try:
                r = self.request("GET", url, expect=(200,), what="list repositories")
                doc = r.json()
                names.update(str(n) for n in doc.get("repositories") or ())
            except (RegistryError, ValueError, AttributeError, TypeError) as e:
                log.info("the registry does not list its repositories (%s)", e)
                return None
            nxt = r.links.get("next", {}).get("url")
            if not nxt:
                return names
            url = urllib.parse.urljoin(url, nxt)


#: HEAD requests written at once on one connection before their answers are read
PIPELINE = 64


class _Pipeline:
    """Pipelined HEADs on plain ``http.client``-free sockets: one connection per call of :meth:`run`."""

    def __init__(self, client: RegistryClient, headers: dict[str, str]) -> None:
        self.client = client
        parts = urllib.parse.urlsplit(client.base)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        hostport = self.host if parts.port is None else f"{self.host}:{parts.port}"
        self.common = f"Host: {hostport}\r\nUser-Agent: ferry\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        sock = socket.create_connection((self.host, self.port), timeout=60)
        if self.https:
            cfg = self.client.config
            ctx = ssl_context(cfg.ca_cert, cfg.insecure)
            if ctx is False:
                ctx = ssl._create_unverified_context()
            elif ctx is True:
                ctx = ssl.create_default_context()
            sock = ctx.wrap_socket(sock, server_hostname=self.host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, sock.makefile("rb")

    def run(self, items: list[tuple[int, str]]) -> dict[int, tuple[int, str | None]]:
        """(index, path) -> (status, digest) for each answered plainly; the rest are left to the caller."""
        done: dict[int, tuple[int, str | None]] = {}
        conn: tuple[socket.socket, BinaryIO] | None = None
        try:
            for k in range(0, len(items), PIPELINE):
                batch = items[k : k + PIPELINE]
                if conn is None:
                    conn = self._connect()
                sock, f = conn
                requests = []
                for _, path in batch:
                    m = _REPO_RE.match(path)
                    auth = self.client.auth.header_for(m.group(1) if m else "")
                    requests.append(
                        f"HEAD {self.prefix}{path} HTTP/1.1\r\n{self.common}"
                        + (f"Authorization: {auth}\r\n" if auth else "")
                        + "\r\n"
                    )
                sock.sendall("".join(requests).encode())
                for i, _ in batch:
                    status, digest, close = _read_head_response(f)
                    if status in (200, 404):
                        done[i] = (status, digest if status == 200 else None)
                    if close:
                        break  # the rest of this batch is asked again
                else:
                    continue
                f.close()
                sock.close()
                conn = None
        except (OSError, ValueError):
            pass  # what was not answered is asked again, one by one
        finally:
            if conn is not None:
                conn[1].close()
                conn[0].close()
        return done


def _read_head_response(f: BinaryIO) -> tuple[int, str | None, bool]:
    """(status, Docker-Content-Digest, whether the server closes) of one answer to a HEAD (no body)."""
    line = f.readline(65537)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError("not an HTTP response")
    status = int(parts[1])
    digest = None
    close = parts[0] == b"HTTP/1.0"
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            if not h:
                raise ValueError("connection closed")
            break
        name, _, value = h.partition(b":")
        key = name.strip().lower()
        if key == b"docker-content-digest":
            digest = value.strip().decode("ascii", "replace")
        elif key == b"connection":
            close = value.strip().lower() == b"close"
    if 100 <= status < 200:
        return _read_head_response(f)
    return status, digest, close


#: what a manifest HEAD or GET accepts: every kind a bundle can hold
MANIFEST_ACCEPT = {"Accept": ", ".join(sorted(MANIFEST_TYPES))}


def connect(client: RegistryClient, *, retries: int, backoff: float) -> httpx.Response:
    """The first contact, the same for every command: one authenticated ``GET /v2/`` (retried as
    ``retries`` says) that proves the URL, TLS, credentials and that the other side speaks the V2 API."""
    ping = with_retries(
        lambda: client.request("GET", client.url("/v2/"), expect=(200,), what=f"connect to {client.base}"),
        attempts=retries,
        backoff=backoff,
        what="ping",
    )
    check_speaks_v2(ping, client.base)
    return ping


def check_speaks_v2(r: httpx.Response, registry: str) -> None:
    """Refuse a target that answered ``/v2/`` but is no registry (a web server, a login page): planning
    against it would report nothing to upload.  A registry says ``Docker-Distribution-API-Version`` or
    answers with a JSON body."""
    if r.headers.get("Docker-Distribution-API-Version", "").lower().startswith("registry/2"):
        return
    try:
        if isinstance(json.loads(r.content or b"null"), dict):
            return
    except ValueError:
        pass
    kind = r.headers.get("Content-Type", "unknown content").split(";", 1)[0]
    raise RegistryError(
        f"{registry} answered GET /v2/ with 200 ({kind}) but does not speak the Registry V2 API",
        status=r.status_code,
        method="GET",
        url=f"{registry}/v2/",
        hint="Check the URL: it must be the registry itself (Harbor: its external URL), not a web page or a proxy's login.",
    )


def detect_harbor(client: RegistryClient) -> str | None:
    try:
        r = client.http.get(client.url("/api/v2.0/systeminfo"), timeout=30)
    except Exception:
        return None
    if r.status_code == 200:
        try:
            return str(r.json().get("harbor_version") or "unknown")
        except ValueError:
            return None
    return None


def _transport_error(e: Exception, method: str, url: str, what: str) -> RegistryError:
    text = str(e)
    if "CERTIFICATE" in text.upper() or "SSL" in text.upper() or "TLS" in text.upper():
        return RegistryUnreachable(
            f"{what}: TLS failed talking to {redact(url)} ({text})",
            method=method,
            url=redact(url),
            hint="Pass the registry's CA with --ca-cert, use --insecure to skip verification, or http:// for a plain registry.",
        )
    return RegistryUnreachable(
        f"{what}: cannot connect to {redact(url)} ({text})", method=method, url=redact(url), transport=True
    )


def error_from(r: httpx.Response, what: str) -> RegistryError:
    diags: list[Diagnostic] = []
    body = r.content[:ERROR_BODY_MAX]
    try:
        for e in json.loads(body).get("errors", []):
            detail = e.get("detail")
            diags.append(
                Diagnostic(
                    str(e.get("code", "")), str(e.get("message", "")), "" if detail is None else str(detail)
                )
            )
    except (ValueError, AttributeError):
        pass
    retry_after = None
    if r.headers.get("Retry-After", "").isdigit():
        retry_after = float(r.headers["Retry-After"])
    codes = ", ".join(f"{d.code}: {d.message}" if d.message else d.code for d in diags)
    message = f"{what}: {r.status_code} {r.reason_phrase}" + (f" ({codes})" if codes else "")
    cls = AuthError if r.status_code == 401 else RegistryError
    return cls(
        message,
        status=r.status_code,
        method=r.request.method,
        url=redact(str(r.request.url)),
        diagnostics=tuple(diags),
        retry_after=retry_after,
    )


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    what: str,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` until it succeeds, retrying only retryable registry errors, with jittered exponential
    backoff from ``backoff`` seconds (capped at 30 s), or the server's Retry-After when it gives one."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except RegistryError as e:
            if not e.retryable or attempt == attempts:
                raise
            delay = e.retry_after if e.retry_after is not None else min(30.0, backoff * 2 ** (attempt - 1))
            delay *= 1 + random.random() * 0.25
            log.info("%s: %s; retry %d/%d in %.1fs", what, e.message, attempt, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


__all__ = [
    "MANIFEST_ACCEPT",
    "ClientConfig",
    "Credentials",
    "RegistryAuth",
    "RegistryClient",
    "check_speaks_v2",
    "connect",
    "detect_harbor",
    "error_from",
    "parse_url",
    "redact",
    "ssl_context",
    "with_retries",
]
