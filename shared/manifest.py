"""Manifest media types and what a manifest references.

Docker Distribution does not store a manifest's media type, so it is derived from the bytes, the way the
registry does when it serves them: the ``mediaType`` field, or for OCI documents without it the presence of
``manifests`` (index) or ``config`` (image manifest); ``schemaVersion: 1`` is schema 1 as stored (the
unsigned payload).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .digest import SLOTS, Digest


class MediaType(str, Enum):
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
    DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

    # a str in every context (f-strings, str(), msgpack, JSON) as enum.StrEnum is, which Python 3.9 lacks
    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)


INDEX_TYPES = frozenset({MediaType.DOCKER_LIST, MediaType.OCI_INDEX})
SCHEMA1_TYPES = frozenset({MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED})
MANIFEST_TYPES = frozenset(MediaType) - {MediaType.DOCKER_LAYER}
#: layers a client fetches from ``urls``; their blob is normally absent from the registry
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


class ManifestError(ValueError):
    """The bytes are not a manifest ferry can follow."""


@dataclass(frozen=True, **SLOTS)
class BlobRef:
    """A config or layer a manifest needs."""

    digest: str
    size: int  # -1 when the manifest does not say (schema 1)
    media_type: str
    urls: tuple[str, ...] = ()

    @property
    def foreign(self) -> bool:
        return self.media_type in FOREIGN_LAYER_TYPES or bool(self.urls)


@dataclass(frozen=True, **SLOTS)
class ChildRef:
    """A manifest an index lists, with the platform the index gives it."""

    digest: str
    size: int
    media_type: str
    platform: str | None


@dataclass(frozen=True, **SLOTS)
class ManifestInfo:
    media_type: str
    blobs: tuple[BlobRef, ...]
    children: tuple[ChildRef, ...]
    subject: str | None
    artifact_type: str | None


def _platform(p: Any) -> str | None:
    if not isinstance(p, dict) or "os" not in p:
        return None
    s = f"{p.get('os')}/{p.get('architecture', '')}"
    if p.get("variant"):
        s += f"/{p['variant']}"
    return s


def _digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not Digest.is_valid(value):
        raise ManifestError(f"{what} has an invalid digest {value!r}")
    return value


def _descriptor(d: Any, what: str) -> BlobRef:
    if not isinstance(d, dict):
        raise ManifestError(f"{what} is not a descriptor")
    size = d.get("size")
    if type(size) is not int or size < 0:
        raise ManifestError(f"{what} has an invalid size {size!r}")
    urls = d.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{what} has invalid urls")
    media_type = d.get("mediaType", "")
    if not isinstance(media_type, str):
        raise ManifestError(f"{what} has an invalid mediaType")
    # one string object per distinct digest and media type, however many manifests name them (a shared
    # base layer is named by thousands): the catalog of 100k tags holds each once
    return BlobRef(sys.intern(_digest(d.get("digest"), what)), size, sys.intern(media_type), tuple(urls))


def detect_media_type(doc: dict[str, Any]) -> str:
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if doc.get("schemaVersion") == 1:
        return MediaType.DOCKER_SCHEMA1_SIGNED if "signatures" in doc else MediaType.DOCKER_SCHEMA1
    if "manifests" in doc:
        return MediaType.OCI_INDEX
    if "config" in doc:
        return MediaType.OCI_MANIFEST
    raise ManifestError("neither mediaType, schemaVersion 1, manifests nor config: not a manifest")


def parse_manifest(raw: bytes) -> ManifestInfo:
    """Return what ``raw`` references. Raises :class:`ManifestError` on anything that is not a manifest."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"not JSON: {e}") from None
    except RecursionError:  # JSON nested deeper than the parser's stack: no registry makes one
        raise ManifestError("not a manifest: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    mt = detect_media_type(doc)
    subject = None
    if isinstance(doc.get("subject"), dict):
        subject = _digest(doc["subject"].get("digest"), "subject")
    artifact_type = doc.get("artifactType") if isinstance(doc.get("artifactType"), str) else None
    if mt in SCHEMA1_TYPES:
        layers = doc.get("fsLayers")
        if not isinstance(layers, list):
            raise ManifestError("schema 1 manifest without fsLayers")
        seen: dict[str, BlobRef] = {}
        for i, layer in enumerate(layers):
            d = _digest(layer.get("blobSum") if isinstance(layer, dict) else None, f"fsLayers[{i}]")
            seen.setdefault(d, BlobRef(d, -1, MediaType.DOCKER_LAYER))
        return ManifestInfo(mt, tuple(seen.values()), (), None, None)
    if mt in INDEX_TYPES or "manifests" in doc:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index without a manifests list")
        children = []
        for i, m in enumerate(entries):
            ref = _descriptor(m, f"manifests[{i}]")
            children.append(ChildRef(ref.digest, ref.size, ref.media_type, _platform(m.get("platform"))))
        return ManifestInfo(mt, (), tuple(children), subject, artifact_type)
    blobs: list[BlobRef] = []
    if "config" in doc:
        cfg = _descriptor(doc["config"], "config")
        blobs.append(cfg)
        if artifact_type is None and cfg.media_type not in (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.oci.image.config.v1+json",
        ):
            artifact_type = cfg.media_type
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise ManifestError("layers is not a list")
    blobs.extend(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers))
    return ManifestInfo(mt, tuple(blobs), (), subject, artifact_type)


__all__ = [
    "FOREIGN_LAYER_TYPES",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "SCHEMA1_TYPES",
    "BlobRef",
    "ChildRef",
    "ManifestError",
    "ManifestInfo",
    "MediaType",
    "detect_media_type",
    "parse_manifest",
]
