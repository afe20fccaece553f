"""A registry as an :class:`~ferry.shared.store.ImageSink`: the Registry V2 push flow, concurrent and resumable.

Per blob and target repository: skip it if the registry has it (HEAD; not asked in a repository the
registry's catalog does not list, which holds no blob yet), else mount it from a repository this
run already pushed it to (``POST ?mount=&from=``; a 202 means the mount was refused and the answer is an
upload session to continue), else upload it: monolithic up to ``chunk_size``, above that in PATCH chunks
that always follow the newest ``Location``, closed by a PUT that carries no data.  Failed uploads restart
from a new session with backoff; only retryable errors are retried.

Manifests are sent as the exact bytes of the bundle with ``Content-Type`` equal to their media type; the
digest the registry answers must equal the bundle's.  Children go before their index, a manifest only after
its blobs, tags last.  A tagged image is PUT by tag (one request, not digest then tag); everything else by
digest.  Outcomes are kept per (repository, digest), so one refused image does not stop the others.

Who verifies (the contract of :mod:`ferry.shared.store`): blob bytes are checked by the registry itself, which
hashes every upload and refuses a mismatch on the closing PUT (``DIGEST_INVALID``); manifest bytes are hashed
here before they are sent, and the digest the registry answers is compared with the bundle's.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, cast

import httpx

from ferry.shared.digest import CHUNK
from ferry.shared.errors import RegistryError
from ferry.shared.jobs import JobWindow
from ferry.shared.manifest import SCHEMA1_TYPES, ManifestError, MediaType
from ferry.shared.model import Catalog, Manifest
from ferry.shared.progress import Progress, ProgressCallback, no_progress
from ferry.shared.registry.client import MANIFEST_ACCEPT, RegistryClient, with_retries
from ferry.shared.registry.source import BlobStream
from ferry.shared.storage.fs import Extent, ExtentsReader
from ferry.shared.store import BlobContent, SinkResult

from .. import schema1

log = logging.getLogger(__name__)

#: what a finished manifest job is replaced by: a future holds a lock and a condition, and a push keeps one
#: per manifest until the tags are set (130k of them at 100k tags)
_LANDED: Future[None] = Future()
_LANDED.set_result(None)

SCHEMA1_REASON = (
    "schema 1 manifest: the bundle holds it as stored (unsigned) and registries only accept it signed; "
    "skipped (push again with --convert-schema1 to send it as schema 2 under a new digest)"
)


@dataclass
class PushStats:
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    manifests_put: int = 0
    #: manifests and tags the target already had at the right digest (not PUT again)
    manifests_present: int = 0
    #: (target repository, digest) -> why it failed or was skipped
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (target repository, tag) -> why the tag was not set
    failed_tags: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (target repository, schema 1 digest) -> the digest of the schema 2 manifest pushed instead
    converted: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (target repository, tag) -> (the target's digest, the bundle's): tags the target had elsewhere,
    #: not moved (without ``overwrite``) or moved (with it)
    tags_kept: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    tags_moved: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: project -> why the registry refused this account access to it (said once, not per image)
    refused: dict[str, str] = field(default_factory=dict)


class _Body:
    """Re-readable blob bytes: the source's own bytes, the bundle's extents, or a spooled copy of a
    stream."""

    def __init__(self, content: BlobContent) -> None:
        self.content = content
        self._spool: BinaryIO | None = None

    def spool_if_stream(self) -> None:
        if self.content.stream is not None and self._spool is None:
            spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (closed by close())
            shutil.copyfileobj(self.content.stream, spool, CHUNK)
            self._spool = spool  # type: ignore[assignment]

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.content.size if end is None else end
        if self.content.data is not None:  # bytes the source holds already (a small blob it checked)
            for at in range(start, end, CHUNK):
                yield self.content.data[at : min(end, at + CHUNK)]
            return
        f: BinaryIO
        if self._spool is not None:
            f = self._spool
            f.seek(start)
        else:
            f = cast(BinaryIO, ExtentsReader(_slice(self.content.extents, start, end)))
        left = end - start
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise OSError("bundle data ended early")
            left -= len(data)
            yield data

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _slice(extents: tuple[Extent, ...], start: int, end: int) -> tuple[Extent, ...]:
    """The pieces of ``extents`` covering bytes [start, end) of their concatenation."""
    out, pos = [], 0
    for e in extents:
        lo, hi = max(start, pos), min(end, pos + e.size)
        if lo < hi:
            out.append(Extent(e.path, e.offset + lo - pos, hi - lo))
        pos += e.size
    return tuple(out)


class RegistrySink:
    def __init__(
        self,
        client: RegistryClient,
        *,
        names: dict[str, str],
        jobs: int = 8,
        chunk_size: int = 64 << 20,
        retries: int = 5,
        backoff: float = 0.5,
        convert_schema1: bool = False,
        overwrite: bool = False,
        on_progress: ProgressCallback = no_progress,
    ) -> None:
        self.client = client
        self.convert_schema1 = convert_schema1
        #: move a tag the target has at another digest (else it is kept, and reported)
        self.overwrite = overwrite
        self.names = names
        self.chunk_size = chunk_size
        self.retries = retries
        self.backoff = backoff
        self.stats = PushStats()
        self._on_progress = on_progress
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ferry-push")
        self._lock = threading.Lock()
        # each kind in its own window: a manifest waits for the blobs only, a tag for its manifest only
        window = max(16, 4 * jobs)
        self._blob_jobs = JobWindow(self._pool, window)
        self._manifest_window = JobWindow(self._pool, window)
        self._tag_jobs = JobWindow(self._pool, window)
        #: (target, digest) -> the job that PUTs it (``_LANDED`` once it did), looked up by what needs it
        self._manifest_jobs: dict[tuple[str, str], Future[None]] = {}
        self._where: dict[str, str] = {}  # digest -> a target repository known to hold it
        self._tagged_by_put: set[tuple[str, str]] = set()
        #: manifest bytes for the tags set after the manifest (only of manifests with a second tag: the
        #: first is set by the manifest's own PUT) and of manifests fetched from the target
        self._raw: dict[str, bytes] = {}
        self._converted: dict[str, schema1.Converted] = {}  # schema 1 digest -> what is pushed instead
        self._diff_ids: dict[str, str] = {}  # layer digest -> uncompressed sha256, for schema 1 conversion
        self._diff_wanted: set[str] = set()
        self._catalog: Catalog | None = None
        #: (target, digest a base carried) -> where to mount or copy it from (None: in place)
        self._carry: dict[tuple[str, str], str | None] = {}
        self._checked: tuple[Catalog, list[tuple[str | None, str]]] | None = None
        #: manifests waiting for one they refer to (a signature for its image): (target, digest) of the
        #: one awaited -> what to submit once it is
        self._parked: dict[
            tuple[str, str], list[tuple[tuple[str, str], list[tuple[str, str]], Callable[[], None]]]
        ] = {}
        self._done_bytes = 0
        #: bytes of uploads under way, by (repository, digest): progress moves within a long blob
        self._inflight: dict[tuple[str, str], int] = {}
        self._total_bytes = 0
        self._images_done = 0
        self._images_total = 0

    # -- protocol ----------------------------------------------------------------------------------
    def begin(self, catalog: Catalog) -> None:
        self._catalog = catalog
        # blobs only a skipped (schema 1) manifest needs are not uploaded: they would leave tagless
        # repositories.  Kept as the exceptions (usually none) to what the copy says a repository holds
        self._unneeded: set[tuple[str, str]] = set()
        for repo in catalog.repositories:
            skipped: set[str] = set()
            pushed: set[str] = set()
            for d in repo.manifests:
                m = catalog.manifests[d]
                if m.media_type not in SCHEMA1_TYPES:
                    pushed.update(m.blobs)
                elif self.convert_schema1:
                    pushed.update(m.blobs)
                    self._diff_wanted.update(m.blobs)
                else:
                    skipped.update(m.blobs)
            self._unneeded.update((repo.name, b) for b in skipped - pushed)
        self._total_bytes = sum(b.size for b in catalog.blobs.values())
        self._images_total = sum(1 for _ in catalog.images())
        self._untagged = {(self.names[r.name], d) for r in catalog.repositories for d in r.untagged}
        # a target repository the registry does not list holds no blob yet: asking it about each one (a
        # HEAD per blob, a third of all requests into a fresh registry) can only answer 404.  Where the
        # registry does not list its repositories, every blob is asked about, which is what a resumed run
        # needs anyway
        listed = self.client.repositories()
        targets = {self.names[r.name] for r in catalog.repositories}
        self._absent: set[str] = targets - listed if listed is not None else set()
        # (repository, digest) -> its tags, looked up once per manifest instead of scanning every repository
        self._held = {r.name: set(r.manifests) for r in catalog.repositories}
        #: (target, tag) -> the digest a delta's base recorded for a tag that moved since
        self._was = {
            (self.names[c.repository], c.tag): c.old
            for c in catalog.changes
            if c.kind == "moved" and c.repository in self.names
        }
        self._tags_of: dict[tuple[str, str], list[str]] = {}
        for repo in catalog.repositories:
            for tag, d in sorted(repo.tags.items()):
                self._tags_of.setdefault((repo.name, d), []).append(tag)

    # -- a delta (shared.store.DeltaSink) ---------------------------------------------------------
    @property
    def description(self) -> str:
        return f"the registry {self.client.base}"

    def check_carried(self, catalog: Catalog) -> list[tuple[str | None, str]]:
        """Every carried digest each target repository needs must be in it, or in another repository
        of the target it can be mounted (a blob) or copied (a manifest) from.  HEADs only, in parallel;
        what is where is kept for :meth:`put_carried`, and the answer for a second call."""
        wanted: dict[tuple[str, str], None] = {}
        for repo in catalog.repositories:
            target = self.names[repo.name]
            for d in repo.manifests:
                m = catalog.manifests[d]
                if m.media_type in SCHEMA1_TYPES:
                    continue  # was not pushed with its base either (or was converted to another digest)
                if d in catalog.carried:
                    wanted[(target, d)] = None
                wanted.update(((target, b), None) for b in m.blobs if b in catalog.carried)
        if self._checked is not None and self._checked[0] is catalog:
            return self._checked[1]  # asked once before anything was written (push); not again
        pairs = list(wanted)
        blobs = [p for p in pairs if p[1] in catalog.blobs]
        manifests = [p for p in pairs if p[1] not in catalog.blobs]
        answers = self.client.head_many(
            [f"/v2/{t}/blobs/{d}" for t, d in blobs], attempts=self.retries, refused_as_absent=True
        ) + self.client.head_many(
            [f"/v2/{t}/manifests/{d}" for t, d in manifests],
            attempts=self.retries,
            headers=MANIFEST_ACCEPT,
            refused_as_absent=True,
        )
        has = {p for p, (status, _) in zip(blobs + manifests, answers) if status == 200}
        holder: dict[str, str] = {}
        for t, d in sorted(has):
            holder.setdefault(d, t)
        self._carry = {}
        missing: list[tuple[str | None, str]] = []
        for t, d in pairs:
            if (t, d) in has:
                self._carry[(t, d)] = None
            elif d in holder:
                self._carry[(t, d)] = holder[d]
            else:
                missing.append((t, d))
        self._checked = (catalog, missing)
        return missing

    def put_carried(self, repos: Sequence[str], digest: str) -> None:
        assert self._catalog is not None
        blob = digest in self._catalog.blobs
        for repo in repos:
            target = self.names[repo]
            key = (target, digest)
            if key not in self._carry:
                if not blob:  # schema 1: skipped as in the push of its base
                    self.stats.skipped[key] = SCHEMA1_REASON
                continue
            source = self._carry[key]
            if blob:
                if source is None:
                    self.stats.blobs_present += 1
                    self._where.setdefault(digest, target)
                else:
                    self._blob_jobs.submit(self._carry_blob, target, digest, source)
            else:
                # after the blobs it needs (mounted just before) and its children (copied just before)
                self._blob_jobs.drain()
                children = [
                    job
                    for c in self._catalog.manifests[digest].held_children
                    if (job := self._manifest_jobs.get((target, c.digest))) is not None
                ]
                self._track(
                    key, self._manifest_window.submit(self._carry_manifest, target, digest, source, children)
                )

    def _carry_blob(self, repo: str, digest: str, source: str) -> None:
        """Mount a blob a base brought into another repository; a registry that refuses the mount (a
        202) gets it uploaded, from a download out of ``source``."""
        try:
            self._check_project(repo)
            r = self._mount(repo, digest, source)
            if r.status_code == 201:
                self._record(digest, repo, "mounted")
                return
            assert self._catalog is not None
            body = self._download(source, digest, self._catalog.size_of(digest))
            try:
                self._upload(repo, body, _location(r))
            finally:
                body.close()
            self._record(digest, repo, "uploaded")
        except (RegistryError, OSError) as e:
            self._fail(repo, digest, self._describe(e, repo))

    def _download(self, repo: str, digest: str, size: int) -> _Body:
        """A blob from the target itself (resumed with Range where a download breaks), spooled for an
        upload; the registry checks its digest on the upload's closing PUT, as for any blob."""
        stream = BlobStream(self.client, repo, digest, size, self.retries)
        body = _Body(BlobContent(digest, size, (), verified=False, stream=cast(BinaryIO, stream)))
        try:
            body.spool_if_stream()
        finally:
            stream.close()
        return body

    def _carry_manifest(
        self, repo: str, digest: str, source: str | None, children: Sequence[Future[None]] = ()
    ) -> None:
        """A manifest a base brought: in place (``source`` None), or copied, byte for byte, from another
        repository of the target into this one (once its ``children`` are: jobs submitted earlier)."""
        for child in children:
            child.result()
        if source is None:
            with self._lock:
                self.stats.manifests_present += 1
            return
        assert self._catalog is not None
        m = self._catalog.manifests[digest]
        try:
            raw = self._fetch_manifest(source, digest)
            self._put(repo, digest, m.media_type, raw, digest)
        except (RegistryError, OSError) as e:
            self._fail(repo, digest, self._describe(e, repo))

    def _fetch_manifest(self, repo: str, digest: str) -> bytes:
        """A manifest's exact bytes from the target (a tag on a manifest a base brought)."""
        with self._lock:
            raw = self._raw.get(digest)
        if raw is not None:
            return raw
        raw = self.client.get_manifest(repo, digest, attempts=self.retries, backoff=self.backoff).content
        if f"sha256:{hashlib.sha256(raw).hexdigest()}" != digest:
            raise RegistryError(f"{repo} served {digest} with other bytes")
        with self._lock:
            self._raw[digest] = raw
        return raw

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        body = _Body(content)
        targets = [self.names[r] for r in repos if (r, content.digest) not in self._unneeded]
        if not targets:
            self._advance(content.size)
            return
        if content.stream is not None:
            # a stream is read now, once; it may have to go to several repositories or be retried
            body.spool_if_stream()
        self._blob_jobs.submit(self._blob, targets, body)

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None:
        self._blob_jobs.drain()
        with content.open() as f:
            raw = f.read()
        if len(raw) != content.size or "sha256:" + hashlib.sha256(raw).hexdigest() != content.digest:
            for r in repos:
                self._fail(
                    self.names[r], content.digest, "manifest bytes in the bundle do not match their digest"
                )
            return
        assert self._catalog is not None
        if any(len(self._tags_of.get((r, content.digest), ())) > 1 for r in repos):
            self._raw[content.digest] = raw
        for repo in repos:
            target = self.names[repo]
            key = (target, content.digest)
            if manifest.media_type in SCHEMA1_TYPES and not self.convert_schema1:
                self.stats.skipped[key] = SCHEMA1_REASON
                self._advance(images=key in self._untagged)
                continue
            children = [(target, c.digest) for c in manifest.held_children]
            for child in children:
                job = self._manifest_jobs.get(child)
                if job is not None:
                    job.result()
            missing = [
                d
                for d in (*manifest.blobs, *(c.digest for c in manifest.held_children))
                if self._bad(target, d)
            ]
            if missing:
                why = self._reason(target, missing[0])
                self._fail(target, content.digest, f"needs {missing[0]}, which did not land: {why}")
                self._advance(images=key in self._untagged)
                continue
            tags = self._tags_of.get((repo, content.digest), [])
            if manifest.media_type in SCHEMA1_TYPES:
                try:
                    converted = self._convert(content.digest, raw)
                except ManifestError as e:
                    self._fail(target, content.digest, str(e))
                    self._advance(images=key in self._untagged)
                    continue
            else:
                converted = None
            ref = tags[0] if tags else (converted.digest if converted else content.digest)
            if tags:
                self._tagged_by_put.add((target, tags[0]))
            deps = [(target, d) for d in referred_to(self._held[repo], manifest, tags)]
            self._submit_after(
                key, deps, functools.partial(self._put_manifest, target, ref, manifest, raw, converted)
            )

    def _submit_after(
        self, key: tuple[str, str], deps: list[tuple[str, str]], put: Callable[[], None]
    ) -> None:
        """Submit ``put`` (the PUT of ``key``) to run once every manifest in ``deps`` has landed.

        A registry may refuse a manifest that refers to one it does not have yet (Harbor 2.7 answers 404 to a
        cosign tag ``sha256-<digest>.sig`` pushed before its image): such a PUT waits for the job of what it
        refers to.  A job that does not exist yet is parked until it is submitted; jobs run in submission
        order, so a PUT waits only for jobs submitted before it, under any ``-j`` (no deadlock at -j 1)."""
        waits = []
        for dep in deps:
            job = self._manifest_jobs.get(dep)
            if job is None:
                self._parked.setdefault(dep, []).append((key, deps, put))
                return
            waits.append(job)

        def run() -> None:
            for w in waits:
                w.result()
            put()

        self._track(key, self._manifest_window.submit(run if waits else put))
        for parked in self._parked.pop(key, []):
            self._submit_after(*parked)

    def _track(self, key: tuple[str, str], job: Future[None]) -> None:
        self._manifest_jobs[key] = job
        job.add_done_callback(functools.partial(self._landed, key))

    def _landed(self, key: tuple[str, str], job: Future[None]) -> None:
        # in a pool thread: a job that finished without an exception is no longer needed as itself
        if not job.cancelled() and job.exception() is None:
            with self._lock:
                if self._manifest_jobs.get(key) is job:
                    self._manifest_jobs[key] = _LANDED

    def _release_parked(self) -> None:
        """What still waits for a manifest that will not be pushed (not in the bundle's repository, or
        skipped): submitted now, without it; the registry says whether it takes it."""
        while self._parked:
            _, waiting = self._parked.popitem()
            for key, _, put in waiting:
                if key not in self._manifest_jobs:
                    self._submit_after(key, [], put)

    def tag(self, repo: str, tag: str, digest: str) -> None:
        self._release_parked()
        target = self.names[repo]
        job = self._manifest_jobs.get((target, digest))
        if job is None:
            self.stats.failed_tags[(target, tag)] = (
                self._reason(target, digest) or "its manifest was not pushed"
            )
            self._advance(images=1)
            return
        job.result()
        if (target, tag) in self._tagged_by_put or self._bad(target, digest):
            self._advance(images=1)  # set by the manifest's own PUT, or failed with it
            return
        self._tag_jobs.submit(self._put_tag, target, tag, digest)

    def commit(self) -> SinkResult:
        self._release_parked()
        self._blob_jobs.drain()
        self._manifest_window.drain()
        self._tag_jobs.drain()
        self._pool.shutdown()
        s = self.stats
        return SinkResult(
            written_blobs=s.blobs_uploaded, present_blobs=s.blobs_present, written_bytes=s.bytes_uploaded
        )

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- state -------------------------------------------------------------------------------------
    def _fail(self, repo: str, digest: str, reason: str) -> None:
        with self._lock:
            self.stats.failed.setdefault((repo, digest), reason)
            refused = repo.split("/", 1)[0] in self.stats.refused
        # a project the account may not use is said once (PushResult.refused), not per blob and image
        (log.debug if refused else log.warning)("%s@%s: %s", repo, digest, reason)

    def _describe(self, e: Exception, repo: str) -> str:
        """The reason an image fails; a refusal of the whole project is recorded once, for the report."""
        if isinstance(e, RegistryError) and _refuses_project(e):
            project = repo.split("/", 1)[0]
            with self._lock:
                self.stats.refused.setdefault(project, e.message)
            return f"the registry refused this account access to project {project}"
        return _describe(e, repo)

    def _check_project(self, repo: str) -> None:
        """Once a project refused this account, its other images fail at once, without a request each."""
        project = repo.split("/", 1)[0]
        if project in self.stats.refused:
            raise RegistryError(f"refused access to project {project}", status=403)

    def _bad(self, repo: str, digest: str) -> bool:
        key = (repo, digest)
        return key in self.stats.failed or key in self.stats.skipped

    def _reason(self, repo: str, digest: str) -> str | None:
        key = (repo, digest)
        return self.stats.failed.get(key) or self.stats.skipped.get(key)

    def _advance(self, n: int = 0, images: int = 0) -> None:
        """Bytes of blobs and images (tags and untagged manifests) dealt with, pushed or not."""
        with self._lock:
            self._done_bytes += n
            self._images_done += images
            self._report()

    def _flowing(self, key: tuple[str, str], chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks`` as they go up, counted as in flight (a blob of GBs shows progress before it is done)."""
        for chunk in chunks:
            with self._lock:
                self._inflight[key] = self._inflight.get(key, 0) + len(chunk)
                self._report()
            yield chunk

    def _report(self) -> None:
        # under self._lock; done never goes past the total (an upload retried counts its bytes again)
        done = min(self._total_bytes, self._done_bytes + sum(self._inflight.values()))
        self._on_progress(
            Progress(
                "push",
                done,
                self._total_bytes,
                files=self._images_done,
                files_total=self._images_total,
                items="images",
            )
        )

    # -- blobs -------------------------------------------------------------------------------------
    def _blob(self, targets: list[str], body: _Body) -> None:
        d = body.content.digest
        try:
            for repo in targets:
                try:
                    self._blob_to(repo, body)
                except (RegistryError, OSError) as e:
                    self._fail(repo, d, self._describe(e, repo))
            if d in self._diff_wanted:
                diff = schema1.diff_id(body.chunks())
                with self._lock:
                    self._diff_ids[d] = diff
        finally:
            body.close()
        self._advance(body.content.size)

    def _blob_to(self, repo: str, body: _Body) -> None:
        d = body.content.digest
        self._check_project(repo)
        with self._lock:
            source = self._where.get(d)
        if source == repo:
            return
        # asked first wherever the repository may hold it (not in one the registry did not list at the
        # start, unless this run put it there): a rerun over a complete target mounts and uploads nothing
        if repo not in self._absent and self._has_blob(repo, d):
            self._record(d, repo, "present")
            return
        location = None
        if source is not None:
            r = self._mount(repo, d, source)
            if r.status_code == 201:
                self._record(d, repo, "mounted")
                return
            location = _location(r)  # mount refused: the 202 is an upload session to continue
        self._upload(repo, body, location)
        self._record(d, repo, "uploaded")

    def _mount(self, repo: str, digest: str, source: str) -> httpx.Response:
        """``POST …/blobs/uploads/?mount=&from=``: 201 mounted, 202 refused (an upload session to go on with)."""
        c = self.client
        return with_retries(
            lambda: c.request(
                "POST",
                c.url(f"/v2/{repo}/blobs/uploads/"),
                params={"mount": digest, "from": source},
                expect=(201, 202),
                what=f"mount {digest} into {repo}",
            ),
            attempts=self.retries,
            backoff=self.backoff,
            what="mount",
        )

    def _record(self, digest: str, repo: str, how: str) -> None:
        with self._lock:
            self._where.setdefault(digest, repo)
            if how == "present":
                self.stats.blobs_present += 1
            elif how == "mounted":
                self.stats.blobs_mounted += 1

    def _has_blob(self, repo: str, digest: str) -> bool:
        r = self.client.head(
            f"/v2/{repo}/blobs/{digest}",
            what=f"check {digest} in {repo}",
            attempts=self.retries,
            backoff=self.backoff,
        )
        return r.status_code == 200

    def _upload(self, repo: str, body: _Body, location: str | None) -> None:
        c = self.client
        size, d = body.content.size, body.content.digest
        first = [location]

        key = (repo, d)

        def attempt() -> None:
            with self._lock:
                self._inflight[key] = 0  # a retry sends the bytes again
            loc = first.pop() if first else None
            if loc is None:
                r = c.request(
                    "POST", c.url(f"/v2/{repo}/blobs/uploads/"), expect=(202,), what=f"start upload to {repo}"
                )
                loc = _location(r)
            if size <= self.chunk_size:
                r = c.request(
                    "PUT",
                    _with_digest(loc, d),
                    expect=(201,),
                    what=f"upload {d} to {repo}",
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    content=self._flowing(key, body.chunks()),
                )
            else:
                start = 0
                while start < size:
                    end = min(start + self.chunk_size, size)
                    r = c.request(
                        "PATCH",
                        loc,
                        expect=(202,),
                        what=f"upload {d} to {repo} (bytes {start}-{end - 1})",
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(end - start),
                            "Content-Range": f"{start}-{end - 1}",
                        },
                        content=self._flowing(key, body.chunks(start, end)),
                    )
                    loc = _location(r)  # always the newest Location
                    start = end
                # the closing PUT carries no data: Harbor records the size from the PATCHes
                r = c.request(
                    "PUT",
                    _with_digest(loc, d),
                    expect=(201,),
                    what=f"finish upload of {d} to {repo}",
                    headers={"Content-Length": "0"},
                    content=b"",
                )
            got = r.headers.get("Docker-Content-Digest")
            if got and got != d:
                raise RegistryError(f"upload of {d} to {repo}: the registry stored {got}")

        try:
            with_retries(attempt, attempts=self.retries, backoff=self.backoff, what=f"upload {d}")
        finally:
            with self._lock:
                self._inflight.pop(key, None)  # counted as done, with the blob, by put_blob
        with self._lock:
            self.stats.blobs_uploaded += 1
            self.stats.bytes_uploaded += size

    # -- manifests and tags --------------------------------------------------------------------------
    def _convert(self, digest: str, raw: bytes) -> schema1.Converted:
        with self._lock:
            done = self._converted.get(digest)
        if done is not None:
            return done
        assert self._catalog is not None
        wanted = schema1.layers(raw)
        sizes = {d: self._catalog.blobs[d].size for d in wanted}
        with self._lock:
            diffs = {d: self._diff_ids[d] for d in wanted if d in self._diff_ids}
        if len(diffs) != len(set(wanted)):
            raise ManifestError("schema 1 conversion: a layer could not be read from the bundle")
        converted = schema1.convert(raw, sizes, diffs)
        with self._lock:
            self._converted[digest] = converted
        log.info("schema 1 %s converted to schema 2 %s", digest, converted.digest)
        return converted

    def _put_manifest(
        self, repo: str, ref: str, manifest: Manifest, raw: bytes, converted: schema1.Converted | None
    ) -> None:
        try:
            self._check_project(repo)
            if converted is None:
                self._put(repo, ref, manifest.media_type, raw, manifest.digest)
            else:
                config = BlobContent(
                    converted.config_digest,
                    len(converted.config),
                    (),
                    verified=True,
                    stream=io.BytesIO(converted.config),
                )
                body = _Body(config)
                body.spool_if_stream()
                try:
                    self._blob_to(repo, body)
                finally:
                    body.close()
                self._put(repo, ref, MediaType.DOCKER_MANIFEST, converted.manifest, converted.digest)
                with self._lock:
                    self.stats.converted[(repo, manifest.digest)] = converted.digest
        except (RegistryError, OSError) as e:
            if manifest.left_out and isinstance(e, RegistryError) and e.status == 400:
                gone = sorted(
                    {c.platform or c.digest for c in manifest.children if c.digest in manifest.left_out}
                )
                self._fail(
                    repo,
                    manifest.digest,
                    f"{repo}: the registry refuses this index: it was exported with --platform and leaves out "
                    f"{', '.join(gone)}, and the registry takes an index only with every child it lists "
                    f"(the platforms kept were pushed by digest) — {e.message}",
                )
            else:
                self._fail(repo, manifest.digest, self._describe(e, repo))
        finally:
            if (repo, manifest.digest) in self._untagged:
                self._advance(images=1)

    def _put_tag(self, repo: str, tag: str, digest: str) -> None:
        assert self._catalog is not None
        m = self._catalog.manifests[digest]
        converted = self._converted.get(digest)
        try:
            if converted is not None:
                self._put(repo, tag, MediaType.DOCKER_MANIFEST, converted.manifest, converted.digest)
            else:
                # a manifest a base brought is fetched from the target only if the tag must be set
                self._put(repo, tag, m.media_type, self._raw.get(digest), digest)
        except RegistryError as e:
            with self._lock:
                self.stats.failed_tags[(repo, tag)] = self._describe(e, repo)
        finally:
            self._advance(images=1)

    def _put(self, repo: str, ref: str, media_type: str, raw: bytes | None, digest: str) -> None:
        c = self.client
        # what the target serves for this reference, asked first (not in a repository the registry did not
        # list at the start, which holds nothing): already at this digest, nothing is sent (a rerun over a
        # complete target PUTs nothing); a tag at another digest is not moved unless asked
        if repo not in self._absent:
            current = self._tag_digest(repo, ref)
            if current == digest:
                with self._lock:
                    self.stats.manifests_present += 1
                return
            if current is not None and ref != digest:
                # a tag still where the delta's base put it is that earlier wave's, not someone else's:
                # it moves with the source
                move = self.overwrite or self._was.get((repo, ref)) == current
                with self._lock:
                    if not move:
                        self.stats.tags_kept[(repo, ref)] = (current, digest)
                    else:
                        self.stats.tags_moved[(repo, ref)] = (current, digest)
                if not move:
                    log.info("%s:%s is at %s on the target, not moved to %s", repo, ref, current, digest)
                    # the image still lands, by digest: only the tag stays where it is
                    self._put(repo, digest, media_type, raw, digest)
                    return

        body = raw if raw is not None else self._fetch_manifest(repo, digest)

        def attempt() -> httpx.Response:
            return c.request(
                "PUT",
                c.url(f"/v2/{repo}/manifests/{ref}"),
                expect=(201,),
                what=f"put manifest {repo}:{ref}",
                headers={"Content-Type": media_type},
                content=body,
            )

        try:
            r = with_retries(
                attempt, attempts=self.retries, backoff=self.backoff, what=f"manifest {repo}:{ref}"
            )
        except RegistryError as e:
            if e.status != 412:
                raise
            current = self._tag_digest(repo, ref)
            if current == digest:
                return  # Harbor immutable tag, already at this digest: done
            raise RegistryError(
                f"{repo}:{ref} is an immutable tag on the target and points to {current or 'another digest'}, "
                f"not {digest} (412)",
                status=412,
                hint="Remove the immutability rule in the Harbor project, or push under another name with --map.",
            ) from None
        got = r.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"{repo}:{ref}: the registry answered digest {got}, the bundle has {digest}")
        with self._lock:
            self.stats.manifests_put += 1

    def _tag_digest(self, repo: str, ref: str) -> str | None:
        """The digest the target serves for ``ref`` (a tag or a digest), or None when it has none."""
        try:
            r = self.client.head(
                f"/v2/{repo}/manifests/{ref}",
                what=f"check {repo}:{ref}",
                attempts=self.retries,
                backoff=self.backoff,
                headers=MANIFEST_ACCEPT,
            )
        except RegistryError:
            return None  # cannot tell: the PUT that follows says what is wrong
        got = r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None
        return str(got) if got else None


_ACCESSORY_TAG = re.compile(r"^(sha256)-([0-9a-f]{64})\.(sig|att|sbom)$")


def referred_to(held: set[str], manifest: Manifest, tags: Sequence[str]) -> list[str]:
    """The manifests of a repository (``held``) that ``manifest`` refers to and that must land before it:
    its ``subject``, and the image a cosign-style tag names (``sha256-<hex>.sig``, ``.att``, ``.sbom``)."""
    out = []
    if manifest.subject is not None:
        out.append(manifest.subject)
    for tag in tags:
        m = _ACCESSORY_TAG.match(tag)
        if m:
            out.append(f"{m.group(1)}:{m.group(2)}")
    return [d for d in dict.fromkeys(out) if d != manifest.digest and d in held]


def _location(r: httpx.Response) -> str:
    loc = r.headers.get("Location")
    if not loc:
        raise RegistryError(
            f"{r.request.method} {r.request.url.path}: {r.status_code} without a Location header"
        )
    # relative Locations resolve against the request URL (RFC 7231 7.1.2)
    return str(urllib.parse.urljoin(str(r.request.url), loc))


def _with_digest(location: str, digest: str) -> str:
    return str(httpx.URL(location).copy_merge_params({"digest": digest}))


def _refuses_project(e: RegistryError) -> bool:
    """A refusal of the account in the repository's project (401 after authenticating, or a 403 that is
    not a quota): everything else in that project will be refused the same way."""
    if e.status == 401:
        return True
    if e.status != 403:
        return False
    text = " ".join([e.message, *(d.message for d in e.diagnostics)]).lower()
    return not any(word in text for word in ("quota", "exceed", "upper limit", "immutable"))


def _describe(e: Exception, repo: str) -> str:
    if isinstance(e, RegistryError):
        if e.status == 403:
            return f"{repo}: refused (403: quota exceeded or no push permission) — {e.message}"
        if e.status == 413:
            return f"{repo}: too large for the registry or a proxy in front of it (413) — {e.message}"
        return e.message
    return f"{repo}: {e}"


__all__ = ["SCHEMA1_REASON", "PushStats", "RegistrySink", "referred_to"]
