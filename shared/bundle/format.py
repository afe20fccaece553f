"""The ferry bundle format, version 1.1 (specs/bundle-format.md is the normative text).

A bundle is a plain, uncompressed POSIX tar:

    ferry/index.msgpack.zst   first: the whole plan (msgpack map, one zstandard frame)
    oci-layout                OCI image layout marker, so stock tools can read the bundle
    index.json                OCI image index naming each tagged image ``repository:tag``
    blobs/<alg>/<hex>         every config and layer once, then every manifest (children first)
    ferry/trailer.msgpack     last: xxh3-128 of every member, of the index and of all headers, so
                              truncation and damage show

Versioning: ``version`` is ``[major, minor]``.  A reader refuses a major it does not know; minor versions
only add keys, which readers ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

from ..digest import Digest
from ..errors import BundleFormatError, BundleVersionError
from ..manifest import INDEX_TYPES, SCHEMA1_TYPES, BlobRef, ChildRef, MediaType
from ..model import Blob, Catalog, Manifest, Repository, Skipped
from ..storage.paths import valid_repository, valid_tag

FORMAT = "ferry-bundle"
TRAILER_FORMAT = "ferry-bundle-trailer"
VERSION = (1, 1)
INDEX_MEMBER = "ferry/index.msgpack.zst"
TRAILER_MEMBER = "ferry/trailer.msgpack"
OCI_LAYOUT_MEMBER = "oci-layout"
OCI_INDEX_MEMBER = "index.json"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
#: an index larger than this is refused before decompression (a 5000-tag index is about 2 MiB)
INDEX_MAX = 1 << 30


def blob_member(digest: str) -> str:
    """``blobs/<alg>/<hex>`` for a digest already validated (every digest of a decoded index is)."""
    return "blobs/" + digest.replace(":", "/", 1)


def member_digest(name: str) -> str | None:
    """The digest a ``blobs/<alg>/<hex>`` member holds, or None for any other name."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        text = f"{parts[1]}:{parts[2]}"
        if Digest.is_valid(text):
            return text
    return None


@dataclass(frozen=True)
class BundleInfo:
    """Facts about a bundle that are not part of the catalog."""

    ferry_version: str
    created: str
    source: dict[str, Any]
    options: dict[str, Any]
    volume_size: int | None
    version: tuple[int, int] = VERSION


def encode_index(catalog: Catalog, info: BundleInfo) -> bytes:
    doc = {
        "format": FORMAT,
        "version": list(info.version),
        "ferry_version": info.ferry_version,
        "created": info.created,
        "source": info.source,
        "options": info.options,
        "volume_size": info.volume_size,
        "repositories": [
            {
                "name": r.name,
                "tags": dict(r.tags),
                "manifests": list(r.manifests),
                "untagged": list(r.untagged),
            }
            for r in catalog.repositories
        ],
        "manifests": {d: _manifest_doc(m) for d, m in catalog.manifests.items()},
        "blobs": {d: {"size": b.size, "mediaType": b.media_type} for d, b in catalog.blobs.items()},
        "order": catalog.blob_order() + catalog.manifest_order(),
        "skipped": [
            {
                "repository": s.repository,
                "tag": s.tag,
                "digest": s.digest,
                "reason": s.reason,
                "missing": list(s.missing),
            }
            for s in catalog.skipped
        ],
    }
    packed = msgpack.packb(doc, use_bin_type=True)
    return bytes(
        zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(packed)
    )


def _manifest_doc(m: Manifest) -> dict[str, Any]:
    return {
        "mediaType": m.media_type,
        "size": m.size,
        "blobs": list(m.blobs),
        "foreign": [
            {"digest": b.digest, "size": b.size, "mediaType": b.media_type, "urls": list(b.urls)}
            for b in m.foreign
        ],
        "children": [
            {"digest": c.digest, "size": c.size, "mediaType": c.media_type, "platform": c.platform}
            for c in m.children
        ],
        "subject": m.subject,
        "artifactType": m.artifact_type,
    }


