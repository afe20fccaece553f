"""The index crossed an air gap: decode_index refuses one whose digests or member order are wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zstandard

from ferry.shared.bundle.format import BundleInfo, decode_index, encode_index
from ferry.shared.errors import BundleFormatError
from ferry.shared.memory import MemoryRegistry, sample_layer


def _index(tamper: Callable[[dict[str, Any]], None]) -> bytes:
    registry = MemoryRegistry()
    registry.image("app", [sample_layer(1), sample_layer(2)], tag="v1")
    raw = encode_index(registry.catalog(), BundleInfo("test", "now", {}, {}, None))
    doc = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw), raw=False)
    tamper(doc)
    return bytes(zstandard.ZstdCompressor().compress(msgpack.packb(doc, use_bin_type=True)))


def test_an_untampered_index_decodes() -> None:
    catalog, _, order = decode_index(_index(lambda doc: None))
    assert sorted(order) == sorted([*catalog.blobs, *catalog.manifests])


@pytest.mark.parametrize(
    "bad",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 64 + "\n", "md5:" + "a" * 32],
)
def test_an_invalid_digest_is_refused(bad: str) -> None:
    def tamper(doc: dict[str, Any]) -> None:
        next(iter(doc["manifests"].values()))["subject"] = bad

    with pytest.raises(BundleFormatError, match="invalid digest"):
        decode_index(_index(tamper))


def test_an_order_listing_a_member_twice_or_not_at_all_is_refused() -> None:
    def twice(doc: dict[str, Any]) -> None:
        doc["order"][-1] = doc["order"][0]

    def short(doc: dict[str, Any]) -> None:
        doc["order"].pop()

    for tamper in (twice, short):
        with pytest.raises(BundleFormatError, match="member order"):
            decode_index(_index(tamper))


def test_an_order_with_a_manifest_before_a_blob_it_needs_is_refused() -> None:
    """A streaming reader gets every blob before the manifests that need it: an index that says
    otherwise names the manifest and the blob that comes too late."""
    names: dict[str, str] = {}

    def manifest_first(doc: dict[str, Any]) -> None:
        (manifest,) = doc["manifests"]
        names["manifest"] = manifest
        doc["order"].remove(manifest)
        doc["order"].insert(0, manifest)

    with pytest.raises(BundleFormatError, match="comes before") as e:
        decode_index(_index(manifest_first))
    assert names["manifest"] in str(e.value)


def test_a_reference_nothing_holds_or_a_digest_of_the_wrong_type_is_refused() -> None:
    def dangling(doc: dict[str, Any]) -> None:
        next(iter(doc["manifests"].values()))["blobs"].append("sha256:" + "b" * 64)

    def listed(doc: dict[str, Any]) -> None:
        next(iter(doc["manifests"].values()))["blobs"].append(["sha256:" + "b" * 64])

    def tagged(doc: dict[str, Any]) -> None:
        doc["repositories"][0]["tags"]["v1"] = 7

    with pytest.raises(BundleFormatError, match=r"needs sha256:b+, which it does not hold"):
        decode_index(_index(dangling))
    with pytest.raises(BundleFormatError, match="not a string"):
        decode_index(_index(listed))
    with pytest.raises(BundleFormatError, match=r"the target of app:v1 is not a string"):
        decode_index(_index(tagged))
