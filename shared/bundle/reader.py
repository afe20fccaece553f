"""Opening a bundle (one file or a volume set): its index, its members, its trailer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..errors import BundleFormatError
from ..model import Catalog
from .format import (
    INDEX_MAX,
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT_MEMBER,
    TRAILER_MEMBER,
    BundleInfo,
    KitFile,
    Trailer,
    blob_member,
    decode_index,
    decode_trailer,
    member_digest,
)
from .tario import BLOCK, RECORD, VolumeSet, iter_members
from .volumes import find_volumes, volume_name_after


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
        #: (member, header offset) where the index said a member starts but its header did not match
        self._suspect: tuple[str, int] | None = None
        self._plan: list[Member] | None = None
        self._head_blocks: list[tuple[int, int]] = []  # (offset, length) of the first three headers

    @classmethod
    def open(cls, path: Path, *, before_index: Callable[[VolumeSet], None] | None = None) -> Bundle:
        """Open the volumes and read the index; ``before_index`` gets the volumes first (to start work
        that need not wait for the index, see :func:`plan_from_trailer`)."""
        data = VolumeSet(find_volumes(path))
        try:
            if data.size == 0:
                raise BundleFormatError(f"{path}: empty file, not a ferry bundle")
            if before_index is not None:
                before_index(data)
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
            catalog, info, order = decode_index(raw, bundle_size=data.size)
        except BaseException:
            data.close()
            raise
        return cls(data, catalog, info, order, Member(INDEX_MEMBER, first.offset_data, first.size))

    def scan(self) -> None:
        """List every member and read the trailer, if the bundle has one.

        Fast path: the index says which members follow and how large they are, so every header's offset is
        known.  A 1.1 trailer holds the xxh3 of all headers, so they are checked in one pass; otherwise each
        is checked with one 512-byte read (name, size, type, checksum).  Anything unexpected falls back to
        reading the tar header by header with :mod:`tarfile`, which names what is wrong."""
        if not self._scan_by_index():
            self._scan_tar()
            # tarfile takes a header it cannot parse for the end of the archive; when it stops where the
            # index promised a member, say so rather than letting the rest look merely truncated
            if self._suspect is not None and self.scan_error is None:
                name, at = self._suspect
                if not self.members or self.members[-1].offset <= at:
                    self.scan_error = BundleFormatError(f"the tar header of {name} is damaged", offset=at)
        last = self.members[-1] if self.members else None
        if (
            self.trailer is None
            and last is not None
            and last.name == TRAILER_MEMBER
            and last.offset + last.size <= self.data.size
        ):
            self.trailer = decode_trailer(self.data.read_exact(last.offset, last.size))

    def plan(self) -> list[Member] | None:
        """Where the index says every member is, without reading a header past the first three: the
        index, the OCI layout files, then each blob and manifest in the index's order.  None when the
        first three are not what a bundle starts with.  :meth:`scan` checks the plan against the tar."""
        if self._plan is None:
            self._plan, self._head_blocks = self._make_plan()
        return self._plan or None

    def _make_plan(self) -> tuple[list[Member], list[tuple[int, int]]]:
        """The plan, and the (offset, length) of the first three headers; ([], []) when the bundle does
        not start with them."""
        members: list[Member] = []
        head_blocks: list[tuple[int, int]] = []
        it = iter_members(self.data)
        try:
            for want in (INDEX_MEMBER, OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER):
                ti = next(it, None)
                if ti is None or ti.name != want:
                    return [], []
                members.append(Member(ti.name, ti.offset_data, ti.size))
                head_blocks.append((ti.offset, ti.offset_data - ti.offset))
        except BundleFormatError:
            return [], []
        finally:
            it.close()
        pos = members[-1].offset + members[-1].size + (-members[-1].size % BLOCK)
        blobs, _ = _one_after_another(
            pos,
            [
                *((blob_member(d), self.catalog.size_of(d)) for d in self.order),
                *((k.member, k.size) for k in self.info.kit),
            ],
        )
        return members + blobs, head_blocks

    def _scan_by_index(self) -> bool:
        plan = self.plan()
        if plan is None:
            return False
        members, blobs = plan[:3], plan[3:]
        end = plan[-1].offset + plan[-1].size + (-plan[-1].size % BLOCK)
        found = _trailer_at(self.data, end)
        if found is not None and found[0].headers_xxh3 is not None:
            # every header before the trailer: the first three as read (they may carry pax headers), then
            # one block before each planned member
            headers = self._head_blocks + [(m.offset - BLOCK, BLOCK) for m in blobs]
            x = xxhash.xxh3_128()
            for block in self.data.read_many(headers):
                x.update(block)
            checked = x.hexdigest() == found[0].headers_xxh3
        else:
            checked = False
        if checked:
            members += blobs
        else:
            # no usable headers checksum: check each header on its own
            for m in blobs:
                at = m.offset - BLOCK
                if _plain_header(self.data.read_exact(at, BLOCK), m.name) != m.size:
                    if at + BLOCK <= self.data.size:  # else the file just ends there: truncated, not damaged
                        self._suspect = (m.name, at)
                    return False
                members.append(m)
        if found is None:
            return False
        self.trailer, trailer_member = found
        members.append(trailer_member)
        self.members = members
        return True

    def _scan_tar(self) -> None:
        self.members = []
        try:
            for ti in iter_members(self.data):
                self.members.append(Member(ti.name, ti.offset_data, ti.size))
        except BundleFormatError as e:
            # a header the end of the file cuts is truncation (named as such: the trailer is missing), not
            # damage
            if e.offset is None or e.offset + BLOCK <= self.data.size:
                self.scan_error = e

    def close(self) -> None:
        self.data.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def problems(self) -> list[Problem]:
        """Everything structurally wrong with the bundle, each naming its member and where it is: the
        member list against the index and the trailer (:func:`check_members`, the one check every reader
        makes), truncation, a damaged header, the volumes, and anything after the end.  Call after
        :meth:`scan`.  Content (hashes) is not read here."""
        out = check_members(self.members, self.trailer, self.catalog, self.order, self.info.kit)
        end = self.data.size
        if self.scan_error is not None:
            out.append(Problem(None, self.scan_error.message, end, 0))
        if self.trailer is None:
            out.append(Problem(TRAILER_MEMBER, "trailer missing: the bundle is truncated", end, 0))
        for m in self.members:
            if m.offset + m.size > end:
                present = max(0, end - m.offset)
                what = f"truncated: {present} of {m.size} bytes present"
                out.append(Problem(m.name, what, m.offset, m.size, member_digest(m.name)))
        out += self._volume_problems()
        out += self._end_problems()
        return out

    def _volume_problems(self) -> list[Problem]:
        """A byte split: every volume but the last is exactly ``volume_size``; a set whose last volume is
        full and that ends before its trailer lacks the next volume."""
        vs, vols = self.info.volume_size, self.data.volumes
        out: list[Problem] = []
        if not vs or len(vols) < 1:
            return out
        last = self._last_volume()
        for v in vols[: last if last is not None else len(vols) - 1]:
            if v.size != vs:
                out.append(
                    Problem(None, f"volume is {v.size} bytes, expected {vs}", 0, 0, volumes=(v.path.name,))
                )
        if self.trailer is None and vols[-1].size == vs:
            nxt = volume_name_after(vols[-1].path)
            out.append(
                Problem(
                    None,
                    f"the set ends with a full volume and no trailer: volume {nxt} (and any after it) is missing",
                    0,
                    0,
                    volumes=(nxt,),
                )
            )
        return out

    def _bundle_end(self) -> int | None:
        """Where the bundle ends by its own structure (after the trailer, two zero blocks and the padding
        to a record), or None without a trailer."""
        t = next((m for m in reversed(self.members) if m.name == TRAILER_MEMBER), None)
        if t is None or self.trailer is None:
            return None
        after = t.offset + t.size + (-t.size % BLOCK) + 2 * BLOCK
        return after + (-after % RECORD)

    def _last_volume(self) -> int | None:
        """Index of the volume that holds the bundle's last byte, when the bundle's end is known."""
        end = self._bundle_end()
        if end is None:
            return None
        for i, v in enumerate(self.data.volumes):
            if v.start < end <= v.start + v.size:
                return i
        return None

    def _end_problems(self) -> list[Problem]:
        end = self._bundle_end()
        if end is None:
            return []
        t = next(m for m in reversed(self.members) if m.name == TRAILER_MEMBER)
        data_end = t.offset + t.size
        out: list[Problem] = []
        if self.data.size < end:
            out.append(
                Problem(
                    None,
                    f"the bundle ends {end - self.data.size} bytes early, inside its end-of-archive blocks",
                    self.data.size,
                    0,
                )
            )
        elif self.data.size > end:
            extra = [v.path.name for v in self.data.volumes if v.start + v.size > end and v.size > 0]
            whole = [v.path.name for v in self.data.volumes if v.start >= end and v.size > 0]
            what = (
                f"not part of this bundle: it lies after the bundle's end ({self.data.size - end} extra bytes)"
                if whole
                else f"{self.data.size - end} bytes of extra data after the end of the bundle"
            )
            out.append(Problem(None, what, end, self.data.size - end, volumes=tuple(whole or extra)))
        tail = self.data.read_exact(data_end, min(end, self.data.size) - data_end)
        if tail.strip(b"\0"):
            out.append(
                Problem(
                    None, "the end-of-archive blocks after the trailer are not zeros", data_end, len(tail)
                )
            )
        return out

    def volume_names(self, offset: int, size: int) -> list[str]:
        return [self.data.volumes[i].path.name for i, _ in self.data.extents(offset, max(size, 1))] or [
            self.data.volumes[-1].path.name
        ]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle: the member (None: the bundle as a whole), what, and where."""

    member: str | None
    what: str
    offset: int
    size: int
    digest: str | None = None
    #: the volumes to name, when not those holding [offset, offset + size)
    volumes: tuple[str, ...] | None = None


