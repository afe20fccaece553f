"""ferry push into real registries: basic auth, token auth, a Harbor stand-in, faults, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.importer.push import PushOptions, PushResult, map_names
from ferry.importer.push import run as push
from ferry.shared.bundle.reader import Bundle
from ferry.shared.errors import AuthError, RegistryUnreachable, UsageError
from ferry.shared.manifest import SCHEMA1_TYPES
from ferry.shared.progress import Progress
from ferry.shared.registry.client import Credentials
from ferry.shared.storage.reader import Selection
from tests.support.harbor import HarborStandIn, TokenIssuer
from tests.support.proxy import FaultPlan, Proxy
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
    repos = httpx.get(f"{reg.url}/v2/_catalog?n=1000", auth=(USER, PASSWORD)).text
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
    with Registry(
        tmp_path / "strict", htpasswd=htpasswd(tmp_path / "htpasswd"), allow_foreign_urls=False
    ) as reg:
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


@pytest.fixture
def harbor(tmp_path: Path) -> Iterator[HarborStandIn]:
    """The Harbor stand-in (systeminfo, projects, token service) in front of a real token-auth registry."""
    issuer = TokenIssuer(tmp_path)
    stand_in = HarborStandIn(version="v2.10.0", issuer=issuer, faults=FaultPlan())
    reg = Registry(tmp_path / "harbor-storage")
    stand_in.upstream = reg.host
    stand_in.start()
    reg.extra_config = issuer.registry_config(f"{stand_in.url}/service/token")
    with reg:
        yield stand_in
    stand_in.stop()


def push_to_harbor(harbor: HarborStandIn, bundle: Path, **options: Any) -> PushResult:
    """``ferry push`` of ``bundle`` into the Harbor stand-in as its admin, with ``options`` on top."""
    return push(
        PushOptions(
            bundle=str(bundle),
            registry=harbor.url,
            credentials=Credentials(harbor.username, harbor.password),
            **options,
        )
    )


def test_token_expiry_is_refreshed(bundle: Path, harbor: HarborStandIn) -> None:
    harbor.token_ttl = 31  # ferry refreshes 30 s early: every token is used once, then renewed
    r = push_to_harbor(harbor, bundle)
    assert not r.failed and harbor.tokens_issued > 5


def test_a_size_refusal_names_the_repository(zoo: Zoo, bundle: Path, harbor: HarborStandIn) -> None:
    """413 for a manifest over the target's limit: real Harbor's is 4 MiB, which no test image reaches,
    so the stand-in plays it (quota and immutable refusals are tested against real Harbor)."""
    catalog = Bundle.open(bundle).catalog
    biggest = max(
        (m for m in catalog.manifests.values() if m.media_type not in SCHEMA1_TYPES), key=lambda m: m.size
    )
    harbor.max_manifest = biggest.size - 1
    r = push_to_harbor(harbor, bundle, retries=2)
    assert {s for s, _ in harbor.refused} == {413}
    failed = {i.source: i.reason for i in r.failed}
    too_big = {i.ref for i in catalog.images() if biggest.digest in catalog.closure(i.digest)}
    assert set(failed) == too_big
    for ref in too_big:
        assert "413" in failed[ref] and ref.split(":")[0] in failed[ref], failed[ref]


def test_faults_are_retried_and_every_image_arrives_intact(
    zoo: Zoo, bundle: Path, harbor: HarborStandIn
) -> None:
    assert harbor.faults is not None
    harbor.faults.rate, harbor.faults.budget = 0.12, 40
    r = push_to_harbor(harbor, bundle, chunk_size=4096, retries=10, backoff=0.05)
    kinds = {k for k, _, _ in harbor.faults.injected}
    assert len(harbor.faults.injected) >= 20 and kinds == {"500", "503", "429", "cut"}
    assert not r.failed, r.failed
    pushed = {i.ref: i.digest for i in r.images if i.status == "pushed"}
    assert pushed["team/app:v1"] == zoo.served["team/app"]["v1"]
    assert len(pushed) == sum(len(t) for t in expected(zoo).values()) + 1  # + the untagged sbom


def test_faults_beyond_the_retry_budget_fail_clearly_and_a_rerun_completes(
    zoo: Zoo, bundle: Path, harbor: HarborStandIn
) -> None:
    assert harbor.faults is not None
    harbor.faults.rate, harbor.faults.budget, harbor.faults.kinds = 1.0, 25, ("503",)
    first = push_to_harbor(harbor, bundle, retries=2, backoff=0.05)
    assert first.failed and all("503" in i.reason for i in first.failed)
    harbor.faults.rate = 0.0
    second = push_to_harbor(harbor, bundle)
    assert not second.failed
    assert second.blobs_present > 0  # what landed the first time was not uploaded again


def test_interrupted_push_resumes_without_reuploading(
    zoo: Zoo, bundle: Path, basic_registry: Registry
) -> None:
    env = {**os.environ, "FERRY_REGISTRY_USERNAME": USER, "FERRY_REGISTRY_PASSWORD": PASSWORD}
    p = subprocess.Popen(
        ["ferry", "push", str(bundle), "--registry", basic_registry.url, "-q", "-j", "1"], env=env
    )
    import time

    deadline = time.monotonic() + 30
    blobs = basic_registry.root / "docker/registry/v2/blobs"
    while time.monotonic() < deadline and len(list(blobs.rglob("data"))) < 5:
        time.sleep(0.02)
    p.kill()  # killed mid-run, like a lost session
    p.wait()
    landed = len(list(blobs.rglob("data")))
    assert landed >= 5
    r = push(
        PushOptions(bundle=str(bundle), registry=basic_registry.url, credentials=Credentials(USER, PASSWORD))
    )
    assert not r.failed and r.blobs_present >= 1
    assert served_with_auth(basic_registry) == expected(zoo)


def test_fresh_target_gets_no_blob_checks_and_a_rerun_checks_everything(
    zoo: Zoo, bundle: Path, basic_registry: Registry
) -> None:
    # the catalog says which target repositories exist: in the others no blob can be present yet
    proxy = Proxy(basic_registry.host).start()
    try:
        opts = PushOptions(bundle=str(bundle), registry=proxy.url, credentials=Credentials(USER, PASSWORD))
        first = push(opts)
        assert not first.failed and first.blobs_uploaded > 10
        heads = [p for m, p in proxy.log if m == "HEAD" and "/blobs/" in p]
        assert ("GET", "/v2/_catalog?n=1000") in proxy.log and heads == []
        proxy.log.clear()
        second = push(opts)
        heads = [p for m, p in proxy.log if m == "HEAD" and "/blobs/" in p]
        assert second.blobs_uploaded == 0 and second.blobs_present == len(heads) > 10
    finally:
        proxy.stop()
    assert served_with_auth(basic_registry) == expected(zoo)


def test_push_from_stdin(zoo: Zoo, bundle: Path, basic_registry: Registry) -> None:
    env = {**os.environ, "FERRY_REGISTRY_USERNAME": USER, "FERRY_REGISTRY_PASSWORD": PASSWORD}
    with open(bundle, "rb") as f:
        p = subprocess.run(
            ["ferry", "push", "-", "--registry", basic_registry.url, "--json"],
            stdin=f,
            capture_output=True,
            text=True,
            env=env,
        )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["failedCount"] == 0 and doc["skippedCount"] == 1
    assert served_with_auth(basic_registry) == expected(zoo)


def test_convert_schema1_pushes_schema2_with_a_new_digest(
    zoo: Zoo, bundle: Path, basic_registry: Registry, tmp_path: Path
) -> None:
    events: list[Progress] = []
    r = push(
        PushOptions(
            bundle=str(bundle),
            registry=basic_registry.url,
            credentials=Credentials(USER, PASSWORD),
            convert_schema1=True,
        ),
        on_progress=events.append,
    )
    assert not r.failed, r.failed
    # progress counts images and bytes, and ends with all of both
    last = events[-1]
    assert (last.files, last.files_total, last.items) == (len(r.images), len(r.images), "images")
    assert last.done == last.total > 0
    assert [e.files for e in events] == sorted(e.files for e in events)
    (s1,) = [i for i in r.images if i.source == "old:s1"]
    assert s1.status == "pushed" and s1.digest == zoo.served["old"]["s1"]
    assert s1.pushed_digest and s1.pushed_digest != s1.digest and "→" in s1.reason
    served = served_with_auth(basic_registry)
    assert served["old"]["s1"] == s1.pushed_digest  # the registry holds the converted manifest under the tag
    assert {r: t for r, t in served.items() if r != "old"} == expected(zoo)  # the rest is untouched
    # skopeo's own conversion of the same source image agrees on layers, diff_ids and history
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        f"{USER}:{PASSWORD}",
        f"docker://{basic_registry.host}/old:s1",
        f"dir:{ours}",
    )
    skopeo(
        "copy",
        "--format",
        "v2s2",
        "--src-tls-verify=false",
        f"docker://{zoo.registry.host}/old:s1",
        f"dir:{theirs}",
    )
    m_ours, m_theirs = (json.loads((d / "manifest.json").read_text()) for d in (ours, theirs))
    assert m_ours["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [x["digest"] for x in m_ours["layers"]] == [x["digest"] for x in m_theirs["layers"]]
    c_ours, c_theirs = (
        json.loads((d / m["config"]["digest"].split(":")[1]).read_text())
        for d, m in ((ours, m_ours), (theirs, m_theirs))
    )
    assert c_ours["rootfs"] == c_theirs["rootfs"] and len(c_ours["rootfs"]["diff_ids"]) == len(
        m_ours["layers"]
    )
    assert [h.get("created_by") for h in c_ours["history"]] == [
        h.get("created_by") for h in c_theirs["history"]
    ]
    assert c_ours == c_theirs
    # byte for byte: the same digest as skopeo's conversion
    assert "sha256:" + hashlib.sha256((theirs / "manifest.json").read_bytes()).hexdigest() == s1.pushed_digest


def test_progress_moves_within_a_blob_that_goes_up_in_chunks(bundle: Path, basic_registry: Registry) -> None:
    events: list[Progress] = []
    r = push(
        PushOptions(
            bundle=str(bundle),
            registry=basic_registry.url,
            credentials=Credentials(USER, PASSWORD),
            chunk_size=1 << 10,
        ),
        on_progress=events.append,
    )
    assert not r.failed
    with Bundle.open(bundle) as b:
        biggest = max(x.size for x in b.catalog.blobs.values())
    assert biggest > 3 << 10  # goes up in 4 PATCHes or more
    # each PATCH of 1 KiB shows: steps far smaller than any whole blob, and never past the total
    steps = [y.done - x.done for x, y in zip(events, events[1:]) if y.done > x.done]
    sizes = {x.size for x in b.catalog.blobs.values()} | {m.size for m in b.catalog.manifests.values()}
    assert 1 << 10 not in sizes  # so a step of exactly 1 KiB is one PATCH, not a whole blob
    assert steps.count(1 << 10) >= biggest // (1 << 10) - 1
    assert all(e.done <= e.total for e in events) and events[-1].done == events[-1].total
