"""ferry push into real registries: basic auth, token auth, a Harbor stand-in, faults, errors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.export import ExportOptions
from bundler.export import run as export
from importer.push import PushOptions, map_names
from importer.push import run as push
from importer.registry.client import Credentials
from shared.errors import AuthError, RegistryUnreachable, UsageError
from shared.storage.reader import Selection
from tests.support.registry import Registry, skopeo
from tests.support.zoo import Zoo

USER, PASSWORD = "ferry", "s3cret-pw"


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("push") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


def htpasswd(path: Path) -> Path:
    line = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    ).stdout
    path.write_text(line)
    return path


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "target", htpasswd=htpasswd(tmp_path / "htpasswd")) as reg:
        yield reg


def served_with_auth(reg: Registry) -> dict[str, dict[str, str]]:
    """Tags and digests as the target serves them, read with skopeo (independent of ferry)."""
    out: dict[str, dict[str, str]] = {}
    creds = f"{USER}:{PASSWORD}"
    repos = subprocess.run(
        ["curl", "-s", "-u", creds, f"{reg.url}/v2/_catalog?n=1000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for repo in json.loads(repos)["repositories"]:
        tags = json.loads(
            skopeo("list-tags", "--tls-verify=false", "--creds", creds, f"docker://{reg.host}/{repo}").stdout
        )["Tags"]
        for tag in tags:
            raw = skopeo(
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                creds,
                f"docker://{reg.host}/{repo}:{tag}",
            ).stdout
            import hashlib

            out.setdefault(repo, {})[tag] = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    return out


def expected(zoo: Zoo) -> dict[str, dict[str, str]]:
    """Everything but schema 1, which cannot be pushed as stored."""
    return {r: t for r, t in zoo.served.items() if r != "old"}


def test_push_with_basic_auth_lands_every_tag_with_its_digest(
    zoo: Zoo, bundle: Path, basic_registry: Registry
) -> None:
    r = push(
        PushOptions(
            bundle=str(bundle),
            registry=basic_registry.url,
            credentials=Credentials(USER, PASSWORD),
            chunk_size=2048,
        )
    )  # small chunks: every layer goes up in chunked PATCHes
    assert not r.failed, r.failed
    skipped = [i for i in r.images if i.status == "skipped"]
    assert [i.source for i in skipped] == ["old:s1"] and "schema 1" in skipped[0].reason
    assert r.blobs_mounted > 0 and r.blobs_uploaded > 0
    assert served_with_auth(basic_registry) == expected(zoo)
    (sbom,) = zoo.untagged["team/app"]
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        f"{USER}:{PASSWORD}",
        f"docker://{basic_registry.host}/team/app@{sbom}",
    ).stdout
    assert json.loads(raw)["subject"]["digest"] == zoo.served["team/app"]["v1"]
    # skopeo pulls every image back, index children and all
    for repo, tag in [
        ("multi", "latest"),
        ("dockerlist", "latest"),
        ("team/sub/app", "1"),
        ("charts/c", "1.0"),
    ]:
        dest = basic_registry.root.parent / "pulled" / repo.replace("/", "_")
        dest.mkdir(parents=True)
        skopeo(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            f"{USER}:{PASSWORD}",
            f"docker://{basic_registry.host}/{repo}:{tag}",
            f"dir:{dest}",
        )
        assert (dest / "manifest.json").exists()
    # a second run over a complete target uploads nothing
    again = push(
        PushOptions(bundle=str(bundle), registry=basic_registry.url, credentials=Credentials(USER, PASSWORD))
    )
    assert again.blobs_uploaded == 0 and again.bytes_uploaded == 0 and not again.failed


def test_wrong_password_unknown_host_and_tls_are_one_line_errors(
    bundle: Path, basic_registry: Registry
) -> None:
    with pytest.raises(AuthError, match="401"):
        push(
            PushOptions(
                bundle=str(bundle),
                registry=basic_registry.url,
                credentials=Credentials(USER, "nope"),
                retries=1,
            )
        )
    with pytest.raises(RegistryUnreachable):
        push(PushOptions(bundle=str(bundle), registry="http://no-such-host.invalid:5000", retries=1))
    with pytest.raises(RegistryUnreachable, match="TLS"):
        push(PushOptions(bundle=str(bundle), registry=f"https://{basic_registry.host}", retries=1))
    env = {**os.environ, "FERRY_REGISTRY_PASSWORD": "nope"}
    for args in (
        ["--registry", basic_registry.url, "-u", USER],
        ["--registry", "http://no-such-host.invalid"],
        ["--registry", f"https://{basic_registry.host}"],
    ):
        p = subprocess.run(
            ["ferry", "push", str(bundle), *args, "--retries", "1"], capture_output=True, text=True, env=env
        )
        assert p.returncode != 0 and "Traceback" not in p.stderr and p.stderr.startswith("error ("), p.stderr


def test_a_refused_manifest_fails_that_image_only(bundle: Path, tmp_path: Path) -> None:
    # docker-registry refuses foreign-layer URLs it does not allow: that image fails, the rest lands
    reg = Registry(tmp_path / "strict", htpasswd=htpasswd(tmp_path / "htpasswd"))
    reg.extra_config = ""
    reg.config_text = lambda: Registry.config_text(reg).replace(
        "validation: {manifests: {urls: {allow: ['^https?://']}}}\n", ""
    )  # type: ignore[method-assign]
    with reg:
        r = push(
            PushOptions(
                bundle=str(bundle), registry=reg.url, credentials=Credentials(USER, PASSWORD), retries=2
            )
        )
    failed = {i.source: i.reason for i in r.failed}
    assert set(failed) == {"foreign:1", "dforeign:1"}
    assert all("invalid URL" in reason or "500" in reason for reason in failed.values())
    assert (
        sum(i.status == "pushed" for i in r.images) == len(r.images) - 3
    )  # the two foreign ones and schema 1
    p = subprocess.run(["ferry", "push", str(bundle), "--registry", reg.url], capture_output=True, text=True)
    assert p.returncode != 0


def test_names_are_mapped_for_harbor_and_bad_ones_reported_before_upload() -> None:
    names = map_names(
        ["alpine", "team/app", "old/x/y"], harbor=True, default_project="library", maps=(("old", "new"),)
    )
    assert names == {"alpine": "library/alpine", "team/app": "team/app", "old/x/y": "new/x/y"}
    with pytest.raises(UsageError, match="Bad_Project"):
        map_names(["a/b"], harbor=True, default_project="library", maps=(("a", "Bad_Project/a"),))


def test_dry_run_plans_against_the_live_target(bundle: Path, basic_registry: Registry) -> None:
    r = push(
        PushOptions(
            bundle=str(bundle),
            registry=basic_registry.url,
            credentials=Credentials(USER, PASSWORD),
            dry_run=True,
        )
    )
    assert r.dry_run and int(r.plan["blobsToUpload"]) > 0 and r.plan["blobsPresent"] == 0  # type: ignore[call-overload]
    # nothing was pushed
    assert not (basic_registry.root / "docker/registry/v2/repositories").exists()
