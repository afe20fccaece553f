"""``ferry diff``: does a live registry, or a storage tree, hold what a bundle holds?

For every tag: ``ok`` (the target serves it at the bundle's digest), ``missing`` or ``different`` (both
digests given); untagged manifests and index children by digest; and the blobs each repository needs.  A
registry is asked with HEAD requests only, in parallel (no blob byte is downloaded), under the names a push
would give (``--map``, ``--default-project`` on Harbor); a storage tree by reading its link files, blob data
checked for presence and size (``deep``: also by sha256).  It is the last check after an import, and the
plan for the next wave.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ferry.shared.bundle.reader import Bundle
from ferry.shared.digest import CHUNK, Digest
from ferry.shared.errors import UsageError
from ferry.shared.manifest import SCHEMA1_TYPES
from ferry.shared.model import Catalog
from ferry.shared.registry.client import MANIFEST_ACCEPT, ClientConfig, Credentials, RegistryClient
from ferry.shared.storage.paths import (
    BlobData,
    LayerLink,
    ManifestRevisionLink,
    StorageLayout,
    TagCurrentLink,
)

from .names import map_names


@dataclass(frozen=True)
class DiffOptions:
    bundle: Path
    #: exactly one of the two
    registry: str | None = None
    root: Path | None = None
    credentials: Credentials | None = None
    #: where credentials were looked for (named when the registry answers 401)
    credentials_tried: tuple[str, ...] = ()
    ca_cert: str | None = None
    insecure: bool = False
    retries: int = 5
    #: first retry delay in seconds, doubled each attempt (as push)
    backoff: float = 0.5
    jobs: int = 16
    harbor: bool | None = None  # None: detect
    default_project: str = "library"
    maps: tuple[tuple[str, str], ...] = ()
    #: on a storage tree, hash every blob's data (else presence and size); on a registry, ask for every
    #: blob in every repository that needs it (else each manifest found vouches for its blobs)
    deep: bool = False


@dataclass(frozen=True)
class Entry:
    """One tag, untagged manifest or index child: what the bundle has and what the target has."""

    ref: str  # target reference: repository:tag, or repository@digest
    kind: str  # tag | untagged | child
    status: str  # ok | missing | different
    bundle: str
    target: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "status": self.status,
            "bundle": self.bundle,
            "target": self.target,
        }


@dataclass(frozen=True)
class DiffResult:
    target: str
    entries: tuple[Entry, ...]
    #: (target repository, blob digest, what is wrong: missing | size | damaged)
    blobs: tuple[tuple[str, str, str], ...] = ()
    #: schema 1 images a push skips by default: not counted as missing
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0
    checked_blobs: int = 0

    @property
    def ok(self) -> bool:
        return not self.blobs and all(e.status == "ok" for e in self.entries)

    def counts(self, kind: str) -> dict[str, int]:
        out = {"okCount": 0, "missingCount": 0, "differentCount": 0}
        for e in self.entries:
            if e.kind == kind:
                out[e.status + "Count"] += 1
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "target": self.target,
            "tagStatus": self.counts("tag"),
            "untaggedStatus": self.counts("untagged"),
            "childStatus": self.counts("child"),
            "problems": [e.to_dict() for e in self.entries if e.status != "ok"],
            "blobsChecked": self.checked_blobs,
            "blobs": [{"repository": r, "digest": d, "problem": p} for r, d, p in self.blobs],
            "skipped": list(self.skipped),
            "seconds": round(self.seconds, 3),
        }


#: [(target repository, reference)] -> the digest the target holds for each, or None
Lookup = Callable[[list[tuple[str, str]]], list["str | None"]]


def run(opts: DiffOptions) -> DiffResult:
    if (opts.registry is None) == (opts.root is None):
        raise UsageError("ferry diff needs exactly one target: --registry URL or --root DIR")
    started = time.monotonic()
    with Bundle.open(opts.bundle) as b:
        catalog = b.catalog
    result = _diff_root(catalog, opts) if opts.root is not None else _diff_registry(catalog, opts)
    return DiffResult(
        result.target,
        result.entries,
        result.blobs,
        result.skipped,
        time.monotonic() - started,
        result.checked_blobs,
    )


def _compare(
    catalog: Catalog, names: dict[str, str], manifests_at: Lookup, *, skip_schema1: bool
) -> tuple[list[Entry], list[str]]:
    """Every tag, untagged manifest and index child against ``manifests_at`` (asked all at once, in
    parallel).  Schema 1 tags are left out where a push skips them (``skip_schema1``), and listed."""
    asks: list[tuple[str, str, str, str]] = []  # (kind, target repo, ref, bundle digest)
    skipped: list[str] = []
    for repo in catalog.repositories:
        target = names[repo.name]
        for tag, d in sorted(repo.tags.items()):
            if skip_schema1 and catalog.manifests[d].media_type in SCHEMA1_TYPES:
                skipped.append(f"{target}:{tag}")
                continue
            asks.append(("tag", target, tag, d))
        for d in repo.untagged:
            asks.append(("untagged", target, d, d))
        for d in repo.manifests:
            for c in catalog.manifests[d].held_children:
                asks.append(("child", target, c.digest, c.digest))
    unique = list(dict.fromkeys(asks))  # an index child listed by two indexes is asked once
    answers = manifests_at([(a[1], a[2]) for a in unique])
    entries = []
    for (kind, target, ref, d), got in zip(unique, answers):
        status = "ok" if got == d else "missing" if got is None else "different"
        entries.append(Entry(f"{target}:{ref}" if kind == "tag" else f"{target}@{ref}", kind, status, d, got))
    return entries, skipped


def _diff_registry(catalog: Catalog, opts: DiffOptions) -> DiffResult:
    from .push import open_target

    assert opts.registry is not None
    client = RegistryClient(
        ClientConfig(
            url=opts.registry,
            credentials=opts.credentials,
            credentials_tried=opts.credentials_tried,
            ca_cert=opts.ca_cert,
            insecure=opts.insecure,
            connections=max(4, opts.jobs),
        )
    )
    try:
        _, names = open_target(
            client,
            [r.name for r in catalog.repositories],
            retries=opts.retries,
            backoff=opts.backoff,
            harbor=opts.harbor,
            default_project=opts.default_project,
            maps=opts.maps,
        )

        def manifests_at(refs: list[tuple[str, str]]) -> list[str | None]:
            paths = [f"/v2/{repo}/manifests/{ref}" for repo, ref in refs]
            got = client.head_many(paths, attempts=opts.retries, headers=MANIFEST_ACCEPT, jobs=opts.jobs)
            return [d if status == 200 and d else None for status, d in got]

        entries, skipped = _compare(catalog, names, manifests_at, skip_schema1=True)
        # a registry takes a manifest into a repository only once every blob it needs is there (a PUT
        # before answers MANIFEST_BLOB_UNKNOWN), so a manifest found at its digest vouches for its blobs:
        # asking each blob again triples the requests (15k more over 5000 tags, where the registry itself
        # is the limit here) for what only a blob deleted by hand since could change.  --deep asks anyway
        wanted = _blobs_wanted(catalog, names) if opts.deep else []
        answers = client.head_many(
            [f"/v2/{repo}/blobs/{d}" for repo, d in wanted], attempts=opts.retries, jobs=opts.jobs
        )
        blobs = [(r, d, "missing") for (r, d), (status, _) in zip(wanted, answers) if status != 200]
    finally:
        client.close()
    return DiffResult(opts.registry, tuple(entries), tuple(blobs), tuple(skipped), checked_blobs=len(wanted))


def _blobs_wanted(catalog: Catalog, names: dict[str, str]) -> list[tuple[str, str]]:
    """(target repository, blob) for every config and layer a repository's pushed images need."""
    out = []
    for repo in catalog.repositories:
        target = names[repo.name]
        held: dict[str, None] = {}
        for d in repo.manifests:
            m = catalog.manifests[d]
            if m.media_type not in SCHEMA1_TYPES:
                held.update(dict.fromkeys(m.blobs))
        out += [(target, b) for b in held]
    return out


