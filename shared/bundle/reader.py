"""Opening a bundle (one file or a volume set): its index, its members, its trailer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleFormatError
from ..model import Catalog
from .format import (
    INDEX_MAX,
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT_MEMBER,
    TRAILER_MEMBER,
    BundleInfo,
    Trailer,
    blob_member,
    decode_index,
    decode_trailer,
)
from .tario import BLOCK, VolumeSet, find_volumes, iter_members


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data, in the concatenated bundle
    size: int


class Bundle:
    """A bundle on disk.  ``open`` reads the index; ``scan`` lists every member and reads the trailer."""

    def __init__(
        self, data: VolumeSet, catalog: Catalog, info: BundleInfo, order: list[str], first: Member
    ) -> None:
        self.data = data
        self.catalog = catalog
        self.info = info
        self.order = order
        self.index_member = first
        self.members: list[Member] = []
        self.trailer: Trailer | None = None
        #: why the member list ends early (a damaged header), when it does
        self.scan_error: BundleFormatError | None = None

    @classmethod
    def open(cls, path: Path) -> Bundle:
        data = VolumeSet(find_volumes(path))
        try:
            if data.size == 0:
                raise BundleFormatError(f"{path}: empty file, not a ferry bundle")
            try:
                first = next(iter_members(data), None)
            except BundleFormatError as e:
                raise BundleFormatError(f"{path}: not a ferry bundle ({e.reason})") from None
            if first is None or first.name != INDEX_MEMBER:
                raise BundleFormatError(
                    f"{path}: not a ferry bundle (the first member is "
                    f"{'missing' if first is None else repr(first.name)}, not {INDEX_MEMBER})"
                )
            if first.size > INDEX_MAX:
                raise BundleFormatError(f"{path}: the index member is implausibly large ({first.size} bytes)")
            raw = data.read_exact(first.offset_data, first.size)
            if len(raw) != first.size:
                raise BundleFormatError(f"{path}: truncated inside the index", offset=data.size)
            catalog, info, order = decode_index(raw)
        except BaseException:
            data.close()
            raise
        return cls(data, catalog, info, order, Member(INDEX_MEMBER, first.offset_data, first.size))

    def scan(self, on_member: Callable[[Member], None] | None = None) -> None:
        """List every member and read the trailer, if the bundle has one.

        Fast path: the index says which members follow and how large they are, so every header's offset is
        known; each is checked with one 512-byte read (name, size, type, checksum).  Anything unexpected falls
        back to reading the tar header by header with :mod:`tarfile`, which names what is wrong."""
        if not self._scan_by_index(on_member):
            self._scan_tar(on_member)
        last = self.members[-1] if self.members else None
        if last is not None and last.name == TRAILER_MEMBER and last.offset + last.size <= self.data.size:
            self.trailer = decode_trailer(self.data.read_exact(last.offset, last.size))

    def _scan_by_index(self, on_member: Callable[[Member], None] | None) -> bool:
        members: list[Member] = []
        it = iter_members(self.data)
        try:
            for want in (INDEX_MEMBER, OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER):
                ti = next(it, None)
                if ti is None or ti.name != want:
                    return False
                members.append(Member(ti.name, ti.offset_data, ti.size))
                if on_member is not None:
                    on_member(members[-1])
        except BundleFormatError:
            return False
        finally:
            it.close()
        pos = members[-1].offset + members[-1].size + (-members[-1].size % BLOCK)
        for name, size in [(blob_member(d), self.catalog.size_of(d)) for d in self.order] + [
            (TRAILER_MEMBER, -1)
        ]:
            hdr = self.data.read_exact(pos, BLOCK)
            got = _plain_header(hdr, name)
            if got is None or (size >= 0 and got != size):
                return False
            members.append(Member(name, pos + BLOCK, got))
            if on_member is not None:
                on_member(members[-1])
            pos += BLOCK + got + (-got % BLOCK)
        self.members = members
        return True

    def _scan_tar(self, on_member: Callable[[Member], None] | None) -> None:
        self.members = []
        try:
            for ti in iter_members(self.data):
                self.members.append(Member(ti.name, ti.offset_data, ti.size))
                if on_member is not None:
                    on_member(self.members[-1])
        except BundleFormatError as e:
            self.scan_error = e

    def close(self) -> None:
        self.data.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def volume_names(self, offset: int, size: int) -> list[str]:
        return [self.data.volumes[i].path.name for i, _ in self.data.extents(offset, max(size, 1))] or [
            self.data.volumes[-1].path.name
        ]


def _plain_header(hdr: bytes, name: str) -> int | None:
    """The size a plain (ustar, one block) header for ``name`` announces, or None if it is anything else."""
    if len(hdr) != BLOCK or hdr[156:157] not in (b"0", b"\0"):
        return None
    if hdr[:100] != name.encode().ljust(100, b"\0") or hdr[345:500].strip(b"\0"):
        return None
    try:
        # the ustar checksum: the header's byte sum with the checksum field counted as eight spaces
        if int(hdr[148:156].strip(b"\0 ") or b"-1", 8) != sum(hdr[:148]) + 8 * 32 + sum(hdr[156:]):
            return None
        return int(hdr[124:136].strip(b"\0 ") or b"0", 8)
    except ValueError:
        return None


__all__ = ["Bundle", "Member"]
