"""``ferry export s3://BUCKET/PREFIX``: a registry on Distribution's s3 driver against real Ceph RGW.
The images pushed into it with skopeo, exported straight from the bucket, give the same index and
members as the storage-tree export of a filesystem registry holding the same images; a missing bucket
and bad credentials are one-line errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.shared.bundle.reader import Bundle
from ferry.shared.storage.s3fs import S3Config
from tests.support.checks import tags_of, validate_bundle
from tests.support.registry import Registry, skopeo
from tests.support.s3 import S3Server
from tests.support.zoo import Zoo

runner = CliRunner()
REFS = ("team/app:v1", "team/app:v2", "multi:latest", "charts/c:1.0")


def _index(path: Path) -> tuple[object, ...]:
    with Bundle.open(path) as b:
        c = b.catalog
        return (c.repositories, dict(c.manifests), dict(c.blobs), c.skipped, b.order)


@pytest.fixture(scope="module")
def registries(
    s3: S3Server, zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """(filesystem registry root, s3 URL) holding the same images."""
    work = tmp_path_factory.mktemp("s3")
    s3.client().create_bucket(Bucket="registry")
    driver = s3.registry_driver("registry")
    with Registry(work / "fs") as fs, Registry(work / "unused", s3=driver) as on_s3:
        for ref in REFS:
            for reg in (fs, on_s3):
                skopeo(
                    "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{zoo.registry.host}/{ref}", f"docker://{reg.host}/{ref}",
                )  # fmt: skip
        yield fs.root, "s3://registry/prod"


@pytest.fixture
def aws(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    return s3


def test_export_from_s3_is_the_storage_tree_export(
    aws: S3Server, registries: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = registries
    from_s3, from_disk = tmp_path / "s3.tar", tmp_path / "disk.tar"
    r = export(ExportOptions(root=Path("."), s3_url=url, s3=S3Config(), output=from_s3))
    export(ExportOptions(root=root, output=from_disk))
    validate_bundle(from_s3)
    assert r.tags == len(REFS)
    assert _index(from_s3) == _index(from_disk)
    with Bundle.open(from_s3) as a, Bundle.open(from_disk) as d:
        a.scan()
        d.scan()
        assert a.trailer is not None and d.trailer is not None
        assert a.trailer.members[1:] == d.trailer.members[1:]  # every member but the index, byte for byte
        assert a.info.source["kind"] == "s3"
    assert set(tags_of(Bundle.open(from_s3).catalog)) == {"team/app", "multi", "charts/c"}


def test_from_the_command_line(aws: S3Server, registries: tuple[Path, str], tmp_path: Path) -> None:
    _, url = registries
    out = tmp_path / "c.tar"
    r = runner.invoke(
        app, ["export", url, "-o", str(out), "--s3-endpoint", aws.endpoint, "--include", "multi"]
    )
    assert r.exit_code == 0, r.stderr
    assert {x.name for x in validate_bundle(out).repositories} == {"multi"}


def test_s3_mistakes_are_one_line_errors(aws: S3Server, registries: tuple[Path, str], tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", "s3://no-such-bucket/prod", "-o", str(tmp_path / "x.tar")])
    assert r.exit_code == 2 and "no such bucket" in r.stderr and "Traceback" not in r.output, r.output
    os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong"
    r = runner.invoke(app, ["export", registries[1], "-o", str(tmp_path / "x.tar")])
    assert r.exit_code == 1 and "access denied" in r.stderr and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["export", "s3://registry/elsewhere", "-o", str(tmp_path / "x.tar")])
    assert r.exit_code != 0 and not (tmp_path / "x.tar").exists()


def test_large_blobs_come_in_parallel_ranges(
    aws: S3Server, registries: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects above RANGED are read in parts (here made tiny, so the zoo's layers are split into many):
    the bundle is still exactly the disk export's."""
    import ferry.shared.storage.reader as reader
    import ferry.shared.storage.s3fs as s3fs

    monkeypatch.setattr(reader, "REMOTE_SMALL", 500)  # blobs above it are streamed, not fetched whole
    monkeypatch.setattr(s3fs, "RANGED", 1000)
    monkeypatch.setattr(s3fs, "PART", 777)
    parts: list[tuple[int, int]] = []
    real_get = s3fs._Ranged._get

    def spy(self: s3fs._Ranged, first: int, last: int) -> bytes:
        parts.append((first, last))
        return real_get(self, first, last)

    monkeypatch.setattr(s3fs._Ranged, "_get", spy)
    root, url = registries
    out, disk = tmp_path / "s3.tar", tmp_path / "disk.tar"
    export(ExportOptions(root=Path("."), s3_url=url, s3=S3Config(), output=out))
    export(ExportOptions(root=root, output=disk))
    assert _index(out) == _index(disk)
    validate_bundle(out)
    assert len(parts) > 10 and any(first > 0 for first, _ in parts)
