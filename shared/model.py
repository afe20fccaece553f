"""What a source holds, as plain frozen data: the catalog that becomes a bundle's index.

A :class:`Catalog` is content-addressed: a manifest or blob is described once, whatever number of
repositories hold it; each :class:`Repository` names the manifests it holds and its tags.  The blobs a
repository needs (its ``_layers`` links) follow from its manifests, so they are derived, not stored.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .digest import SLOTS
from .manifest import BlobRef, ChildRef


@dataclass(frozen=True, **SLOTS)
class Blob:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True, **SLOTS)
class Manifest:
    digest: str
    media_type: str
    size: int
    #: bundled configs and layers, config first
    blobs: tuple[str, ...]
    #: foreign layers whose bytes were not in the source (clients fetch them from their urls)
    foreign: tuple[BlobRef, ...] = ()
    children: tuple[ChildRef, ...] = ()
    subject: str | None = None
    artifact_type: str | None = None
    #: children of an index not in the bundle (an export with ``--platform``): the index keeps its exact
    #: bytes, so it still lists them; nothing else needs them
    left_out: tuple[str, ...] = ()

    @property
    def held_children(self) -> tuple[ChildRef, ...]:
        """The children the bundle holds: all of them, unless the index is partial."""
        if not self.left_out:
            return self.children
        return tuple(c for c in self.children if c.digest not in self.left_out)


@dataclass(frozen=True)
class Repository:
    name: str
    #: tag -> manifest digest (the tag's ``current`` target)
    tags: Mapping[str, str]
    #: every manifest this repository holds: tag targets, index children, and untagged manifests
    manifests: tuple[str, ...]
    #: top-level manifests exported without a tag (``--untagged``)
    untagged: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """An image left out of the bundle, and why (broken with ``--skip-broken``, or unpullable tag)."""

    repository: str
    tag: str | None
    digest: str | None
    reason: str
    missing: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        if self.tag is not None:
            return f"{self.repository}:{self.tag}"
        return f"{self.repository}@{self.digest}" if self.digest else self.repository


@dataclass(frozen=True)
class Image:
    """One exported entry point: a tag, or an untagged top-level manifest."""

    repository: str
    tag: str | None
    digest: str
    media_type: str
    size: int

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag is not None else f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Base:
    """An earlier bundle (wave) a delta bundle relies on: what it carried is already on the target."""

    bundle_id: str
    created: str


@dataclass(frozen=True)
class TagChange:
    """A tag as a delta sees it against its bases: ``new``, ``moved`` (from ``old``) or ``gone`` (in a
    base, not in this selection: reported, never deleted)."""

    repository: str
    tag: str
    kind: str
    #: the tag's digest in this bundle (``gone``: in the base)
    digest: str
    #: ``moved``: the digest the base had
    old: str | None = None
    #: ``moved``/``gone``: the base that had the tag
    base: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Catalog:
    """What a source holds.  In a delta (``carried`` not empty) the catalog still describes the complete
    selection; ``carried`` names what earlier bundles (``bases``) already brought to the target, whose
    bytes the source does not have: its ``contents()`` yields only :meth:`member_order`."""

    repositories: tuple[Repository, ...]
    manifests: Mapping[str, Manifest]
    blobs: Mapping[str, Blob]
    skipped: tuple[Skipped, ...] = ()
    #: digest -> bundle id of the base that carried it (a delta); empty for a complete catalog
    carried: Mapping[str, str] = field(default_factory=dict)
    #: the earlier bundles ``carried`` names, oldest first
    bases: tuple[Base, ...] = ()
    #: tags against the bases (a delta): new, moved and gone
    changes: tuple[TagChange, ...] = ()
    _closure_cache: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    def images(self) -> Iterator[Image]:
        for repo in self.repositories:
            for tag, digest in sorted(repo.tags.items()):
                m = self.manifests[digest]
                yield Image(repo.name, tag, digest, m.media_type, m.size)
            for digest in repo.untagged:
                m = self.manifests[digest]
                yield Image(repo.name, None, digest, m.media_type, m.size)

    def closure(self, digest: str) -> tuple[str, ...]:
        """Every manifest and blob digest ``digest`` needs, itself first (children before their blobs).

        Iterative, in the order a recursive walk gives (a manifest, its children's closures, its blobs):
        an index may nest others thousands deep in a hostile bundle."""
        cached = self._closure_cache.get(digest)
        if cached is not None:
            return cached
        out: dict[str, None] = {}
        stack: list[tuple[str, bool]] = [(digest, False)]
        while stack:
            d, blobs_now = stack.pop()
            m = self.manifests[d]
            if blobs_now:
                for b in m.blobs:
                    out.setdefault(b, None)
                continue
            if d in out:
                continue
            done = self._closure_cache.get(d)
            if done is not None:
                for x in done:
                    out.setdefault(x, None)
                continue
            out[d] = None
            stack.append((d, True))
            stack.extend((c.digest, False) for c in reversed(m.held_children))
        result = tuple(out)
        self._closure_cache[digest] = result
        return result

    def repository_blobs(self, repo: Repository) -> list[str]:
        """Config and layer digests the repository links in ``_layers`` (first-seen order, no repeats)."""
        out: dict[str, None] = {}
        for d in repo.manifests:
            for b in self.manifests[d].blobs:
                out.setdefault(b, None)
        return list(out)

    # orders and sums are asked several times per run (writer, source, checks): computed once per catalog
    # (a cached_property lives in the instance, so dataclasses.replace starts afresh)
    def manifest_order(self) -> list[str]:
        """Every manifest, children before the indexes that list them (the order a registry accepts)."""
        return list(self._manifest_order)

    @functools.cached_property
    def _manifest_order(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        entered: set[str] = set()
        for top in sorted(self.manifests):
            # iterative post-order: a manifest once all its children are out (indexes may nest deeply)
            stack: list[tuple[str, bool]] = [(top, False)]
            while stack:
                d, children_done = stack.pop()
                if children_done:
                    out[d] = None
                    continue
                if d in entered:
                    continue  # done, or (only in an index no reader accepts) a cycle
                entered.add(d)
                stack.append((d, True))
                stack.extend(
                    (c.digest, False)
                    for c in reversed(self.manifests[d].held_children)
                    if c.digest in self.manifests and c.digest not in entered
                )
        return tuple(out)

    def blob_order(self) -> list[str]:
        """Configs and layers in repository order: a streaming reader meets a repository's blobs together."""
        return list(self._blob_order)

    @functools.cached_property
    def _blob_order(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for repo in self.repositories:
            for b in self.repository_blobs(repo):
                out.setdefault(b, None)
        for b in sorted(self.blobs):  # blobs no repository lists cannot exist, but never drop one
            out.setdefault(b, None)
        return tuple(out)

    def member_order(self) -> list[str]:
        """What the source yields and a bundle holds: :meth:`blob_order` then :meth:`manifest_order`,
        without what a base carried."""
        return list(self._member_order)

    @functools.cached_property
    def _member_order(self) -> tuple[str, ...]:
        order = self._blob_order + self._manifest_order
        if not self.carried:
            return order
        return tuple(d for d in order if d not in self.carried)

    def carried_order(self) -> list[str]:
        """What a base carried, in the same order: blobs, then manifests children first."""
        if not self.carried:
            return []
        return [d for d in self.blob_order() + self.manifest_order() if d in self.carried]

    def base(self, bundle_id: str) -> Base:
        for b in self.bases:
            if b.bundle_id == bundle_id:
                return b
        return Base(bundle_id, "")

    def size_of(self, digest: str) -> int:
        b = self.blobs.get(digest)
        return b.size if b is not None else self.manifests[digest].size

    @functools.cached_property
    def total_bytes(self) -> int:
        # cached: a catalog never changes, and at 100k tags this sum runs over 340k entries
        return sum(b.size for b in self.blobs.values()) + sum(m.size for m in self.manifests.values())

    @functools.cached_property
    def member_bytes(self) -> int:
        """The bytes a source of this catalog holds (a delta: without what its bases carried)."""
        if not self.carried:
            return self.total_bytes
        return self.total_bytes - sum(self.size_of(d) for d in self.carried)

    def repositories_holding(self) -> dict[str, list[str]]:
        """digest -> repositories that need it (a manifest: revision link; a blob: _layers link)."""
        holders: dict[str, list[str]] = {}
        for repo in self.repositories:
            for d in repo.manifests:
                holders.setdefault(d, []).append(repo.name)
            for b in self.repository_blobs(repo):
                holders.setdefault(b, []).append(repo.name)
        return holders


__all__ = ["Base", "Blob", "Catalog", "Image", "Manifest", "Repository", "Skipped", "TagChange"]
