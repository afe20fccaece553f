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

from shared import __version__
from shared.bundle.format import BundleInfo
from shared.bundle.receipt import read_earlier, write_receipt
from shared.bundle.tario import BundleOutput
from shared.bundle.writer import BundleSink
from shared.delta import BaseSet, make_delta, merge
from shared.errors import BrokenImages, OutputError, SourceChanged, SourceUnreadable
from shared.model import Base, Skipped, TagChange
from shared.progress import ProgressCallback, no_progress
from shared.storage.fs import TarFS, TreeFS, open_tree
from shared.storage.reader import ScanOptions, ScanResult, Selection, TreeSource, scan
from shared.transfer import copy

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
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
                "blobs": self.carried_blobs,
                "manifests": self.carried_manifests,
                "bytes": self.carried_bytes,
            },
            "tagsNew": self.count("new"),
            "tagsMoved": self.count("moved"),
            "tagsGone": self.count("gone"),
            "repositories": self.repositories,
            "tags": self.tags,
            "untagged": self.untagged,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "bundleBytes": self.bundle_bytes,
            "foreignLayers": self.foreign_layers,
            "skipped": [
                {"image": s.ref, "digest": s.digest, "reason": s.reason, "missing": list(s.missing)}
                for s in self.skipped
            ],
            "seconds": round(self.seconds, 3),
        }


def _write(
    opts: ExportOptions, result: ScanResult, fs: TreeFS, on_progress: ProgressCallback, bundle_id: str
) -> tuple[BundleOutput, BundleSink]:
    sel = opts.selection
    info = BundleInfo(
        ferry_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source={
            "kind": "tar" if isinstance(fs, TarFS) else "directory",
            "path": os.path.abspath(opts.root),
            "host": socket.gethostname(),
        },
        options={
            "untagged": sel.untagged,
            "include": list(sel.include),
            "exclude": list(sel.exclude),
            "skip_broken": opts.skip_broken,
        },
        volume_size=opts.volume_size,
        bundle_id=bundle_id,
    )
    out = BundleOutput(opts.output, opts.volume_size)
    sink = BundleSink(out, info, mtime=int(time.time()))
    copy(TreeSource(result), sink, on_progress=on_progress)
    return out, sink


def _scan(
    opts: ExportOptions,
    on_progress: ProgressCallback,
    *,
    defer_hashing: bool,
    skip_broken: bool,
    bases: BaseSet | None,
) -> tuple[ScanResult, TreeFS]:
    fs = open_tree(opts.root)
    log.info("scanning %s", fs.description)
    try:
        options = ScanOptions(
            selection=opts.selection,
            skip_broken=skip_broken,
            jobs=opts.jobs,
            defer_hashing=defer_hashing,
            # what a base carried is not bundled, so its bytes need not be read
            known=frozenset(bases.carried) if bases is not None else frozenset(),
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


def run(opts: ExportOptions, *, on_progress: ProgressCallback = no_progress) -> ExportResult:
    started = time.monotonic()
    if opts.receipt is not None and not opts.receipt.parent.is_dir():
        raise OutputError(f"--receipt {opts.receipt}: its directory does not exist")
    bases = _bases(opts)
    bundle_id = uuid.uuid4().hex
    # blobs are hashed in the background from the walk on; a wrong one aborts the bundle at the end.
    # -j 1 asks for one core: then they are hashed after the walk, in this process
    result, fs = _scan(
        opts, on_progress, defer_hashing=opts.jobs != 1, skip_broken=opts.skip_broken, bases=bases
    )
    try:
        out, sink = _write(opts, result, fs, on_progress, bundle_id)
    except (BrokenImages, SourceChanged, SourceUnreadable) as e:
        if isinstance(e, BrokenImages) and not opts.skip_broken:
            raise  # it names every broken image already
        # blobs that are wrong, unreadable or gone showed only while copying: that bundle is gone; scan
        # again, hashing first, so that every broken image is named (or, with --skip-broken, left out of
        # the index this time).  A rare, slower path
        log.info("%s; exporting again, checking every blob first", e.message)
        result, fs = _scan(opts, on_progress, defer_hashing=False, skip_broken=opts.skip_broken, bases=bases)
        out, sink = _write(opts, result, fs, on_progress, bundle_id)
    if opts.receipt is not None:
        write_receipt(opts.receipt, sink.index_data)
    catalog = result.catalog
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
        bundle_id=bundle_id,
        bases=catalog.bases,
        carried_blobs=sum(1 for d in catalog.blobs if d in carried),
        carried_manifests=sum(1 for d in catalog.manifests if d in carried),
        carried_bytes=catalog.total_bytes - catalog.member_bytes,
        changes=catalog.changes,
        receipt=opts.receipt,
    )


__all__ = ["ExportOptions", "ExportResult", "run"]
