"""``ferry export docker://…``: a live registry read over the V2 API.  The zoo's registry exported both
ways gives the same index (apart from ``source`` and the times) and the same members; what arrives
through push has the source's digests; basic auth, a refused catalog (``--repos-from``), broken
downloads (resumed with Range, nothing corrupt in the bundle) and real Harbor (token auth, its projects
API where the catalog is refused)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions, ExportResult
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.diff import DiffOptions
from ferry.importer.diff import run as diff
from ferry.importer.push import PushOptions
from ferry.importer.push import run as push
from ferry.shared.bundle.reader import Bundle
from ferry.shared.errors import RegistryError
from ferry.shared.registry.client import ClientConfig, Credentials
from ferry.shared.storage.reader import Selection
from tests.support.checks import tags_of, validate_bundle
from tests.support.proxy import FaultPlan, Proxy
from tests.support.realharbor import RealHarbor
from tests.support.registry import Registry, skopeo
from tests.support.zoo import Zoo

runner = CliRunner()


def _api(url: str, out: Path, **kw: object) -> ExportResult:
    creds = kw.pop("credentials", None)
    return export(
        ExportOptions(root=Path("."), output=out, registry=ClientConfig(url=url, credentials=creds), **kw)
    )  # type: ignore[arg-type]


def _index(path: Path) -> tuple[object, ...]:
    with Bundle.open(path) as b:
        c = b.catalog
        return (c.repositories, dict(c.manifests), dict(c.blobs), c.skipped, b.order)


@pytest.fixture(scope="module")
def both(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("api-export")
    tree, api = work / "tree.tar", work / "api.tar"
    export(ExportOptions(root=zoo.root, output=tree))
    _api(zoo.registry.url, api)
    return tree, api


def test_the_api_export_is_the_storage_tree_export(both: tuple[Path, Path]) -> None:
    tree, api = both
    validate_bundle(api)
    assert _index(api) == _index(tree)
    with Bundle.open(api) as a, Bundle.open(tree) as t:
        a.scan()
        t.scan()
        assert [(m.name, m.size) for m in a.members[1:]] == [(m.name, m.size) for m in t.members[1:]]
        assert a.info.source["kind"] == "registry" and t.info.source["kind"] == "directory"
        assert a.trailer is not None and t.trailer is not None
        # every member but the index (source, times, id) byte for byte the same
        assert a.trailer.members[1:] == t.trailer.members[1:]


def test_what_the_api_export_carries_lands_with_the_source_digests(
    zoo: Zoo, both: tuple[Path, Path], tmp_path: Path
) -> None:
    _, api = both
    with Registry(tmp_path / "target") as reg:
        r = push(PushOptions(bundle=str(api), registry=reg.url))
        assert not [i for i in r.failed if "schema 1" not in i.reason]
        assert diff(DiffOptions(bundle=api, registry=reg.url)).ok
        catalog = Bundle.open(api).catalog
        for repo, tags in tags_of(catalog).items():
            for tag, digest in tags.items():
                if catalog.manifests[digest].media_type.startswith(
                    "application/vnd.docker.distribution.manifest.v1"
                ):
                    continue  # schema 1: skipped by push, as ever
                assert zoo.served[repo][tag] == digest
                assert reg.manifest(repo, tag)[1] == digest


def test_from_the_command_line_with_selection(zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "sel.tar"
    r = runner.invoke(app, ["export", zoo.registry.url, "-o", str(out), "--include", "team/app", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    catalog = validate_bundle(out)
    assert {x.name for x in catalog.repositories} == {"team/app"} and doc["tagCount"] == len(
        catalog.repositories[0].tags
    )
    r = runner.invoke(app, ["export", zoo.registry.url, "-o", str(tmp_path / "u.tar"), "--untagged"])
    assert r.exit_code == 0 and "invisible through the registry API" in r.stderr


def test_basic_auth_source(zoo: Zoo, tmp_path: Path) -> None:
    hp = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(hp), "alice", "s3cret"], check=True, capture_output=True)
    with Registry(tmp_path / "src", htpasswd=hp) as reg:
        desc = f"docker://{reg.host}/team/app:v1"
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret",
            f"docker://{zoo.registry.host}/team/app:v1",
            desc,
            "--src-tls-verify=false",
        )
        with pytest.raises(RegistryError):
            _api(reg.url, tmp_path / "anon.tar")
        assert not (tmp_path / "anon.tar").exists()
        r = _api(reg.url, tmp_path / "b.tar", credentials=Credentials("alice", "s3cret"))
        assert r.tags == 1
        catalog = validate_bundle(tmp_path / "b.tar")
        assert tags_of(catalog) == {"team/app": {"v1": zoo.served["team/app"]["v1"]}}


def _refuse_catalog(handler: BaseHTTPRequestHandler) -> bool:
    if handler.path.startswith("/v2/_catalog"):
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"catalog for admins only"}]}'
        handler.send_response(401)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(body)
        return True
    return False


def test_a_refused_catalog_and_repos_from(zoo: Zoo, both: tuple[Path, Path], tmp_path: Path) -> None:
    proxy = Proxy(zoo.registry.host, route=_refuse_catalog).start()
    try:
        r = runner.invoke(app, ["export", proxy.url, "-o", str(tmp_path / "x.tar")])
        assert r.exit_code == 1 and "--repos-from" in r.stderr, r.stderr
        repos = tmp_path / "repos.txt"
        repos.write_text("\n".join(x.name for x in Bundle.open(both[1]).catalog.repositories) + "\n")
        r = runner.invoke(
            app, ["export", proxy.url, "-o", str(tmp_path / "x.tar"), "--repos-from", str(repos)]
        )
        assert r.exit_code == 0, r.stderr
        assert _index(tmp_path / "x.tar") == _index(both[1])
    finally:
        proxy.stop()


@pytest.fixture
def faulty(zoo: Zoo) -> Iterator[Proxy]:
    proxy = Proxy(
        zoo.registry.host, faults=FaultPlan(rate=0.3, budget=40, kinds=("truncate", "500", "cut"))
    ).start()
    yield proxy
    proxy.stop()


def test_broken_downloads_resume_and_nothing_corrupt_lands(
    faulty: Proxy, both: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "f.tar"
    _api(faulty.url, out)
    kinds = {k for k, _, _ in faulty.faults.injected}
    assert "truncate" in kinds, faulty.faults.injected
    assert any(m == "GET" and "/blobs/" in p for k, m, p in faulty.faults.injected if k == "truncate")
    validate_bundle(out)
    assert _index(out) == _index(both[1])
    ranges = [p for m, p in faulty.log if m == "GET" and "/blobs/" in p]
    assert len(ranges) > len(Bundle.open(out).catalog.blobs)  # some downloads went on after a break


def _to_harbor(harbor: RealHarbor, zoo: Zoo, ref: str, dest: str) -> None:
    """A zoo image into Harbor as an administrator, digests kept."""
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-creds",
        f"{harbor.username}:{harbor.password}",
        f"docker://{zoo.registry.host}/{ref}",
        f"docker://{harbor.host}/{dest}",
    )


def test_real_harbor_as_the_source(harbor29: RealHarbor, zoo: Zoo, tmp_path: Path) -> None:
    """Token auth; a project member who is not an administrator: Harbor refuses them the catalog, so the
    repositories come from its projects API."""
    project = harbor29.project()
    user, pw = harbor29.user()
    harbor29.member(project, user)
    for ref in ("team/app:v1", "multi:latest"):
        _to_harbor(harbor29, zoo, ref, f"{project}/{ref.replace('/', '-')}")
    out = tmp_path / "h.tar"
    r = _api(harbor29.url, out, credentials=Credentials(user, pw))
    catalog = validate_bundle(out)
    got = tags_of(catalog)
    assert got[f"{project}/team-app"]["v1"] == zoo.served["team/app"]["v1"]
    assert got[f"{project}/multi"]["latest"] == zoo.served["multi"]["latest"]
    assert r.manifests >= 4  # the index and both children, the image
    assert len(zoo.index_children["multi:latest"]) == len(
        catalog.manifests[zoo.served["multi"]["latest"]].children
    )


def test_referrers_come_with_untagged_from_a_registry_that_has_the_api(
    harbor29: RealHarbor, zoo: Zoo, tmp_path: Path
) -> None:
    """The zoo's SBOM refers to team/app:v1 (``subject``) and has no tag: Harbor 2.9 finds it (referrers
    and artifact API); docker-registry 2.8 has no such API, and the export says what it could not see."""
    project = harbor29.project()
    src = tmp_path / "app.tar"
    export(
        ExportOptions(root=zoo.root, output=src, selection=Selection(include=("team/app",), untagged=True))
    )
    creds = Credentials(harbor29.username, harbor29.password)
    r = push(
        PushOptions(
            bundle=str(src), registry=harbor29.url, credentials=creds, maps=(("team/app", f"{project}/app"),)
        )
    )
    assert not r.failed
    out = tmp_path / "h.tar"
    result = _api(
        harbor29.url, out, credentials=creds, selection=Selection(include=(f"{project}/*",), untagged=True)
    )
    catalog = validate_bundle(out)
    repo = next(x for x in catalog.repositories if x.name == f"{project}/app")
    assert set(repo.untagged) == zoo.untagged["team/app"]
    assert not result.notes  # Harbor lists its untagged manifests (artifact API): none was left unseen
    # the registry without the API: tags only, and the same note
    plain = _api(
        zoo.registry.url, tmp_path / "z.tar", selection=Selection(include=("team/app",), untagged=True)
    )
    assert plain.untagged == 0 and plain.notes


@pytest.mark.parametrize("source", ["tree", "api"])
def test_progress_moves_from_the_first_moment(zoo: Zoo, tmp_path: Path, source: str) -> None:
    """The walk reports what it found as it goes (images from a tree, manifests from a registry), before any
    byte is copied: a long walk must not look like a hang."""
    from ferry.shared.progress import Progress

    events: list[Progress] = []
    out = tmp_path / "b.tar"
    if source == "tree":
        r = export(ExportOptions(root=zoo.root, output=out), on_progress=events.append)
    else:
        r = export(
            ExportOptions(root=Path("."), output=out, registry=ClientConfig(url=zoo.registry.url)),
            on_progress=events.append,
        )
    first_copy = next(i for i, e in enumerate(events) if e.phase == "copy")
    walk = [e for e in events[:first_copy] if e.phase == "scan"]
    assert events[0].phase == "scan" and events[0].unit == ("images" if source == "tree" else "manifests")
    counts = [e.done for e in walk]
    assert counts == sorted(counts) and len(set(counts)) > 3, counts
    assert counts[-1] >= r.tags and not any(e.phase == "scan" for e in events[first_copy:])


def test_untagged_manifests_on_harbor_are_counted_and_exported_with_untagged(
    harbor29: RealHarbor, zoo: Zoo, tmp_path: Path
) -> None:
    """Through the V2 API an untagged manifest cannot be seen; Harbor's artifact API lists them.  A tag
    moved to another image leaves the first one untagged in Harbor: the export without --untagged counts
    it in its note, and with --untagged exports it by digest, as the storage-tree export would."""
    project = harbor29.project()
    _to_harbor(harbor29, zoo, "team/app:v1", f"{project}/app:x")
    _to_harbor(harbor29, zoo, "team/app:v2", f"{project}/app:x")  # v1 stays in Harbor, untagged
    _to_harbor(harbor29, zoo, "multi:latest", f"{project}/app:multi")  # its children are reached
    left = zoo.served["team/app"]["v1"]
    creds = Credentials(harbor29.username, harbor29.password)
    only = Selection(include=(f"{project}/*",))
    r = _api(harbor29.url, tmp_path / "tags.tar", credentials=creds, selection=only)
    (note,) = r.notes
    assert note.startswith("1 manifests that no tag reaches") and "--untagged" in note, note
    assert left not in validate_bundle(tmp_path / "tags.tar").manifests
    every = Selection(include=(f"{project}/*",), untagged=True)
    r = _api(harbor29.url, tmp_path / "all.tar", credentials=creds, selection=every)
    catalog = validate_bundle(tmp_path / "all.tar")
    (repo,) = catalog.repositories
    assert repo.untagged == (left,) and repo.tags == {
        "x": zoo.served["team/app"]["v2"],
        "multi": zoo.served["multi"]["latest"],
    }
    assert not r.notes  # Harbor listed every untagged manifest: nothing was left unseen
