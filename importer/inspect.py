"""``ferry inspect``: what a bundle holds, from its index alone (fast: no member is read but the first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.shared.bundle.format import BundleInfo
from ferry.shared.bundle.reader import Bundle
from ferry.shared.delta import wave
from ferry.shared.model import Catalog


@dataclass(frozen=True)
class InspectResult:
    path: str
    info: BundleInfo
    catalog: Catalog
    bundle_bytes: int

    def to_dict(self) -> dict[str, Any]:
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
            "images": [
                {
                    "repository": i.repository,
                    "tag": i.tag,
                    "digest": i.digest,
                    "mediaType": i.media_type,
                    "size": i.size,
                    "platforms": [ch.platform for ch in c.manifests[i.digest].children if ch.platform],
                }
                for i in c.images()
            ],
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
