"""Push into real Harbor 2.9.5 and 2.7.3 (../shared/harbor/): projects, accounts, robots, quotas,
immutable tags, accessories, signatures, name mapping, tags already on the target.

Every test makes its own projects (through ``--map``), so one Harbor per version serves the session."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.diff import DiffOptions
from ferry.importer.diff import run as diff
from ferry.importer.names import map_names
from ferry.importer.push import PushOptions, PushResult
from ferry.importer.push import run as push
from ferry.shared.bundle.reader import Bundle
from ferry.shared.errors import RegistryError
from ferry.shared.model import Catalog
from ferry.shared.registry.client import Credentials
from ferry.shared.storage.reader import Selection
from tests.support.harborcheck import check
from tests.support.realharbor import MAINTAINER, RealHarbor
from tests.support.registry import skopeo
from tests.support.zoo import Zoo

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("harbor-real") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


@pytest.fixture(scope="module")
def catalog(bundle: Path) -> Catalog:
    with Bundle.open(bundle) as b:
        return b.catalog


def _maps(catalog: Catalog, prefix: str) -> tuple[tuple[str, str], ...]:
    """Every repository of the bundle into fresh projects named after ``prefix``: each test its own."""
    tops = sorted({r.name.split("/", 1)[0] for r in catalog.repositories if "/" in r.name})
    return tuple((t, f"{prefix}-{t}") for t in tops)


def _push(harbor: RealHarbor, bundle: Path, creds: tuple[str, str] | None = None, **kw: object) -> PushResult:
    user, pw = creds or (harbor.username, harbor.password)
    return push(PushOptions(bundle=str(bundle), registry=harbor.url, credentials=Credentials(user, pw), **kw))  # type: ignore[arg-type]


def _into(catalog: Catalog, project: str) -> tuple[tuple[str, str], ...]:
    """Every repository of the bundle into one project (``team/app`` → ``PROJECT/team-app``)."""
    return tuple((r.name, f"{project}/{r.name.replace('/', '-')}") for r in catalog.repositories)


def _cli_push(harbor: RealHarbor, bundle: Path, user: str, password: str, *args: str) -> Result:
    """``ferry push`` through the command line, the password on stdin."""
    return runner.invoke(
        app,
        ["push", str(bundle), "--registry", harbor.url, "-u", user, "--password-stdin", *args],
        input=password + "\n",
    )


def _map_args(maps: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"--map={a}={b}" for a, b in maps]


def _move_tag(harbor: RealHarbor, repo: str, src: str, dst: str) -> None:
    """Someone moves a tag on the target (skopeo, through Harbor)."""
    login = f"{harbor.username}:{harbor.password}"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        login,
        "--dest-creds",
        login,
        f"docker://{harbor.host}/{repo}:{src}",
        f"docker://{harbor.host}/{repo}:{dst}",
    )


def _names(catalog: Catalog, maps: tuple[tuple[str, str], ...], default: str) -> dict[str, str]:
    return map_names([r.name for r in catalog.repositories], harbor=True, default_project=default, maps=maps)


@pytest.mark.parametrize("version", ["harbor29", "harbor27"])
def test_admin_push_lands_everything_as_harbor_describes_it(
    request: pytest.FixtureRequest, version: str, bundle: Path, catalog: Catalog
) -> None:
    harbor: RealHarbor = request.getfixturevalue(version)
    prefix = f"a{uuid.uuid4().hex[:6]}"
    maps, default = _maps(catalog, prefix), f"{prefix}-lib"
    r = _push(harbor, bundle, maps=maps, default_project=default, jobs=8)
    assert not r.failed, [(i.ref, i.reason) for i in r.failed]
    assert r.harbor and r.harbor.startswith({"harbor29": "v2.9.", "harbor27": "v2.7."}[version])
    names = _names(catalog, maps, default)
    assert check(catalog, harbor.url, harbor.username, harbor.password, names=names) == []
    # ferry diff, under the same name mapping, agrees: Harbor holds everything the bundle holds
    d = diff(
        DiffOptions(
            bundle=bundle,
            registry=harbor.url,
            credentials=Credentials(harbor.username, harbor.password),
            maps=maps,
            default_project=default,
        )
    )
    assert d.ok, d.to_dict()
    # projects are created only for what is pushed: `old` holds only a schema 1 image (skipped by
    # default), so its project is not created
    created = set(r.projects_created)
    assert f"{prefix}-team" in created and default in created
    assert names["old"].split("/", 1)[0] == default
    legacy = f"{prefix}-legacy"
    r = _push(harbor, bundle, maps=((*maps, ("old", f"{legacy}/old"))), default_project=default)
    assert legacy not in r.projects_created
    status, _, _ = harbor.api("HEAD", f"/projects?project_name={legacy}")
    assert status == 404


def test_signatures_wait_for_their_image_under_any_concurrency(
    harbor27: RealHarbor, bundle: Path, catalog: Catalog
) -> None:
    """Harbor 2.7 refuses a cosign tag sha256-<digest>.sig whose image is not there yet (404): it
    happened in half the first pushes at -j 8.  Each run here goes into fresh projects."""
    for jobs in (1, 16, 32, 16, 32, 64):
        prefix = f"s{uuid.uuid4().hex[:6]}"
        r = _push(harbor27, bundle, maps=_maps(catalog, prefix), default_project=f"{prefix}-lib", jobs=jobs)
        assert not r.failed, (jobs, [(i.ref, i.reason) for i in r.failed])


def test_dry_run_names_projects_to_create_and_treats_them_as_empty(
    harbor29: RealHarbor, bundle: Path, catalog: Catalog
) -> None:
    prefix = f"d{uuid.uuid4().hex[:6]}"
    r = _cli_push(
        harbor29,
        bundle,
        harbor29.username,
        harbor29.password,
        "--dry-run",
        "--json",
        "--default-project",
        f"{prefix}-lib",
        *_map_args(_maps(catalog, prefix)),
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert f"{prefix}-team" in doc["plan"]["projectsToCreate"]
    assert doc["plan"]["tagsToCreate"] and not doc["plan"]["tagsToMove"] and not doc["plan"]["tagsRight"]
    assert doc["plan"]["blobsPresent"] == 0
    status, _, _ = harbor29.api("HEAD", f"/projects?project_name={prefix}-team")
    assert status == 404  # a dry run creates nothing


def test_a_non_member_is_told_once_per_project(harbor29: RealHarbor, bundle: Path, catalog: Catalog) -> None:
    project = harbor29.project()
    user, pw = harbor29.user()
    maps = _into(catalog, project)
    r = _cli_push(harbor29, bundle, user, pw, *_map_args(maps))
    assert r.exit_code == 1, r.stderr
    lines = r.stderr.splitlines()
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) == 1 and user in refused[0] and project in refused[0], r.stderr
    assert any("Developer or Maintainer" in line and "robot account" in line for line in lines)
    assert len(lines) < 10, r.stderr  # not a warning per blob and a 401 per image


def test_a_member_pushes_into_its_project_but_may_not_create_projects(
    harbor29: RealHarbor, bundle: Path, catalog: Catalog
) -> None:
    project = harbor29.project()
    user, pw = harbor29.user()
    harbor29.member(project, user, MAINTAINER)
    maps = _into(catalog, project)
    r = _push(harbor29, bundle, (user, pw), maps=maps)
    assert not r.failed and not r.projects_created
    assert check(catalog, harbor29.url, user, pw, names=_names(catalog, maps, "library")) == []
    # where only administrators may create projects (Harbor's setting), an ordinary account is told so
    harbor29.ok("PUT", "/configurations", {"project_creation_restriction": "adminonly"})
    try:
        with pytest.raises(RegistryError, match="may not create Harbor project"):
            _push(
                harbor29,
                bundle,
                (user, pw),
                maps=_maps(catalog, f"m{uuid.uuid4().hex[:6]}"),
                default_project=project,
            )
    finally:
        harbor29.ok("PUT", "/configurations", {"project_creation_restriction": "everyone"})


def test_robot_accounts(harbor29: RealHarbor, bundle: Path, catalog: Catalog) -> None:
    project = harbor29.project()
    maps = _into(catalog, project)
    robot = harbor29.robot(project=project)
    assert not _push(harbor29, bundle, robot, maps=maps).failed
    # a project robot cannot create projects
    with pytest.raises(RegistryError, match="may not create Harbor project"):
        _push(
            harbor29, bundle, robot, maps=_maps(catalog, f"q{uuid.uuid4().hex[:6]}"), default_project=project
        )
    # a system robot pushes where it has push
    other = harbor29.project()
    maps = _into(catalog, other)
    assert not _push(harbor29, bundle, harbor29.robot(system_on=(other,)), maps=maps).failed
    # given the right to create projects too, Harbor 2.9.5 gives such a robot no repository action at all
    # (seen in its tokens): it creates the project, then every push there is refused, said once
    creator = harbor29.robot(system_on=(other,), create_projects=True)
    fresh = f"n{uuid.uuid4().hex[:6]}"
    r = _push(
        harbor29,
        bundle,
        creator,
        maps=_into(catalog, fresh),
    )
    assert r.projects_created == (fresh,) and list(r.refused) == [fresh]
    assert r.failed and all(i.ref.startswith(f"{fresh}/") for i in r.failed)


def test_a_storage_quota_is_named_per_repository(
    harbor29: RealHarbor, bundle: Path, catalog: Catalog
) -> None:
    project = harbor29.project(storage_limit=20_000)  # a few layers fit, not all
    maps = _into(catalog, project)
    r = _push(harbor29, bundle, maps=maps, retries=1)
    assert r.failed
    for i in r.failed:
        assert "403" in i.reason and i.ref.split("@")[0].split(":")[0] in i.reason, i.reason
    assert not r.refused  # a quota is not a refusal of the account


def test_immutable_tags_same_digest_is_done_other_digest_is_named(
    harbor29: RealHarbor, bundle: Path, catalog: Catalog
) -> None:
    project = harbor29.project()
    maps = _into(catalog, project)
    assert not _push(harbor29, bundle, maps=maps).failed
    harbor29.immutable(project, "**")
    again = _push(harbor29, bundle, maps=maps)
    assert not again.failed  # every tag at the bundle's digest already: done, nothing PUT
    # a tag moved on the target, then protected: kept and reported by default; --overwrite meets the rule
    app_v1 = f"{project}/team-app:v1"
    status, _, _ = harbor29.api("DELETE", f"/projects/{project}/immutabletagrules/1")
    _move_tag(harbor29, f"{project}/team-app", "v2", "v1")
    harbor29.immutable(project, "v1")
    kept = _push(harbor29, bundle, maps=maps)
    assert [i.ref for i in kept.failed] == [app_v1] and kept.failed[0].status == "conflict"
    forced = _push(harbor29, bundle, maps=maps, overwrite=True)
    assert [i.ref for i in forced.failed] == [app_v1] and "immutable" in forced.failed[0].reason
    assert status


def test_tags_already_on_the_target_are_kept_unless_overwrite(
    harbor29: RealHarbor, bundle: Path, catalog: Catalog
) -> None:
    project = harbor29.project()
    maps = _into(catalog, project)
    assert not _push(harbor29, bundle, maps=maps).failed
    _move_tag(harbor29, f"{project}/team-app", "v2", "v1")
    v1 = catalog.repositories[[r.name for r in catalog.repositories].index("team/app")].tags["v1"]
    admin = (harbor29.username, harbor29.password)
    plan = _cli_push(harbor29, bundle, *admin, *_map_args(maps), "--dry-run")
    assert (
        plan.exit_code == 0 and f"{project}/team-app:v1" in plan.stdout and "would be kept" in plan.stdout
    ), plan.stdout
    r = _cli_push(harbor29, bundle, *admin, *_map_args(maps))
    assert r.exit_code == 1 and f"conflict {project}/team-app:v1" in r.stderr and v1 in r.stderr, r.stderr
    r = _cli_push(harbor29, bundle, *admin, *_map_args(maps), "--overwrite")
    assert r.exit_code == 0 and f"moved {project}/team-app:v1" in r.stderr, r.stderr
    assert (
        check(
            catalog,
            harbor29.url,
            harbor29.username,
            harbor29.password,
            names=_names(catalog, maps, "library"),
        )
        == []
    )


def test_convert_schema1_on_harbor(harbor29: RealHarbor, bundle: Path, catalog: Catalog) -> None:
    project = harbor29.project()
    maps = _into(catalog, project)
    r = _push(harbor29, bundle, maps=maps, convert_schema1=True)
    assert not r.failed
    converted = [i for i in r.images if i.pushed_digest]
    assert converted and all(i.pushed_digest != i.digest for i in converted)
    problems = check(
        catalog,
        harbor29.url,
        harbor29.username,
        harbor29.password,
        names=_names(catalog, maps, "library"),
        convert_schema1=True,
    )
    assert problems == []


def test_a_second_wave_into_harbor(
    harbor29: RealHarbor, zoo_copy: Path, bundle: Path, catalog: Catalog, tmp_path: Path
) -> None:
    """Wave 1 (the zoo), then a delta with a new project whose image shares a layer wave 1 carried: the
    layer is mounted across projects, nothing is uploaded twice, and diff says ok.  Into projects that
    lack wave 1 the delta is refused before any project is created."""
    from bench.trees import TreeWriter
    from ferry.shared.digest import Digest
    from ferry.shared.errors import BaseMissing
    from ferry.shared.storage.paths import BlobData, StorageLayout

    prefix = f"w{uuid.uuid4().hex[:8]}"
    layer = max(catalog.blobs.values(), key=lambda b: b.size)
    data = Path(StorageLayout.for_root(zoo_copy).path(BlobData(Digest.parse(layer.digest)))).read_bytes()
    TreeWriter(zoo_copy).image("fresh/x", "1", [data, b"a new layer of wave 2"], b'{"wave":2}')
    delta = tmp_path / "wave2.tar"
    export(ExportOptions(root=zoo_copy, output=delta, since=(bundle,), selection=Selection(untagged=True)))
    with Bundle.open(delta) as b:
        wave2 = b.catalog
    assert layer.digest in wave2.carried
    maps = _maps(wave2, prefix)
    assert not _push(harbor29, bundle, maps=maps).failed
    r = _push(harbor29, delta, maps=maps)
    assert not r.failed, [(i.ref, i.reason) for i in r.failed]
    assert r.blobs_mounted >= 1 and r.blobs_uploaded == 2  # the new layer and config; the shared one mounted
    d = diff(
        DiffOptions(
            bundle=delta,
            registry=harbor29.url,
            credentials=Credentials(harbor29.username, harbor29.password),
            maps=maps,
        )
    )
    assert d.ok, d.to_dict()
    # a target without wave 1: refused before anything is written, no project created
    other = f"v{uuid.uuid4().hex[:8]}"
    with pytest.raises(BaseMissing) as e:
        _push(harbor29, delta, maps=_maps(wave2, other))
    assert Bundle.open(bundle).info.bundle_id in e.value.message
    projects = harbor29.ok("GET", f"/projects?name={other}&page_size=100")
    assert not projects


def test_a_partial_index_into_harbor(harbor29: RealHarbor, zoo: Zoo, tmp_path: Path) -> None:
    """An export with --platform: Harbor 2.9's registry, like distribution's, takes an index only with
    every child it lists: the image is refused with the platforms named, the kept platform lands."""
    partial = tmp_path / "amd64.tar"
    export(
        ExportOptions(
            root=zoo.root, output=partial, selection=Selection(include=("multi",), platforms=("linux/amd64",))
        )
    )
    project = harbor29.project()
    r = _push(harbor29, partial, maps=(("multi", f"{project}/multi"),))
    outcome = next(i for i in r.images if i.ref == f"{project}/multi:latest")
    assert outcome.status == "failed" and "--platform" in outcome.reason and "linux/arm64" in outcome.reason
    catalog = Bundle.open(partial).catalog
    index = catalog.manifests[zoo.served["multi"]["latest"]]
    kept = next(c.digest for c in index.children if c.digest not in index.left_out)
    arts = {a["digest"] for a in harbor29.artifacts(f"{project}/multi")}
    assert kept in arts
