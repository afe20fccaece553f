"""Generate OCI image layouts with seeded random content: real gzip'd tar layers, real configs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(seed: int, size: int = 2048) -> bytes:
    """A gzip'd tar with one file of seeded random (incompressible) bytes: a real, unique layer."""
    rnd = random.Random(seed)
    payload = rnd.randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(f"data/file-{seed}.bin")
        ti.size, ti.mtime = len(payload), 0
        tf.addfile(ti, io.BytesIO(payload))
    return gzip.compress(buf.getvalue(), mtime=0, compresslevel=1)


def diff_id(layer: bytes) -> str:
    return sha(gzip.decompress(layer))


@dataclass
class Layout:
    """An OCI image layout directory being built."""

    path: Path

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs: list[dict[str, object]] = []

    def blob(self, data: bytes) -> str:
        d = sha(data)
        (self.path / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
        return d

    def _desc(self, data: bytes, media_type: str, **extra: object) -> dict[str, object]:
        return {"mediaType": media_type, "digest": self.blob(data), "size": len(data), **extra}

    def image(
        self,
        layers: list[bytes],
        *,
        arch: str = "amd64",
        config_type: str = OCI_CONFIG,
        extra_layers: list[dict[str, object]] | None = None,
        subject: dict[str, object] | None = None,
        artifact_type: str | None = None,
        label: str = "",
        layer_type: str = OCI_LAYER,
        layer_annotations: dict[str, str] | None = None,
        config: bytes | None = None,
    ) -> dict[str, object]:
        """Writes config + manifest; returns the manifest descriptor (not yet named in index.json)."""
        if config is not None:
            pass
        elif config_type == OCI_CONFIG:
            config = json.dumps(
                {
                    "architecture": arch,
                    "os": "linux",
                    "config": {"Labels": {"ferry.test": label}},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id(layer) for layer in layers]},
                    # schema 1 conversion (skopeo --format v2s1) needs one history entry per layer
                    "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
                },
                sort_keys=True,
            ).encode()
        else:
            config = json.dumps({"label": label}).encode()
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self._desc(config, config_type),
            "layers": [
                self._desc(
                    layer, layer_type, **({"annotations": layer_annotations} if layer_annotations else {})
                )
                for layer in layers
            ]
            + (extra_layers or []),
        }
        if subject:
            manifest["subject"] = subject
        if artifact_type:
            manifest["artifactType"] = artifact_type
        raw = json.dumps(manifest, sort_keys=True).encode()
        return self._desc(raw, OCI_MANIFEST, platform={"os": "linux", "architecture": arch})

    def index(self, children: list[dict[str, object]]) -> dict[str, object]:
        raw = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, sort_keys=True
        ).encode()
        return self._desc(raw, OCI_INDEX)

    def name(self, desc: dict[str, object], ref: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref}
        self.refs.append(entry)
        (self.path / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs})
        )
