"""Writing a Docker Distribution storage tree: the sink behind ``ferry restore`` (Harbor 1.x storage).

Layout: the same :class:`~ferry.shared.storage.paths.StorageLayout` the reader walks, rooted at the target.
For every image this writes blob data, a ``_layers`` link for each config and layer (without it a
repository is invisible to the catalog and to garbage collection), a ``_manifests/revisions`` link for every
manifest including index children, and for each tag ``current/link`` plus its ``index/`` entry.  Link files
hold exactly ``<alg>:<hex>``, no newline.

Guarantees:

* every file is written to a temp name in its own folder, then renamed: a reader (the registry, or a crash)
  never sees a half-written file;
* blob bytes are checked against their digest as they are written: a small blob is read once, hashed and
  written from the same buffer; a large one is copied by the kernel (``copy_file_range``, which also
  reflinks where the file system can) and the temp file is hashed before the rename;
* merging: existing blobs with the right size are not rewritten; other repositories are not touched; a tag
  that exists at another digest is kept and reported (moved and reported with ``overwrite``);
* ownership: everything created or rewritten, folders included, is chowned to ``owner``.

Tags are written last by the copy algorithm, after the source confirmed it was complete, so an interrupted
restore may leave blobs but never a tag pointing at something missing.

Two processes: a registry tree is mostly tiny files and folders (the 5000-tag tree: 44k files, 61k folders),
where Python's cost per file, not the disk, sets the pace, and threads share one interpreter lock.  So the
``_layers`` and ``_manifests/revisions`` links are written by a forked child process while this one writes
blob data; each link is sent to the child only once its blob or manifest landed.  Tags wait until the child
has written every link, then each process writes the tags of every other repository.  With ``jobs=1``
everything happens in this process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..digest import CHUNK, Digest
from ..errors import DigestMismatch, DiskFull, OutputError
from ..jobs import JobWindow
from ..kcopy import KernelCopy
from ..model import Catalog, Manifest
from ..store import BlobContent, SinkResult
from ..worker import Channel, Worker
from .paths import (
    BlobData,
    BlobsDir,
    LayerLink,
    ManifestRevisionLink,
    StorageLayout,
    TagCurrentLink,
    TagIndexEntryLink,
    TagsDir,
)

log = logging.getLogger(__name__)

#: up to this size a blob is read and written by ferry (2 calls); above it the kernel copies it
SMALL_BLOB = 4 << 20


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


@dataclass
class RestoreStats:
    blobs_written: int = 0
    blobs_present: int = 0
    bytes_written: int = 0
    links_written: int = 0
    tags_written: int = 0
    tags_unchanged: int = 0
    tags_moved: list[tuple[str, str, str]] = field(default_factory=list)  # (repo:tag, old, new)
    #: tags the target had at another digest and that were not moved: (repo:tag, target's, bundle's)
    tags_kept: list[tuple[str, str, str]] = field(default_factory=list)


class StorageTreeSink:
    """Writes images into the storage tree at ``root`` (the registry's ``rootdirectory``)."""

    def __init__(
        self,
        root: str,
        *,
        owner: Owner | None,
        jobs: int = 0,
        existing: set[str] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.layout = StorageLayout.for_root(root)
        self.owner = owner
        #: move a tag that points elsewhere in the target (else it is kept, and reported)
        self.overwrite = overwrite
        self.stats = RestoreStats()
        self._lock = threading.Lock()
        #: folders known to exist, as this run creates or meets them
        self._known: set[str] = set()
        #: folders this run created: nothing can be in them that this run did not write
        self._fresh_dirs: set[str] = set()
        #: digests with a folder under blobs/ when the run began (:func:`existing_blobs`; listed at begin
        #: unless the caller already did)
        self._present: set[str] | None = existing
        self._jobs = jobs or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=self._jobs, thread_name_prefix="ferry-restore")
        self._links: _LinkProcess | None = None
        #: batches in flight, at most 8: bounded work (the feeder goes on when any one finishes)
        self._pending = JobWindow(self._pool, 8)
        self._batch: list[Callable[[], None]] = []
        self._batch_bytes = 0
        self._manifests_begun = self._tags_begun = False
        self._tmp: set[str] = set()
        self._pid = os.getpid()
        self._sources: dict[str, int] = {}  # bundle file -> descriptor, opened once
        self._kcopy = KernelCopy()
        self._catalog: Catalog | None = None
        self._was: dict[tuple[str, str], str | None] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _dirs(self, path: str) -> None:
        """Create the parents of ``path`` (owned as asked)."""
        parent = path.rpartition("/")[0]
        if parent not in self._known:
            self._mkdirs(parent)

    def _mkdirs(self, d: str) -> None:
        # walk up in memory to the nearest folder known to exist, then create downwards: on a fresh restore
        # that is exactly one mkdir per new folder, and no stat or failed mkdir at all
        chain = []
        while d and d not in self._known:
            chain.append(d)
            d = d.rpartition("/")[0]
        for d in reversed(chain):
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                self._known.add(d)
                continue
            except OSError as e:
                raise _os_error(e, d) from None
            self._chown(d)
            self._fresh_dirs.add(d)
            self._known.add(d)

    def _chown(self, path: str, fd: int | None = None) -> None:
        if self.owner is None:
            return
        try:
            if fd is not None:
                os.fchown(fd, self.owner.uid, self.owner.gid)
            else:
                os.chown(path, self.owner.uid, self.owner.gid, follow_symlinks=False)
        except PermissionError:
            raise OutputError(
                f"cannot change the owner of {path} to {self.owner.uid}:{self.owner.gid} (running as uid {os.geteuid()})",
                hint="Run restore as root, or pass --owner keep and fix ownership afterwards.",
            ) from None

    def _tmp_name(self, path: str) -> str:
        folder, _, name = path.rpartition("/")
        return f"{folder}/.ferry-{name}-{threading.get_ident()}-{self._pid}.tmp"

    @contextlib.contextmanager
    def _atomic(self, path: str) -> Iterator[int]:
        """A descriptor on a temp file beside ``path``; renamed over ``path`` (owned as asked) when the block
        ends normally, removed when it raises, so no reader ever sees a partial file."""
        self._dirs(path)
        tmp = self._tmp_name(path)
        with self._lock:
            self._tmp.add(tmp)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                yield fd
                self._chown(tmp, fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            _unlink(tmp)
            raise _os_error(e, path) from None
        except BaseException:
            _unlink(tmp)
            raise
        finally:
            with self._lock:
                self._tmp.discard(tmp)

    def _write_small(self, path: str, data: bytes) -> bool:
        """Write a link file atomically unless it already holds ``data``; True when written."""
        self._dirs(path)
        if path.rpartition("/")[0] not in self._fresh_dirs:
            try:
                with open(path, "rb") as f:
                    if f.read(len(data) + 1) == data:
                        return False
            except (FileNotFoundError, NotADirectoryError):
                pass
        with self._atomic(path) as fd:
            os.write(fd, data)
        with self._lock:
            self.stats.links_written += 1
        return True

    # -- blobs -----------------------------------------------------------------------------------
    def _write_data(self, content: BlobContent) -> None:
        path = self.layout.path(BlobData(Digest.parse(content.digest)))
        with self._atomic(path) as fd:
            if content.extents and content.stream is None:
                actual, n = self._copy_and_hash(content, fd)
            else:
                actual, n = self._stream_copy(content, fd)
            if n != content.size or actual != content.digest:
                raise DigestMismatch(content.digest, actual, n, where="the bundle")
        with self._lock:
            self.stats.blobs_written += 1
            self.stats.bytes_written += content.size

    def _source(self, path: str) -> int:
        fd = self._sources.get(path)
        if fd is None:
            with self._lock:
                fd = self._sources.get(path)
                if fd is None:
                    fd = self._sources[path] = os.open(path, os.O_RDONLY)
        return fd

    def _copy_and_hash(self, content: BlobContent, fd: int) -> tuple[str, int]:
        h = hashlib.new(content.digest.split(":", 1)[0])
        if content.size <= SMALL_BLOB:
            # one read, one write: the bytes hashed are the bytes handed to the kernel, and a short write
            # shows in the count
            n = 0
            for ext in content.extents:
                data = os.pread(self._source(ext.path), ext.size, ext.offset)
                h.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                n += len(data)
            return f"{h.name}:{h.hexdigest()}", n
        # large: the kernel copies (reflinks where the file system can; across file systems it steps
        # down to sendfile, see shared.kcopy), then what landed is hashed
        for ext in content.extents:
            self._kcopy.copy_all(self._source(ext.path), ext.offset, fd, ext.size)
        n = 0
        buf = memoryview(bytearray(CHUNK))
        while True:
            got = os.preadv(fd, [buf], n)
            if got <= 0:
                break
            h.update(buf[:got])
            n += got
        return f"{h.name}:{h.hexdigest()}", n

    def _stream_copy(self, content: BlobContent, fd: int) -> tuple[str, int]:
        h = hashlib.new(content.digest.split(":", 1)[0])
        n = 0
        f = content.open()
        while n < content.size and (chunk := f.read(min(CHUNK, content.size - n))):
            h.update(chunk)
            os.write(fd, chunk)
            n += len(chunk)
        return f"{h.name}:{h.hexdigest()}", n

    def _drain(self) -> None:
        self._flush()
        self._pending.drain()

    # -- the sink protocol -----------------------------------------------------------------------
    @property
    def description(self) -> str:
        return f"the storage tree {self.layout.v2}"

    def check_carried(self, catalog: Catalog) -> list[tuple[str | None, str]]:
        """What a delta relies on must be blob data in this tree already (its links are written here)."""
        if self._present is None:
            self._present = existing_blobs(self.layout, catalog)
        return carried_missing(self.layout, self._present, catalog)

    def put_carried(self, repos: Sequence[str], digest: str) -> None:
        assert self._catalog is not None
        blob = digest in self._catalog.blobs
        if self._links is not None:
            self._links.link(digest, blob, repos)
        else:
            self._enqueue(functools.partial(self._write_links, digest, blob, repos))

    def begin(self, catalog: Catalog) -> None:
        self._catalog = catalog
        #: (repository, tag) -> the digest a delta's base recorded for a tag that moved since
        self._was = {(c.repository, c.tag): c.old for c in catalog.changes if c.kind == "moved"}
        if self._present is None:
            self._present = existing_blobs(self.layout, catalog)
        v2 = self.layout.v2
        self._dirs(f"{v2}/repositories/.")
        self._dirs(f"{v2}/blobs/.")
        # docker/registry/v2 are ours to hand to the registry user even when they existed already
        for d in (v2, os.path.dirname(v2), os.path.dirname(os.path.dirname(v2))):
            self._chown(d)
        if self._jobs > 1 and hasattr(os, "fork"):
            # forked before the pool starts a thread: the child inherits no lock held mid-use
            self._links = _LinkProcess(self)

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        self._put(repos, content, blob=True)

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None:
        # a manifest lands after its blobs and children: every blob before the first manifest, and everything
        # in flight before an index (its children come earlier in the source's order)
        if not self._manifests_begun or manifest.children:
            self._drain()
            self._manifests_begun = True
        self._put(repos, content, blob=False)

    def _put(self, repos: Sequence[str], content: BlobContent, *, blob: bool) -> None:
        if content.stream is not None:
            # a stream must be consumed now, in order; files can be copied by the pool
            self._drain()
            self._write_one(repos, content, blob)
            return
        self._enqueue(functools.partial(self._write_one, repos, content, blob), content.size)

    def _enqueue(self, work: Callable[[], None], size: int = 0) -> None:
        # to the pool in batches: one future per blob costs more than a small blob's copy.  A batch closes at
        # 32 items or 8 MiB, so large blobs spread over the threads (32 layers of 75 MB in one batch ran on
        # one core while the others idled)
        self._batch.append(work)
        self._batch_bytes += size
        if len(self._batch) >= 32 or self._batch_bytes >= 8 << 20:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self._batch_bytes = 0
        if batch:
            self._pending.submit(_run_all, batch)

    def _write_one(self, repos: Sequence[str], content: BlobContent, blob: bool) -> None:
        assert self._present is not None, "begin() lists the existing blobs"
        if blob_present(self.layout, self._present, content.digest, content.size):
            with self._lock:
                self.stats.blobs_present += 1
        else:
            self._write_data(content)
        if self._links is not None:
            self._links.link(content.digest, blob, repos)
        else:
            self._write_links(content.digest, blob, repos)

    def _write_links(self, digest: str, blob: bool, repos: Sequence[str]) -> None:
        d = Digest.parse(digest)
        for repo in repos:
            spec = LayerLink(repo, d) if blob else ManifestRevisionLink(repo, d)
            self._write_small(self.layout.path(spec), digest.encode())

    def tag(self, repo: str, tag: str, digest: str) -> None:
        if not self._tags_begun:
            # tags make images visible: only after every blob, manifest and link landed
            self._drain()
            if self._links is not None:
                self._links.barrier()
            self._tags_begun = True
        if self._links is not None and self._links.takes(repo):
            self._links.tag(repo, tag, digest)
        else:
            self._enqueue(functools.partial(self._write_tag, repo, tag, digest))

    def _write_tag(self, repo: str, tag: str, digest: str) -> None:
        d = Digest.parse(digest)
        current = self.layout.path(TagCurrentLink(repo, tag))
        # in a tags folder this run created, no tag existed before
        old = (
            None
            if self.layout.path(TagsDir(repo)) in self._fresh_dirs
            else tag_target(self.layout, repo, tag)
        )
        # a tag still where the delta's base put it is that earlier wave's: it moves with the source
        if old is not None and old != digest and not self.overwrite and self._was.get((repo, tag)) != old:
            with self._lock:
                self.stats.tags_kept.append((f"{repo}:{tag}", old, digest))
            log.info("tag %s:%s is at %s in the target, not moved to %s", repo, tag, old, digest)
            return
        self._write_small(self.layout.path(TagIndexEntryLink(repo, tag, d)), digest.encode())
        written = self._write_small(current, digest.encode())
        with self._lock:
            if not written:
                self.stats.tags_unchanged += 1
                return
            self.stats.tags_written += 1
            if old is not None:
                self.stats.tags_moved.append((f"{repo}:{tag}", old, digest))
                log.info("tag %s:%s moved from %s to %s", repo, tag, old, digest)

    def _finish_links(self) -> None:
        if self._links is not None:
            links, self._links = self._links, None
            links.finish(self.stats)

    def commit(self) -> SinkResult:
        self._drain()
        self._finish_links()
        self._pool.shutdown()
        self._close_sources()
        s = self.stats
        return SinkResult(
            written_blobs=s.blobs_written,
            present_blobs=s.blobs_present,
            written_bytes=s.bytes_written,
            tags_moved=tuple(t[0] for t in s.tags_moved),
        )

    def abort(self) -> None:
        self._batch = []
        self._pending.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for tmp in list(self._tmp):
            _unlink(tmp)
        self._close_sources()
        if self._links is not None:
            self._links.abort()
            self._links = None

    def _close_sources(self) -> None:
        for fd in self._sources.values():
            os.close(fd)
        self._sources.clear()


class _LinkProcess:
    """A forked child (a :class:`~ferry.shared.worker.Worker`) writing links the parent sends it, in batches, in
    the order sent.

    Contract: :meth:`link` only after the blob's or manifest's data landed; :meth:`barrier` returns once
    every link sent so far is written (tags may follow); :meth:`tag` sends a tag for the child to write
    (after the barrier); :meth:`finish` merges the child's counts into ``stats``; any of them raises the
    child's error (a :class:`FerryError` keeps its code: ``disk-full`` stays ``disk-full``).
    :meth:`abort` stops the child, which removes its temp files first (so does a child whose parent was
    killed: it gets SIGTERM from the kernel).  The child uses the parent's sink as it was at the fork
    (layout, owner, folders known so far), with its own lock and its own record of what it created."""

    BATCH = 512

    def __init__(self, sink: StorageTreeSink) -> None:
        self._worker = Worker(_link_child, sink, name="ferry-links")
        self._lock = threading.Lock()
        self._batch: list[tuple[object, ...]] = []
        self._tags: dict[str, bool] = {}  # repository -> whether the child writes its tags

    def link(self, digest: str, blob: bool, repos: Sequence[str]) -> None:
        self._put(("link", digest, blob, tuple(repos)))

    def takes(self, repo: str) -> bool:
        """Whether the child writes this repository's tags: every other repository, so both processes
        write tags at the same time."""
        if repo not in self._tags:
            self._tags[repo] = len(self._tags) % 2 == 1
        return self._tags[repo]

    def tag(self, repo: str, tag: str, digest: str) -> None:
        self._put(("tag", repo, tag, digest))

    def _put(self, item: tuple[object, ...]) -> None:
        with self._lock:
            self._batch.append(item)
            if len(self._batch) >= self.BATCH:
                self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._worker.send(batch)

    def barrier(self) -> None:
        with self._lock:
            self._send()
            self._worker.send("barrier")
        try:
            self._worker.recv()
        except BaseException:
            self._worker.abort()
            raise

    def finish(self, stats: RestoreStats) -> None:
        with self._lock:
            self._send()
            self._worker.send("end")
        try:
            child = self._worker.result()
        except BaseException:
            self._worker.abort()
            raise
        assert isinstance(child, RestoreStats)
        stats.links_written += child.links_written
        stats.tags_written += child.tags_written
        stats.tags_unchanged += child.tags_unchanged
        stats.tags_moved += child.tags_moved
        stats.tags_kept += child.tags_kept

    def abort(self) -> None:
        self._worker.abort()


def _link_child(channel: Channel, sink: StorageTreeSink) -> RestoreStats:
    # the child's own copies: a lock no parent thread can hold, and its own temp files to clean up
    sink._lock = threading.Lock()
    sink._tmp = set()
    sink.stats = RestoreStats()
    try:
        while True:
            message = channel.recv()
            if message == "barrier":
                channel.send("ok")
            elif message == "end":
                return sink.stats
            else:
                for item in message:
                    if item[0] == "link":
                        sink._write_links(*item[1:])
                    else:
                        sink._write_tag(*item[1:])
    finally:
        for tmp in list(sink._tmp):
            _unlink(tmp)


#: beside ``docker/`` in the registry's root: held (flock) while a restore writes, and left non-empty by
#: a run that did not finish, so the next one knows to sweep its temp files
CLAIM_NAME = ".ferry-restore"


class RootClaim:
    """A restore's claim on a storage root: one writer at a time, and a clean start after a killed run.

    :meth:`acquire` takes an exclusive ``flock`` on ``ROOT/.ferry-restore`` (the kernel drops it when the
    process dies, however it dies); a second restore into the same root is refused while the first runs.
    The file holds the writer's pid until :meth:`release`: found non-empty, the last run did not finish
    (SIGKILL, a crash, power loss), and its temp files (``.ferry-*.tmp``, up to a blob's size each, beside
    the files they were to become) are swept before anything is written."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.path = f"{self.root}/{CLAIM_NAME}"
        self._fd: int | None = None
        #: temp files a previous, unfinished run left, removed by :meth:`acquire`
        self.swept = 0

    def acquire(self) -> RootClaim:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _os_error(e, self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"{self.root}: another ferry restore (pid {holder}) is writing into this root",
                hint="Wait for it to finish; two restores into one root at once could interleave their tags.",
            ) from None
        self._fd = fd
        if os.pread(fd, 32, 0).strip():
            self.swept = sweep_temp_files(StorageLayout.for_root(self.root).v2)
            if self.swept:
                log.warning("removed %d temp file(s) an unfinished restore left in %s", self.swept, self.root)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return self

    def release(self) -> None:
        """The run ended (finished or cleaned up after an error): the next one need not sweep."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def sweep_temp_files(v2: str) -> int:
    """Remove every ``.ferry-*.tmp`` file below ``v2`` (iteratively: trees are deep); returns how many."""
    removed = 0
    stack = [v2]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.name.startswith(".ferry-") and e.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                    removed += 1
    return removed


def existing_blobs(layout: StorageLayout, catalog: Catalog) -> set[str]:
    """Digests that have a folder under ``blobs/``: one listing per prefix folder instead of a stat per blob
    (on a fresh target, one failed call in all)."""
    out: set[str] = set()
    for alg in {d.split(":", 1)[0] for d in (*catalog.blobs, *catalog.manifests)}:
        try:
            prefixes = list(os.scandir(layout.path(BlobsDir(alg))))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for p in prefixes:
            if p.is_dir(follow_symlinks=False):
                with os.scandir(p.path) as blobs:
                    out.update(f"{alg}:{b.name}" for b in blobs)
    return out


def blob_present(layout: StorageLayout, existing: set[str], digest: str, size: int) -> bool:
    """Whether the blob's data is in place with the right size (``existing`` from :func:`existing_blobs`)."""
    if digest not in existing:
        return False
    try:
        return os.stat(layout.path(BlobData(Digest.parse(digest)))).st_size == size
    except (FileNotFoundError, NotADirectoryError):
        return False


def carried_missing(
    layout: StorageLayout, existing: set[str], catalog: Catalog
) -> list[tuple[str | None, str]]:
    """(None, digest) for each digest a delta's bases carried whose data is not in the tree."""
    return [
        (None, d)
        for d in catalog.carried_order()
        if not blob_present(layout, existing, d, catalog.size_of(d))
    ]


def tag_target(layout: StorageLayout, repo: str, tag: str) -> str | None:
    """What a tag's ``current/link`` holds now, or None when the tag does not exist."""
    try:
        with open(layout.path(TagCurrentLink(repo, tag)), "rb") as f:
            return f.read(200).decode("ascii", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return None


def _run_all(batch: list[Callable[[], None]]) -> None:
    for work in batch:
        work()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _os_error(e: OSError, path: str) -> OutputError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"{path}: no space left on device",
            hint="Free space in the registry storage and run restore again; what landed is kept and skipped next time.",
        )
    return OutputError(f"{path}: {e.strerror}")


__all__ = [
    "CLAIM_NAME",
    "SMALL_BLOB",
    "Owner",
    "RestoreStats",
    "RootClaim",
    "StorageTreeSink",
    "blob_present",
    "existing_blobs",
    "sweep_temp_files",
    "tag_target",
]
