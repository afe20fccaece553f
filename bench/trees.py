"""Generate registry storage trees shaped like real ones, directly in distribution's layout.

Writing the tree directly (instead of pushing 5000 tags through a registry, which takes minutes) uses the
same path specs the registry's layout is defined by; the tests prove that a registry serves such trees.

* ``tags``: 250 repositories x 20 tags = 5000 tags.  Every image has one of 8 shared base layers (4 MiB),
  one of 40 shared middle layers (1 MiB), one unique application layer (64-256 KiB) and a unique config:
  the shape of a company registry built FROM a few bases.
* ``bulk``: 4 repositories holding 24 layers of 96 MiB: few, large blobs (ML images, fat JDK images).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from ferry.shared.digest import Digest
from ferry.shared.storage.paths import (
    BlobData,
    LayerLink,
    ManifestRevisionLink,
    StorageLayout,
    TagCurrentLink,
    TagIndexEntryLink,
)

LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class TreeWriter:
    def __init__(self, root: Path) -> None:
        self.layout = StorageLayout.for_root(str(root))
        self.written: set[str] = set()
        self.bytes = 0

    def _file(self, path: object, data: bytes) -> None:
        p = Path(str(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def blob(self, data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        if d not in self.written:
            self._file(self.layout.path(BlobData(Digest.parse(d))), data)
            self.written.add(d)
            self.bytes += len(data)
        return d

    def image(self, repo: str, tag: str, layers: list[bytes], config: bytes) -> str:
        cfg = self.blob(config)
        descs = []
        for layer in layers:
            d = self.blob(layer)
            descs.append({"mediaType": LAYER, "size": len(layer), "digest": d})
            self._file(self.layout.path(LayerLink(repo, Digest.parse(d))), d.encode())
        self._file(self.layout.path(LayerLink(repo, Digest.parse(cfg))), cfg.encode())
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "size": len(config), "digest": cfg},
                "layers": descs,
            },
            indent=3,
        ).encode()
        md = Digest.parse(self.blob(manifest))
        self._file(self.layout.path(ManifestRevisionLink(repo, md)), str(md).encode())
        self._file(self.layout.path(TagCurrentLink(repo, tag)), str(md).encode())
        self._file(self.layout.path(TagIndexEntryLink(repo, tag, md)), str(md).encode())
        return str(md)


def _config(rnd: random.Random, label: str) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"l": label}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + rnd.randbytes(32).hex()]},
        }
    ).encode()


def tags_tree(root: Path, repos: int = 250, tags: int = 20, seed: int = 1) -> dict[str, int]:
    rnd = random.Random(seed)
    w = TreeWriter(root)
    bases = [os.urandom(4 << 20) for _ in range(8)]
    middles = [os.urandom(1 << 20) for _ in range(40)]
    for r in range(repos):
        repo = f"team{r % 25}/service-{r}"
        base = bases[r % len(bases)]
        for t in range(tags):
            app = os.urandom(rnd.randint(64, 256) << 10)
            w.image(
                repo, f"1.{t}.0", [base, middles[rnd.randrange(len(middles))], app], _config(rnd, f"{r}-{t}")
            )
    return {"tags": repos * tags, "repositories": repos, "blobs": len(w.written), "bytes": w.bytes}


def bulk_tree(
    root: Path, repos: int = 4, layers_per_repo: int = 6, layer_mib: int = 96, seed: int = 2
) -> dict[str, int]:
    rnd = random.Random(seed)
    w = TreeWriter(root)
    for r in range(repos):
        layers = [os.urandom(layer_mib << 20) for _ in range(layers_per_repo)]
        w.image(f"bulk/model-{r}", "latest", layers, _config(rnd, str(r)))
    return {"tags": repos, "repositories": repos, "blobs": len(w.written), "bytes": w.bytes}


def push_200_tree(root: Path) -> dict[str, int]:
    return tags_tree(root, repos=10, tags=20, seed=3)


TREES = {"tags-5000": tags_tree, "bulk": bulk_tree, "push-200": push_200_tree}

if __name__ == "__main__":
    import sys

    name, root = sys.argv[1], Path(sys.argv[2])
    facts = TREES[name](root)
    (root / ".facts.json").write_text(json.dumps(facts))
