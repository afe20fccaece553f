"""A storage tree in an S3 bucket as an :class:`~ferry.shared.store.ImageSink`: what ``ferry restore`` writes
for a registry on Distribution's s3 driver (or Harbor's S3 backend).

The keys are the layout's paths (:class:`~ferry.shared.storage.paths.StorageLayout` with the bucket prefix as its
root).  The order is the one that leaves nothing pointing at what is not there, at any moment: a blob's
data, then its links (``_layers``, revision links), every blob and manifest before the first tag, tags last
(index entry, then ``current/link``).  What the bucket holds is listed once at ``begin`` (every key below the
tree, one listing per prefix folder, many at once): a blob whose data is there with its size is not
written again, a link that is there not rewritten, so a rerun over a complete target writes nothing.

Who verifies: the bytes are hashed as they are uploaded; an object whose bytes turn out wrong is deleted
before any link to it is written, and the run fails (:class:`~ferry.shared.errors.DigestMismatch`).  Big blobs go
up as multipart uploads (boto3 aborts a failed one).  S3 has no rename: an interrupted upload leaves no
object (a multipart upload is not an object until completed); an object without links is what the
registry's garbage collector removes anyway.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from ..digest import Digest
from ..errors import DigestMismatch
from ..jobs import JobWindow
from ..model import Catalog, Manifest
from ..store import BlobContent, SinkResult
from .paths import BlobData, LayerLink, ManifestRevisionLink, StorageLayout, TagCurrentLink, TagIndexEntryLink
from .s3fs import S3Config, _s3_error, list_tree, parse_s3_url, s3_client
from .writer import RestoreStats

log = logging.getLogger(__name__)

#: above this a blob goes up in parts of this size
MULTIPART = 64 << 20


class _Hashing:
    """A reader that hashes what passes through it (for an upload that must be checked)."""

    def __init__(self, f: BinaryIO, algorithm: str, size: int) -> None:
        self.f, self.h, self.n, self.size = f, hashlib.new(algorithm), 0, size

    def read(self, n: int = -1) -> bytes:
        want = self.size - self.n if n is None or n < 0 else min(n, self.size - self.n)
        data = self.f.read(want) if want > 0 else b""
        self.h.update(data)
        self.n += len(data)
        return data


class S3TreeSink:
    def __init__(self, url: str, config: S3Config, *, jobs: int = 16, overwrite: bool = False) -> None:
        self.bucket, prefix = parse_s3_url(url)
        self.url = url
        self.layout = StorageLayout(f"{prefix}/docker/registry/v2" if prefix else "docker/registry/v2")
        self.client = s3_client(config)
        self.overwrite = overwrite
        self.stats = RestoreStats()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="ferry-s3put")
        self._jobs = JobWindow(self._pool, 64)
        self._tags = JobWindow(self._pool, 64)
        self._sizes: dict[str, int] | None = None  # key -> size, everything below the tree
        self._catalog: Catalog | None = None
        self._was: dict[tuple[str, str], str | None] = {}
        self._tags_begun = False
        self._manifests_begun = False

    @property
    def description(self) -> str:
        return f"the bucket tree {self.url}"

    # -- what is there ---------------------------------------------------------------------------
    def existing(self) -> dict[str, int]:
        """Every key below the tree with its size, listed once (:func:`~ferry.shared.storage.s3fs.list_tree`)."""
        if self._sizes is None:
            self._sizes = list_tree(self.client, self.bucket, self.layout.v2, self._pool)
        return self._sizes

    def has_blob(self, digest: str, size: int) -> bool:
        """Whether the blob's data object is in the bucket with this size."""
        return self.existing().get(self.layout.path(BlobData(Digest.parse(digest)))) == size

    def _get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return None
            raise _s3_error(e, f"s3://{self.bucket}/{key}") from None

    def _put_small(self, key: str, data: bytes) -> bool:
        """A link object, unless it is there already with these bytes; True when written."""
        if key in self.existing() and self.existing()[key] == len(data) and not key.endswith("/current/link"):
            return False  # a link's bytes are its digest: the same key holds the same bytes
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except Exception as e:
            raise _s3_error(e, f"s3://{self.bucket}/{key}") from None
        with self._lock:
            self.stats.links_written += 1
            self.existing()[key] = len(data)
        return True

    # -- a delta ---------------------------------------------------------------------------------
    def check_carried(self, catalog: Catalog) -> list[tuple[str | None, str]]:
        return [(None, d) for d in catalog.carried_order() if not self.has_blob(d, catalog.size_of(d))]

    def put_carried(self, repos: Sequence[str], digest: str) -> None:
        assert self._catalog is not None
        self._jobs.submit(self._links, digest, digest in self._catalog.blobs, repos)

    # -- the sink protocol -----------------------------------------------------------------------
    def begin(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._was = {(c.repository, c.tag): c.old for c in catalog.changes if c.kind == "moved"}
        self.existing()

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        self._submit(repos, content, blob=True)

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None:
        # a manifest lands after its blobs and children: every blob before the first manifest, and
        # everything in flight before an index (its children come earlier in the source's order)
        if not self._manifests_begun or manifest.children:
            self._drain()
            self._manifests_begun = True
        self._submit(repos, content, blob=False)

    def _submit(self, repos: Sequence[str], content: BlobContent, *, blob: bool) -> None:
        if content.stream is not None:
            self._drain()  # a stream is read now, in order
            self._one(repos, content, blob)
            return
        self._jobs.submit(self._one, repos, content, blob)

    def _drain(self) -> None:
        self._jobs.drain()

    def _one(self, repos: Sequence[str], content: BlobContent, blob: bool) -> None:
        d = content.digest
        key = self.layout.path(BlobData(Digest.parse(d)))
        if self.has_blob(d, content.size):
            with self._lock:
                self.stats.blobs_present += 1
        else:
            self._upload(key, content)
        self._links(d, blob, repos)

    def _upload(self, key: str, content: BlobContent) -> None:
        import boto3.s3.transfer

        alg = content.digest.split(":", 1)[0]
        with content.open() as f:
            reader = _Hashing(f, alg, content.size)
            try:
                self.client.upload_fileobj(
                    reader,
                    self.bucket,
                    key,
                    Config=boto3.s3.transfer.TransferConfig(
                        multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART, use_threads=False
                    ),
                )
            except Exception as e:
                raise _s3_error(e, f"s3://{self.bucket}/{key}") from None
        actual = f"{alg}:{reader.h.hexdigest()}"
        if reader.n != content.size or actual != content.digest:
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise DigestMismatch(content.digest, actual, reader.n, where="the bundle")
        with self._lock:
            self.stats.blobs_written += 1
            self.stats.bytes_written += content.size
            self.existing()[key] = content.size

    def _links(self, digest: str, blob: bool, repos: Sequence[str]) -> None:
        d = Digest.parse(digest)
        for repo in repos:
            spec = LayerLink(repo, d) if blob else ManifestRevisionLink(repo, d)
            self._put_small(self.layout.path(spec), digest.encode())

    def tag(self, repo: str, tag: str, digest: str) -> None:
        if not self._tags_begun:
            self._drain()  # tags make images visible: only after every blob, manifest and link
            self._tags_begun = True
        self._tags.submit(self._tag, repo, tag, digest)

    def _tag(self, repo: str, tag: str, digest: str) -> None:
        current = self.layout.path(TagCurrentLink(repo, tag))
        old = None
        if current in self.existing():
            raw = self._get(current)
            old = raw.decode("ascii", "replace") if raw is not None else None
        if old == digest:
            with self._lock:
                self.stats.tags_unchanged += 1
            return
        if old is not None and not self.overwrite and self._was.get((repo, tag)) != old:
            with self._lock:
                self.stats.tags_kept.append((f"{repo}:{tag}", old, digest))
            return
        self._put_small(self.layout.path(TagIndexEntryLink(repo, tag, Digest.parse(digest))), digest.encode())
        self.client.put_object(Bucket=self.bucket, Key=current, Body=digest.encode())
        with self._lock:
            self.stats.tags_written += 1
            self.existing()[current] = len(digest)
            if old is not None:
                self.stats.tags_moved.append((f"{repo}:{tag}", old, digest))

    def commit(self) -> SinkResult:
        self._drain()
        self._tags.drain()
        self._pool.shutdown()
        s = self.stats
        return SinkResult(
            written_blobs=s.blobs_written,
            present_blobs=s.blobs_present,
            written_bytes=s.bytes_written,
            tags_moved=tuple(t[0] for t in s.tags_moved),
        )

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["S3TreeSink"]
