"""A bundle as an :class:`~ferry.shared.store.ImageSource`, read once, in order, without unpacking.

From a file or volume set, every check that needs no content is made before the first blob is handed out:
the trailer is there, the index matches its checksum, and every member the index promises sits where the
index says.  Blob content is given as extents, so sinks can copy it in the kernel; they verify each blob's
digest as it lands.

From a stream (stdin), the bundle is read strictly sequentially; each member's xxh3 is computed as it
passes and compared with the trailer at the end.  A stream that ends without a valid trailer raises before
:func:`ferry.shared.transfer.copy` reaches the tags, so nothing is advertised that did not fully arrive.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Union, cast

import xxhash

from ..digest import CHUNK, xxh3_of
from ..errors import BundleDamaged, BundleFormatError
from ..model import Catalog
from ..store import BlobContent
from .format import (
    INDEX_MAX,
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT_MEMBER,
    TRAILER_MEMBER,
    BundleInfo,
    blob_member,
    decode_index,
    decode_trailer,
    member_digest,
)
from .reader import Bundle, Member, Problem, check_members


def _damaged(what: str) -> BundleDamaged:
    return BundleDamaged(what, ({"member": None, "problem": what, "volumes": []},))


def _refused(where: str, problems: list[Problem], bundle: Bundle | None = None) -> BundleDamaged:
    """The bundle is refused before anything is written: every problem, the first in the message."""
    first = problems[0]
    what = f"{first.member}: {first.what}" if first.member else first.what
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    details: list[dict[str, object]] = []
    for p in problems:
        vols = (
            list(p.volumes)
            if p.volumes is not None
            else bundle.volume_names(p.offset, p.size)
            if bundle
            else []
        )
        details.append({"member": p.member, "problem": p.what, "volumes": vols})
    return BundleDamaged(
        f"{where}: refusing the bundle: {what}{more}; nothing was written",
        tuple(details),
        hint="Run `ferry verify` on it to see everything that is wrong, then copy it again from the origin.",
    )


class FileBundleSource:
    def __init__(self, path: Path) -> None:
        self.bundle = Bundle.open(path)
        b = self.bundle
        try:
            b.scan()
            if b.scan_error is not None:
                raise b.scan_error
            if b.trailer is None:
                raise _damaged(
                    f"{path}: the trailer is missing: the bundle is truncated or still being copied"
                )
            # the one structural check every reader makes (verify makes the same, and names everything)
            problems = b.problems()
            if problems:
                raise _refused(str(path), problems, b)
            index_bytes = b.data.read_exact(b.index_member.offset, b.index_member.size)
            if xxh3_of(index_bytes) != b.trailer.index_xxh3:
                raise _damaged(f"{path}: the index does not match the trailer's checksum")
            by_name = {m.name: m for m in b.members}
            self._members = [by_name[blob_member(d)] for d in b.order]
            self._xxh3 = {n: x for n, _, x in b.trailer.members}
        except BaseException:
            b.close()
            raise
        self.catalog: Catalog = b.catalog
        self.info: BundleInfo = b.info

    def contents(self) -> Iterator[BlobContent]:
        for m in self._members:
            d = member_digest(m.name)
            assert d is not None
            extents = tuple(ext for _, ext in self.bundle.data.extents(m.offset, m.size))
            yield BlobContent(d, m.size, extents, verified=False, xxh3=self._xxh3.get(m.name))

    def close(self) -> None:
        self.bundle.close()


def _read_all(f: BinaryIO | Any, size: int) -> bytes:
    """A whole member from the stream; a stream that ends inside it is a truncated bundle."""
    try:
        data = f.read()
    except (tarfile.TarError, OSError) as e:
        raise _damaged(
            f"stdin ended inside a member ({e}): the bundle is truncated; no tag was written"
        ) from None
    if len(data) != size:
        raise _damaged("stdin ended inside a member: the bundle is truncated; no tag was written")
    return bytes(data)


class _Tee:
    """Reads a tar member, computing its xxh3 on the way; ``finish`` reads what the consumer left."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size, self.read_n = f, size, 0
        self.x = xxhash.xxh3_128()

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.f.read(n if n >= 0 else self.size - self.read_n)
        except (tarfile.TarError, OSError) as e:
            # raised in whoever reads the stream (a sink), not in the source's loop: name it here
            raise _damaged(
                f"stdin ended inside {getattr(self, 'name', 'a member')} ({e}): the bundle is truncated; "
                "no tag was written"
            ) from None
        self.x.update(data)
        self.read_n += len(data)
        return data

    def finish(self) -> str:
        while self.read_n < self.size and self.read(1 << 20):
            pass
        if self.read_n != self.size:
            raise _damaged(f"member ends after {self.read_n} of {self.size} bytes: the stream is truncated")
        return str(self.x.hexdigest())

    def __enter__(self) -> _Tee:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class StreamBundleSource:
    def __init__(self, stream: BinaryIO) -> None:
        try:
            self._tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 (closed by close())
            first = self._tf.next()
        except tarfile.TarError as e:
            raise BundleFormatError(f"stdin: not a ferry bundle ({e})") from None
        if first is None or first.name != INDEX_MEMBER or not first.isreg() or first.size > INDEX_MAX:
            raise BundleFormatError("stdin: not a ferry bundle (the first member is not the ferry index)")
        f = self._tf.extractfile(first)
        assert f is not None
        raw = _read_all(f, first.size)
        self._index_xxh3 = xxh3_of(raw)
        self._index_at, self._index_size = first.offset_data, first.size
        self.catalog, self.info, self._order = decode_index(raw)

    def contents(self) -> Iterator[BlobContent]:
        # what arrived, for the one member check at the end (the same as for a file); refusals of what
        # cannot be written at all (a foreign name, a member out of order) come at once
        arrived = [Member(INDEX_MEMBER, self._index_at, self._index_size)]
        xxh3s = {INDEX_MEMBER: self._index_xxh3}
        kit = {k.member: k for k in self.info.kit}
        expected = [blob_member(d) for d in self._order] + list(kit)
        want = iter(expected)
        trailer = None
        try:
            # not `for ti in self._tf`: iterating a stream tarfile starts again at the members already read
            while (ti := self._tf.next()) is not None:
                if not ti.isreg():
                    raise BundleFormatError(f"member {ti.name!r} is not a regular file: refusing the bundle")
                f = self._tf.extractfile(ti)
                assert f is not None
                arrived.append(Member(ti.name, ti.offset_data, ti.size))
                if ti.name == TRAILER_MEMBER:
                    trailer = decode_trailer(_read_all(f, ti.size))
                    break
                tee = _Tee(cast(BinaryIO, f), ti.size)
                if ti.name in (OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER) and len(arrived) <= 3:
                    xxh3s[ti.name] = tee.finish()
                    continue
                if ti.name != next(want, None):
                    raise BundleFormatError(
                        f"unexpected member {ti.name!r}: the bundle does not follow its index; refusing it"
                    )
                k = kit.get(ti.name)
                if k is not None:  # after every blob: checked here, written nowhere
                    sha = hashlib.sha256()
                    while chunk := tee.read(CHUNK):
                        sha.update(chunk)
                    if sha.hexdigest() != k.sha256:
                        raise _damaged(f"{ti.name} does not match the index's sha256; no tag was written")
                    xxh3s[ti.name] = tee.finish()
                    continue
                digest = member_digest(ti.name)
                assert digest is not None
                if ti.size != self.catalog.size_of(digest):
                    raise BundleFormatError(f"member {ti.name} is {ti.size} bytes, the index says otherwise")
                yield BlobContent(digest, ti.size, (), verified=False, stream=cast(BinaryIO, tee))
                xxh3s[ti.name] = tee.finish()
        except tarfile.TarError as e:
            raise _damaged(f"stdin: the bundle stream is damaged ({e}); no tag was written") from None
        if trailer is None:
            raise _damaged("stdin ended before the trailer: the bundle is truncated; no tag was written")
        problems = check_members(arrived, trailer, self.catalog, self._order, self.info.kit)
        if problems:
            raise _refused("stdin", problems)
        if trailer.index_xxh3 != self._index_xxh3:
            raise _damaged("the index does not match the trailer's checksum; no tag was written")
        for name, _, x in trailer.members:
            if xxh3s.get(name) != x:
                raise _damaged(f"{name} does not match the trailer's checksum; no tag was written")

    def close(self) -> None:
        self._tf.close()


BundleSource = Union[FileBundleSource, StreamBundleSource]


def open_source(path: str | Path, stdin: BinaryIO | None = None) -> BundleSource:
    """``-`` reads the bundle from ``stdin``; anything else is a file or a volume set."""
    if str(path) == "-":
        assert stdin is not None
        return StreamBundleSource(stdin)
    return FileBundleSource(Path(path))


__all__ = ["BundleSource", "FileBundleSource", "StreamBundleSource", "open_source"]
