"""Opening a bundle (one file or a volume set): its index, its members, its trailer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleFormatError
from ..model import Catalog
from .format import INDEX_MAX, INDEX_MEMBER, TRAILER_MEMBER, BundleInfo, Trailer, decode_index, decode_trailer
from .tario import VolumeSet, find_volumes, iter_members


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

    def scan(self) -> None:
        """Read every member header (seeking over data) and the trailer, if the bundle has one."""
        self.members = []
        try:
            for ti in iter_members(self.data):
                self.members.append(Member(ti.name, ti.offset_data, ti.size))
        except BundleFormatError as e:
            self.scan_error = e
        last = self.members[-1] if self.members else None
        if last is not None and last.name == TRAILER_MEMBER and last.offset + last.size <= self.data.size:
            self.trailer = decode_trailer(self.data.read_exact(last.offset, last.size))

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


__all__ = ["Bundle", "Member"]
