from __future__ import annotations

import json

import pytest

from ferry.shared.manifest import ManifestError, MediaType, parse_manifest
from ferry.shared.storage.reader import Selection

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def test_media_type_is_derived_like_the_registry_does() -> None:
    oci = {"schemaVersion": 2, "config": {"digest": D1, "size": 1, "mediaType": "x"}, "layers": []}
    assert parse_manifest(json.dumps(oci).encode()).media_type == MediaType.OCI_MANIFEST
    idx = {
        "schemaVersion": 2,
        "manifests": [
            {
                "digest": D1,
                "size": 3,
                "mediaType": MediaType.OCI_MANIFEST,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            }
        ],
    }
    info = parse_manifest(json.dumps(idx).encode())
    assert info.media_type == MediaType.OCI_INDEX and info.children[0].platform == "linux/arm/v7"
    s1 = {"schemaVersion": 1, "fsLayers": [{"blobSum": D1}, {"blobSum": D2}, {"blobSum": D1}]}
    info = parse_manifest(json.dumps(s1).encode())
    assert info.media_type == MediaType.DOCKER_SCHEMA1 and [b.digest for b in info.blobs] == [D1, D2]


def test_subject_foreign_and_artifact_type() -> None:
    m = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST,
        "config": {"digest": D1, "size": 2, "mediaType": "application/vnd.cncf.helm.config.v1+json"},
        "layers": [
            {
                "digest": D2,
                "size": 5,
                "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "urls": ["https://x/y"],
            }
        ],
        "subject": {"digest": D3, "size": 7, "mediaType": MediaType.OCI_MANIFEST},
    }
    info = parse_manifest(json.dumps(m).encode())
    assert info.subject == D3 and info.artifact_type == "application/vnd.cncf.helm.config.v1+json"
    assert info.blobs[1].foreign and not info.blobs[0].foreign


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"a":1}',
        b'{"schemaVersion":1}',
        b'{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1}}',
        b'{"schemaVersion":2,"manifests":[{"digest":"' + D1.encode() + b'","size":-1}]}',
    ],
)
def test_garbage_is_a_manifest_error(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(raw)


def test_selection_globs() -> None:
    s = Selection(include=("team/*", "lib:v1*"), exclude=("team/secret*", "*:*-rc"))
    assert s.wants("team/app", "v1") and s.wants("team/a/b", None)
    assert not s.wants("team/secret", "v1") and not s.wants("team/app", "2.0-rc")
    assert s.wants("lib", "v1.2") and not s.wants("lib", "v2") and not s.wants("lib", None)
    assert Selection().wants("anything", None)