def check_members(
    members: list[Member],
    trailer: Trailer | None,
    catalog: Catalog,
    order: list[str],
    kit: Sequence[KitFile] = (),
) -> list[Problem]:
    """The member list a reader found against what the index promises and the trailer lists.

    The one member check of every reader (verify, file and stream restore, push): exactly the index, the
    two OCI layout files, the index's blobs in its order and its kit files, each once with its size, then
    the trailer;
    nothing else (no second index, no name the index does not list, whatever its form: ``../../x``, an
    absolute or a GNU long name).  The trailer must list exactly those members, in that order, with
    their sizes: a trailer that leaves one out could hide a damaged member from ``verify --quick``."""
    out: list[Problem] = []
    # inline lookups, not blob_member()/size_of() per digest: a 5000-tag bundle has 15k members, and this
    # runs on every open before anything is hashed or written
    blobs, manifests = catalog.blobs, catalog.manifests
    sizes = {
        "blobs/" + d.replace(":", "/", 1): (blobs[d].size if d in blobs else manifests[d].size) for d in order
    }
    sizes.update((k.member, k.size) for k in kit)
    expected = [INDEX_MEMBER, OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER, *sizes]
    body = [m for m in members if m.name != TRAILER_MEMBER]
    # the intact bundle, checked in a few passes at C speed; anything else is gone through below to name it
    if (
        [m.name for m in body] == expected
        and members
        and members[-1].name == TRAILER_MEMBER
        and len(body) == len(members) - 1
        and all(m.size == size for m, size in zip(body[3:], sizes.values()))
        and (
            trailer is None
            or [(n, size) for n, size, _ in trailer.members] == [(m.name, m.size) for m in body]
        )
    ):
        return out
    expected_set = set(expected)
    first: dict[str, Member] = {}
    trailers = [m for m in members if m.name == TRAILER_MEMBER]
    for m in body:
        if m.name in first:
            out.append(Problem(m.name, "member appears twice", m.offset, m.size, member_digest(m.name)))
            continue
        first[m.name] = m
    for name in [n for n in first if n not in expected_set]:
        m = first[name]
        out.append(Problem(m.name, "unexpected member (not in the index)", m.offset, m.size))
    if len(trailers) > 1 or (trailers and members[-1].name != TRAILER_MEMBER):
        t = trailers[-1]
        out.append(
            Problem(TRAILER_MEMBER, "the trailer is not the last member, or appears twice", t.offset, t.size)
        )
    end = members[-1].offset + members[-1].size if members else 0
    for name in expected:
        found = first.get(name)
        if found is None:
            out.append(Problem(name, "missing (bundle truncated or altered)", end, 0, member_digest(name)))
        elif found.size != sizes.get(name, found.size):
            what = f"is {found.size} bytes, the index says {sizes[name]}"
            out.append(Problem(name, what, found.offset, found.size, member_digest(name)))
    if not out and [m.name for m in body] != expected:
        out.append(Problem(None, "the members are not in the index's order", 0, 0))
    if trailer is not None:
        out += _trailer_problems(body, trailer, first)
    return out


