"""Invariant checkers, reused on every sink's output."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from ferry.importer.verify import VerifyOptions
from ferry.importer.verify import run as verify
from ferry.shared.bundle.format import (
    INDEX_MEMBER,
    OCI_INDEX_MEMBER,
    OCI_LAYOUT_MEMBER,
    TRAILER_MEMBER,
    blob_member,
)
from ferry.shared.bundle.reader import Bundle
from ferry.shared.bundle.volumes import find_volumes
from ferry.shared.model import Catalog


def validate_bundle(path: Path) -> Catalog:
    """Everything a bundle promises, checked independently of the writer: returns its catalog."""
    verify(VerifyOptions(path=path))  # raises on any damage
    with Bundle.open(path) as b:
        catalog = b.catalog
        b.scan()
        names = [m.name for m in b.members]
        data = {m.name: b.data.read_exact(m.offset, m.size) for m in b.members if m.name != TRAILER_MEMBER}
    # tar's own view (single files only: volume sets are checked by their cat)
    if find_volumes(path) == [path]:
        listed = subprocess.run(
            ["tar", "-tf", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert listed == names
    assert names[0] == INDEX_MEMBER and names[-1] == TRAILER_MEMBER
    assert names[1:3] == [OCI_LAYOUT_MEMBER, OCI_INDEX_MEMBER]
    assert len(names) == len(set(names)), "a member appears twice"
    blobs = [n for n in names if n.startswith("blobs/")]
    # a delta holds exactly what its bases did not carry; a full bundle everything it describes
    held = {d for d in [*catalog.blobs, *catalog.manifests] if d not in catalog.carried}
    assert set(blobs) == {blob_member(d) for d in held}
    for n in blobs:
        assert "sha256:" + hashlib.sha256(data[n]).hexdigest() == "sha256:" + n.rsplit("/", 1)[1]
    for image in catalog.images():
        for d in catalog.closure(image.digest):
            assert blob_member(d) in data or d in catalog.carried, f"{image.ref} needs {d}"
    for d, base in catalog.carried.items():
        assert blob_member(d) not in data, f"{d} came with base {base}, yet it is bundled again"
        assert any(b.bundle_id == base for b in catalog.bases)
    oci = json.loads(data[OCI_INDEX_MEMBER])
    for entry in oci["manifests"]:
        assert blob_member(entry["digest"]) in data
        assert len(data[blob_member(entry["digest"])]) == entry["size"]
    return catalog


def tags_of(catalog: Catalog) -> dict[str, dict[str, str]]:
    return {r.name: dict(r.tags) for r in catalog.repositories if r.tags}


def assert_tree_consistent(root: Path, catalog: Catalog) -> None:
    """Every link the registry needs to serve ``catalog`` from ``root`` exists, exact, with verified data."""
    from ferry.shared.digest import Digest
    from ferry.shared.storage.paths import (
        BlobData,
        LayerLink,
        ManifestRevisionLink,
        StorageLayout,
        TagCurrentLink,
        TagIndexEntryLink,
    )

    lay = StorageLayout.for_root(root)

    def link(spec: object, digest: str) -> None:
        p = Path(lay.path(spec))  # type: ignore[arg-type]
        assert p.read_bytes() == digest.encode(), f"{p} does not hold exactly {digest}"

    for d in [*catalog.blobs, *catalog.manifests]:
        data = Path(lay.path(BlobData(Digest.parse(d)))).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d
    for repo in catalog.repositories:
        for d in repo.manifests:
            link(ManifestRevisionLink(repo.name, Digest.parse(d)), d)
        for b in catalog.repository_blobs(repo):
            link(LayerLink(repo.name, Digest.parse(b)), b)
        for tag, d in repo.tags.items():
            link(TagCurrentLink(repo.name, tag), d)
            link(TagIndexEntryLink(repo.name, tag, Digest.parse(d)), d)
