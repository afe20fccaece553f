"""Sources and sinks of images, and the contract between them.

Every medium ferry moves images between is one of these: the storage tree (source on export, sink on
restore), the bundle (sink on export, source on import), a registry (sink on push).  The copy algorithm,
:func:`ferry.shared.transfer.copy`, is written once against these Protocols.

Contract
--------
Call order on a sink: ``begin`` once, then ``put_blob``/``put_manifest`` for every digest in the order the
source yields them, then ``tag`` for every tag, then ``commit`` once.  Any exception from ``begin`` on is
followed by ``abort`` (so ``abort`` must work after a ``begin`` that failed halfway), which must leave no
partial data under a final name.

Order guaranteed by every source: a blob comes before the manifests that need it, and an index's children
come before the index.  So a sink may write a manifest as soon as it gets it; tags, which make images visible,
come last, after the source has confirmed that everything arrived intact.

Who verifies: a :class:`BlobContent` with ``verified=True`` was hashed against its digest by the source
(the storage-tree scan does this before anything is written, or while the walk and the copy go on,
raising at the end of ``contents()`` so the sink aborts); otherwise the sink must hash what it writes and
discard partial data on a mismatch.  ``xxh3`` is the bundle-internal checksum, when the source knows it.

Optional abilities, each its own small Protocol: :class:`DeltaSink` (takes a delta) and
:class:`RepositoryBlind` (is given no ``repos``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol, cast, runtime_checkable

from .model import Catalog, Manifest
from .storage.fs import Extent, ExtentsReader


@dataclass(frozen=True)
class BlobContent:
    """The bytes of one blob or manifest, and where they can be copied from without reading them."""

    digest: str
    size: int
    #: pieces of files holding the bytes in order (a blob may span two bundle volumes); empty for streams
    extents: tuple[Extent, ...]
    verified: bool
    xxh3: str | None = None
    stream: BinaryIO | None = None
    #: the xxh3 when the source is still hashing (verified content only): callable once the source's
    #: ``contents()`` has ended, which raises instead if the bytes turned out wrong
    xxh3_later: Callable[[], str] | None = None
    #: the bytes themselves, when the source already read them (small content it verified): a sink can
    #: write them without opening the file again
    data: bytes | None = None

    def open(self) -> BinaryIO:
        """A reader of exactly ``size`` bytes; for stream-only content this can be called once."""
        if self.stream is not None:
            return self.stream
        if self.data is not None:
            return io.BytesIO(self.data)
        return cast(BinaryIO, ExtentsReader(self.extents))


class ImageSource(Protocol):
    catalog: Catalog

    def contents(self) -> Iterator[BlobContent]:
        """Every blob and manifest of the catalog once, in the order above.

        Raises a :class:`~ferry.shared.errors.FerryError` at the end when the source turns out to be incomplete or
        damaged (a bundle whose trailer is missing or wrong), so the copy never reaches the tags."""
        ...


@dataclass(frozen=True)
class SinkResult:
    written_blobs: int = 0
    present_blobs: int = 0
    written_bytes: int = 0
    tags_moved: tuple[str, ...] = ()


class ImageSink(Protocol):
    def begin(self, catalog: Catalog) -> None: ...

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        """Make the blob available to each repository in ``repos``; read ``content`` at most once."""
        ...

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None: ...

    def tag(self, repo: str, tag: str, digest: str) -> None: ...

    def commit(self) -> SinkResult: ...

    def abort(self) -> None: ...


@runtime_checkable
class DeltaSink(Protocol):
    """The optional ability to take a delta: a catalog whose ``carried`` content earlier bundles brought
    to the target and the source does not hold.

    Call order: ``check_carried`` before ``begin``, writing nothing; it returns every (where, digest) the
    target lacks (``where``: a repository, or None for the storage's blob data), and the copy stops with
    :class:`~ferry.shared.errors.BaseMissing` if there is any.  After ``begin``, ``put_carried`` once per carried
    digest, blobs first, then manifests children first, all before the first ``put_blob``: it makes the
    digest, which the target holds somewhere, available in ``repos`` (a link, a mount, a copy of a
    manifest).  Nothing carried is verified here: it was, when its base was imported."""

    def check_carried(self, catalog: Catalog) -> list[tuple[str | None, str]]: ...

    def put_carried(self, repos: Sequence[str], digest: str) -> None: ...


@runtime_checkable
class RepositoryBlind(Protocol):
    """A sink that has no use for ``repos`` (a bundle: its index already says which repository holds
    what), when ``repository_blind`` is True.  The copy then passes ``()`` and does not work out who
    holds each digest: a list per digest, 12 MiB of the peak of an export of 100k tags."""

    repository_blind: Literal[True]


__all__ = ["BlobContent", "DeltaSink", "ImageSink", "ImageSource", "RepositoryBlind", "SinkResult"]
