"""``ferry verify``: prove a bundle arrived intact, or name what is damaged and which images it breaks.

Checks, in order: the index decodes and its version is known; every member the index promises is present,
once, with its size, and nothing else is; the trailer is there (else the bundle is truncated); every member's
xxh3 matches the trailer; with a full check also every blob's sha256 matches its name.  Volumes: every volume
but the last has the size the index records, so a short middle volume is named even when the bytes after it
look like a tar.  Hashing runs on a thread pool (hashlib and xxhash release the GIL), one thread per core,
and for a full check first in a forked child that starts on the trailer's plan before the index is read
(see :func:`run`).
"""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ferry.shared.bundle.format import (
    INDEX_MEMBER,
    TRAILER_MEMBER,
    member_digest,
)
from ferry.shared.bundle.reader import Bundle, Member, plan_from_trailer
from ferry.shared.bundle.tario import VolumeSet
from ferry.shared.digest import xxh3_of
from ferry.shared.errors import BundleDamaged
from ferry.shared.hashing import Check, CheckProcess, Mismatches, Xxh3s, check_mapped
from ferry.shared.model import Base
from ferry.shared.progress import Progress, ProgressCallback, no_progress


@dataclass(frozen=True)
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
    #: a delta: the earlier bundles the target must have received first
    bases: tuple[Base, ...] = ()
    #: the files of ferry's install kit the bundle carries (``ferry/kit/<name>``), each checked by sha256
    kit: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": self.path,
            "volumes": list(self.volumes),
            "memberCount": self.members,
            "bytes": self.bytes,
            "imageCount": self.images,
            "check": "xxh3" if self.quick else "xxh3+sha256",
            "delta": bool(self.bases),
            "bases": [{"bundleId": b.bundle_id, "created": b.created} for b in self.bases],
            "kit": list(self.kit),
            "seconds": round(self.seconds, 3),
        }


#: the head start of the child: the time this process spends before it hashes (decoding and checking the
#: index, planning), less the child's own planning, per byte of (compressed) index; and what one core
#: hashes per second.  They set the child's share so that both end together (measured on a 5000-tag
#: bundle, 2 cores: 30, 45 and 80 ns gave medians of 0.447, 0.442 and 0.445 s; sha256 at 1.6 GB/s)
INDEX_COST = 45e-9
HASH_RATE = 1.5e9


def ahead_share(index_size: int, blob_bytes: int, jobs: int) -> float:
    """The share of the blob bytes for the child, which hashes on one core from the start, while this
    process first reads the index, then hashes the rest on ``jobs - 1`` threads."""
    head_start = index_size * INDEX_COST * HASH_RATE  # bytes the child hashes meanwhile
    return min(1.0, 1 / jobs + head_start * (jobs - 1) / (max(1, blob_bytes) * jobs))


def run(opts: VerifyOptions, *, on_progress: ProgressCallback = no_progress) -> VerifyResult:
    started = time.monotonic()
    jobs = opts.jobs or os.cpu_count() or 1
    # a blob is checked against its name, and the trailer says where each one is: a child process starts
    # hashing them (planning included) before the index is even read, on a core of its own (threads here
    # would wait for the GIL while the index is decoded)
    ahead: CheckProcess | None = None

    def start_ahead(data: VolumeSet) -> None:
        nonlocal ahead
        if not opts.quick and jobs >= 2:
            data.map_all()
            ahead = CheckProcess(functools.partial(_plan_ahead, data, jobs))

    try:
        b = Bundle.open(opts.path, before_index=start_ahead)
    except BaseException:
        if ahead is not None:
            ahead.abort()
        raise
    with b:
        try:
            return _verify(b, opts, jobs, ahead, on_progress, started)
        except BaseException:
            if ahead is not None:
                ahead.abort()
            raise


