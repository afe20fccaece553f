"""Writing a Docker Distribution storage tree: the sink behind ``ferry restore`` (Harbor 1.x storage).

Layout: the same :class:`~shared.storage.paths.StorageLayout` the reader walks, rooted at the target.
For every image this writes blob data, a ``_layers`` link for each config and layer (without it a
repository is invisible to the catalog and to garbage collection), a ``_manifests/revisions`` link for every
manifest including index children, and for each tag ``current/link`` plus its ``index/`` entry.  Link files
hold exactly ``<alg>:<hex>``, no newline.

Guarantees:

* every file is written to a temp name in its own folder, then renamed: a reader (the registry, or a crash)
  never sees a half-written file;
* blob bytes are checked against their digest *as they landed*: the kernel copies (``copy_file_range``,
  which also reflinks where the filesystem can), then the temp file is hashed before the rename;
* merging: existing blobs with the right size are not rewritten; other repositories are not touched; a tag
  that exists is moved to the new digest and reported;
* ownership: everything created or rewritten, folders included, is chowned to ``owner``.

Tags are written last by the copy algorithm, after the source confirmed it was complete, so an interrupted
restore may leave blobs but never a tag pointing at something missing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..digest import CHUNK, Digest
from ..errors import DigestMismatch, DiskFull, OutputError
from ..model import Catalog, Manifest
from ..store import BlobContent, SinkResult
from .paths import BlobData, LayerLink, ManifestRevisionLink, StorageLayout, TagCurrentLink, TagIndexEntryLink

log = logging.getLogger(__name__)


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


class StorageTreeSink:
    """Writes images into the storage tree at ``root`` (the registry's ``rootdirectory``)."""

    def __init__(self, root: str, *, owner: Owner | None, jobs: int = 0) -> None:
        self.layout = StorageLayout.for_root(root)
        self.owner = owner
        self.stats = RestoreStats()
        self._lock = threading.Lock()
        self._made_dirs: set[str] = set()
        #: folders this run created: nothing can be in them that this run did not write
        self._fresh_dirs: set[str] = set()
        self._pool = ThreadPoolExecutor(
            max_workers=jobs or os.cpu_count() or 1, thread_name_prefix="ferry-restore"
        )
        self._pending: list[Future[None]] = []
        self._tmp: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------------
    def _dirs(self, path: str) -> None:
        """Create the parents of ``path`` (owned as asked), remembering which exist."""
        parent = os.path.dirname(path)
        if parent not in self._made_dirs:
            self._mkdirs(parent)
            with self._lock:
                self._made_dirs.add(parent)

    def _mkdirs(self, d: str) -> None:
        # mkdir first, walk up only when the parent is missing: on a large restore most folders are new,
        # and every avoided stat is a file-system call saved per link
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            return
        except FileNotFoundError:
            self._mkdirs(os.path.dirname(d))
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                return
        self._chown(d)
        with self._lock:
            self._fresh_dirs.add(d)

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
        return f"{os.path.dirname(path)}/.ferry-{os.path.basename(path)}-{threading.get_ident()}-{os.getpid()}.tmp"

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
        if os.path.dirname(path) not in self._fresh_dirs:
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

    def _link(self, spec: LayerLink | ManifestRevisionLink | TagIndexEntryLink, digest: str) -> None:
        self._write_small(self.layout.path(spec), digest.encode())

    # -- blobs -----------------------------------------------------------------------------------
    def _has_data(self, digest: str, size: int) -> bool:
        try:
            return os.stat(self.layout.path(BlobData(Digest.parse(digest)))).st_size == size
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _write_data(self, content: BlobContent) -> None:
        path = self.layout.path(BlobData(Digest.parse(content.digest)))
        with self._atomic(path) as fd:
            if content.extents and content.stream is None:
                actual, n = self._kernel_copy_then_hash(content, fd)
            else:
                actual, n = self._stream_copy(content, fd)
            if n != content.size or actual != content.digest:
                raise DigestMismatch(content.digest, actual, n, where="the bundle")
        with self._lock:
            self.stats.blobs_written += 1
            self.stats.bytes_written += content.size

    def _kernel_copy_then_hash(self, content: BlobContent, fd: int) -> tuple[str, int]:
        for ext in content.extents:
            src = os.open(ext.path, os.O_RDONLY)
            try:
                off, left = ext.offset, ext.size
                while left:
                    got = os.copy_file_range(src, fd, min(left, 1 << 30), off)
                    if got == 0:
                        break
                    off += got
                    left -= got
            finally:
                os.close(src)
        # hash what landed, not what we meant to write
        h = hashlib.new(content.digest.split(":", 1)[0])
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
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    # -- the sink protocol -----------------------------------------------------------------------
    def begin(self, catalog: Catalog) -> None:
        v2 = self.layout.v2
        self._dirs(f"{v2}/repositories/.")
        self._dirs(f"{v2}/blobs/.")
        # docker/registry/v2 are ours to hand to the registry user even when they existed already
        for d in (v2, os.path.dirname(v2), os.path.dirname(os.path.dirname(v2))):
            self._chown(d)

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        if self._has_data(content.digest, content.size):
            with self._lock:
                self.stats.blobs_present += 1
            self._links(repos, content.digest, blob=True)
            return
        if content.stream is not None:
            # a stream must be consumed now, in order; files can be copied by the pool
            self._write_data(content)
            self._links(repos, content.digest, blob=True)
            return

        def work() -> None:
            self._write_data(content)
            self._links(repos, content.digest, blob=True)

        self._pending.append(self._pool.submit(work))
        if len(self._pending) > 256:
            self._drain()

    def _links(self, repos: Sequence[str], digest: str, *, blob: bool) -> None:
        d = Digest.parse(digest)
        for repo in repos:
            spec = LayerLink(repo, d) if blob else ManifestRevisionLink(repo, d)
            self._link(spec, digest)

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None:
        # a manifest's blobs, and children, land before it: wait for the blob copies in flight
        self._drain()
        if self._has_data(content.digest, content.size):
            self.stats.blobs_present += 1
        else:
            self._write_data(content)
        self._links(repos, content.digest, blob=False)

    def tag(self, repo: str, tag: str, digest: str) -> None:
        self._drain()
        d = Digest.parse(digest)
        current = self.layout.path(TagCurrentLink(repo, tag))
        try:
            with open(current, "rb") as f:
                old = f.read(200).decode("ascii", "replace")
        except (FileNotFoundError, NotADirectoryError):
            old = None
        self._link(TagIndexEntryLink(repo, tag, d), digest)
        if self._write_small(current, digest.encode()):
            self.stats.tags_written += 1
            if old is not None:
                self.stats.tags_moved.append((f"{repo}:{tag}", old, digest))
                log.info("tag %s:%s moved from %s to %s", repo, tag, old, digest)
        else:
            self.stats.tags_unchanged += 1

    def commit(self) -> SinkResult:
        self._drain()
        self._pool.shutdown()
        s = self.stats
        return SinkResult(
            written_blobs=s.blobs_written,
            present_blobs=s.blobs_present,
            written_bytes=s.bytes_written,
            tags_moved=tuple(t[0] for t in s.tags_moved),
        )

    def abort(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = []
        for tmp in list(self._tmp):
            _unlink(tmp)


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


__all__ = ["Owner", "RestoreStats", "StorageTreeSink"]
