"""``ferry copy SOURCE TARGET``: straight from a source into a target, when both sides are reachable.

SOURCE is a storage tree (directory or tar), a bundle, or a live registry; TARGET a registry (the push
flow: mounts, HEADs, resume, tags last) or a storage root (the restore flow).  Nothing new is written
here: the copy algorithm, the sources and the sinks are the ones export, push and restore use, so a copy
reports exactly what a push or a restore of the same images would.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ferry.shared.bundle.format import INDEX_MEMBER
from ferry.shared.bundle.source import open_source
from ferry.shared.bundle.volumes import volume_name
from ferry.shared.progress import ProgressCallback, no_progress
from ferry.shared.registry.client import ClientConfig, RegistryClient, connect
from ferry.shared.registry.source import RegistryScanOptions, RegistrySource, scan_registry
from ferry.shared.storage.fs import open_tree
from ferry.shared.storage.reader import ScanOptions, Selection, TreeSource, scan
from ferry.shared.store import ImageSource

from . import push, restore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyOptions:
    #: a storage tree or a bundle (path), unless ``source_registry`` is given
    source: str
    source_registry: ClientConfig | None = None
    selection: Selection = field(default_factory=Selection)
    skip_broken: bool = False
    repos_from: Path | None = None
    retries: int = 5
    jobs: int = 8
    #: exactly one: the push of a registry target, or the restore of a storage root (``bundle`` unused)
    push: push.PushOptions | None = None
    restore: restore.RestoreOptions | None = None


def is_bundle(path: Path) -> bool:
    """A ferry bundle (file or volume set) rather than a tar of a storage tree: its first member."""
    first = path if path.is_file() else volume_name(path, 0)
    try:
        with open(first, "rb") as f:
            head = f.read(512)
        return tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape").name == INDEX_MEMBER
    except (OSError, tarfile.TarError):
        return False


def open_any(opts: CopyOptions, on_progress: ProgressCallback) -> tuple[ImageSource, Callable[[], None]]:
    """The source and what closes it."""
    if opts.source_registry is not None:
        client = RegistryClient(opts.source_registry)
        try:
            connect(client, retries=opts.retries, backoff=0.5)
            found = scan_registry(
                client,
                RegistryScanOptions(
                    selection=opts.selection,
                    skip_broken=opts.skip_broken,
                    repos_from=opts.repos_from,
                    jobs=opts.jobs,
                    retries=opts.retries,
                ),
                on_progress,
            )
        except BaseException:
            client.close()
            raise
        if found.untagged_note:
            log.warning("%s", found.untagged_note)
        return RegistrySource(client, found, jobs=opts.jobs, retries=opts.retries), client.close
    path = Path(opts.source)
    if is_bundle(path):
        bundle = open_source(path)
        return bundle, bundle.close
    fs = open_tree(path)
    try:
        # hashed while the copy goes on: a blob that is wrong stops the copy before any tag is set
        result = scan(
            fs,
            ScanOptions(selection=opts.selection, skip_broken=opts.skip_broken, defer_hashing=True),
            on_progress,
        )
    finally:
        fs.close()
    return TreeSource(result), lambda: None


def run(
    opts: CopyOptions, *, on_progress: ProgressCallback = no_progress
) -> push.PushResult | restore.RestoreResult:
    if (opts.push is None) == (opts.restore is None):
        raise ValueError("a copy has exactly one target")
    source, close = open_any(opts, on_progress)
    try:
        if opts.push is not None:
            return push.run(opts.push, source=source, on_progress=on_progress)
        assert opts.restore is not None
        return restore.run(opts.restore, source=source, on_progress=on_progress)
    finally:
        close()


__all__ = ["CopyOptions", "is_bundle", "open_any", "run"]
