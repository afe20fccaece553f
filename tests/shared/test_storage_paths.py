from __future__ import annotations

import pytest

from ferry.shared.digest import Digest
from ferry.shared.storage.paths import (
    BlobData,
    LayerLink,
    ManifestRevisionLink,
    StorageLayout,
    TagCurrentLink,
    TagIndexEntryLink,
    link_target,
    valid_repository,
    valid_tag,
)

D = Digest.parse("sha256:" + "ab" * 32)


def test_paths_follow_distribution_layout_below_any_root() -> None:
    for root in ("/var/lib/registry", "/data/registry"):
        lay = StorageLayout.for_root(root)
        v2 = f"{root}/docker/registry/v2"
        assert lay.path(BlobData(D)) == (f"{v2}/blobs/sha256/ab/{D.hex}/data")
        assert lay.path(LayerLink("a/b", D)) == (f"{v2}/repositories/a/b/_layers/sha256/{D.hex}/link")
        assert lay.path(ManifestRevisionLink("a", D)) == (
            f"{v2}/repositories/a/_manifests/revisions/sha256/{D.hex}/link"
        )
        assert lay.path(TagCurrentLink("a", "current")) == (
            f"{v2}/repositories/a/_manifests/tags/current/current/link"
        )
        assert lay.path(TagIndexEntryLink("a", "t", D)) == (
            f"{v2}/repositories/a/_manifests/tags/t/index/sha256/{D.hex}/link"
        )


def test_links_are_parsed_as_strictly_as_the_registry_does() -> None:
    assert link_target(str(D).encode()) == str(D)
    for bad in (str(D).encode() + b"\n", str(D).upper().encode(), b"sha256:abc", b""):
        assert link_target(bad) is None


@pytest.mark.parametrize("name", ["a", "team/app", "a/b/c", "a.b_c__d-e", "x--y"])
def test_valid_repositories(name: str) -> None:
    assert valid_repository(name)


@pytest.mark.parametrize(
    "name", ["", "A", "_layers", "a/_manifests", "../etc", "/abs", "a//b", "a/", "a_", "-a"]
)
def test_invalid_repositories(name: str) -> None:
    assert not valid_repository(name)


def test_tags() -> None:
    assert valid_tag("current") and valid_tag("v1.0-rc_1") and valid_tag("_x")
    assert not valid_tag("..") and not valid_tag(".x") and not valid_tag("a/b") and not valid_tag("x" * 129)


def test_a_trailing_newline_never_passes() -> None:
    assert not valid_repository("team/app\n") and not valid_tag("v1\n") and not Digest.is_valid(str(D) + "\n")
