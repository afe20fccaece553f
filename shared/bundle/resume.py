"""Resuming an interrupted export: what of ``BUNDLE.partial`` (or its partial volumes) can be kept.

A bundle is laid out by its index alone: given the index, the tar mtime and the member sizes, every
header's bytes and every member's place are known.  So an export that starts again with the same source
and options builds the same index (given the partial's bundle id and creation time) and can keep every
member of the partial whose header is the expected one and whose bytes hash to its name; it truncates
after the last such member and writes the rest.  The result is byte for byte the bundle the interrupted
run would have written.
"""

from __future__ import annotations

import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..digest import xxh3_of
from ..errors import BundleFormatError
from ..hashing import HashJob, HashPool, RangeHashes
from ..model import Catalog
from .format import (
    INDEX_MAX,
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT,
    OCI_LAYOUT_MEMBER,
    BundleInfo,
    blob_member,
    decode_index,
    member_digest,
    oci_index,
)
from .tario import BLOCK, VolumeSet, tar_header
from .volumes import volume_name

log = logging.getLogger(__name__)


def partial_name(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


@dataclass(frozen=True)
class Partial:
    """What an interrupted export left: its files, in order, and the index it had written."""

    paths: tuple[Path, ...]
    size: int
    index: bytes
    info: BundleInfo
    mtime: int


def find_partial(output: Path, volume_size: int | None) -> Partial | None:
    """The partial bundle an interrupted export of ``output`` left, or None when there is none usable
    (no file, or not even its index complete)."""
    if volume_size is None:
        paths = [partial_name(output)] if partial_name(output).is_file() else []
    else:
        paths = []
        while partial_name(volume_name(output, len(paths))).is_file():
            paths.append(partial_name(volume_name(output, len(paths))))
    if not paths:
        return None
    data = VolumeSet(paths)
    try:
        head = data.read_exact(0, BLOCK)
        try:
            ti = tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
        except tarfile.TarError:
            return None
        if ti.name != INDEX_MEMBER or not 0 < ti.size <= INDEX_MAX:
            return None
        index = data.read_exact(BLOCK, ti.size)
        if len(index) != ti.size:
            return None
        try:
            _, info, _ = decode_index(index)
        except BundleFormatError:
            return None
        return Partial(tuple(paths), data.size, index, info, int(ti.mtime))
    finally:
        data.close()


@dataclass(frozen=True)
class ResumePoint:
    """The members kept, in order, and where writing goes on."""

    paths: tuple[Path, ...]
    #: (member name, size, xxh3-128 hex) of each member kept
    members: tuple[tuple[str, int, str], ...]
    #: each kept member's header block(s), as the bundle holds them
    headers: tuple[bytes, ...]
    #: the byte after the last kept member's padding
    pos: int

    @property
    def blob_bytes(self) -> int:
        return sum(size for name, size, _ in self.members if name.startswith("blobs/"))

    @property
    def blobs(self) -> int:
        return sum(1 for name, _, _ in self.members if name.startswith("blobs/"))


def claimed(partial: Partial) -> frozenset[str]:
    """The digests whose members lie wholly inside the partial, by its own index: their bytes need not be
    read from the source if they check out (the scan is told so before it starts)."""
    catalog, _, order = decode_index(partial.index)
    pos = 0
    out = set()
    for name, size in _plan(catalog, order, partial.index):
        pos += len(tar_header(name, size, partial.mtime)) + _padded(size)
        if pos > partial.size:
            break
        digest = member_digest(name)
        if digest is not None:
            out.add(digest)
    return frozenset(out)


def _padded(size: int) -> int:
    return size + (-size % BLOCK)


def _plan(catalog: Catalog, order: list[str], index: bytes) -> list[tuple[str, int]]:
    """Every member before the trailer, with its size, in tar order (bundle-format.md §1.1)."""
    return [
        (INDEX_MEMBER, len(index)),
        (OCI_LAYOUT_MEMBER, len(OCI_LAYOUT)),
        (OCI_INDEX_MEMBER, len(oci_index(catalog))),
        *((blob_member(d), catalog.size_of(d)) for d in order),
    ]


def check(
    partial: Partial, index: bytes, catalog: Catalog, order: list[str], *, jobs: int
) -> ResumePoint | None:
    """The members of ``partial`` to keep for a bundle whose index is ``index``; None when the partial was
    written for another index (the source or the options changed) and nothing can be kept."""
    if index != partial.index:
        return None
    data = VolumeSet(list(partial.paths))
    try:
        expected = {OCI_LAYOUT_MEMBER: OCI_LAYOUT, OCI_INDEX_MEMBER: oci_index(catalog), INDEX_MEMBER: index}
        members: list[tuple[str, int, str]] = []
        headers: list[bytes] = []
        ends: list[int] = []
        jobs_list: list[tuple[int, HashJob]] = []
        pos = 0
        for name, size in _plan(catalog, order, index):
            header = tar_header(name, size, partial.mtime)
            end = pos + len(header) + _padded(size)
            if end > data.size or data.read_exact(pos, len(header)) != header:
                break
            at = pos + len(header)
            pad = -size % BLOCK
            if pad and data.read_exact(at + size, pad) != bytes(pad):
                break
            if name in expected:
                got = data.read_exact(at, size)
                if got != expected[name]:
                    break
                members.append((name, size, xxh3_of(got)))
            else:
                pieces = [(e.path, e.offset, e.size) for _, e in data.extents(at, size)]
                digest = member_digest(name)
                assert digest is not None  # the plan names blobs by their digests
                job = HashJob(digest, pieces, size, digest.split(":", 1)[0])
                jobs_list.append((len(members), job))
                members.append((name, size, ""))
            headers.append(header)
            ends.append(end)
            pos = end
    finally:
        data.close()
    results: dict[str, RangeHashes | OSError] = {}

    def done(job: HashJob, h: RangeHashes | OSError) -> None:
        results[job.key] = h

    pool = HashPool(jobs or os.cpu_count() or 1, done)
    for _, job in jobs_list:
        pool.add(job)
    pool.finish()
    keep = len(members)
    for i, job in jobs_list:
        h = results[job.key]
        if isinstance(h, OSError) or h.size != job.size or h.digest != job.key or h.xxh3 is None:
            keep = min(keep, i)
            continue
        name, size, _ = members[i]
        members[i] = (name, size, h.xxh3)
    keep = min(keep, len(members))
    if keep < 3:
        return None  # not even the layout files: nothing worth keeping
    bad = len(members) - keep
    if bad:
        log.info(
            "the partial's member %d (%s) does not check out: keeping %d members",
            keep,
            members[keep][0],
            keep,
        )
    return ResumePoint(partial.paths, tuple(members[:keep]), tuple(headers[:keep]), ends[keep - 1])


def headers_hash(point: ResumePoint) -> xxhash.xxh3_128:
    x = xxhash.xxh3_128()
    for h in point.headers:
        x.update(h)
    return x


__all__ = ["Partial", "ResumePoint", "check", "claimed", "find_partial", "partial_name"]
