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
from collections.abc import Callable
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
        self.last_size = 0

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
        md = self.blob(manifest)
        self.last_size = len(manifest)
        self.tag(repo, tag, md)
        return md

    def tag(self, repo: str, tag: str, digest: str) -> None:
        """Links ``digest`` as a revision of ``repo`` and points ``tag`` at it (the last call for a tag wins,
        as a push of an index after its children does)."""
        md = Digest.parse(digest)
        self._file(self.layout.path(ManifestRevisionLink(repo, md)), digest.encode())
        self._file(self.layout.path(TagCurrentLink(repo, tag)), digest.encode())
        self._file(self.layout.path(TagIndexEntryLink(repo, tag, md)), digest.encode())


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


INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"


def scale_tree(root: Path, tags: int, seed: int = 4) -> dict[str, int]:
    """``scale-20000`` and ``scale-100000``: many tags with small blobs, where the cost per item dominates.
    Repositories of 20 tags; every image has one of 8 shared bases (64 KiB) and one of 40 shared middle
    layers (16 KiB), a unique layer of 1-4 KiB and a unique config; every 10th tag is a two-platform index
    (amd64, arm64) whose children are such images too."""
    rnd = random.Random(seed)
    w = TreeWriter(root)
    bases = [rnd.randbytes(64 << 10) for _ in range(8)]
    middles = [rnd.randbytes(16 << 10) for _ in range(40)]
    indexes = 0
    for n in range(tags):
        r, t = divmod(n, 20)
        repo = f"team{r % 100}/service-{r}"
        tag = f"1.{t}.0"

        def one(label: str, r: int = r, repo: str = repo, tag: str = tag) -> tuple[str, int]:
            layers = [bases[r % 8], middles[rnd.randrange(40)], rnd.randbytes(rnd.randint(1, 4) << 10)]
            d = w.image(repo, tag, layers, _config(rnd, label))
            return d, w.last_size

        if t % 10 == 9:
            children = [one(f"{n}-{arch}") for arch in ("amd64", "arm64")]
            index = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": INDEX,
                    "manifests": [
                        {
                            "mediaType": MANIFEST,
                            "size": size,
                            "digest": d,
                            "platform": {"architecture": arch, "os": "linux"},
                        }
                        for (d, size), arch in zip(children, ("amd64", "arm64"))
                    ],
                },
                indent=3,
            ).encode()
            w.tag(repo, tag, w.blob(index))
            indexes += 1
        else:
            one(str(n))
    return {
        "tags": tags,
        "repositories": tags // 20,
        "indexes": indexes,
        "blobs": len(w.written),
        "bytes": w.bytes,
    }


def push_200_tree(root: Path) -> dict[str, int]:
    return tags_tree(root, repos=10, tags=20, seed=3)


TREES: dict[str, Callable[[Path], dict[str, int]]] = {
    "tags-5000": tags_tree,
    "bulk": bulk_tree,
    "push-200": push_200_tree,
    "scale-20000": lambda root: scale_tree(root, 20_000),
    "scale-100000": lambda root: scale_tree(root, 100_000),
}

if __name__ == "__main__":
    import sys

    name, root = sys.argv[1], Path(sys.argv[2])
    facts = TREES[name](root)
    (root / ".facts.json").write_text(json.dumps(facts))
