"""The bundle as a sink: writes the index first, every blob once, the trailer last."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, cast

import xxhash

from ..digest import CHUNK, xxh3_of
from ..errors import BundleFormatError, DigestMismatch
from ..model import Catalog, Manifest
from ..store import BlobContent, SinkResult
from .format import (
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT,
    OCI_LAYOUT_MEMBER,
    TRAILER_MEMBER,
    BundleInfo,
    KitFile,
    blob_member,
    encode_index,
    encode_trailer,
    oci_index,
    validate_catalog,
)
from .resume import ResumePoint
from .tario import RECORD, BundleOutput, padding, tar_header


class BundleSink:
    """Writes a bundle to a :class:`BundleOutput`.

    The index must come first, so ``begin`` needs the complete catalog.  Content marked ``verified`` with a
    known (or soon known: ``xxh3_later``) ``xxh3`` is copied by the kernel without being read here; anything else is hashed while copied and
    a mismatch aborts the bundle.
    """

    #: the index names the repositories (:class:`~ferry.shared.store.RepositoryBlind`)
    repository_blind: Literal[True] = True

    def __init__(
        self,
        output: BundleOutput,
        info: BundleInfo,
        *,
        mtime: int,
        resume: ResumePoint | None = None,
        kit_dir: Path | None = None,
    ) -> None:
        self.out = output
        self.info = info
        #: where the files of ``info.kit`` are, written after the last blob
        self.kit_dir = kit_dir
        self.mtime = mtime
        #: members an interrupted export wrote and that checked out: taken as they are, not written again
        self._kept = resume.members if resume is not None else ()
        self._kept_headers = resume.headers if resume is not None else ()
        self._n = 0  # members handled so far
        #: (name, size, xxh3 or how to get it once the source is done)
        self._members: list[tuple[str, int, str | Callable[[], str]]] = []
        self._index_xxh3 = ""
        self.index_data = b""
        self._written: set[str] = set()
        self._bytes = 0
        #: the previous member's padding, sent with the next header in one write
        self._tail = b""
        #: every header before the trailer, hashed as written: lets a reader check them all in one pass
        self._headers = xxhash.xxh3_128()
        #: headers, padding and small in-memory members, written in one call per MiB
        self._buf = bytearray()

    def _emit(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self.out.write(bytes(self._buf))
            self._buf.clear()

    def _header(self, name: str, size: int) -> bytes:
        header = tar_header(name, size, self.mtime)
        if name != TRAILER_MEMBER:
            self._headers.update(header)
        return header

    def _take_kept(self, name: str, size: int) -> str | None:
        """The kept member's xxh3 when member number ``_n`` is one the resumed partial holds already."""
        n = self._n
        self._n += 1
        if n >= len(self._kept) or name == TRAILER_MEMBER:
            return None
        kept_name, kept_size, x = self._kept[n]
        assert (kept_name, kept_size) == (name, size), "a resumed export follows the partial's own plan"
        self._headers.update(self._kept_headers[n])
        self._members.append((name, size, x))
        return x

    def _bytes_member(self, name: str, data: bytes) -> str:
        kept = self._take_kept(name, len(data))
        if kept is not None:
            return kept
        x = xxh3_of(data)
        if len(data) < 1 << 20:
            self._emit(self._tail + self._header(name, len(data)) + data)
        else:  # a large index, index.json or trailer (tens of MB at 100k tags) goes out as it is, uncopied
            self._emit(self._tail + self._header(name, len(data)))
            self._flush()
            self.out.write(data)
        self._tail = padding(len(data))
        if name != TRAILER_MEMBER:
            self._members.append((name, len(data), x))
        return x

    def begin(self, catalog: Catalog) -> None:
        # the readers' own check, before a byte is written: a bundle ferry writes is always one its readers
        # accept (a name or tag they would refuse must have been left out by the source, with its reason)
        order = catalog.member_order()
        try:
            validate_catalog(catalog, order)
        except BundleFormatError as e:
            raise BundleFormatError(
                f"refusing to write a bundle its readers would refuse: {e.reason}",
                hint="This is a bug in ferry's export; please report it with the message above.",
            ) from None
        #: the index member's bytes: a receipt of this bundle
        self.index_data = encode_index(catalog, self.info, order)
        self._index_xxh3 = self._bytes_member(INDEX_MEMBER, self.index_data)
        self._bytes_member(OCI_LAYOUT_MEMBER, OCI_LAYOUT)
        self._bytes_member(OCI_INDEX_MEMBER, oci_index(catalog))

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        if content.digest in self._written:
            return
        name = blob_member(content.digest)
        if self._take_kept(name, content.size) is not None:
            self._written.add(content.digest)
            self._bytes += content.size
            return
        self._emit(self._tail + self._header(name, content.size))
        x: str | Callable[[], str]
        known = content.xxh3 if content.xxh3 is not None else content.xxh3_later
        if content.verified and known is not None and content.data is not None:
            self._emit(content.data)  # read and checked by the source already
            x = known
        elif content.verified and known is not None and content.extents:
            self._flush()
            for ext in content.extents:
                self.out.copy_extent(ext)
            x = known
        else:
            self._flush()
            with content.open() as f:
                x = self._copy_hashing(content.digest, content.size, f, "bundle input")
        self._tail = padding(content.size)
        self._members.append((name, content.size, x))
        self._written.add(content.digest)
        self._bytes += content.size

    def _copy_hashing(self, digest: str, size: int, f: BinaryIO, where: str) -> str:
        """Copy ``size`` bytes of ``f`` into the bundle, checking them against ``digest``; their xxh3."""
        alg = digest.split(":", 1)[0]
        h, x, n = hashlib.new(alg), xxhash.xxh3_128(), 0
        while n < size and (chunk := f.read(min(CHUNK, size - n))):
            h.update(chunk)
            x.update(chunk)
            self.out.write(chunk)
            n += len(chunk)
        actual = f"{alg}:{h.hexdigest()}"
        if n != size or actual != digest:
            raise DigestMismatch(digest, actual, n, where=where)
        return str(x.hexdigest())

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None:
        self.put_blob(repos, content)

    def tag(self, repo: str, tag: str, digest: str) -> None:
        """Tags are part of the index, written by :meth:`begin`."""

    description = "the bundle"

    def check_carried(self, catalog: Catalog) -> list[tuple[str | None, str]]:
        """A delta bundle records what its bases carried in its index: nothing to check."""
        return []

    def put_carried(self, repos: Sequence[str], digest: str) -> None:
        """Recorded in the index by :meth:`begin`."""

    def _kit_member(self, k: KitFile) -> None:
        assert self.kit_dir is not None, "a bundle with a kit is given the kit's folder"
        self._take_kept(k.member, k.size)  # a resume never keeps kit members: they come after the plan
        self._emit(self._tail + self._header(k.member, k.size))
        self._flush()
        with open(self.kit_dir / k.name, "rb") as f:
            x = self._copy_hashing(f"sha256:{k.sha256}", k.size, f, f"kit file {k.name}")
        self._tail = padding(k.size)
        self._members.append((k.member, k.size, x))

    def commit(self) -> SinkResult:
        for k in self.info.kit:
            self._kit_member(k)
        # resolved in place: a second list of every member doubled it at the end of a 100k-tag export
        for i, (n, size, x) in enumerate(self._members):
            if not isinstance(x, str):
                self._members[i] = (n, size, x())
        members = cast("list[tuple[str, int, str]]", self._members)
        self._bytes_member(
            TRAILER_MEMBER, encode_trailer(self._index_xxh3, members, self._headers.hexdigest())
        )
        self._flush()
        end = len(self._tail) + 2 * 512
        self.out.write(self._tail + b"\0" * (2 * 512 + (-(self.out.pos + end) % RECORD)))
        self.out.commit()
        return SinkResult(written_blobs=len(self._written), written_bytes=self._bytes)

    def abort(self) -> None:
        self.out.abort()


__all__ = ["BundleSink"]
