"""Migrations in waves: what earlier bundles carried, the delta against them, and what an import lacks.

A delta bundle describes the complete current selection, as a full export would; what a *base* (an
earlier bundle, or its receipt) already carried is marked ``carried`` with that base's bundle id and not
bundled.  Content is addressed by digest, so "carried" is exact: a blob, manifest or tag that changed has
another digest and is shipped; one that did not is not.

Attribution is transitive: a base that is itself a delta names, for what it did not bundle, the earlier
base that did.  So the import side can always name the bundle that brought a digest it lacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import BaseMissing
from .model import Base, Blob, Catalog, Manifest, TagChange


@dataclass(frozen=True)
class Earlier:
    """What one earlier bundle (or receipt) says: its catalog and identity."""

    bundle_id: str
    created: str
    catalog: Catalog
    #: where it was read from, for messages
    where: str


@dataclass(frozen=True)
class BaseSet:
    """Every earlier bundle a delta may rely on, merged."""

    bases: tuple[Base, ...]
    #: digest -> bundle id of the bundle that carried its bytes
    carried: dict[str, str]
    #: (repository, tag) -> (digest, bundle id of the newest base that had the tag)
    tags: dict[tuple[str, str], tuple[str, str]]
    #: every manifest and blob the bases described: content-addressed, so an image whose manifest a base
    #: described needs no reading again (see ScanOptions.described)
    described: Catalog = field(default_factory=lambda: Catalog((), {}, {}))


def merge(earlier: Sequence[Earlier]) -> BaseSet:
    """The bases, oldest first (each after the bases it was exported against; a later base's tags win);
    a digest is attributed to the bundle whose members held it, following a base's own bases."""
    bases: dict[str, Base] = {}
    carried: dict[str, str] = {}
    tags: dict[tuple[str, str], tuple[str, str]] = {}
    manifests: dict[str, Manifest] = {}
    blobs: dict[str, Blob] = {}
    # a bundle later in a chain of waves records more bases (they are transitive): it goes after the
    # ones it was exported against even when both were created in the same second
    for e in sorted(earlier, key=lambda e: (len(e.catalog.bases), e.created)):
        manifests.update(e.catalog.manifests)
        blobs.update(e.catalog.blobs)
        for b in e.catalog.bases:
            bases.setdefault(b.bundle_id, b)
        bases.setdefault(e.bundle_id, Base(e.bundle_id, e.created))
        cat = e.catalog
        for d in (*cat.blobs, *cat.manifests):
            carried.setdefault(d, cat.carried.get(d, e.bundle_id))
        for repo in cat.repositories:
            for tag, d in repo.tags.items():
                tags[(repo.name, tag)] = (d, e.bundle_id)
    return BaseSet(tuple(bases.values()), carried, tags, Catalog((), manifests, blobs))


def make_delta(catalog: Catalog, bases: BaseSet) -> Catalog:
    """``catalog`` (complete) as a delta against ``bases``: what they carried marked, the tag changes
    recorded.

    A manifest counts as carried only when everything it needs was carried too (a foreign layer whose
    bytes the base did not have may be in the source now): else it is shipped again with what it needs,
    so the target never gets a manifest before its content."""
    carried = {d: bases.carried[d] for d in (*catalog.blobs, *catalog.manifests) if d in bases.carried}
    changed = True
    while changed:  # indexes: a child shipped makes its index shipped, to any depth
        changed = False
        for d, m in catalog.manifests.items():
            if d in carried and any(
                r not in carried for r in (*m.blobs, *(c.digest for c in m.held_children))
            ):
                del carried[d]
                changed = True
    used = set(carried.values())
    known = {b.bundle_id for b in bases.bases}
    the_bases = tuple(b for b in bases.bases if b.bundle_id in used or b.bundle_id in known)
    changes: list[TagChange] = []
    current: set[tuple[str, str]] = set()
    for repo in catalog.repositories:
        for tag, d in sorted(repo.tags.items()):
            current.add((repo.name, tag))
            before = bases.tags.get((repo.name, tag))
            if before is None:
                changes.append(TagChange(repo.name, tag, "new", d))
            elif before[0] != d:
                changes.append(TagChange(repo.name, tag, "moved", d, old=before[0], base=before[1]))
    for (repo_name, tag), (d, base) in sorted(bases.tags.items()):
        if (repo_name, tag) not in current:
            changes.append(TagChange(repo_name, tag, "gone", d, base=base))
    return dataclasses.replace(
        catalog, carried=carried, bases=the_bases, changes=tuple(changes), _closure_cache={}
    )


def base_missing(catalog: Catalog, missing: Iterable[tuple[str | None, str]], *, target: str) -> BaseMissing:
    """The error for a target that lacks what a delta relies on: ``missing`` is (where, digest) pairs,
    ``where`` a target repository (push) or None (blob data of a storage tree)."""
    pairs = sorted(set(missing), key=lambda p: (p[1], p[0] or ""))
    wanted = {d for _, d in pairs}
    needs: dict[str, list[str]] = {d: [] for d in wanted}
    for image in catalog.images():
        for d in catalog.closure(image.digest):
            if d in wanted:
                needs[d].append(image.ref)
    details: list[dict[str, object]] = []
    for where, d in pairs:
        base = catalog.base(catalog.carried[d])
        details.append(
            {
                "digest": d,
                "where": where,
                "images": needs[d],
                "base": base.bundle_id,
                "baseCreated": base.created,
            }
        )
    by_base: dict[str, int] = {}
    for item in details:
        by_base[str(item["base"])] = by_base.get(str(item["base"]), 0) + 1
    first = details[0]
    images = needs[str(first["digest"])]
    example = (
        f"{first['digest']}{' in ' + str(first['where']) if first['where'] else ''}"
        f", needed by {', '.join(images[:3])}{' …' if len(images) > 3 else ''}"
    )
    named = ", ".join(
        f"{b} (created {catalog.base(b).created or 'at an unknown time'}: {n} digest(s))"
        for b, n in by_base.items()
    )
    return BaseMissing(
        f"{target} lacks {len(wanted)} digest(s) this delta bundle relies on, carried by bundle {named}; "
        f"e.g. {example}; nothing was written",
        tuple(details),
        hint=(
            "Import the base bundle(s) named above first (`ferry inspect` shows a bundle's id), then this "
            "one; or export a full bundle (without --since) for this target."
        ),
    )


def wave(catalog: Catalog) -> dict[str, object]:
    """A bundle's place among the waves, for ``inspect``, ``verify`` and ``export`` (specs/cli.md)."""
    carried = catalog.carried

    def tags(kind: str) -> list[dict[str, object]]:
        return [
            {"ref": c.ref, "digest": c.digest, **({"old": c.old} if c.old else {}), "base": c.base}
            for c in catalog.changes
            if c.kind == kind
        ]

    # what a base carried is counted by going through it, not through everything (120k manifests and
    # 220k blobs at 100k tags, on every inspect)
    carried_manifests = sum(1 for d in carried if d in catalog.manifests)
    carried_blobs = sum(1 for d in carried if d in catalog.blobs)
    return {
        "delta": bool(carried),
        "bases": [{"bundleId": b.bundle_id, "created": b.created} for b in catalog.bases],
        "manifestsNewCount": len(catalog.manifests) - carried_manifests,
        "blobsNewCount": len(catalog.blobs) - carried_blobs,
        "bytesNew": catalog.member_bytes,
        "carried": {
            "manifestCount": carried_manifests,
            "blobCount": carried_blobs,
            "bytes": catalog.total_bytes - catalog.member_bytes,
        },
        "tagsNew": tags("new"),
        "tagsMoved": tags("moved"),
        "tagsGone": tags("gone"),
    }


__all__ = ["BaseSet", "Earlier", "base_missing", "make_delta", "merge", "wave"]
