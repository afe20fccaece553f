"""Restore into a running real Harbor 1.10.19 (../shared/harbor/v1.10.19): its own API lists every project,
repository and tag after ``ferry restore --harbor-url``, and every ref pulls through it with its digest;
both for a Harbor on a disk and for one whose registry keeps its storage in a bucket of the real S3 server
(``--root s3://…``: the same Harbor 1.x steps after the upload)."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.names import map_names
from ferry.shared.bundle.reader import Bundle
from ferry.shared.manifest import MANIFEST_TYPES, SCHEMA1_TYPES
from ferry.shared.registry.client import ClientConfig, Credentials, RegistryClient
from ferry.shared.storage.reader import Selection
from tests.support.realharbor import RealHarbor
from tests.support.s3 import S3Server
from tests.support.zoo import Zoo

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("harbor1") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


@pytest.mark.parametrize("storage", ["disk", "s3"])
def test_restore_into_harbor_1_10_lists_and_serves_everything(
    storage: str, bundle: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if storage == "s3":
        harbor110: RealHarbor = request.getfixturevalue("harbor110_s3")
        s3: S3Server = request.getfixturevalue("s3")
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        root = "s3://harbor1/prod"
    else:
        harbor110 = request.getfixturevalue("harbor110")
        root = harbor110.env["REGISTRY_STORAGE_ROOT"]
    with Bundle.open(bundle) as b:
        catalog = b.catalog
    args = [
        "restore",
        str(bundle),
        "--root",
        root,
        "--harbor-url",
        harbor110.url,
        "--harbor-user",
        harbor110.username,
        "--password-stdin",
        "--redis-url",
        harbor110.env["REDIS_URL"],
    ]
    r = runner.invoke(app, args, input=harbor110.password + "\n")
    assert r.exit_code == 0, r.stderr
    if storage == "s3":  # what Harbor serves below came from the bucket, not from a disk
        assert not list(Path(harbor110.env["REGISTRY_STORAGE_ROOT"]).rglob("data"))
    # one-level names cannot be served by Harbor 1.x: they land under library/, and restore says so
    assert "renamed multi → library/multi" in r.stderr
    assert "multi-arch indexes" in r.stderr and "OCI manifests" in r.stderr  # what its API cannot describe
    names = map_names([x.name for x in catalog.repositories], harbor=True, default_project="library", maps=())
    projects = {p["name"]: p["project_id"] for p in harbor110.ok("GET", "/projects?page_size=100")}
    client = RegistryClient(
        ClientConfig(url=harbor110.url, credentials=Credentials(harbor110.username, harbor110.password))
    )
    accept = {"Accept": ", ".join(sorted(MANIFEST_TYPES))}
    try:
        for repo in catalog.repositories:
            target = names[repo.name]
            project = target.split("/", 1)[0]
            assert project in projects, f"Harbor does not list project {project}"
            listed = {
                x["name"]
                for x in harbor110.ok("GET", f"/repositories?project_id={projects[project]}&page_size=100")
            }
            if repo.tags:
                assert target in listed, f"Harbor does not list {target}"
                tags = {
                    t["name"] for t in harbor110.ok("GET", f"/repositories/{urllib.parse.quote(target)}/tags")
                }
                assert set(repo.tags) <= tags, (target, set(repo.tags) - tags)
            for ref, digest in [*repo.tags.items(), *((d, d) for d in repo.untagged)]:
                resp = client.http.get(client.url(f"/v2/{target}/manifests/{ref}"), headers=accept)
                assert resp.status_code == 200, (target, ref, resp.status_code)
                assert resp.headers.get("Docker-Content-Digest") == digest, (target, ref)
                if catalog.manifests[digest].media_type not in SCHEMA1_TYPES:  # schema 1 is served signed
                    assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == digest
        # a rerun writes nothing and is still in step with Harbor
        again = runner.invoke(app, [*args, "--json"], input=harbor110.password + "\n")
        assert again.exit_code == 0, again.stderr
        doc = json.loads(again.stdout)
        assert doc["blobsWritten"] == 0 and doc["tagsWritten"] == 0
    finally:
        client.close()
