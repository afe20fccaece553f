"""Migrations in waves, end to end with the real registry: a full first wave, then a source that changed
(a new tag, a moved tag, a new top layer in an existing image, a deleted tag, a new repository, an image
copied into another repository), a delta against the first wave's receipt, verified, pushed and restored;
``ferry diff`` says ``ok`` everywhere and every tag has the source's digest.  The delta holds exactly the
set difference of two full exports.  A target that lacks a base is refused before anything is written,
naming the base."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.diff import DiffOptions
from ferry.importer.diff import run as diff
from ferry.importer.push import PushOptions
from ferry.importer.push import run as push
from ferry.importer.restore import RestoreOptions
from ferry.importer.restore import run as restore
from ferry.importer.verify import VerifyOptions
from ferry.importer.verify import run as verify
from ferry.shared.bundle.format import DELTA_VERSION, blob_member
from ferry.shared.bundle.reader import Bundle
from ferry.shared.errors import BaseMissing
from tests.support.checks import assert_tree_consistent, tags_of, validate_bundle
from tests.support.images import Layout, make_layer
from tests.support.registry import Registry, push_layout

runner = CliRunner()


@dataclass
class Waves:
    src: Registry
    layout: Layout
    work: Path
    wave1: Path
    receipt1: Path
    wave2: Path
    full2: Path
    #: the wave-1 targets, holding wave 1 and then wave 2
    dst: Registry
    root: Path


def _image(layout: Layout, layers: list[int], ref: str, *, label: str = "") -> dict[str, object]:
    desc = layout.image([make_layer(seed) for seed in layers], label=label or ref)
    layout.name(desc, ref)
    return desc


def _publish(layout: Layout, src: Registry, refs: dict[str, str]) -> None:
    for ref, dest in refs.items():
        push_layout(layout.path, ref, src, dest)


def _members(path: Path) -> set[str]:
    with Bundle.open(path) as b:
        b.scan()
        return {m.name for m in b.members if m.name.startswith("blobs/")}


def _described(path: Path) -> set[str]:
    with Bundle.open(path) as b:
        return {blob_member(d) for d in (*b.catalog.blobs, *b.catalog.manifests)}


def _source_tags(src: Registry, catalog_tags: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """What the source registry itself serves for every tag (not what ferry read)."""
    return {
        repo: {tag: src.manifest(repo, tag)[1] for tag in src.tags(repo)}
        for repo in sorted(set(src.catalog()) | set(catalog_tags))
        if src.tags(repo)
    }


@pytest.fixture(scope="module")
def waves(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Waves]:
    work = tmp_path_factory.mktemp("waves")
    layout = Layout(work / "layout")
    src = Registry(work / "src").start()
    dst = Registry(work / "dst").start()
    try:
        _image(layout, [1, 2], "app-v1")
        _image(layout, [1, 3], "app-v2")
        _image(layout, [1], "os-1")
        amd = layout.image([make_layer(4)], arch="amd64")
        arm = layout.image([make_layer(5)], arch="arm64")
        layout.name(layout.index([amd, arm]), "multi")
        _publish(
            layout,
            src,
            {"app-v1": "team/app:v1", "app-v2": "team/app:v2", "os-1": "base/os:1", "multi": "multi:latest"},
        )
        wave1, receipt1 = work / "wave1.tar", work / "wave1.receipt"
        export(ExportOptions(root=src.root, output=wave1, receipt=receipt1))
        assert not push(PushOptions(bundle=str(wave1), registry=dst.url)).failed
        root = work / "root"
        restore(RestoreOptions(bundle=str(wave1), root=root, owner=None))

        # the source moves on
        _image(layout, [1, 6], "app-v3")  # a new tag
        _image(layout, [1, 3, 7], "app-v2b")  # v2 moves: a new top layer on the old image
        _image(layout, [1, 8], "os-1b")  # os:1 gets a new layer
        _image(layout, [1, 9], "x-1")  # a new repository, sharing a layer a base carried
        _publish(
            layout,
            src,
            {
                "app-v3": "team/app:v3",
                "app-v2b": "team/app:v2",
                "os-1b": "base/os:1",
                "x-1": "newrepo/x:1",
                "multi": "other/copy:1",  # a manifest a base carried, into a repository it never was in
            },
        )
        shutil.rmtree(src.root / "docker/registry/v2/repositories/team/app/_manifests/tags/v1")
        wave2, full2 = work / "wave2.tar", work / "full2.tar"
        export(ExportOptions(root=src.root, output=wave2, since=(receipt1,)))
        export(ExportOptions(root=src.root, output=full2))
        yield Waves(src, layout, work, wave1, receipt1, wave2, full2, dst, root)
    finally:
        src.stop()
        dst.stop()


def test_the_delta_holds_exactly_what_the_first_wave_did_not(waves: Waves) -> None:
    delta = _members(waves.wave2)
    assert delta == _members(waves.full2) - _members(waves.wave1)
    assert delta  # the source did change
    # it still describes the whole selection, as the full export does
    assert _described(waves.wave2) == _described(waves.full2)
    catalog = validate_bundle(waves.wave2)
    with Bundle.open(waves.wave1) as b:
        first_id = b.info.bundle_id
    with Bundle.open(waves.wave2) as b:
        assert b.info.version == DELTA_VERSION
        assert [x.bundle_id for x in b.catalog.bases] == [first_id]
    assert set(catalog.carried.values()) == {first_id}
    full = Bundle.open(waves.full2).catalog
    assert tags_of(catalog) == tags_of(full)
    # what a base described is taken from it, not read again: it must describe exactly what a full export
    # reads from the tree (every manifest and blob, sizes and media types included)
    assert dict(catalog.manifests) == dict(full.manifests) and dict(catalog.blobs) == dict(full.blobs)
    assert catalog.repositories == full.repositories


def test_inspect_and_verify_show_the_wave(waves: Waves) -> None:
    r = runner.invoke(app, ["inspect", str(waves.wave2), "--json"])
    assert r.exit_code == 0, r.output
    w = json.loads(r.stdout)["wave"]
    assert w["delta"] is True
    assert sorted(c["ref"] for c in w["tagsNew"]) == ["newrepo/x:1", "other/copy:1", "team/app:v3"]
    assert sorted(c["ref"] for c in w["tagsMoved"]) == ["base/os:1", "team/app:v2"]
    assert [c["ref"] for c in w["tagsGone"]] == ["team/app:v1"]
    assert w["bytesNew"] < w["carried"]["bytes"] + w["bytesNew"]
    text = runner.invoke(app, ["inspect", str(waves.wave2)]).stdout
    assert "delta" in text and "team/app:v1" in text
    v = verify(VerifyOptions(path=waves.wave2))
    with Bundle.open(waves.wave1) as b:
        assert [x.bundle_id for x in v.bases] == [b.info.bundle_id]
    r = runner.invoke(app, ["verify", str(waves.wave2)])
    assert r.exit_code == 0 and "must have received" in r.stderr


def test_push_and_restore_of_the_delta(waves: Waves) -> None:
    result = push(PushOptions(bundle=str(waves.wave2), registry=waves.dst.url))
    assert not result.failed and not result.tags_kept
    assert result.blobs_mounted >= 1  # the shared layer a base carried, into the new repository
    # every tag on the target has the digest the source serves; the deleted tag stays (never deleted)
    catalog = Bundle.open(waves.wave2).catalog
    want = _source_tags(waves.src, tags_of(catalog))
    for repo, tags in want.items():
        for tag, digest in tags.items():
            assert waves.dst.manifest(repo, tag)[1] == digest, f"{repo}:{tag}"
    assert waves.dst.manifest("team/app", "v1")[0] == 200
    d = diff(DiffOptions(bundle=waves.wave2, registry=waves.dst.url))
    assert d.ok, d.to_dict()

    restore(RestoreOptions(bundle=str(waves.wave2), root=waves.root, owner=None))
    assert_tree_consistent(waves.root, catalog)
    d = diff(DiffOptions(bundle=waves.wave2, root=waves.root, deep=True))
    assert d.ok, d.to_dict()
    # the full export of the changed source agrees with what the waves built
    assert diff(DiffOptions(bundle=waves.full2, registry=waves.dst.url)).ok
    assert diff(DiffOptions(bundle=waves.full2, root=waves.root, deep=True)).ok


def test_a_target_without_the_base_is_refused_before_anything_is_written(
    waves: Waves, tmp_path: Path
) -> None:
    with Bundle.open(waves.wave1) as b:
        first_id = b.info.bundle_id
    assert first_id
    with Registry(tmp_path / "empty", access_log=True) as reg:
        with pytest.raises(BaseMissing) as e:
            push(PushOptions(bundle=str(waves.wave2), registry=reg.url))
        assert first_id in e.value.message and "nothing was written" in e.value.message
        assert all(m["base"] == first_id and m["images"] for m in e.value.missing)
        requests = reg.log_path.read_text()
        assert '"PUT ' not in requests and '"POST ' not in requests and '"PATCH ' not in requests
        assert reg.catalog() == []
        # the CLI names it too, and exits 1
        r = runner.invoke(app, ["push", str(waves.wave2), "--registry", reg.url])
        assert r.exit_code == 1 and "base-missing" in r.stderr and first_id in r.stderr
    root = tmp_path / "root"
    with pytest.raises(BaseMissing) as e:
        restore(RestoreOptions(bundle=str(waves.wave2), root=root, owner=None))
    assert first_id in e.value.message
    assert not root.exists() or not any(root.rglob("*"))
    r = runner.invoke(app, ["restore", str(waves.wave2), "--root", str(root), "--owner", "keep", "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["error"]["code"] == "base-missing"
    assert {m["base"] for m in doc["error"]["missing"]} == {first_id}


def test_a_third_wave_against_both_and_against_a_delta_alone(waves: Waves, tmp_path: Path) -> None:
    _image(waves.layout, [1, 10], "app-v4")
    _publish(waves.layout, waves.src, {"app-v4": "team/app:v4"})
    with Bundle.open(waves.wave1) as b:
        first_id = b.info.bundle_id
    with Bundle.open(waves.wave2) as b:
        second_id = b.info.bundle_id
    both = tmp_path / "wave3.tar"
    r = runner.invoke(
        app,
        [
            "export",
            str(waves.src.root),
            "-o",
            str(both),
            "--since",
            str(waves.wave1),
            "--since",
            str(waves.wave2),
        ],
    )
    assert r.exit_code == 0, r.output
    full3 = tmp_path / "full3.tar"
    export(ExportOptions(root=waves.src.root, output=full3))
    assert _members(both) == _members(full3) - _members(waves.wave1) - _members(waves.wave2)
    # the second wave's receipt alone: what the first wave carried is still named by the first wave
    receipt2 = tmp_path / "wave2.receipt"
    r = runner.invoke(app, ["receipt", str(waves.wave2), "-o", str(receipt2), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["bundleId"] == second_id
    alone = tmp_path / "wave3b.tar"
    export(ExportOptions(root=waves.src.root, output=alone, since=(receipt2,)))
    assert _members(alone) == _members(both)
    catalog = validate_bundle(alone)
    first_members = {m.split("/", 1)[1].replace("/", ":", 1) for m in _members(waves.wave1)}
    assert {catalog.carried[d] for d in first_members if d in catalog.carried} == {first_id}
    assert second_id in set(catalog.carried.values())
    assert [b.bundle_id for b in catalog.bases] == [first_id, second_id]


def test_since_mistakes_are_named(waves: Waves, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    r = runner.invoke(app, ["export", str(waves.src.root), "-o", str(out), "--since", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such bundle or receipt" in r.stderr
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x28\xb5\x2f\xfd" + b"not an index")
    r = runner.invoke(app, ["export", str(waves.src.root), "-o", str(out), "--since", str(junk)])
    assert r.exit_code == 1 and "not a usable receipt" in r.stderr
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_a_tag_someone_else_moved_on_the_target_is_kept(waves: Waves, tmp_path: Path) -> None:
    with Registry(tmp_path / "t") as reg:
        assert not push(PushOptions(bundle=str(waves.wave1), registry=reg.url)).failed
        # someone points team/app:v2 elsewhere on the target after wave 1: not the base's digest any more
        other = reg.manifest("base/os", "1")[1]
        wave1_tags = tags_of(Bundle.open(waves.wave1).catalog)
        assert wave1_tags["team/app"]["v2"] != other
        link = reg.root / "docker/registry/v2/repositories/team/app/_manifests/tags/v2/current/link"
        revision = reg.root / "docker/registry/v2/repositories/team/app/_manifests/revisions/sha256"
        (revision / other[7:]).mkdir(parents=True, exist_ok=True)
        (revision / other[7:] / "link").write_text(other)
        link.write_text(other)
        result = push(PushOptions(bundle=str(waves.wave2), registry=reg.url))
        assert [t[0] for t in result.tags_kept] == ["team/app:v2"]
        assert reg.manifest("team/app", "v2")[1] == other
        # the tags the base set and nobody touched moved with the source
        assert reg.manifest("base/os", "1")[1] == waves.src.manifest("base/os", "1")[1]


def test_a_reader_that_knows_only_1x_refuses_a_delta_clearly(
    waves: Waves, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a ferry from before deltas does with one: it checks the major version first."""
    import ferry.shared.bundle.format as fmt
    from ferry.shared.errors import BundleVersionError

    monkeypatch.setattr(fmt, "MAJORS", (1,))
    with pytest.raises(BundleVersionError, match=r"version 2\.0 is newer than this ferry understands"):
        Bundle.open(waves.wave2)
    Bundle.open(waves.wave1).close()  # a full bundle is still 1.x


def test_a_registry_that_refuses_mounts_gets_carried_blobs_uploaded(waves: Waves, tmp_path: Path) -> None:
    """A mount answered 202 (refused, an upload session instead): the blob a base carried is downloaded
    from the target's repository that holds it and uploaded into the new one."""
    from http.server import BaseHTTPRequestHandler

    from tests.support.proxy import Proxy

    def no_mounts(handler: BaseHTTPRequestHandler) -> bool:
        if handler.command == "POST" and "mount=" in handler.path:
            handler.path = handler.path.split("?", 1)[0]  # a plain upload start: the registry answers 202
        return False

    with Registry(tmp_path / "t") as reg:
        assert not push(PushOptions(bundle=str(waves.wave1), registry=reg.url)).failed
        proxy = Proxy(reg.host, route=no_mounts).start()
        try:
            result = push(PushOptions(bundle=str(waves.wave2), registry=proxy.url))
        finally:
            proxy.stop()
        assert not result.failed and result.blobs_mounted == 0
        assert any(m == "GET" and "/blobs/" in p for m, p in proxy.log)  # downloaded from the target
        assert diff(DiffOptions(bundle=waves.wave2, registry=reg.url, deep=True)).ok
