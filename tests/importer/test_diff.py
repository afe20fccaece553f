"""``ferry diff`` against a real registry and a storage tree: ok after an import; a moved, a deleted and a
missing tag, a missing blob and damaged blob data are each named, and the exit code says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.push import PushOptions
from ferry.importer.push import run as push
from ferry.importer.restore import RestoreOptions
from ferry.importer.restore import run as restore
from ferry.shared.bundle.reader import Bundle
from ferry.shared.storage.reader import Selection
from tests.support.registry import Registry
from tests.support.zoo import Zoo

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("diff") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


def _diff(*args: str) -> tuple[int, dict[str, object]]:
    r = runner.invoke(app, ["diff", *args, "--json"])
    return r.exit_code, json.loads(r.stdout)


def test_diff_with_a_registry(zoo: Zoo, bundle: Path, tmp_path: Path) -> None:
    with Registry(tmp_path / "target") as reg:
        code, doc = _diff(str(bundle), "--registry", reg.url)
        assert (
            code == 1 and doc["tagStatus"]["okCount"] == 0 and doc["tagStatus"]["missingCount"] > 0
        )  # empty target
        assert not push(PushOptions(bundle=str(bundle), registry=reg.url)).failed
        code, doc = _diff(str(bundle), "--registry", reg.url)
        assert code == 0 and doc["ok"] and doc["problems"] == [] and doc["blobs"] == [], doc
        catalog = Bundle.open(bundle).catalog
        assert doc["tagStatus"]["okCount"] == sum(len(r.tags) for r in catalog.repositories) - len(
            doc["skipped"]
        )  # type: ignore[index, arg-type]
        assert doc["childStatus"]["okCount"] > 0 and doc["untaggedStatus"]["okCount"] == 1  # type: ignore[index]
        # the target changes: a tag moved, one deleted with its manifest
        app_tags = next(r for r in catalog.repositories if r.name == "team/app").tags
        moved = reg.root / "docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link"
        moved.write_text(app_tags["v2"])
        assert reg.delete_manifest("weird", zoo.served["weird"]["link"]) == 202
        code, doc = _diff(str(bundle), "--registry", reg.url)
        assert code == 1 and not doc["ok"]
        problems = {p["ref"]: p for p in doc["problems"]}  # type: ignore[union-attr, index]
        assert problems["team/app:v1"]["status"] == "different"
        assert (
            problems["team/app:v1"]["target"] == app_tags["v2"]
            and problems["team/app:v1"]["bundle"] == app_tags["v1"]
        )
        assert problems["weird:link"]["status"] == "missing"
        # the text form names them too
        r = runner.invoke(app, ["diff", str(bundle), "--registry", reg.url])
        assert r.exit_code == 1 and "different team/app:v1" in r.stdout and "missing weird:link" in r.stdout


def test_diff_with_a_storage_tree(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    restore(RestoreOptions(bundle=str(bundle), root=root, owner=None))
    code, doc = _diff(str(bundle), "--root", str(root), "--deep")
    assert code == 0 and doc["ok"], doc
    catalog = Bundle.open(bundle).catalog
    layer = next(d for d, b in catalog.blobs.items() if b.size > 100)
    data = root / "docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    raw = bytearray(data.read_bytes())
    raw[50] ^= 0xFF
    data.write_bytes(bytes(raw))
    code, doc = _diff(str(bundle), "--root", str(root))
    assert code == 0, "without --deep only presence and size are checked"
    code, doc = _diff(str(bundle), "--root", str(root), "--deep")
    assert code == 1 and {b["problem"].split(" ")[0] for b in doc["blobs"]} == {"damaged"}  # type: ignore[union-attr, index]
    data.unlink()
    code, doc = _diff(str(bundle), "--root", str(root))
    assert code == 1 and all(b["digest"] == layer for b in doc["blobs"])  # type: ignore[union-attr, index]
    # a tag the tree does not have
    (root / "docker/registry/v2/repositories/team/app/_manifests/tags/v2/current/link").unlink()
    code, doc = _diff(str(bundle), "--root", str(root))
    assert any(p["ref"] == "team/app:v2" and p["status"] == "missing" for p in doc["problems"])  # type: ignore[union-attr, index]


def test_diff_needs_exactly_one_target(bundle: Path) -> None:
    r = runner.invoke(app, ["diff", str(bundle)])
    assert r.exit_code == 2 and "exactly one target" in r.stderr
