"""``ferry export``: a registry storage tree (directory or tar) into one bundle.

Plan and check first, write second: the scan reads and checks every manifest and finds every missing blob
before the first byte of the bundle is written, so a broken source fails with its complete list of
problems and no output.  Blob bytes are hashed by a child process while the walk goes on; one that turns
out wrong fails the export at the end of the copy, with every broken image named, and no output either.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.shared import __version__
from ferry.shared.bundle.format import BundleInfo, KitFile, encode_index, member_digest
from ferry.shared.bundle.receipt import read_earlier, write_receipt
from ferry.shared.bundle.resume import Partial, ResumePoint, check, claimed, find_partial
from ferry.shared.bundle.tario import BundleOutput
from ferry.shared.bundle.writer import BundleSink
from ferry.shared.delta import BaseSet, make_delta, merge
from ferry.shared.errors import (
    BrokenImages,
    DiskFull,
    OutputError,
    SourceChanged,
    SourceUnreadable,
    UsageError,
)
from ferry.shared.model import Base, Catalog, Skipped, TagChange
from ferry.shared.progress import ProgressCallback, no_progress
from ferry.shared.storage.fs import TarFS, TreeFS, open_tree
from ferry.shared.storage.reader import ScanOptions, ScanResult, Selection, TreeSource, scan
from ferry.shared.storage.s3fs import S3FS, S3Config
from ferry.shared.store import ImageSource
from ferry.shared.transfer import copy

if TYPE_CHECKING:
    from ferry.shared.registry.client import ClientConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    root: Path
    #: None writes the bundle to stdout
    output: Path | None
    selection: Selection = field(default_factory=Selection)
    skip_broken: bool = False
    volume_size: int | None = None
    jobs: int = 0
    #: earlier bundles or receipts: write a delta that ships only what none of them carried
    since: tuple[Path, ...] = ()
    #: also write the bundle's receipt (its index alone) here
    receipt: Path | None = None
    #: continue from ``OUTPUT.partial`` (or its partial volumes), keeping the members that check out
    resume: bool = False
    #: read a live registry over the V2 API instead of the storage tree at ``root``
    registry: ClientConfig | None = None
    #: repositories to read when the registry does not list them (one per line)
    repos_from: Path | None = None
    retries: int = 5
    backoff: float = 0.5
    #: requests (manifests, downloads) in flight against a registry source
    api_jobs: int = 8
    #: read the storage tree in an S3 bucket (``s3://BUCKET/PREFIX``) instead of ``root``
    s3_url: str | None = None
    s3: S3Config | None = None
    #: an install kit (``ferry kit -o DIR``) to carry in the bundle, under ferry/kit/
    with_kit: Path | None = None
    #: replace an existing bundle of that name (else refused before anything is read)
    force: bool = False


@dataclass(frozen=True)
class ExportResult:
    files: tuple[Path, ...]
    repositories: int
    tags: int
    untagged: int
    manifests: int
    blobs: int
    blob_bytes: int
    bundle_bytes: int
    foreign_layers: int
    skipped: tuple[Skipped, ...]
    seconds: float
    bundle_id: str = ""
    #: a delta: the bases it relies on, and what they carried (not in this bundle)
    bases: tuple[Base, ...] = ()
    carried_blobs: int = 0
    carried_manifests: int = 0
    carried_bytes: int = 0
    changes: tuple[TagChange, ...] = ()
    receipt: Path | None = None
    #: members kept from an interrupted export (``--resume``), and their bytes
    resumed: int = 0
    resumed_bytes: int = 0
    #: said once, for the user (what an API export cannot see)
    notes: tuple[str, ...] = ()
    #: the install kit's files carried under ferry/kit/
    kit: tuple[str, ...] = ()

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def to_dict(self) -> dict[str, object]:
        return {
            "files": [str(p) for p in self.files],
            "bundleId": self.bundle_id,
            "receipt": str(self.receipt) if self.receipt else None,
            "delta": bool(self.bases),
            "bases": [{"bundleId": b.bundle_id, "created": b.created} for b in self.bases],
            "carried": {
                "blobCount": self.carried_blobs,
                "manifestCount": self.carried_manifests,
                "bytes": self.carried_bytes,
            },
            "tagsNewCount": self.count("new"),
            "tagsMovedCount": self.count("moved"),
            "tagsGoneCount": self.count("gone"),
            "resumed": self.resumed,
            "resumedBytes": self.resumed_bytes,
            "notes": list(self.notes),
            "kit": list(self.kit),
            "ok": True,
            "repositoryCount": self.repositories,
            "tagCount": self.tags,
            "untaggedCount": self.untagged,
            "manifestCount": self.manifests,
            "blobCount": self.blobs,
            "blobBytes": self.blob_bytes,
            "bundleBytes": self.bundle_bytes,
            "foreignLayerCount": self.foreign_layers,
            "skipped": [
                {"image": s.ref, "digest": s.digest, "reason": s.reason, "missing": list(s.missing)}
                for s in self.skipped
            ],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Identity:
    """What makes two exports of one source differ: kept from the partial when resuming."""

    bundle_id: str
    created: str
    mtime: int

    @classmethod
    def new(cls) -> _Identity:
        now = time.time()
        return cls(uuid.uuid4().hex, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), int(now))


def _tree_source(opts: ExportOptions, fs: TreeFS) -> dict[str, str]:
    if opts.s3_url is not None:
        return {"kind": "s3", "path": opts.s3_url, "host": socket.gethostname()}
    return {
        "kind": "tar" if isinstance(fs, TarFS) else "directory",
        "path": os.path.abspath(opts.root),
        "host": socket.gethostname(),
    }


def _info(
    opts: ExportOptions, source: dict[str, str], ident: _Identity, kit: tuple[KitFile, ...]
) -> BundleInfo:
    sel = opts.selection
    return BundleInfo(
        ferry_version=__version__,
        created=ident.created,
        source=source,
        options={
            "untagged": sel.untagged,
            "include": list(sel.include),
            "exclude": list(sel.exclude),
            "skip_broken": opts.skip_broken,
        },
        volume_size=opts.volume_size,
        bundle_id=ident.bundle_id,
        kit=kit,
    )


def _write(
    opts: ExportOptions,
    source: ImageSource,
    described: dict[str, str],
    on_progress: ProgressCallback,
    ident: _Identity,
    point: ResumePoint | None,
    kit: tuple[KitFile, ...],
) -> tuple[BundleOutput, BundleSink]:
    out = BundleOutput(opts.output, opts.volume_size)
    out.resumable = opts.output is not None
    if point is not None:
        out.resume(point.paths, point.pos)
    sink = BundleSink(
        out, _info(opts, described, ident, kit), mtime=ident.mtime, resume=point, kit_dir=opts.with_kit
    )
    try:
        copy(source, sink, on_progress=on_progress)
    except DiskFull as e:
        if out.kept:
            e.hint = (
                f"{out.pos} bytes are kept in {', '.join(map(str, out.kept))}: free space (or move them to a "
                "larger disk with the same names) and run the same command with --resume to continue."
            )
        raise
    return out, sink


def _scan(
    opts: ExportOptions,
    on_progress: ProgressCallback,
    *,
    defer_hashing: bool,
    skip_broken: bool,
    bases: BaseSet | None,
    written: frozenset[str] = frozenset(),
) -> tuple[ScanResult, TreeFS]:
    fs: TreeFS = S3FS(opts.s3_url, opts.s3 or S3Config()) if opts.s3_url is not None else open_tree(opts.root)
    log.info("scanning %s", fs.description)
    try:
        options = ScanOptions(
            selection=opts.selection,
            skip_broken=skip_broken,
            jobs=opts.jobs,
            defer_hashing=defer_hashing,
            # what a base carried is not bundled, and what an interrupted run wrote is checked in its
            # partial: their bytes need not be read here
            known=(frozenset(bases.carried) if bases is not None else frozenset()) | written,
            described=bases.described if bases is not None else None,
        )
        result = scan(fs, options, on_progress)
    finally:
        fs.close()  # the write phase copies by extent and needs no open view
    if bases is not None:
        result = dataclasses.replace(result, catalog=make_delta(result.catalog, bases))
    return result, fs


def _bases(opts: ExportOptions) -> BaseSet | None:
    if not opts.since:
        return None
    earlier = [read_earlier(p) for p in opts.since]
    for e in earlier:
        log.info("base %s (created %s) from %s", e.bundle_id, e.created, e.where)
    return merge(earlier)


def _partial(opts: ExportOptions) -> Partial | None:
    if not opts.resume:
        return None
    if opts.output is None:
        raise UsageError("--resume cannot be combined with -o - (a stream cannot be continued)")
    partial = find_partial(opts.output, opts.volume_size)
    if partial is None:
        log.info("no partial export of %s to resume: exporting from the start", opts.output)
    return partial


def _begin(opts: ExportOptions) -> tuple[Partial | None, BaseSet | None, _Identity]:
    """What every export starts from: the partial to resume, the bases of a delta, and the identity (the
    partial's, so that the finished bundle is the one the interrupted run would have written)."""
    partial = _partial(opts)
    bases = _bases(opts)
    ident = _Identity.new()
    if partial is not None and partial.info.bundle_id is not None:
        ident = _Identity(partial.info.bundle_id, partial.info.created, partial.mtime)
    return partial, bases, ident


def _resume_point(
    opts: ExportOptions,
    catalog: Catalog,
    source: dict[str, str],
    partial: Partial,
    ident: _Identity,
    kit: tuple[KitFile, ...],
) -> ResumePoint | None:
    order = catalog.member_order()
    index = encode_index(catalog, _info(opts, source, ident, kit), order)
    point = check(partial, index, catalog, order, jobs=opts.jobs)
    if point is None:
        log.warning(
            "%s was written from another source or with other options: exporting from the start",
            partial.paths[0],
        )
    else:
        log.info("resuming after %d members (%d bytes) that check out", len(point.members), point.pos)
    return point


def run(opts: ExportOptions, *, on_progress: ProgressCallback = no_progress) -> ExportResult:
    started = time.monotonic()
    if opts.receipt is not None and not opts.receipt.parent.is_dir():
        raise OutputError(f"--receipt {opts.receipt}: its directory does not exist")
    # hashed once, before the walk (a folder that is no kit is refused at once)
    kit: tuple[KitFile, ...] = ()
    if opts.with_kit is not None:
        from .kit import kit_files

        kit = kit_files(opts.with_kit)
    if opts.output is not None and not opts.force:
        there = [p for p in (opts.output, opts.output.with_name(opts.output.name + ".000")) if p.exists()]
        if there:
            raise OutputError(
                f"{there[0]} exists: refusing to overwrite it",
                hint="Pass --force to replace it, or name another output with -o.",
            )
    if opts.registry is not None:
        return _run_registry(opts, opts.registry, on_progress, started, kit)
    partial, bases, ident = _begin(opts)
    written = claimed(partial) if partial is not None and partial.info.bundle_id is not None else frozenset()
    # blobs are hashed in the background from the walk on; a wrong one aborts the bundle at the end.
    # -j 1 asks for one core: then they are hashed after the walk, in this process
    defer = opts.jobs != 1
    result, fs = _scan(
        opts, on_progress, defer_hashing=defer, skip_broken=opts.skip_broken, bases=bases, written=written
    )
    point = None
    if written:
        assert partial is not None
        point = _resume_point(opts, result.catalog, _tree_source(opts, fs), partial, ident, kit)
        if point is None:  # another source, or other options: nothing of the partial is of use
            ident = _Identity.new()
            result, fs = _scan(
                opts, on_progress, defer_hashing=defer, skip_broken=opts.skip_broken, bases=bases
            )
    try:
        out, sink = _write(opts, TreeSource(result), _tree_source(opts, fs), on_progress, ident, point, kit)
    except (BrokenImages, SourceChanged, SourceUnreadable) as e:
        if isinstance(e, BrokenImages) and not opts.skip_broken:
            raise  # it names every broken image already
        # blobs that are wrong, unreadable or gone showed only while copying: that bundle is gone; scan
        # again, hashing first, so that every broken image is named (or, with --skip-broken, left out of
        # the index this time).  A rare, slower path
        log.info("%s; exporting again, checking every blob first", e.message)
        result, fs = _scan(opts, on_progress, defer_hashing=False, skip_broken=opts.skip_broken, bases=bases)
        ident, point = _Identity.new(), None
        out, sink = _write(opts, TreeSource(result), _tree_source(opts, fs), on_progress, ident, point, kit)
    notes: tuple[str, ...] = ()
    if result.untagged_left:
        notes = (
            f"{result.untagged_left} manifests that no tag reaches (untagged) were left out: --untagged "
            "exports them by digest",
        )
    return _result(opts, result.catalog, out, sink, ident, point, started, notes)


def _result(
    opts: ExportOptions,
    catalog: Catalog,
    out: BundleOutput,
    sink: BundleSink,
    ident: _Identity,
    point: ResumePoint | None,
    started: float,
    notes: tuple[str, ...] = (),
) -> ExportResult:
    if opts.receipt is not None:
        write_receipt(opts.receipt, sink.index_data)
    carried = catalog.carried
    return ExportResult(
        files=tuple(out.files),
        repositories=len(catalog.repositories),
        tags=sum(len(r.tags) for r in catalog.repositories),
        untagged=sum(len(r.untagged) for r in catalog.repositories),
        manifests=sum(1 for d in catalog.manifests if d not in carried),
        blobs=sum(1 for d in catalog.blobs if d not in carried),
        blob_bytes=catalog.member_bytes,
        bundle_bytes=out.pos,
        foreign_layers=len({f.digest for m in catalog.manifests.values() for f in m.foreign}),
        skipped=catalog.skipped,
        seconds=time.monotonic() - started,
        bundle_id=ident.bundle_id,
        bases=catalog.bases,
        carried_blobs=sum(1 for d in catalog.blobs if d in carried),
        carried_manifests=sum(1 for d in catalog.manifests if d in carried),
        carried_bytes=catalog.total_bytes - catalog.member_bytes,
        changes=catalog.changes,
        receipt=opts.receipt,
        resumed=point.blobs if point is not None else 0,
        resumed_bytes=point.blob_bytes if point is not None else 0,
        notes=notes,
        kit=tuple(k.name for k in sink.info.kit),
    )


def _run_registry(
    opts: ExportOptions,
    config: ClientConfig,
    on_progress: ProgressCallback,
    started: float,
    kit: tuple[KitFile, ...],
) -> ExportResult:
    """Export from a live registry over the V2 API (see :mod:`ferry.shared.registry.source`)."""
    # imported here: an export of a local tree (the common case, and every wave) does not load the HTTP
    # stack (30 ms of a 0.6 s delta export)
    from ferry.shared.registry.client import RegistryClient, connect, redact
    from ferry.shared.registry.source import RegistryScanOptions, RegistrySource, scan_registry

    partial, bases, ident = _begin(opts)
    client = RegistryClient(config)
    try:
        connect(client, retries=opts.retries, backoff=opts.backoff)
        scan_opts = RegistryScanOptions(
            selection=opts.selection,
            skip_broken=opts.skip_broken,
            repos_from=opts.repos_from,
            jobs=opts.api_jobs,
            retries=opts.retries,
            backoff=opts.backoff,
        )
        found = scan_registry(client, scan_opts, on_progress)
        catalog = make_delta(found.catalog, bases) if bases is not None else found.catalog
        found = dataclasses.replace(found, catalog=catalog)
        described = {"kind": "registry", "url": redact(config.url), "host": socket.gethostname()}
        point = None
        if partial is not None:
            point = _resume_point(opts, catalog, described, partial, ident, kit)
            if point is None:
                ident = _Identity.new()
        kept = (
            frozenset(d for name, _, _ in point.members if (d := member_digest(name)))
            if point
            else frozenset()
        )
        source = RegistrySource(client, found, jobs=opts.api_jobs, retries=opts.retries, skip=kept)
        out, sink = _write(opts, source, described, on_progress, ident, point, kit)
    finally:
        client.close()
    notes = (found.untagged_note,) if found.untagged_note else ()
    for note in notes:
        log.warning("%s", note)
    return _result(opts, catalog, out, sink, ident, point, started, notes)


__all__ = ["ExportOptions", "ExportResult", "run"]
