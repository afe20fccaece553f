"""``ferry verify``: prove a bundle arrived intact, or name what is damaged and which images it breaks.

Checks, in order: the index decodes and its version is known; every member the index promises is present,
once, with its size, and nothing else is; the trailer is there (else the bundle is truncated); every member's
xxh3 matches the trailer; with a full check also every blob's sha256 matches its name.  Volumes: every volume
but the last has the size the index records, so a short middle volume is named even when the bytes after it
look like a tar.  Hashing runs on a thread pool (hashlib and xxhash release the GIL), one thread per core.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
from shared.digest import hash_pieces
from shared.errors import BundleDamaged
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
        b.scan()
        problems: list[dict[str, object]] = []
        catalog = b.catalog
        images_of = _images_by_digest(b)

        def problem(member: str, what: str, offset: int, size: int, digest: str | None = None) -> None:
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
        vs = b.info.volume_size
        vols = b.data.volumes
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

        expected = [INDEX_MEMBER, OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER] + [blob_member(d) for d in b.order]
        sizes = {blob_member(d): catalog.size_of(d) for d in b.order}
        by_name: dict[str, Member] = {}
        for m in b.members:
            if m.name == TRAILER_MEMBER:
                continue
            if m.name in by_name:
                problem(m.name, "member appears twice", m.offset, m.size)
            elif m.name not in expected:
                problem(m.name, "unexpected member (not in the index)", m.offset, m.size)
            by_name.setdefault(m.name, m)
        end = b.data.size
        for name in expected:
            if name not in by_name:
                digest = member_digest(name)
                problem(name, "missing (bundle truncated or altered)", end, 0, digest)
            elif name in sizes and by_name[name].size != sizes[name]:
                m = by_name[name]
                problem(
                    name,
                    f"is {m.size} bytes, the index says {sizes[name]}",
                    m.offset,
                    m.size,
                    member_digest(name),
                )
        if b.scan_error is not None:
            problems.append(
                {"member": None, "problem": b.scan_error.message, "volumes": b.volume_names(end, 0)}
            )
        if b.trailer is None:
            problems.append(
                {
                    "member": TRAILER_MEMBER,
                    "problem": "trailer missing: the bundle is truncated",
                    "volumes": b.volume_names(end, 0),
                }
            )
        trailer_xxh3 = {n: (s, x) for n, s, x in b.trailer.members} if b.trailer else {}

        # content: hash every present member on all cores
        todo = [by_name[n] for n in expected if n in by_name]
        total = sum(m.size for m in todo)
        done = 0
        lock = threading.Lock()
        on_progress(Progress("verify", 0, total))

        def check(m: Member) -> None:
            nonlocal done
            digest = member_digest(m.name)
            alg = None if opts.quick or digest is None else digest.split(":", 1)[0]
            h = hash_pieces(b.data.pieces(m.offset, m.size), alg)
            issues = []
            if h.size != m.size:
                issues.append(f"truncated: {h.size} of {m.size} bytes present")
            else:
                want = trailer_xxh3.get(m.name)
                if want is not None and want[1] != h.xxh3:
                    issues.append("xxh3 does not match the trailer (bytes changed in transit)")
                if alg is not None and h.digest != digest:
                    issues.append(f"content hashes to {h.digest}")
            if m.name == INDEX_MEMBER and b.trailer is not None and h.xxh3 != b.trailer.index_xxh3:
                issues.append("index checksum does not match the trailer")
            with lock:
                for what in issues:
                    problem(m.name, what, m.offset, m.size, digest)
                done += m.size
                on_progress(Progress("verify", done, total, files=len(todo)))

        # largest first, so the pool does not end with one core hashing the biggest layer alone
        todo.sort(key=lambda m: -m.size)
        with ThreadPoolExecutor(max_workers=opts.jobs or os.cpu_count() or 1) as pool:
            list(pool.map(check, todo))

        if problems:
            n_bad = len({p["member"] for p in problems})
            broken = {i for p in problems for i in p.get("images", [])}  # type: ignore[attr-defined]
            raise BundleDamaged(
                f"{opts.path}: damaged: {n_bad} problem member(s), {len(broken)} image(s) affected",
                tuple(sorted(problems, key=lambda p: str(p["member"]))),
            )
        return VerifyResult(
            path=str(opts.path),
            volumes=tuple(str(v.path) for v in vols),
            members=len(b.members),
            bytes=end,
            images=sum(1 for _ in catalog.images()),
            quick=opts.quick,
            seconds=time.monotonic() - started,
        )


def _images_by_digest(b: Bundle) -> dict[str, list[str]]:
    """digest -> every image ref (``repo:tag`` / ``repo@digest``) that needs it."""
    out: dict[str, list[str]] = {}
    for image in b.catalog.images():
        for d in b.catalog.closure(image.digest):
            out.setdefault(d, []).append(image.ref)
    return out


__all__ = ["VerifyOptions", "VerifyResult", "run"]
