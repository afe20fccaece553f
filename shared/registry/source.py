"""A live registry as an :class:`~ferry.shared.store.ImageSource`, read over the V2 API.

Enumeration: ``/v2/_catalog`` (paginated by ``Link``), or a list of repositories given (``--repos-from``),
or, on Harbor where the catalog is for administrators only, its projects and repositories API; then
``/v2/<name>/tags/list`` (paginated), each tag's manifest with every media type accepted, every index
child by digest.  The catalog is built exactly as the storage-tree walk builds it (repositories and tags in
name order, each image's closure as a manifest, its children's closures, its blobs), so both exports of one
registry give the same index apart from ``source`` and the times.

Schema 1 manifests come signed over the API (the registry signs on the way out); the bundle holds what
the registry stores and names, the payload without signatures, whose sha256 is the digest.

Content: manifests were fetched during the scan and are kept; blobs are downloaded once, from a repository
that holds them, in the source's order: small ones a few at a time ahead of the writer (their sha256
checked on arrival, at most :data:`AHEAD_BYTES` in memory), large ones streamed straight into the sink,
which checks their sha256 as it writes.  A download that breaks midway goes on with a ``Range`` request.

Who verifies (:mod:`ferry.shared.store`): small blobs and manifests here (``verified=True``); streamed blobs the
sink, as it writes them (``verified=False``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx

from ..digest import CHUNK, xxh3_of
from ..errors import BrokenImage, BrokenImages, RegistryError, UsageError
from ..manifest import SCHEMA1_TYPES, BlobRef, ManifestError, ManifestInfo, parse_manifest
from ..model import Blob, Catalog, Manifest, Repository, Skipped
from ..prefetch import FetchAhead
from ..progress import Progress, ProgressCallback, no_progress
from ..storage.paths import repository_problem, tag_problem
from ..storage.reader import Selection
from ..store import BlobContent
from .client import RegistryClient, error_from, with_retries

log = logging.getLogger(__name__)

#: blobs up to this size are fetched ahead of the writer, whole, in parallel
SMALL = 4 << 20
#: at most this many bytes of small blobs held in memory ahead of the writer
AHEAD_BYTES = 64 << 20
#: larger than any registry accepts as a manifest
MANIFEST_MAX = 32 << 20


@dataclass(frozen=True)
class RegistryScanOptions:
    selection: Selection = field(default_factory=Selection)
    skip_broken: bool = False
    #: repositories to read, one per line, when the registry does not list them
    repos_from: Path | None = None
    jobs: int = 8
    retries: int = 5
    backoff: float = 0.5


@dataclass(frozen=True)
class RegistryScan:
    catalog: Catalog
    #: manifest digest -> the bytes the bundle holds
    raw: dict[str, bytes]
    #: digest -> a repository of the source that holds it (to download it from)
    where: dict[str, str]
    #: untagged manifests exist but the API cannot list them (said once)
    untagged_note: str | None = None


def schema1_payload(raw: bytes) -> bytes:
    """The payload a signed schema 1 manifest was signed over: what the registry stores and hashes."""
    doc = json.loads(raw)
    sig = doc["signatures"][0]
    protected = json.loads(base64.urlsafe_b64decode(sig["protected"] + "=" * (-len(sig["protected"]) % 4)))
    tail = base64.urlsafe_b64decode(protected["formatTail"] + "=" * (-len(protected["formatTail"]) % 4))
    return raw[: int(protected["formatLength"])] + tail


class _Lister:
    """Repositories and tags, each list followed through its ``Link: rel="next"`` pages."""

    def __init__(self, client: RegistryClient, options: RegistryScanOptions) -> None:
        self.client = client
        self.options = options

    def _get(self, url: str, what: str) -> httpx.Response:
        c = self.client
        return with_retries(
            lambda: c.request("GET", url, expect=(200,), what=what),
            attempts=self.options.retries,
            backoff=self.options.backoff,
            what=what,
        )

    def _pages(self, first: str, key: str, what: str) -> list[str]:
        out: list[str] = []
        url = first
        while True:
            r = self._get(url, what)
            try:
                items = r.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: the registry answered something that is not JSON") from None
            out += [str(x) for x in items]
            nxt = r.links.get("next", {}).get("url")
            if not nxt:
                return out
            url = urllib.parse.urljoin(url, nxt)

    def repositories(self) -> list[str]:
        if self.options.repos_from is not None:
            try:
                text = self.options.repos_from.read_text()
            except OSError as e:
                raise UsageError(f"--repos-from {self.options.repos_from}: {e.strerror}") from None
            return sorted(
                {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
            )
        try:
            return sorted(
                set(self._pages(self.client.url("/v2/_catalog?n=1000"), "repositories", "list repositories"))
            )
        except RegistryError as e:
            if e.status not in (401, 403, 404):
                raise
            harbor = self._harbor_repositories()
            if harbor is not None:
                return harbor
            raise RegistryError(
                f"{self.client.base} does not list its repositories to this account ({e.message})",
                status=e.status,
                hint="Give the repositories with --repos-from FILE (one per line), or use an account the "
                "registry lists them to.",
            ) from None

    def _once(self, url: str, what: str) -> httpx.Response:
        return self.client.request("GET", url, expect=(200,), what=what)

    def _harbor_pages(self, path: str, what: str, get: Callable[[str, str], httpx.Response]) -> Iterator[Any]:
        """Each page of one of Harbor's lists (``page``, 100 to a page), decoded, until a short one;
        ``get`` fetches one (with or without retries)."""
        page = 1
        while True:
            sep = "&" if "?" in path else "?"
            batch = get(self.client.url(f"{path}{sep}page={page}&page_size=100"), what).json()
            yield batch
            if len(batch) < 100:
                return
            page += 1

    def _harbor_repositories(self) -> list[str] | None:
        """Harbor lists the catalog to system administrators only; its API lists every project and
        repository this account may see."""
        try:
            projects = [
                str(p["name"])
                for batch in self._harbor_pages("/api/v2.0/projects", "list projects", self._once)
                for p in batch
            ]
            repos = [
                str(x["name"])
                for p in projects
                for batch in self._harbor_pages(
                    f"/api/v2.0/projects/{p}/repositories", f"list repositories of {p}", self._once
                )
                for x in batch
            ]
        except (RegistryError, ValueError, KeyError, TypeError):
            return None
        log.info("listed %d repositories through Harbor's API", len(repos))
        return sorted(set(repos))

    def harbor_untagged(self, repos: list[str], pool: ThreadPoolExecutor) -> dict[str, list[str]] | None:
        """repository -> the digests of its manifests no tag points to, where the registry is Harbor 2
        (its artifact API lists them: ``q=tags=nil``); None anywhere else (the V2 API cannot see them).
        Harbor is told by its system info, which any account (or none) may read."""
        try:
            info = self._once(self.client.url("/api/v2.0/systeminfo"), "Harbor's system info").json()
        except (RegistryError, ValueError):
            return None
        if not isinstance(info, dict) or "auth_mode" not in info:
            return None

        def untagged(repo: str) -> list[str]:
            project, _, rest = repo.partition("/")
            if not rest:
                return []
            # Harbor takes a repository name with slashes only encoded twice (a/b as a%252Fb)
            name = urllib.parse.quote(urllib.parse.quote(rest, safe=""), safe="")
            path = f"/api/v2.0/projects/{urllib.parse.quote(project, safe='')}/repositories/{name}/artifacts"
            what = f"list the untagged artifacts of {repo}"
            found: list[str] = []
            try:
                for batch in self._harbor_pages(f"{path}?q=tags%3Dnil", what, self._get):
                    found += [str(a["digest"]) for a in batch if not a.get("tags")]
            except RegistryError as e:
                if e.status not in (401, 403, 404):
                    raise
                # a repository the V2 API shows but this account may not list: its tags still come
                log.info("Harbor does not list the artifacts of %s to this account (%s)", repo, e.status)
            except (ValueError, KeyError, TypeError, AttributeError):
                raise RegistryError(f"{what}: Harbor answered something unexpected") from None
            return found

        listed = dict(zip(repos, pool.map(untagged, repos)))
        log.info("Harbor lists %d untagged artifacts", sum(map(len, listed.values())))
        return {repo: ds for repo, ds in listed.items() if ds}

    def tags(self, repo: str) -> list[str]:
        try:
            return sorted(
                set(
                    self._pages(
                        self.client.url(f"/v2/{repo}/tags/list?n=1000"), "tags", f"list tags of {repo}"
                    )
                )
            )
        except RegistryError as e:
            if e.status == 404:
                return []  # listed but empty (its last tag deleted)
            raise


@dataclass
class _Fetched:
    raw: bytes | None
    info: ManifestInfo | None
    problem: str | None = None


#: said once by an export with --untagged from a registry that is not Harbor
UNTAGGED_INVISIBLE = (
    "manifests no tag points to are invisible through the registry API, except those that refer to an "
    "exported one (found through the referrers API where the registry has it); the others were not "
    "exported: `ferry export` of the registry's storage tree (on its host) counts and includes them"
)


def scan_registry(
    client: RegistryClient, options: RegistryScanOptions, on_progress: ProgressCallback = no_progress
) -> RegistryScan:
    """Everything the selection names, fetched and checked (manifests only: blobs come with the copy)."""
    lister = _Lister(client, options)
    sel = options.selection
    skipped: list[Skipped] = []
    repos = []
    for name in lister.repositories():
        problem = repository_problem(name)
        if problem is not None:
            skipped.append(Skipped(name, None, None, problem))
            continue
        repos.append(name)
    pool = ThreadPoolExecutor(max(1, options.jobs), thread_name_prefix="ferry-scan")
    try:
        listed = dict(zip(repos, pool.map(lister.tags, repos)))
        roots: list[tuple[str, str]] = []
        if sel.include or sel.exclude:
            sel.unmatched(set().union(*(sel.matching(repo, listed[repo]) for repo in repos)))
        for repo in repos:
            for tag in listed[repo]:
                problem = tag_problem(tag)
                if problem is not None:
                    if sel.wants(repo, tag):
                        skipped.append(Skipped(repo, tag, None, problem))
                    continue
                if sel.wants(repo, tag):
                    roots.append((repo, tag))
        fetched: dict[str, _Fetched] = {}
        lock = threading.Lock()
        done = [0]

        def fetch(repo: str, ref: str) -> tuple[str | None, _Fetched]:
            try:
                r = client.get_manifest(repo, ref, attempts=options.retries, backoff=options.backoff)
            except RegistryError as e:
                if e.status == 404:
                    return None, _Fetched(None, None, "manifest missing (the registry answers 404)")
                raise
            raw = r.content
            if len(raw) > MANIFEST_MAX:
                return None, _Fetched(
                    None, None, f"manifest of {len(raw)} bytes, larger than any registry takes"
                )
            header = r.headers.get("Docker-Content-Digest")
            try:
                info = parse_manifest(raw)
                if info.media_type in SCHEMA1_TYPES and b'"signatures"' in raw:
                    raw = schema1_payload(raw)
                    info = parse_manifest(raw)
            except (ManifestError, ValueError, KeyError, IndexError, TypeError) as e:
                return header, _Fetched(None, None, f"manifest unreadable: {e}")
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            if header and header != digest:
                return header, _Fetched(None, None, f"the registry serves bytes that hash to {digest}")
            with lock:
                done[0] += 1
                on_progress(Progress("scan", done[0], 0, unit="manifests"))
            return digest, _Fetched(raw, info)

        # every tag's manifest, then (level by level) every index child, by digest, in its repository
        tops = list(pool.map(lambda rt: fetch(*rt), roots))
        by_repo: dict[str, set[str]] = {}
        pending: list[tuple[str, str]] = []
        for (repo, _), (d, f) in zip(roots, tops):
            if d is not None:
                fetched.setdefault(d, f)
                by_repo.setdefault(repo, set()).add(d)
                pending += [
                    (repo, c.digest) for c in (f.info.children if f.info else ()) if sel.keeps(c.platform)
                ]

        def fetch_by_digest(pending: list[tuple[str, str]]) -> None:
            """Each (repository, digest) and, level by level, its children of the selected platforms,
            fetched by digest in that repository into ``fetched`` and ``by_repo``."""
            while pending:
                wanted = [(r, d) for r, d in dict.fromkeys(pending) if d not in by_repo.get(r, set())]
                pending = []
                for (repo, d), (got, f) in zip(wanted, pool.map(lambda rd: fetch(*rd), wanted)):
                    by_repo.setdefault(repo, set()).add(d)
                    if got != d:
                        f = _Fetched(None, None, f.problem or f"the registry serves {got} for {d}")
                    fetched.setdefault(d, f)
                    pending += [
                        (repo, c.digest) for c in (f.info.children if f.info else ()) if sel.keeps(c.platform)
                    ]

        fetch_by_digest(pending)
        # untagged manifests: Harbor lists them (its artifact API), as the storage-tree walk finds them;
        # through the V2 API alone only what refers to an exported manifest (OCI 1.1 ``subject``:
        # signatures, SBOMs) can be found, with the referrers API where the registry has one
        harbor = lister.harbor_untagged([r for r in repos if sel.wants(r, None)], pool)
        unreached = {
            repo: left
            for repo, ds in (harbor or {}).items()
            if (left := [d for d in ds if d not in by_repo.get(repo, set())])
        }
        loose: dict[str, set[str]] = {}
        if sel.untagged:
            fetch_by_digest([(repo, d) for repo, ds in unreached.items() for d in ds])
            loose = _referrers(client, pool, by_repo, fetch_by_digest)
            for repo, ds in unreached.items():
                loose.setdefault(repo, set()).update(ds)
        for repo in list(loose):
            if not sel.wants(repo, None):
                del loose[repo]
        # foreign (non-distributable) layers are bundled only where the registry has their bytes, as the
        # storage-tree export does; registries usually do not (clients fetch them from their urls)
        foreign = sorted(
            {
                (repo, b.digest)
                for repo, ds in by_repo.items()
                for d in ds
                if (info := fetched[d].info) is not None
                for b in info.blobs
                if b.foreign
            }
        )
        heads = client.head_many([f"/v2/{r}/blobs/{d}" for r, d in foreign], attempts=options.retries)
        present = {d for (_, d), (status, _) in zip(foreign, heads) if status == 200}
        # schema 1 layers have no size in the manifest: asked with a HEAD
        sizes: dict[str, int] = {}
        unsized = sorted(
            {
                (repo, b.digest)
                for (repo, _), (d, f) in zip(roots, tops)
                if f.info is not None and f.info.media_type in SCHEMA1_TYPES
                for b in f.info.blobs
            }
        )

        def size_of(item: tuple[str, str]) -> int:
            r, d = item
            resp = client.head(f"/v2/{r}/blobs/{d}", what=f"size of {d}", attempts=options.retries)
            return int(resp.headers.get("Content-Length", "-1")) if resp.status_code == 200 else -1

        for (_, d), size in zip(unsized, pool.map(size_of, unsized)):
            if size >= 0:
                sizes.setdefault(d, size)
    finally:
        pool.shutdown()
    # untagged roots after each repository's tags, by digest, as the storage-tree walk orders them
    order: dict[str, int] = {}
    for i, (repo, _) in enumerate(roots):
        order[repo] = i
    all_roots: list[tuple[str, str | None]] = list(roots)
    all_tops = list(tops)
    for repo in sorted(loose, key=lambda r: order.get(r, len(roots)), reverse=True):
        at = order[repo] + 1 if repo in order else len(all_roots)
        extra = sorted(loose[repo])
        all_roots[at:at] = [(repo, None) for _ in extra]
        all_tops[at:at] = [(d, fetched[d]) for d in extra]
    if harbor is None:
        note = UNTAGGED_INVISIBLE if sel.untagged else None
    elif not sel.untagged and unreached:
        n = sum(map(len, unreached.values()))
        note = (
            f"{n} manifests that no tag reaches (untagged; Harbor's artifact API lists them) were left out: "
            "--untagged exports them by digest"
        )
    else:
        note = None
    return _build(all_roots, all_tops, fetched, sizes, skipped, options, present, note)


def _referrers(
    client: RegistryClient,
    pool: ThreadPoolExecutor,
    by_repo: dict[str, set[str]],
    fetch_by_digest: Callable[[list[tuple[str, str]]], None],
) -> dict[str, set[str]]:
    """repository -> the manifests that refer to one exported from it (and to those, to any depth), with
    their children fetched (``fetch_by_digest`` adds them to ``by_repo``); empty where the registry has
    no referrers API (distribution 2.8: a 404)."""

    def ask(item: tuple[str, str]) -> list[str] | None:
        repo, d = item
        try:
            r = client.request(
                "GET",
                client.url(f"/v2/{repo}/referrers/{d}"),
                expect=(200, 404),
                what=f"referrers of {repo}@{d}",
                headers={"Accept": "application/vnd.oci.image.index.v1+json"},
            )
        except RegistryError as e:
            if e.status in (400, 401, 403, 405, 501):
                return None
            raise
        if r.status_code == 404:
            return None
        try:
            return [str(m["digest"]) for m in r.json().get("manifests") or []]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    found: dict[str, set[str]] = {}
    frontier = [(repo, d) for repo in sorted(by_repo) for d in sorted(by_repo[repo])]
    while frontier:
        new: list[tuple[str, str]] = []
        for (repo, _), refs in zip(frontier, pool.map(ask, frontier)):
            if refs is None:
                log.info("%s has no referrers API: only tags are exported", client.base)
                return found
            new += [(repo, x) for x in refs if x not in by_repo.setdefault(repo, set())]
        new = list(dict.fromkeys(new))
        fetch_by_digest(new)
        for repo, d in new:
            found.setdefault(repo, set()).add(d)
        frontier = new
    return found


def _build(
    roots: list[tuple[str, str | None]],
    tops: list[tuple[str | None, _Fetched]],
    fetched: dict[str, _Fetched],
    sizes: dict[str, int],
    skipped: list[Skipped],
    options: RegistryScanOptions,
    present: set[str],
    note: str | None,
) -> RegistryScan:
    """The catalog in the storage-tree walk's order (see :mod:`ferry.shared.storage.reader`); ``present``: the
    foreign layers the registry has the bytes of."""

    def bundled(b: BlobRef) -> bool:
        return not b.foreign or b.digest in present

    keeps = options.selection.keeps

    broken: list[BrokenImage] = []
    good: list[tuple[str, str | None, str, list[str]]] = []  # repo, tag (None: untagged), digest, closure
    for (repo, tag), (d, f) in zip(roots, tops):
        if d is None or f.info is None:
            broken.append(
                BrokenImage(repo, tag, d or "", f.problem or "manifest unreadable", (d,) if d else ())
            )
            continue
        closure: list[str] = []
        problems: list[tuple[str, str]] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(d, False)]
        while stack:
            x, blobs_now = stack.pop()
            info = fetched[x].info
            if blobs_now:
                assert info is not None
                for b in info.blobs:
                    if b.digest not in seen and bundled(b):
                        seen.add(b.digest)
                        closure.append(b.digest)
                continue
            if x in seen:
                continue
            seen.add(x)
            closure.append(x)
            if info is None:
                problems.append((fetched[x].problem or "manifest unreadable", x))
                continue
            stack.append((x, True))
            stack.extend((c.digest, False) for c in reversed(info.children) if keeps(c.platform))
        if problems:
            broken.append(
                BrokenImage(
                    repo, tag, d, "; ".join(sorted({p for p, _ in problems})), tuple(x for _, x in problems)
                )
            )
            continue
        good.append((repo, tag, d, closure))
    if broken and not options.skip_broken:
        raise BrokenImages(tuple(broken))
    skipped += [Skipped(b.repository, b.tag, b.digest or None, b.reason, b.missing) for b in broken]
    manifests: dict[str, Manifest] = {}
    blobs: dict[str, Blob] = {}
    where: dict[str, str] = {}
    raw: dict[str, bytes] = {}
    for repo, _, _, closure in good:
        for x in closure:
            where.setdefault(x, repo)
            got = fetched.get(x)
            if got is not None and got.info is not None and got.raw is not None:
                if x not in manifests:
                    info = got.info
                    manifests[x] = Manifest(
                        x,
                        info.media_type,
                        len(got.raw),
                        tuple(b.digest for b in info.blobs if bundled(b)),
                        tuple(b for b in info.blobs if not bundled(b)),
                        info.children,
                        info.subject,
                        info.artifact_type,
                        tuple(c.digest for c in info.children if not keeps(c.platform)),
                    )
                    raw[x] = got.raw
            elif x not in blobs:
                blobs[x] = Blob(x, -1, "")
    for m in manifests.values():
        info = fetched[m.digest].info
        assert info is not None
        for b in info.blobs:
            if b.digest in blobs and blobs[b.digest].size < 0:
                size = b.size if b.size >= 0 else sizes.get(b.digest, -1)
                blobs[b.digest] = Blob(b.digest, size, b.media_type)
    unknown = [d for d, b in blobs.items() if b.size < 0]
    if unknown:
        raise RegistryError(
            f"the registry does not say the size of {unknown[0]} (and {len(unknown) - 1} more)"
        )
    by_repo: dict[str, list[tuple[str | None, str, list[str]]]] = {}
    for repo, tag, d, closure in good:
        by_repo.setdefault(repo, []).append((tag, d, closure))
    repositories = []
    for name, rs in by_repo.items():
        held = dict.fromkeys(x for _, _, c in rs for x in c if x in manifests)
        tags = {t: d for t, d, _ in rs if t is not None}
        repositories.append(Repository(name, tags, tuple(held), tuple(d for t, d, _ in rs if t is None)))
    return RegistryScan(Catalog(tuple(repositories), manifests, blobs, tuple(skipped)), raw, where, note)


class BlobStream:
    """One blob's bytes from the registry, read as a file; a connection that breaks midway is picked up
    with ``Range: bytes=N-`` (whoever reads hashes what it reads, so a wrong resume cannot pass)."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int, retries: int) -> None:
        self.client, self.repo, self.digest, self.size = client, repo, digest, size
        self.retries = retries
        self.pos = 0  # bytes handed out
        self.received = 0  # bytes received, over every response
        self.resumed = 0
        self._resp: httpx.Response | None = None
        self._it: Iterator[bytes] | None = None
        self._buf = b""
        self._skip = 0

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.received}-"} if self.received else {}
        url = self.client.url(f"/v2/{self.repo}/blobs/{self.digest}")
        resp = self.client.http.send(self.client.http.build_request("GET", url, headers=headers), stream=True)
        if resp.status_code == 200 and self.received:
            self._skip = self.received  # the server ignored the range: what already arrived is skipped
        elif resp.status_code != (206 if self.received else 200):
            resp.read()
            resp.close()
            raise error_from(resp, f"download {self.digest} from {self.repo}")
        self._resp, self._it = resp, resp.iter_raw(CHUNK)

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        want = left if n < 0 else min(n, left)
        failures = 0
        while len(self._buf) < want:
            try:
                if self._it is None:
                    self._open()
                assert self._it is not None
                chunk = next(self._it, b"")
                if not chunk:
                    raise httpx.RemoteProtocolError("the body ended early")
                if self._skip:
                    cut = min(self._skip, len(chunk))
                    chunk, self._skip = chunk[cut:], self._skip - cut
                self._buf += chunk
                self.received += len(chunk)
            except (httpx.TransportError, RegistryError) as e:
                if isinstance(e, RegistryError) and not e.transport and (e.status or 500) < 500:
                    raise
                failures += 1
                self._close()
                if failures > self.retries:
                    raise RegistryError(
                        f"download {self.digest} from {self.repo}: {e}", transport=True
                    ) from None
                self.resumed += 1
                log.info(
                    "download of %s broke at %d of %d bytes (%s): resuming",
                    self.digest,
                    self.received,
                    self.size,
                    e,
                )
        out, self._buf = self._buf[:want], self._buf[want:]
        self.pos += len(out)
        return out

    def _close(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp, self._it = None, None

    def close(self) -> None:
        self._close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RegistrySource:
    """The scanned registry as an :class:`~ferry.shared.store.ImageSource` (see the module's docstring)."""

    def __init__(
        self,
        client: RegistryClient,
        scan: RegistryScan,
        *,
        jobs: int = 8,
        retries: int = 5,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.client = client
        #: digests the sink already has (a resumed export): yielded, never downloaded
        self._skip = skip
        self.catalog = scan.catalog
        self._scan = scan
        self._jobs = jobs
        self._retries = retries
        self.resumed = 0

    def _small(self, digest: str, size: int) -> bytes:
        repo = self._scan.where[digest]
        with BlobStream(self.client, repo, digest, size, self._retries) as s:
            data = b""
            while len(data) < size:
                chunk = s.read(min(CHUNK, size - len(data)))
                if not chunk:
                    break
                data += chunk
            self.resumed += s.resumed
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"{repo} served {digest} with other bytes ({len(data)} of {size})")
        return data

    def contents(self) -> Iterator[BlobContent]:
        catalog = self.catalog
        order = catalog.member_order()
        ahead = FetchAhead(
            order,
            lambda x: catalog.blobs[x].size if x in catalog.blobs and x not in self._skip else None,
            lambda x: self._small(x, catalog.blobs[x].size),
            small=SMALL,
            budget=AHEAD_BYTES,
            jobs=self._jobs,
            name="ferry-download",
        )
        try:
            for i, d in enumerate(order):
                raw = self._scan.raw.get(d)
                if raw is not None:
                    yield BlobContent(d, len(raw), (), verified=True, xxh3=xxh3_of(raw), data=raw)
                    continue
                size = catalog.blobs[d].size
                data = ahead.take(i)
                if data is not None:
                    yield BlobContent(d, size, (), verified=True, xxh3=xxh3_of(data), data=data)
                    continue
                stream = BlobStream(self.client, self._scan.where[d], d, size, self._retries)
                try:
                    yield BlobContent(d, size, (), verified=False, stream=cast(BinaryIO, stream))
                finally:
                    self.resumed += stream.resumed
                    stream.close()
        finally:
            ahead.close()


__all__ = [
    "BlobStream",
    "RegistryScan",
    "RegistryScanOptions",
    "RegistrySource",
    "scan_registry",
    "schema1_payload",
]
