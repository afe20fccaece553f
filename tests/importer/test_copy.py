"""``ferry copy SOURCE TARGET``: registry to registry, storage tree or bundle to registry, registry to a
storage root; every tag with the source's digest, a rerun that writes nothing, the push report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.diff import DiffOptions
from ferry.importer.diff import run as diff
from ferry.shared.bundle.reader import Bundle
from ferry.shared.manifest import SCHEMA1_TYPES
from ferry.shared.model import Catalog
from tests.support.checks import assert_tree_consistent
from tests.support.registry import Registry
from tests.support.zoo import Zoo

runner = CliRunner()


@pytest.fixture(scope="module")
def reference(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the zoo's registry holds, as a bundle (to compare with: diff)."""
    out = tmp_path_factory.mktemp("copy") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out))
    return out


def _pushed_tags(catalog: Catalog) -> dict[tuple[str, str], str]:
    return {
        (r.name, t): d
        for r in catalog.repositories
        for t, d in r.tags.items()
        if catalog.manifests[d].media_type not in SCHEMA1_TYPES
    }


def _copy(*args: str) -> tuple[int, dict[str, object], str]:
    r = runner.invoke(app, ["copy", *args, "--json"])
    return r.exit_code, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


@pytest.mark.parametrize("kind", ["registry", "tree", "bundle"])
def test_copy_into_a_registry(zoo: Zoo, reference: Path, tmp_path: Path, kind: str) -> None:
    source = {"registry": zoo.registry.url, "tree": str(zoo.root), "bundle": str(reference)}[kind]
    with Registry(tmp_path / "target", access_log=True) as reg:
        code, doc, err = _copy(source, reg.url)
        assert code == 0, err  # the zoo's schema 1 images are skipped by the push flow, and say so
        images = doc["images"]
        assert isinstance(images, list)
        assert {i["status"] for i in images} == {"pushed", "skipped"}
        assert all("schema 1" in i["reason"] for i in images if i["status"] == "skipped")
        catalog = Bundle.open(reference).catalog
        for (repo, tag), digest in _pushed_tags(catalog).items():
            assert reg.manifest(repo, tag)[1] == digest == zoo.served[repo][tag]
        d = diff(DiffOptions(bundle=reference, registry=reg.url))
        assert d.ok and d.skipped, d.to_dict()  # schema 1 tags: skipped by push, and by diff
        # a rerun sends nothing that changes the target
        before = reg.log_path.read_text().count("\n")
        code, doc, err = _copy(source, reg.url)
        log = reg.log_path.read_text().splitlines()[before:]
        assert not [x for x in log if '"PUT ' in x or '"POST ' in x or '"PATCH ' in x]


def test_copy_a_registry_into_a_storage_root(zoo: Zoo, reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    code, _doc, err = _copy(zoo.registry.url, str(root), "--owner", "keep")
    assert code == 0, err
    catalog = Bundle.open(reference).catalog
    assert_tree_consistent(root, catalog)
    assert diff(DiffOptions(bundle=reference, root=root, deep=True)).ok


def test_copy_mistakes_are_named(tmp_path: Path) -> None:
    r = runner.invoke(app, ["copy", str(tmp_path / "nope"), "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "no such storage tree or bundle" in r.stderr
    r = runner.invoke(app, ["copy", "ftp://x", str(tmp_path / "r")])
    assert r.exit_code == 2