def _trailer_problems(body: list[Member], trailer: Trailer, first: dict[str, Member]) -> list[Problem]:
    out: list[Problem] = []
    listed: dict[str, int] = {}
    for name, size, _ in trailer.members:
        if name in listed:
            out.append(Problem(name, "listed twice in the trailer", 0, 0, member_digest(name)))
        listed[name] = size
    for m in body:
        listed_size = listed.get(m.name)
        if listed_size is None:
            what = "not listed in the trailer (its checksum is unknown)"
            out.append(Problem(m.name, what, m.offset, m.size, member_digest(m.name)))
        elif listed_size != m.size:
            what = f"the trailer says {listed_size} bytes, the tar holds {m.size}"
            out.append(Problem(m.name, what, m.offset, m.size, member_digest(m.name)))
    for name in listed:
        if name not in first:
            out.append(
                Problem(name, "listed in the trailer but not in the bundle", 0, 0, member_digest(name))
            )
    if not out and [n for n, _, _ in trailer.members] != [m.name for m in body]:
        out.append(
            Problem(TRAILER_MEMBER, "the trailer lists the members in another order than the tar", 0, 0)
        )
    return out


#: how far from the end :func:`plan_from_trailer` looks (a trailer takes about 110 bytes per member)
TRAILER_SEARCH = 64 << 20


