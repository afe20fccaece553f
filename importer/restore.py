"""``ferry restore``: a bundle into registry storage (Harbor 1.x ``/data/registry``, or any Distribution root).

Order: the bundle is opened and checked (index, trailer, member layout) before anything is written; blobs
and manifests are written and verified as they land; tags come last, only after the bundle proved complete;
then Harbor is told (Redis cache, projects, sync) or the exact next steps are listed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ferry.shared.bundle.source import open_source
from ferry.shared.delta import base_missing
from ferry.shared.errors import FerryError, OutputError, UsageError
from ferry.shared.model import Catalog
from ferry.shared.progress import ProgressCallback, no_progress
from ferry.shared.storage.paths import StorageLayout, TagsDir
from ferry.shared.storage.s3fs import S3Config
from ferry.shared.storage.s3sink import S3TreeSink
from ferry.shared.storage.writer import (
    Owner,
    RestoreStats,
    RootClaim,
    StorageTreeSink,
    blob_present,
    carried_missing,
    existing_blobs,
    tag_target,
)
from ferry.shared.store import ImageSource
from ferry.shared.transfer import copy

from . import harbor1
from .names import map_names, rename

log = logging.getLogger(__name__)

HARBOR_OWNER = Owner(10000, 10000)


@dataclass(frozen=True)
class RestoreOptions:
    bundle: str  # a path, or "-" for stdin
    root: Path
    owner: Owner | None = HARBOR_OWNER
    dry_run: bool = False
    jobs: int = 0
    redis_url: str | None = None
    redis_dump: Path | None = None
    harbor: harbor1.HarborAccess | None = None
    #: move tags the target has at another digest (else they are kept and reported, and the run fails)
    overwrite: bool = False
    #: ``--map OLD=NEW`` prefix rewrites; with a Harbor target one-level names go to ``default_project``
    maps: tuple[tuple[str, str], ...] = ()
    #: write into the storage tree in an S3 bucket (``s3://BUCKET/PREFIX``) instead of ``root``
    s3_url: str | None = None
    s3: S3Config | None = None
    default_project: str = "library"


@dataclass(frozen=True)
class Plan:
    repositories: int
    tags: int
    blobs_to_write: int
    bytes_to_write: int
    blobs_present: int
    tags_to_move: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "repositoryCount": self.repositories,
            "tagCount": self.tags,
            "blobsToWrite": self.blobs_to_write,
            "bytesToWrite": self.bytes_to_write,
            "blobsPresent": self.blobs_present,
            "tagsToMove": list(self.tags_to_move),
        }


@dataclass(frozen=True)
class RestoreResult:
    root: str
    dry_run: bool
    plan: Plan
    blobs_written: int = 0
    blobs_present: int = 0
    bytes_written: int = 0
    tags_written: int = 0
    tags_moved: tuple[tuple[str, str, str], ...] = ()
    tags_kept: tuple[tuple[str, str, str], ...] = ()
    redis_keys_deleted: int | None = None
    redis_dump_removed: bool | None = None
    harbor: harbor1.HarborSync | None = None
    orphans: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    seconds: float = 0.0
    projects: tuple[str, ...] = field(default=())
    #: (bundle name, target name) of every repository restored under another name
    renamed: tuple[tuple[str, str], ...] = ()
    #: what Harbor 1.x's own API and UI cannot describe among what was restored (its /v2 serves it exactly)
    harbor_limits: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "root": self.root,
            "dryRun": self.dry_run,
            "plan": self.plan.to_dict(),
            "blobsWritten": self.blobs_written,
            "blobsPresent": self.blobs_present,
            "bytesWritten": self.bytes_written,
            "tagsWritten": self.tags_written,
            "ok": not self.tags_kept,
            "tagsMoved": [{"tag": t, "from": a, "to": b} for t, a, b in self.tags_moved],
            "tagsKept": [{"tag": t, "target": a, "bundle": b} for t, a, b in self.tags_kept],
            "projects": list(self.projects),
            "renamed": [{"from": a, "to": b} for a, b in self.renamed],
            "harborLimits": list(self.harbor_limits),
            "repositoriesWithoutProject": list(self.orphans),
            "nextSteps": list(self.next_steps),
            "seconds": round(self.seconds, 3),
        }
        if self.redis_keys_deleted is not None:
            d["redisKeysDeleted"] = self.redis_keys_deleted
        if self.redis_dump_removed is not None:
            d["redisDumpRemoved"] = self.redis_dump_removed
        if self.harbor is not None:
            d["harbor"] = {
                "version": self.harbor.version,
                "projectsCreated": list(self.harbor.created),
                "projectsExisting": list(self.harbor.existing),
                "syncRegistry": self.harbor.synced_registry,
                "syncQuota": self.harbor.synced_quota,
            }
        return d


def plan(catalog: Catalog, root: Path, existing: set[str] | None = None) -> Plan:
    """What a restore into ``root`` would write; ``existing`` is :func:`existing_blobs` when already listed."""
    layout = StorageLayout.for_root(root)
    if existing is None:
        existing = existing_blobs(layout, catalog)
    moves = []
    for repo in catalog.repositories:
        if not os.path.isdir(layout.path(TagsDir(repo.name))):
            continue  # a repository without tags yet: nothing to move, and no open per tag
        for tag, d in repo.tags.items():
            old = tag_target(layout, repo.name, tag)
            if old is not None and old != d:
                moves.append(f"{repo.name}:{tag}")
    return _plan(catalog, lambda d, size: blob_present(layout, existing, d, size), tuple(moves))


def _plan(catalog: Catalog, present: Callable[[str, int], bool], moves: tuple[str, ...]) -> Plan:
    """The plan of a restore into a target where ``present(digest, size)`` says what is there already
    (what a delta's bases carried is checked before: it counts as there)."""
    write = there = nbytes = 0
    for d in (*catalog.blobs, *catalog.manifests):
        size = catalog.size_of(d)
        if d in catalog.carried or present(d, size):
            there += 1
        else:
            write += 1
            nbytes += size
    return Plan(
        repositories=len(catalog.repositories),
        tags=sum(len(r.tags) for r in catalog.repositories),
        blobs_to_write=write,
        bytes_to_write=nbytes,
        blobs_present=there,
        tags_to_move=moves,
    )


def _check_owner(owner: Owner | None) -> None:
    if owner is None or os.geteuid() == 0:
        return
    if (owner.uid, owner.gid) != (os.geteuid(), os.getegid()):
        raise UsageError(
            f"cannot give files to {owner.uid}:{owner.gid} when running as uid {os.geteuid()} (not root)",
            hint="Run as root (Harbor's storage belongs to 10000:10000), or pass --owner keep.",
        )


def run(
    opts: RestoreOptions,
    *,
    stdin: BinaryIO | None = None,
    on_progress: ProgressCallback = no_progress,
    source: ImageSource | None = None,
) -> RestoreResult:
    """``source``: any image source instead of the bundle ``opts.bundle`` names (``ferry copy``)."""
    started = time.monotonic()
    on_s3 = opts.s3_url is not None
    # a bucket has no owners: --owner only applies to a file system
    _check_owner(opts.owner if not opts.dry_run and not on_s3 else None)
    if opts.redis_url:
        harbor1.check_redis_url(opts.redis_url)
    try:
        if not on_s3 and opts.root.exists() and not opts.root.is_dir():
            raise UsageError(f"--root {opts.root}: not a directory")
    except PermissionError:
        raise UsageError(
            f"--root {opts.root}: permission denied", hint="Run as a user who may write there."
        ) from None
    opened = open_source(opts.bundle, stdin) if source is None else None
    source = source if source is not None else opened
    assert source is not None
    try:
        # Harbor 1.x cannot serve a one-level name (its token service answers 500): on a Harbor target
        # `alpine` lands as `library/alpine`, as push does; without one, names stay as they are
        names = map_names(
            [r.name for r in source.catalog.repositories],
            harbor=opts.harbor is not None,
            default_project=opts.default_project,
            maps=opts.maps,
        )
        renamed = tuple((old, new) for old, new in names.items() if old != new)
        source.catalog = rename(source.catalog, names)
        catalog = source.catalog
        projects, orphans = harbor1.projects_of([r.name for r in catalog.repositories])
        if opts.s3_url is not None:
            s3sink = S3TreeSink(opts.s3_url, opts.s3 or S3Config(), overwrite=opts.overwrite)
            if catalog.carried:
                lacking = s3sink.check_carried(catalog)
                if lacking:
                    raise base_missing(catalog, lacking, target=opts.s3_url)
            the_plan = _plan(catalog, s3sink.has_blob, ())
            if opts.dry_run:
                return _dry_run(opts.s3_url, the_plan, projects, orphans, renamed, started)
            copy(source, s3sink, on_progress=on_progress)
            return _after(opts, s3sink.stats, the_plan, catalog, projects, orphans, renamed, started)
        # listed once, for the plan and for the writer
        existing = existing_blobs(StorageLayout.for_root(opts.root), catalog)
        if catalog.carried:
            # a delta: what its bases carried must be here already, before anything is written (a dry
            # run says so too: the restore would fail)
            lacking = carried_missing(StorageLayout.for_root(opts.root), existing, catalog)
            if lacking:
                raise base_missing(catalog, lacking, target=f"--root {opts.root}")
        the_plan = plan(catalog, opts.root, existing)
        if opts.dry_run:
            return _dry_run(str(opts.root), the_plan, projects, orphans, renamed, started)
        try:
            opts.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--root {opts.root}: cannot create it ({e.strerror})") from None
        claim = RootClaim(str(opts.root)).acquire()
        try:
            sink = StorageTreeSink(
                str(opts.root), owner=opts.owner, jobs=opts.jobs, existing=existing, overwrite=opts.overwrite
            )
            copy(source, sink, on_progress=on_progress)
        except (Exception, KeyboardInterrupt):
            # cleaned up (the sink removed its temp files): the next run need not sweep.  Not on
            # SystemExit from a signal in a forked child, nor when killed: then the claim stays
            claim.release()
            raise
        claim.release()
    finally:
        if opened is not None:
            opened.close()

    return _after(opts, sink.stats, the_plan, catalog, projects, orphans, renamed, started)


def _dry_run(
    where: str,
    the_plan: Plan,
    projects: list[str],
    orphans: list[str],
    renamed: tuple[tuple[str, str], ...],
    started: float,
) -> RestoreResult:
    return RestoreResult(
        where,
        True,
        the_plan,
        projects=tuple(projects),
        orphans=tuple(orphans),
        seconds=time.monotonic() - started,
        renamed=renamed,
    )


def _after(
    opts: RestoreOptions,
    s: RestoreStats,
    the_plan: Plan,
    catalog: Catalog,
    projects: list[str],
    orphans: list[str],
    renamed: tuple[tuple[str, str], ...],
    started: float,
) -> RestoreResult:
    """The steps after the storage is written (Redis, Harbor) and the result."""
    where = opts.s3_url if opts.s3_url is not None else str(opts.root)
    try:
        keys = harbor1.flush_registry_cache(opts.redis_url) if opts.redis_url else None
        dump = harbor1.remove_dump(opts.redis_dump) if opts.redis_dump else None
        sync = harbor1.sync_harbor(opts.harbor, projects) if opts.harbor else None
    except FerryError as e:
        # the storage is complete and correct; only telling Harbor failed: say so, or the user restores
        # everything again (harmless, but hours on a big registry) instead of redoing one step
        e.message = (
            f"the restore itself finished ({s.blobs_written} blobs and {s.tags_written} tags written into "
            f"{where}), but the next step failed: {e.message}"
        )
        e.args = (e.message,)
        e.hint = (e.hint + " " if e.hint else "") + (
            "Running the same restore again writes nothing new and retries the Harbor and Redis steps."
        )
        raise
    steps: list[str] = []
    if sync is None:
        steps = harbor1.next_steps(where, projects, redis_done=keys is not None or bool(dump))
    return RestoreResult(
        root=where,
        dry_run=False,
        plan=the_plan,
        blobs_written=s.blobs_written,
        blobs_present=s.blobs_present,
        bytes_written=s.bytes_written,
        tags_written=s.tags_written,
        tags_moved=tuple(s.tags_moved),
        tags_kept=tuple(s.tags_kept),
        redis_keys_deleted=keys,
        redis_dump_removed=dump,
        harbor=sync,
        projects=tuple(projects),
        orphans=tuple(orphans),
        next_steps=tuple(steps),
        seconds=time.monotonic() - started,
        renamed=renamed,
        harbor_limits=harbor1.api_limits(catalog) if opts.harbor is not None else (),
    )


__all__ = ["HARBOR_OWNER", "Plan", "RestoreOptions", "RestoreResult", "plan", "run"]
