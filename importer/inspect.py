"""``ferry inspect``: what a bundle holds, from its index alone (fast: no member is read but the first)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.shared.bundle.format import BundleInfo
from ferry.shared.bundle.reader import Bundle
from ferry.shared.delta import wave
from ferry.shared.model import Catalog, Image


@dataclass(frozen=True)
class InspectResult:
    path: str
    info: BundleInfo
    catalog: Catalog
    bundle_bytes: int

    def images(self) -> Iterator[tuple[Image, list[str]]]:
        """Every image (tagged, then untagged, per repository) with the platforms of its index."""
        manifests = self.catalog.manifests
        for i in self.catalog.images():
            children = manifests[i.digest].children
            yield i, [ch.platform for ch in children if ch.platform] if children else []

    def to_dict(self, *, images: bool = True) -> dict[str, Any]:
        """The ``--json`` document; ``images=False`` leaves the image list out (``images`` is then None)
        for a caller that walks :meth:`images` itself: at 100k tags the list is 100k dicts."""
        c = self.catalog
        return {
            "ok": True,
            "path": self.path,
            "formatVersion": ".".join(map(str, self.info.version)),
            "bundleId": self.info.bundle_id,
            "ferryVersion": self.info.ferry_version,
            "created": self.info.created,
            "source": self.info.source,
            "options": self.info.options,
            "volumeSize": self.info.volume_size,
            "repositories": [
                {
                    "name": r.name,
                    "tagCount": len(r.tags),
                    "untaggedCount": len(r.untagged),
                    "manifestCount": len(r.manifests),
                }
                for r in c.repositories
            ],
            "images": (
                [
                    {
                        "repository": i.repository,
                        "tag": i.tag,
                        "digest": i.digest,
                        "mediaType": i.media_type,
                        "size": i.size,
                        "platforms": platforms,
                    }
                    for i, platforms in self.images()
                ]
                if images
                else None
            ),
            "imageCount": sum(len(r.tags) + len(r.untagged) for r in c.repositories),
            "manifestCount": len(c.manifests),
            "blobCount": len(c.blobs),
            "bytes": c.total_bytes,
            "bundleBytes": self.bundle_bytes,
            "wave": wave(c),
            "foreignLayers": sorted({f.digest for m in c.manifests.values() for f in m.foreign}),
            "skipped": [
                {"image": s.ref, "digest": s.digest, "reason": s.reason, "missing": list(s.missing)}
                for s in c.skipped
            ],
        }


def run(path: Path) -> InspectResult:
    with Bundle.open(path) as b:
        return InspectResult(str(path), b.info, b.catalog, b.data.size)


__all__ = ["InspectResult", "run"]