def plan_from_trailer(data: VolumeSet) -> list[Member] | None:
    """Where the trailer says each member is, found from the end of the bundle before the index is read.

    For work that need not wait for the index (verify hashes blobs against their names meanwhile).
    Nothing here is trusted: a result counts only for a member that :meth:`Bundle.scan` then finds at
    the same place with the same size.  None when no trailer is near the end, or when its members do not
    add up to where it is (a member with a pax header, a bundle that is not one)."""
    marker = TRAILER_MEMBER.encode() + b"\0"
    end = data.size
    for span in (4 << 20, TRAILER_SEARCH):
        start = max(0, end - span)
        tail = data.read_exact(start, end - start)
        at = tail.rfind(marker)
        while at >= 0:
            pos = start + at
            found = _trailer_at(data, pos) if pos % BLOCK == 0 else None
            if found is not None:
                members, after = _one_after_another(0, ((n, size) for n, size, _ in found[0].members))
                return members if after == pos else None
            at = tail.rfind(marker, 0, at)
        if start == 0:
            break
    return None


def _trailer_at(data: VolumeSet, pos: int) -> tuple[Trailer, Member] | None:
    """The trailer whose header is at ``pos``, and its member, or None if something else (or nothing) is
    there."""
    size = _plain_header(data.read_exact(pos, BLOCK), TRAILER_MEMBER)
    if size is None or pos + BLOCK + size > data.size:
        return None
    try:
        trailer = decode_trailer(data.read_exact(pos + BLOCK, size))
    except BundleFormatError:
        return None
    return trailer, Member(TRAILER_MEMBER, pos + BLOCK, size)


def _one_after_another(pos: int, entries: Iterable[tuple[str, int]]) -> tuple[list[Member], int]:
    """Members of these (name, size) laid out from ``pos`` as the bundle writes them (one header block
    each, data padded to a block), and where the next header would be."""
    members = []
    for name, size in entries:
        members.append(Member(name, pos + BLOCK, size))
        pos += BLOCK + size + (-size % BLOCK)
    return members, pos


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


__all__ = ["Bundle", "Member", "Problem", "check_members", "plan_from_trailer"]
