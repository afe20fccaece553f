"""The zoo: one real registry storage tree holding every case export must handle, built by docker-registry
from images skopeo pushes.  Expected values are read back from the registry's own API, never hard-coded."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .images import OCI_LAYER, Layout, make_layer
from .registry import Registry, push_layout

COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"

FOREIGN_OCI = {
    "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "digest": "sha256:" + "ab" * 32,
    "size": 1234,
    "urls": ["https://example.com/layer.tgz"],
}


@dataclass
class Zoo:
    root: Path  # registry rootdirectory
    registry: Registry
    #: repo -> tag -> digest, as the registry serves them
    served: dict[str, dict[str, str]] = field(default_factory=dict)
    #: repo -> digests of manifests that exist untagged on purpose
    untagged: dict[str, set[str]] = field(default_factory=dict)
    deleted: tuple[str, str] = ("", "")  # (repo, digest) deleted through the API
    foreign_digest: str = FOREIGN_OCI["digest"]  # type: ignore[assignment]
    index_children: dict[str, list[str]] = field(default_factory=dict)  # "repo:tag" -> child digests

    @property
    def v2(self) -> Path:
        return self.root / "docker" / "registry" / "v2"


def build_zoo(workdir: Path) -> Zoo:
    lay = Layout(workdir / "layout")
    base = make_layer(1, 4096)  # a base layer shared by most images
    v1 = lay.image([base, make_layer(2)], label="v1")
    lay.name(v1, "v1")
    v2 = lay.image([base, make_layer(3)], label="v2")
    lay.name(v2, "v2")
    amd = lay.image([base, make_layer(4)], arch="amd64", label="multi")
    arm = lay.image([base, make_layer(5)], arch="arm64", label="multi")
    idx = lay.index([amd, arm])
    lay.name(idx, "multi")
    # a Helm chart as `helm push` writes it: the chart's metadata as the config, the packaged chart as the layer
    chart = lay.image(
        [make_layer(6)],
        config_type="application/vnd.cncf.helm.config.v1+json",
        config=json.dumps(
            {
                "apiVersion": "v2",
                "name": "c",
                "version": "1.0",
                "description": "ferry test chart",
                "type": "application",
            }
        ).encode(),
        layer_type="application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        label="chart",
    )
    lay.name(chart, "chart")
    foreign = lay.image([make_layer(7)], extra_layers=[FOREIGN_OCI], label="foreign")
    lay.name(foreign, "foreign")
    subject = {"mediaType": v1["mediaType"], "digest": v1["digest"], "size": v1["size"]}
    sig = lay.image(
        [make_layer(8)],
        config_type="application/vnd.oci.empty.v1+json",
        label="sig",
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
    lay.name(sig, "sig")
    # a signature as cosign writes it (Harbor 2.x makes it an accessory of the image it signs)
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "team/app"},
                "image": {"docker-manifest-digest": v2["digest"]},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        sort_keys=True,
    ).encode()
    cosign = lay.image(
        [payload],
        config=json.dumps(
            {
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(payload).hexdigest()]},
            }
        ).encode(),
        layer_type=COSIGN_LAYER,
        layer_annotations={"dev.cosignproject.cosign/signature": "MEUCIQDferrytestsignature=="},
        label="cosign",
    )
    lay.name(cosign, "cosign")
    sbom = lay.image(
        [make_layer(9)],
        config_type="application/vnd.oci.empty.v1+json",
        subject=subject,
        artifact_type="application/spdx+json",
        label="sbom",
    )
    lay.name(sbom, "sbom")
    gone = lay.image([make_layer(10)], label="gone")
    lay.name(gone, "gone")
    single = lay.image([make_layer(11)], label="single")
    lay.name(single, "single")
    assert OCI_LAYER

    reg = Registry(workdir / "registry", schema1=True).start()
    pushes = [
        ("v1", "team/app:v1", None),
        ("v2", "team/app:v2", None),
        ("v1", "team/sub:1", None),  # team/sub is a repository ...
        ("v2", "team/sub/app:1", None),  # ... and so is team/sub/app, inside it
        ("multi", "multi:latest", None),
        ("multi", "dockerlist:latest", "v2s2"),  # docker manifest list
        ("v1", "docker/app:v1", "v2s2"),  # docker schema 2
        ("v1", "old:s1", "v2s1"),  # schema 1, signed by skopeo, stored as payload
        ("v1", "weird:current", None),  # tag names that are also storage-layout words
        ("v2", "weird:index", None),
        ("single", "weird:link", None),
        ("chart", "charts/c:1.0", None),
        ("foreign", "foreign:1", None),
        ("foreign", "dforeign:1", "v2s2"),
        ("sig", f"team/app:sha256-{v1['digest'].split(':')[1]}.sig", None),  # type: ignore[union-attr]
        ("cosign", f"team/app:sha256-{v2['digest'].split(':')[1]}.sig", None),  # type: ignore[union-attr]
        ("sbom", "team/app:tmp", None),  # then moved away: the sbom (with subject) stays untagged
        ("single", "team/app:tmp", None),
        ("gone", "gone:1", None),
        ("single", "gone:keep", None),
    ]
    for ref, dest, fmt in pushes:
        push_layout(lay.path, ref, reg, dest, fmt=fmt)
    zoo = Zoo(workdir / "registry", reg)
    zoo.deleted = ("gone", str(gone["digest"]))
    assert reg.delete_manifest("gone", str(gone["digest"])) == 202
    zoo.untagged = {"team/app": {str(sbom["digest"])}}
    zoo.index_children = {"multi:latest": [str(amd["digest"]), str(arm["digest"])]}
    for repo in reg.catalog():
        for tag in reg.tags(repo):
            status, digest, _ = reg.manifest(repo, tag)
            assert status == 200, (repo, tag, status)
            zoo.served.setdefault(repo, {})[tag] = digest
    return zoo
