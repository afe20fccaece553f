"""Images held in memory: a builder for small sample registries and an :class:`ImageSource` over them.

The demo builds its sample registry with this and writes it through the same storage-tree sink that
``ferry restore`` uses, so the sample is a real Docker Distribution tree without needing a registry.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from .digest import sha256_of, xxh3_of
from .manifest import MediaType, parse_manifest
from .model import Blob, Catalog, Manifest, Repository
from .store import BlobContent

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sample_layer(seed: int, size: int = 4096) -> bytes:
    """A gzip'd tar holding one file of seeded random bytes: a small, real, unique layer."""
    payload = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(f"data/{seed}.bin")
        ti.size = len(payload)
        tf.addfile(ti, io.BytesIO(payload))
    return gzip.compress(buf.getvalue(), mtime=0)


@dataclass
class MemoryRegistry:
    """Accumulates blobs, manifests and tags; :meth:`catalog` freezes them."""

    data: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, dict[str, str]] = field(default_factory=dict)
    held: dict[str, dict[str, None]] = field(default_factory=dict)
    media: dict[str, str] = field(default_factory=dict)

    def _put(self, raw: bytes, media_type: str) -> dict[str, object]:
        d = sha256_of(raw)
        self.data[d] = raw
        self.media.setdefault(d, media_type)
        return {"mediaType": media_type, "digest": d, "size": len(raw)}

    def image(
        self, repo: str, layers: list[bytes], *, arch: str = "amd64", tag: str | None = None
    ) -> dict[str, object]:
        config = json.dumps(
            {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
            sort_keys=True,
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_MANIFEST.value,
            "config": self._put(config, OCI_CONFIG),
            "layers": [self._put(layer, OCI_LAYER) for layer in layers],
        }
        desc = self._put(json.dumps(manifest, sort_keys=True).encode(), MediaType.OCI_MANIFEST.value)
        self._hold(repo, str(desc["digest"]), tag)
        return {**desc, "platform": {"os": "linux", "architecture": arch}}

    def index(self, repo: str, children: list[dict[str, object]], *, tag: str) -> dict[str, object]:
        raw = json.dumps(
            {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": children},
            sort_keys=True,
        ).encode()
        desc = self._put(raw, MediaType.OCI_INDEX.value)
        self._hold(repo, str(desc["digest"]), tag)
        return desc

    def _hold(self, repo: str, digest: str, tag: str | None) -> None:
        self.held.setdefault(repo, {})[digest] = None
        if tag is not None:
            self.repos.setdefault(repo, {})[tag] = digest
        else:
            self.repos.setdefault(repo, {})

    def catalog(self) -> Catalog:
        manifests: dict[str, Manifest] = {}
        referenced: set[str] = set()
        for d, media_type in self.media.items():
            if media_type in (MediaType.OCI_MANIFEST, MediaType.OCI_INDEX):
                info = parse_manifest(self.data[d])
                needs = tuple(b.digest for b in info.blobs)
                referenced.update(needs)
                manifests[d] = Manifest(d, info.media_type, len(self.data[d]), needs, (), info.children)
        blobs = {d: Blob(d, len(self.data[d]), self.media[d]) for d in referenced}
        repos = tuple(
            Repository(name, dict(tags), tuple(self.held[name])) for name, tags in sorted(self.repos.items())
        )
        return Catalog(repos, manifests, blobs)


class MemorySource:
    def __init__(self, registry: MemoryRegistry) -> None:
        self.catalog = registry.catalog()
        self._data = registry.data

    def contents(self) -> Iterator[BlobContent]:
        for d in self.catalog.member_order():
            raw = self._data[d]
            yield BlobContent(d, len(raw), (), verified=True, xxh3=xxh3_of(raw), stream=io.BytesIO(raw))


__all__ = ["MemoryRegistry", "MemorySource", "sample_layer"]
