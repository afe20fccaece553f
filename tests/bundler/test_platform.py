"""``--platform``: of a multi-platform image only the listed platforms' images are exported; the index
keeps its exact bytes and records the rest as left out (format 1.3).  The storage-tree and the API
export agree; restore writes a tree the registry serves (the index, the kept platform; not the other);
push into a registry that refuses an index whose children it lacks says so, naming the platforms left
out, and pushes the rest."""

from __future__ import annotations

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
from ferry.shared.bundle.format import PARTIAL_VERSION
from ferry.shared.bundle.reader import Bundle
from ferry.shared.registry.client import ClientConfig
from ferry.shared.storage.reader import Selection
from tests.support.checks import assert_tree_consistent, validate_bundle
from tests.support.registry import Registry
from tests.support.zoo import Zoo

runner = CliRunner()
AMD = Selection(include=("multi",), platforms=("linux/amd64",))


@pytest.fixture(scope="module")
def partial(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("platform") / "amd64.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=AMD))
    return out


def test_only_the_listed_platform_is_exported(zoo: Zoo, partial: Path) -> None:
    catalog = validate_bundle(partial)
    index = catalog.manifests[zoo.served["multi"]["latest"]]
    platforms = {c.platform: c.digest for c in index.children}
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    assert index.left_out == (platforms["linux/arm64"],)
    assert platforms["linux/amd64"] in catalog.manifests and platforms["linux/arm64"] not in catalog.manifests
    with Bundle.open(partial) as b:
        assert b.info.version == PARTIAL_VERSION
    # the API export leaves out the same
    api = partial.with_name("api.tar")
    export(
        ExportOptions(root=Path("."), output=api, registry=ClientConfig(url=zoo.registry.url), selection=AMD)
    )
    a, t = Bundle.open(api), Bundle.open(partial)
    assert dict(a.catalog.manifests) == dict(t.catalog.manifests) and a.order == t.order


def test_restore_of_a_partial_index_is_served(zoo: Zoo, partial: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    restore(RestoreOptions(bundle=str(partial), root=root, owner=None))
    catalog = Bundle.open(partial).catalog
    assert_tree_consistent(root, catalog)
    index = catalog.manifests[zoo.served["multi"]["latest"]]
    with Registry(root) as reg:
        assert reg.manifest("multi", "latest")[1] == index.digest
        for c in index.children:
            status = reg.manifest("multi", c.digest)[0]
            assert status == (404 if c.digest in index.left_out else 200), c.platform


def test_push_of_a_partial_index_says_what_the_registry_refuses(
    zoo: Zoo, partial: Path, tmp_path: Path
) -> None:
    catalog = Bundle.open(partial).catalog
    index = catalog.manifests[zoo.served["multi"]["latest"]]
    kept = next(c.digest for c in index.children if c.digest not in index.left_out)
    with Registry(tmp_path / "t") as reg:
        r = push(PushOptions(bundle=str(partial), registry=reg.url))
        outcome = next(i for i in r.images if i.ref == "multi:latest")
        if outcome.status == "pushed":  # a registry that takes it: served as restored
            assert reg.manifest("multi", "latest")[1] == index.digest
        else:
            assert "--platform" in outcome.reason and "linux/arm64" in outcome.reason, outcome.reason
        assert reg.manifest("multi", kept)[0] == 200  # the platform kept landed either way


def test_platform_mistakes(zoo: Zoo, tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", str(zoo.root), "-o", str(tmp_path / "x.tar"), "--platform", "amd64"])
    assert r.exit_code == 2 and "os/arch" in r.stderr