def _plan_ahead(data: VolumeSet, jobs: int) -> tuple[list[Check], list[tuple[str, int, int]]]:
    """In the child: the checks of its share of the blobs on the trailer's plan, and (name, offset, size)
    of each, for this process to match against the tar."""
    plan = plan_from_trailer(data) or []
    blobs = [(m, d) for m in plan if (d := member_digest(m.name))]
    n = _ahead_count([m for m, _ in blobs], plan[0].size if plan else 0, jobs, data.size)
    return (
        [_blob_check(data, m, d) for m, d in blobs[:n]],
        [(m.name, m.offset, m.size) for m, _ in blobs[:n]],
    )


def _ahead_count(blobs: list[Member], index_size: int, jobs: int, end: int) -> int:
    """How many of the first blobs (in tar order) are the child's: this process predicts it from the index's
    plan by the same rule, so that it hashes the others; the child's note settles what it really did."""
    total = sum(m.size for m in blobs)
    share = total * ahead_share(index_size, total, jobs)
    n = 0
    for m in blobs:
        if share <= 0 or m.offset + m.size > end:
            break
        share -= m.size
        n += 1
    return n


def _verify(
    b: Bundle,
    opts: VerifyOptions,
    jobs: int,
    ahead: CheckProcess | None,
    on_progress: ProgressCallback,
    started: float,
) -> VerifyResult:
    # every byte gets read: hash straight from the page cache, and read the headers from there too
    b.data.map_all()
    catalog = b.catalog
    total = catalog.total_bytes

    def done(n_bytes: int, n_items: int) -> None:
        on_progress(Progress("verify", n_bytes, total, files=n_items))

    on_progress(Progress("verify", 0, total))
    # the rest of the blobs, where the index says they are, while this thread reads the tar's headers
    # and trailer (which then confirm the plan)
    plan = (b.plan() or [])[3:] if not opts.quick else []
    skip = _ahead_count(plan, b.index_member.size, jobs, b.data.size) if ahead is not None else 0
    early: dict[str, Member] = {}
    early_checks: list[Check] = []
    for d, m in zip(b.order[skip:], plan[skip:]):
        if m.offset + m.size <= b.data.size:
            early[m.name] = m
            early_checks.append(_blob_check(b.data, m, d))  # the index's digests were checked on open
    threads = max(1, jobs - 1) if ahead is not None else jobs
    with ThreadPoolExecutor(1, thread_name_prefix="ferry-verify") as pool:
        hashing = pool.submit(check_mapped, early_checks, threads, done)
        try:
            b.scan()
        finally:
            early_bad, early_x = hashing.result()
    (ahead_bad, ahead_x), ahead_did = ahead.result() if ahead is not None else (({}, {}), [])
    ahead_plan = {name: Member(name, offset, size) for name, offset, size in ahead_did}
    if ahead is not None:  # its bytes count now: the threads here reported only their own
        on_progress(Progress("verify", total, total, files=len(catalog.blobs) + len(catalog.manifests)))
    members: dict[str, Member] = {}
    for m in b.members:
        if m.name != TRAILER_MEMBER:
            members.setdefault(m.name, m)
    checks: list[Check] = []
    kit = {k.member: k for k in b.info.kit}
    for name, m in members.items():
        if (
            name == INDEX_MEMBER
            or m.offset + m.size > b.data.size
            or early.get(name) == m
            or ahead_plan.get(name) == m
        ):
            continue  # the index is checked below; a truncated member is named without reading it
        digest = None if opts.quick else member_digest(name)
        if digest is not None:
            checks.append(_blob_check(b.data, m, digest))
        elif name in kit and not opts.quick:  # a kit file against the sha256 the index gives it
            checks.append((name, b.data.pieces(m.offset, m.size), "sha256", kit[name].sha256))
        else:
            checks.append((name, b.data.pieces(m.offset, m.size), None, None))
    bad, xxh3s = check_mapped(checks, jobs)
    # what was hashed on the plan counts where the tar has the member there (else it was hashed again)
    for plan_of, plan_bad, plan_x in ((early, early_bad, early_x), (ahead_plan, ahead_bad, ahead_x)):
        bad.update((k, v) for k, v in plan_bad.items() if members.get(k) == plan_of[k])
        xxh3s.update((k, v) for k, v in plan_x.items() if members.get(k) == plan_of[k])
    problems = _problems(b, members, bad, xxh3s)
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
        bases=catalog.bases if catalog.carried else (),
        kit=tuple(k.name for k in b.info.kit),
    )