def decode_index(data: bytes) -> tuple[Catalog, BundleInfo, list[str]]:
    """Parse an index; returns the catalog, the bundle facts and the member order of the blobs."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=INDEX_MAX)
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as e:
        raise BundleFormatError(f"the bundle index is unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleFormatError("the first member is not a ferry bundle index")
    check_version(doc.get("version"))
    try:
        manifests = {d: _manifest_from(d, m) for d, m in doc["manifests"].items()}
        blobs = {d: Blob(d, int(b["size"]), str(b.get("mediaType", ""))) for d, b in doc["blobs"].items()}
        repos = tuple(
            Repository(r["name"], dict(r["tags"]), tuple(r["manifests"]), tuple(r.get("untagged", ())))
            for r in doc["repositories"]
        )
        skipped = tuple(
            Skipped(s["repository"], s.get("tag"), s.get("digest"), s["reason"], tuple(s.get("missing", ())))
            for s in doc.get("skipped", ())
        )
        info = BundleInfo(
            str(doc.get("ferry_version", "")),
            str(doc.get("created", "")),
            dict(doc.get("source") or {}),
            dict(doc.get("options") or {}),
            doc.get("volume_size"),
            (int(doc["version"][0]), int(doc["version"][1])),
        )
        order = list(doc["order"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BundleFormatError(f"the bundle index is malformed ({type(e).__name__}: {e})") from None
    catalog = Catalog(repos, manifests, blobs, skipped)
    validate_catalog(catalog, order)
    return catalog, info, order


def validate_catalog(catalog: Catalog, order: list[str]) -> None:
    """Refuse an index whose names or digests are not what a registry could hold.

    The index crossed an air gap and names files and paths on the import side, so every digest, repository
    name and tag is checked against the distribution grammar before anyone uses it.  Every digest is checked
    once, in one set (a 5000-image index names 15k digests 40k times); only when something is wrong is the
    index gone through again, entry by entry, to name what."""
    held = catalog.blobs.keys() | catalog.manifests.keys()
    refs: set[object] = set()
    named: set[object] = set(held)
    try:
        for m in catalog.manifests.values():
            refs.update(m.blobs)
            refs.update(c.digest for c in m.children)
            named.update(f.digest for f in m.foreign)
            if m.subject is not None:
                named.add(m.subject)
        for r in catalog.repositories:
            named.update(r.tags.values())
        named |= refs
        if not (refs <= held and all(type(d) is str and Digest.is_valid(d) for d in named)):
            _explain_catalog(catalog)  # raises for what is wrong (a foreign layer may be a manifest's blob)
        _validate_names(catalog, order, held)
    except TypeError:  # an unhashable value where a digest belongs
        raise BundleFormatError("the bundle index is malformed (a digest is not a string)") from None


def _validate_names(catalog: Catalog, order: list[str], held: set[str]) -> None:
    """What the digest check leaves: the order, repository names and tags, what repositories hold."""
    if len(order) != len(held) or set(order) != held:
        raise BundleFormatError(
            "the bundle index is inconsistent: its member order does not list every blob once"
        )
    for r in catalog.repositories:
        if not valid_repository(r.name):
            raise BundleFormatError(f"the bundle index names an invalid repository {r.name!r}")
        for tag in r.tags:
            if not valid_tag(tag):
                raise BundleFormatError(f"the bundle index names an invalid tag {tag!r} in {r.name}")
        for d in (*r.manifests, *r.untagged, *r.tags.values()):
            if d not in catalog.manifests:
                raise BundleFormatError(
                    f"the bundle index is inconsistent: {r.name} holds {d}, which it does not describe"
                )


def _explain_catalog(catalog: Catalog) -> None:
    """Raise for the first invalid digest or missing reference, saying where it is."""

    valid: set[str] = set()

    def digest(d: object, what: str) -> None:
        if d in valid:
            return
        if not isinstance(d, str) or not Digest.is_valid(d):
            raise BundleFormatError(f"the bundle index names an invalid digest {d!r} ({what})")
        valid.add(d)

    for d, m in catalog.manifests.items():
        digest(d, "manifest")
        for ref in (*m.blobs, *(c.digest for c in m.children), *(f.digest for f in m.foreign)):
            digest(ref, f"referenced by {d}")
            if (
                ref not in catalog.blobs
                and ref not in catalog.manifests
                and all(f.digest != ref for f in m.foreign)
            ):
                raise BundleFormatError(
                    f"the bundle index is inconsistent: {d} needs {ref}, which it does not hold"
                )
        if m.subject is not None:
            digest(m.subject, f"subject of {d}")
    for d in catalog.blobs:
        digest(d, "blob")
    for r in catalog.repositories:
        for tag, d in r.tags.items():
            digest(d, f"tag {r.name}:{tag}")


def _manifest_from(digest: str, m: dict[str, Any]) -> Manifest:
    return Manifest(
        digest,
        str(m["mediaType"]),
        int(m["size"]),
        tuple(m["blobs"]),
        tuple(
            BlobRef(f["digest"], int(f["size"]), f["mediaType"], tuple(f.get("urls", ())))
            for f in m.get("foreign", ())
        ),
        tuple(
            ChildRef(c["digest"], int(c["size"]), c["mediaType"], c.get("platform"))
            for c in m.get("children", ())
        ),
        m.get("subject"),
        m.get("artifactType"),
    )


def check_version(version: Any) -> None:
    if not (
        isinstance(version, list | tuple) and len(version) == 2 and all(isinstance(v, int) for v in version)
    ):
        raise BundleFormatError(f"the bundle index has no valid version ({version!r})")
    if version[0] != VERSION[0]:
        raise BundleVersionError(f"{version[0]}.{version[1]}", f"{VERSION[0]}.x")


def encode_trailer(index_xxh3: str, members: list[tuple[str, int, str]], headers_xxh3: str) -> bytes:
    doc = {
        "format": TRAILER_FORMAT,
        "version": list(VERSION),
        "index_xxh3": index_xxh3,
        "headers_xxh3": headers_xxh3,
        "members": [list(m) for m in members],
    }
    return bytes(msgpack.packb(doc, use_bin_type=True))


@dataclass(frozen=True)
class Trailer:
    index_xxh3: str
    #: (member name, size, xxh3-128 hex) for every member before the trailer, in tar order
    members: tuple[tuple[str, int, str], ...]
    #: xxh3-128 of every header block before the trailer, in tar order (format 1.1; None in 1.0 bundles)
    headers_xxh3: str | None = None


def decode_trailer(data: bytes) -> Trailer:
    try:
        # tuples straight from the decoder: a bundle lists tens of thousands of members
        doc = msgpack.unpackb(data, raw=False, use_list=False)
        if doc.get("format") != TRAILER_FORMAT:
            raise ValueError("not a trailer")
        check_version(doc.get("version"))
        members = doc["members"]
        if not all(
            type(m) is tuple and len(m) == 3 and type(m[0]) is str and type(m[1]) is int and type(m[2]) is str
            for m in members
        ):
            raise ValueError("a member entry is not [name, size, xxh3]")
        headers = doc.get("headers_xxh3")
        if headers is not None and not isinstance(headers, str):
            raise ValueError("headers_xxh3 is not a string")
        return Trailer(str(doc["index_xxh3"]), members, headers)
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException) as e:
        raise BundleFormatError(f"the bundle trailer is unreadable ({e})") from None


def oci_index(catalog: Catalog) -> bytes:
    """The OCI ``index.json``: one entry per tag (schema 1 has no OCI form), named ``repository:tag``."""
    entries = []
    for image in catalog.images():
        if image.tag is None or image.media_type in SCHEMA1_TYPES:
            continue
        mt = image.media_type
        entries.append(
            {
                "mediaType": mt,
                "digest": image.digest,
                "size": image.size,
                "annotations": {REF_NAME: f"{image.repository}:{image.tag}"},
            }
        )
    doc = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": entries}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


__all__ = [
    "INDEX_MEMBER",
    "INDEX_TYPES",
    "OCI_INDEX_MEMBER",
    "OCI_LAYOUT",
    "OCI_LAYOUT_MEMBER",
    "TRAILER_MEMBER",
    "VERSION",
    "BundleInfo",
    "Trailer",
    "blob_member",
    "decode_index",
    "decode_trailer",
    "encode_index",
    "encode_trailer",
    "member_digest",
    "oci_index",
]
