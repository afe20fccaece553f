"""``ferry verify``: prove a bundle arrived intact, or name what is damaged and which images it breaks.

Checks, in order: the index decodes and its version is known; every member the index promises is present,
once, with its size, and nothing else is; the trailer is there (else the bundle is truncated); every member's
xxh3 matches the trailer; with a full check also every blob's sha256 matches its name.  Volumes: every volume
but the last has the size the index records, so a short middle volume is named even when the bytes after it
look like a tar.  Hashing runs on a thread pool (hashlib and xxhash release the GIL), one thread per core.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from shared.bundle.format import (
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT_MEMBER,
    TRAILER_MEMBER,
    blob_member,
    member_digest,
)
from shared.bundle.reader import Bundle, Member
from shared.errors import BundleDamaged
from shared.hashing import HashJob, HashPool, RangeHashes
from shared.progress import Progress, ProgressCallback, no_progress


@dataclass(frozen=True, kw_only=True)
class VerifyOptions:
    path: Path
    quick: bool = False
    jobs: int = 0


@dataclass(frozen=True)
class VerifyResult:
    path: str
    volumes: tuple[str, ...]
    members: int
    bytes: int
    images: int
    quick: bool
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": self.path,
            "volumes": list(self.volumes),
            "members": self.members,
            "bytes": self.bytes,
            "images": self.images,
            "check": "xxh3" if self.quick else "xxh3+sha256",
            "seconds": round(self.seconds, 3),
        }


def run(opts: VerifyOptions, *, on_progress: ProgressCallback = no_progress) -> VerifyResult:
    started = time.monotonic()
    with Bundle.open(opts.path) as b:
        catalog = b.catalog
        sizes = {blob_member(d): catalog.size_of(d) for d in b.order}
        total = catalog.total_bytes
        hashes: dict[str, RangeHashes | OSError] = {}
        queued: dict[str, Member] = {}
        done = 0

        def result(job: HashJob, h: RangeHashes | OSError) -> None:
            nonlocal done
            hashes[job.key] = h
            done += job.size
            on_progress(Progress("verify", done, total, files=len(hashes)))

        # members are hashed as the scan finds them, so reading headers overlaps with hashing
        pool = HashPool(opts.jobs or os.cpu_count() or 1, result)

        def hash_member(m: Member) -> None:
            if m.name == TRAILER_MEMBER or m.name in queued:
                return
            queued[m.name] = m
            digest = member_digest(m.name)
            alg = None if opts.quick or digest is None else digest.split(":", 1)[0]
            # a blob's sha256 checked against its name proves its bytes: its xxh3 would add nothing
            pool.add(HashJob(m.name, tuple(b.data.pieces(m.offset, m.size)), m.size, alg, xxh3=alg is None))

        on_progress(Progress("verify", 0, total))
        try:
            b.scan(on_member=hash_member)
        finally:
            pool.finish()
        problems = _problems(b, sizes, hashes, queued)
        if problems:
            n_bad = len({p["member"] for p in problems})
            broken = {i for p in problems for i in p.get("images", [])}  # type: ignore[attr-defined]
            raise BundleDamaged(
                f"{opts.path}: damaged: {n_bad} problem member(s), {len(broken)} image(s) affected",
                tuple(sorted(problems, key=lambda p: str(p["member"]))),
            )
        return VerifyResult(
            path=str(opts.path),
            volumes=tuple(str(v.path) for v in b.data.volumes),
            members=len(b.members),
            bytes=b.data.size,
            images=sum(1 for _ in catalog.images()),
            quick=opts.quick,
            seconds=time.monotonic() - started,
        )


def _problems(
    b: Bundle, sizes: dict[str, int], hashes: dict[str, RangeHashes | OSError], hashed: dict[str, Member]
) -> list[dict[str, object]]:
    """Everything wrong with the bundle, each naming its member, volume(s) and the images it breaks."""
    problems: list[dict[str, object]] = []
    images_of = _images_by_digest(b)
    end = b.data.size

    def problem(member: str | None, what: str, offset: int, size: int, digest: str | None = None) -> None:
        entry: dict[str, object] = {
            "member": member,
            "problem": what,
            "volumes": b.volume_names(offset, size),
        }
        if digest is not None:
            entry["digest"] = digest
            entry["images"] = images_of.get(digest, [])
        problems.append(entry)

    # volumes: all but the last must be exactly volume_size (a byte split)
    vs, vols = b.info.volume_size, b.data.volumes
    if vs and len(vols) > 1:
        for v in vols[:-1]:
            if v.size != vs:
                problems.append(
                    {
                        "member": None,
                        "problem": f"volume is {v.size} bytes, expected {vs}",
                        "volumes": [v.path.name],
                    }
                )

    expected = [INDEX_MEMBER, OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER, *sizes]
    expected_set = set(expected)
    seen: set[str] = set()
    for m in b.members:
        if m.name == TRAILER_MEMBER:
            continue
        if m.name in seen:
            problem(m.name, "member appears twice", m.offset, m.size)
        elif m.name not in expected_set:
            problem(m.name, "unexpected member (not in the index)", m.offset, m.size)
        seen.add(m.name)
    for name in expected:
        if name not in seen:
            problem(name, "missing (bundle truncated or altered)", end, 0, member_digest(name))
        elif name in sizes and hashed[name].size != sizes[name]:
            m = hashed[name]
            problem(
                name,
                f"is {m.size} bytes, the index says {sizes[name]}",
                m.offset,
                m.size,
                member_digest(name),
            )
    if b.scan_error is not None:
        problem(None, b.scan_error.message, end, 0)
    if b.trailer is None:
        problem(TRAILER_MEMBER, "trailer missing: the bundle is truncated", end, 0)
    trailer = {n: x for n, _, x in b.trailer.members} if b.trailer else {}

    for name, h in hashes.items():
        m = hashed[name]
        digest = member_digest(name)
        if isinstance(h, OSError):
            problem(name, f"unreadable ({h.strerror})", m.offset, m.size, digest)
            continue
        if h.size != m.size:
            problem(name, f"truncated: {h.size} of {m.size} bytes present", m.offset, m.size, digest)
            continue
        if name in trailer and h.xxh3 is not None and trailer[name] != h.xxh3:
            problem(
                name, "xxh3 does not match the trailer (bytes changed in transit)", m.offset, m.size, digest
            )
        if h.digest is not None and h.digest != digest:
            problem(name, f"content hashes to {h.digest}", m.offset, m.size, digest)
        if name == INDEX_MEMBER and b.trailer is not None and h.xxh3 != b.trailer.index_xxh3:
            problem(name, "index checksum does not match the trailer", m.offset, m.size)
    return problems


def _images_by_digest(b: Bundle) -> dict[str, list[str]]:
    """digest -> every image ref (``repo:tag`` / ``repo@digest``) that needs it."""
    out: dict[str, list[str]] = {}
    for image in b.catalog.images():
        for d in b.catalog.closure(image.digest):
            out.setdefault(d, []).append(image.ref)
    return out


__all__ = ["VerifyOptions", "VerifyResult", "run"]
