"""``ferry restore BUNDLE --root s3://BUCKET/PREFIX`` against real Ceph RGW: docker-registry on the s3
driver then serves every tag with its digest; a rerun sends no PUT (counted by a proxy in front of the
S3 server); a restore killed midway leaves no link to a missing blob and no tag, and a rerun completes."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.shared.bundle.reader import Bundle
from ferry.shared.model import Catalog
from ferry.shared.storage.reader import Selection
from tests.support.catch import stopped_when
from tests.support.proxy import Proxy
from tests.support.registry import Registry
from tests.support.s3 import S3Server
from tests.support.zoo import Zoo

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("restore-s3") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


@pytest.fixture
def endpoint(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """The S3 server behind a proxy that logs every request; the AWS environment pointed at it."""
    proxy = Proxy(s3.endpoint.split("//", 1)[1]).start()
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    yield proxy
    proxy.stop()


def _bucket(s3: S3Server, name: str) -> None:
    s3.client().create_bucket(Bucket=name)


def _serves(s3: S3Server, bucket: str, catalog: Catalog, tmp_path: Path) -> None:
    driver = s3.registry_driver(bucket)
    with Registry(tmp_path / "unused", s3=driver, schema1=True) as reg:
        for r in catalog.repositories:
            for tag, digest in r.tags.items():
                status, got, _ = reg.manifest(r.name, tag)
                assert status == 200 and got == digest, (r.name, tag, status, got)
            for b in catalog.repository_blobs(r):
                assert reg.blob_status(r.name, b) == 200


def _keys(s3: S3Server, bucket: str) -> set[str]:
    out: set[str] = set()
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update(o["Key"] for o in page.get("Contents", ()))
    return out


def test_restore_into_s3_is_served_and_a_rerun_writes_nothing(
    s3: S3Server, endpoint: Proxy, bundle: Path, tmp_path: Path
) -> None:
    _bucket(s3, "restored")
    r = runner.invoke(app, ["restore", str(bundle), "--root", "s3://restored/prod", "--json"])
    assert r.exit_code == 0, r.output
    catalog = Bundle.open(bundle).catalog
    _serves(s3, "restored", catalog, tmp_path)
    before = len(endpoint.log)
    r = runner.invoke(app, ["restore", str(bundle), "--root", "s3://restored/prod", "--json"])
    assert r.exit_code == 0, r.output
    again = endpoint.log[before:]
    assert again and not [m for m, _ in again if m in ("PUT", "POST", "DELETE")], again[:5]


def test_a_killed_restore_leaves_nothing_dangling_and_a_rerun_completes(
    s3: S3Server, endpoint: Proxy, bundle: Path, tmp_path: Path
) -> None:
    _bucket(s3, "killed")
    env = dict(os.environ)
    p = subprocess.Popen(
        ["ferry", "restore", str(bundle), "--root", "s3://killed/prod", "-q", "--owner", "keep"], env=env
    )
    try:
        stopped_when(p, lambda: sum(1 for m, _ in endpoint.log if m == "PUT") >= 25)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    keys = _keys(s3, "killed")
    v2 = "prod/docker/registry/v2/"
    links = [k for k in keys if k.endswith("/link")]
    assert links, "the kill came before any link"
    assert not [k for k in keys if "/_manifests/tags/" in k], "a tag was written before every blob"
    for k in links:
        digest = s3.client().get_object(Bucket="killed", Key=k)["Body"].read().decode()
        alg, hexd = digest.split(":")
        assert f"{v2}blobs/{alg}/{hexd[:2]}/{hexd}/data" in keys, f"{k} points to a blob that is not there"
    r = runner.invoke(app, ["restore", str(bundle), "--root", "s3://killed/prod"])
    assert r.exit_code == 0, r.output
    _serves(s3, "killed", Bundle.open(bundle).catalog, tmp_path)


def test_s3_restore_mistakes(s3: S3Server, endpoint: Proxy, bundle: Path) -> None:
    r = runner.invoke(app, ["restore", str(bundle), "--root", "s3://no-such-bucket/prod"])
    assert r.exit_code == 2 and "no such bucket" in r.stderr and "Traceback" not in r.output, r.output