def _diff_root(catalog: Catalog, opts: DiffOptions) -> DiffResult:
    assert opts.root is not None
    layout = StorageLayout.for_root(opts.root)
    if not os.path.isdir(layout.v2):
        raise UsageError(f"--root {opts.root}: no docker/registry/v2 below it")
    names = map_names(
        [r.name for r in catalog.repositories],
        harbor=False,
        default_project=opts.default_project,
        maps=opts.maps,
    )

    def link(path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                text = f.read(200).decode("ascii", "replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return text if Digest.is_valid(text) else None

    def manifest_at(repo: str, ref: str) -> str | None:
        if Digest.is_valid(ref):
            got = link(layout.path(ManifestRevisionLink(repo, Digest.parse(ref))))
        else:
            got = link(layout.path(TagCurrentLink(repo, ref)))
        if got is None or not os.path.exists(layout.path(BlobData(Digest.parse(got)))):
            return None  # a link to data the registry does not have serves nothing
        return got

    def blob_problem(item: tuple[str, str]) -> str | None:
        repo, d = item
        if link(layout.path(LayerLink(repo, Digest.parse(d)))) != d:
            return "missing (no _layers link)"
        path = layout.path(BlobData(Digest.parse(d)))
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            return "missing (no blob data)"
        if size != catalog.size_of(d):
            return f"wrong size ({size} bytes, the bundle says {catalog.size_of(d)})"
        if opts.deep:
            h = hashlib.new(d.split(":", 1)[0])
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            if f"{h.name}:{h.hexdigest()}" != d:
                return f"damaged (its data hashes to {h.name}:{h.hexdigest()})"
        return None

    # a storage tree serves every manifest the repository links, schema 1 included: nothing is skipped
    with ThreadPoolExecutor(max(1, opts.jobs), thread_name_prefix="ferry-diff") as pool:
        entries, skipped = _compare(
            catalog, names, lambda refs: list(pool.map(lambda x: manifest_at(*x), refs)), skip_schema1=False
        )
        wanted = [(names[r.name], b) for r in catalog.repositories for b in catalog.repository_blobs(r)]
        blobs = [(r, d, p) for (r, d), p in zip(wanted, pool.map(blob_problem, wanted)) if p]
    return DiffResult(str(opts.root), tuple(entries), tuple(blobs), tuple(skipped), checked_blobs=len(wanted))


__all__ = ["DiffOptions", "DiffResult", "Entry", "run"]