def _blob_check(data: VolumeSet, m: Member, digest: str) -> Check:
    """A blob's bytes against its digest (its name): proof of its content (its xxh3 would add nothing)."""
    alg, hexa = digest.split(":", 1)
    return (m.name, data.pieces(m.offset, m.size), alg, hexa)


def _problems(
    b: Bundle,
    members: dict[str, Member],
    bad: Mismatches,
    xxh3s: Xxh3s,
) -> list[dict[str, object]]:
    """Everything wrong with the bundle, each naming its member, volume(s) and the images it breaks.

    The structure is the reader's one check (:meth:`Bundle.problems`: members against the index and the
    trailer, truncation, volumes, the end); then content: ``members`` is the first member of each name,
    ``bad`` maps each blob whose bytes do not match its name to (algorithm, actual hex), and ``xxh3s``
    holds the xxh3 of every member that was hashed, each compared here with the trailer."""
    problems: list[dict[str, object]] = []
    end = b.data.size

    def problem(member: str | None, what: str, offset: int, size: int, digest: str | None = None) -> None:
        entry: dict[str, object] = {
            "member": member,
            "problem": what,
            "volumes": b.volume_names(offset, size),
        }
        if digest is not None:
            entry["digest"] = digest
        problems.append(entry)

    for found in b.problems():
        entry: dict[str, object] = {
            "member": found.member,
            "problem": found.what,
            "volumes": list(found.volumes)
            if found.volumes is not None
            else b.volume_names(found.offset, found.size),
        }
        if found.digest is not None:
            entry["digest"] = found.digest
        problems.append(entry)
    trailer = {n: x for n, _, x in b.trailer.members} if b.trailer else {}
    index = members.get(INDEX_MEMBER)
    if index is not None and b.trailer is not None and index.offset + index.size <= end:
        x = xxh3_of(b.data.read_exact(index.offset, index.size))
        if INDEX_MEMBER in trailer and trailer[INDEX_MEMBER] != x:
            problem(
                INDEX_MEMBER,
                "xxh3 does not match the trailer (bytes changed in transit)",
                index.offset,
                index.size,
            )
        if x != b.trailer.index_xxh3:
            problem(INDEX_MEMBER, "index checksum does not match the trailer", index.offset, index.size)
    for name, (alg, got) in bad.items():
        m = members[name]
        problem(name, f"content hashes to {alg}:{got}", m.offset, m.size, member_digest(name))
    for name, got in xxh3s.items():
        want = trailer.get(name)
        if want is not None and got != want and name not in bad:
            m = members[name]
            problem(
                name,
                "xxh3 does not match the trailer (bytes changed in transit)",
                m.offset,
                m.size,
                member_digest(name),
            )
    if any("digest" in p for p in problems):
        # which images each damaged blob breaks: worth walking every image only when something is damaged
        images_of = _images_by_digest(b)
        for p in problems:
            if "digest" in p:
                p["images"] = images_of.get(str(p["digest"]), [])
    return problems


def _images_by_digest(b: Bundle) -> dict[str, list[str]]:
    """digest -> every image ref (``repo:tag`` / ``repo@digest``) that needs it."""
    out: dict[str, list[str]] = {}
    for image in b.catalog.images():
        for d in b.catalog.closure(image.digest):
            out.setdefault(d, []).append(image.ref)
    return out


__all__ = ["VerifyOptions", "VerifyResult", "run"]
