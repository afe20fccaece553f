"""ferry restore: a real docker-registry serves what it wrote, skopeo pulls it, garbage-collect keeps it."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import msgpack
import pytest
import zstandard

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.importer.harbor1 import HarborAccess
from ferry.importer.restore import RestoreOptions
from ferry.importer.restore import run as restore
from ferry.shared.bundle.reader import Bundle
from ferry.shared.bundle.volumes import find_volumes
from ferry.shared.errors import BundleDamaged, BundleFormatError, OutputError, UsageError
from ferry.shared.storage.reader import Selection
from ferry.shared.storage.writer import Owner
from tests.support.checks import assert_tree_consistent
from tests.support.harbor import HarborStandIn
from tests.support.mounts import unavailable
from tests.support.registry import Registry, skopeo
from tests.support.zoo import Zoo


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("restore") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


def served(registry: Registry) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for repo in registry.catalog():
        for tag in registry.tags(repo):
            status, digest, _ = registry.manifest(repo, tag)
            assert status == 200, (repo, tag)
            out.setdefault(repo, {})[tag] = digest
    return out


def gc_eligible(registry: Registry) -> str:
    p = subprocess.run(
        ["docker-registry", "garbage-collect", "--dry-run", str(registry.config_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return p.stdout + p.stderr


def test_restored_tree_is_served_pulled_and_kept_by_gc(zoo: Zoo, bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "harbor-registry"
    r = restore(RestoreOptions(bundle=str(bundle), root=root, owner=Owner(10000, 10000)))
    assert (
        r.blobs_written > 0 and r.blobs_present == 0 and r.tags_written == sum(map(len, zoo.served.values()))
    )
    with Bundle.open(bundle) as b:
        assert_tree_consistent(root, b.catalog)
        catalog = b.catalog
    # ownership: every file and folder below v2, as Harbor's registry user
    v2 = root / "docker/registry/v2"
    for p in [v2, *v2.rglob("*")]:
        st = p.lstat()
        assert (st.st_uid, st.st_gid) == (10000, 10000), p
    with Registry(root, schema1=True) as reg:
        assert served(reg) == zoo.served
        (sbom,) = zoo.untagged["team/app"]
        assert reg.manifest("team/app", sbom)[1] == sbom  # the untagged manifest is there, by digest
        for repo, tags in zoo.served.items():
            for tag in tags:
                if repo in ("foreign", "dforeign"):
                    # no client can pull these from any registry: the foreign layer lives at its URL
                    raw = skopeo(
                        "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/{repo}:{tag}"
                    ).stdout
                    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == zoo.served[repo][tag]
                    continue
                dest = tmp_path / "pulled" / repo.replace("/", "_") / tag
                dest.mkdir(parents=True)
                skopeo(
                    "copy",
                    "--all",
                    "--src-tls-verify=false",
                    f"docker://{reg.host}/{repo}:{tag}",
                    f"dir:{dest}",
                )
                assert (dest / "manifest.json").exists()
        out = gc_eligible(reg)
    restored = set(catalog.blobs) | set(catalog.manifests)
    assert "marking" in out  # the mark phase walked the restored repositories
    assert not [
        line
        for line in out.splitlines()
        if "eligible for deletion" in line and any(d in line for d in restored)
    ]


def test_merge_keeps_other_repositories_and_second_run_is_a_no_op(zoo: Zoo, tmp_path: Path) -> None:
    # a registry that already holds some repositories gets a bundle of others
    root = tmp_path / "root"
    part1, part2 = tmp_path / "p1.tar", tmp_path / "p2.tar"
    export(ExportOptions(root=zoo.root, output=part1, selection=Selection(include=("team/*",))))
    export(ExportOptions(root=zoo.root, output=part2, selection=Selection(exclude=("team/*",))))
    restore(RestoreOptions(bundle=str(part1), root=root, owner=None))
    r2 = restore(RestoreOptions(bundle=str(part2), root=root, owner=None))
    assert r2.blobs_present > 0  # the shared base layer was already there and was not rewritten
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = restore(RestoreOptions(bundle=str(part2), root=root, owner=None))
    assert again.blobs_written == 0 and again.tags_written == 0 and again.plan.blobs_to_write == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before  # nothing touched
    with Registry(root, schema1=True) as reg:
        assert served(reg) == zoo.served


def test_existing_tag_is_kept_or_with_overwrite_moved_and_reported(
    zoo: Zoo, bundle: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(zoo.root, root)
    link = root / "docker/registry/v2/repositories/weird/_manifests/tags/current/current/link"
    link.write_bytes(zoo.served["weird"]["index"].encode())  # someone moved the tag on the target side
    # by default a tag the target has elsewhere is kept and reported (the CLI exits 1)
    r = restore(RestoreOptions(bundle=str(bundle), root=root, owner=None))
    assert r.tags_kept == (("weird:current", zoo.served["weird"]["index"], zoo.served["weird"]["current"]),)
    assert not r.tags_moved and link.read_bytes() == zoo.served["weird"]["index"].encode()
    # with overwrite it is moved, and reported
    r = restore(RestoreOptions(bundle=str(bundle), root=root, owner=None, overwrite=True))
    assert r.tags_moved == (("weird:current", zoo.served["weird"]["index"], zoo.served["weird"]["current"]),)
    assert link.read_bytes() == zoo.served["weird"]["current"].encode()


def test_stdin_and_volumes(zoo: Zoo, tmp_path: Path) -> None:
    vol = tmp_path / "v.tar"
    export(ExportOptions(root=zoo.root, output=vol, volume_size=50_000))
    assert len(find_volumes(vol)) > 1
    a = tmp_path / "a"
    restore(RestoreOptions(bundle=str(vol), root=a, owner=None))
    cat = subprocess.Popen(["cat", *map(str, find_volumes(vol))], stdout=subprocess.PIPE)
    b = tmp_path / "b"
    p = subprocess.run(
        ["ferry", "restore", "-", "--root", str(b), "--owner", "keep", "-q"],
        stdin=cat.stdout,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    for root in (a, b):
        with Registry(root, schema1=True) as reg:
            assert served(reg) == zoo.served


@pytest.mark.parametrize("jobs", [1, 2])  # 2: links written by the forked child process
def test_a_file_in_the_way_fails_clearly_and_writes_no_tag(bundle: Path, tmp_path: Path, jobs: int) -> None:
    root = tmp_path / "root"
    repos = root / "docker/registry/v2/repositories"
    repos.mkdir(parents=True)
    (repos / "team").write_text("not a folder")  # where team/app and team/sub/... must go
    with pytest.raises(OutputError, match=r"repositories/team/.*Not a directory"):
        restore(RestoreOptions(bundle=str(bundle), root=root, owner=None, jobs=jobs))
    assert not list(root.rglob("tags/*/current/link"))
    assert not list(root.rglob("*.tmp"))


def test_truncated_bundle_writes_no_tag(zoo: Zoo, bundle: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size * 2 // 3])
    with pytest.raises(BundleDamaged, match="trailer is missing"):
        restore(RestoreOptions(bundle=str(cut), root=tmp_path / "file", owner=None))
    assert not (tmp_path / "file").exists()  # a file bundle is refused before anything is written
    # from a stream the trailer comes last: blobs may land, tags must not
    root = tmp_path / "stream"
    with open(cut, "rb") as f:
        p = subprocess.run(
            ["ferry", "restore", "-", "--root", str(root), "--owner", "keep", "-q"],
            stdin=f,
            capture_output=True,
            text=True,
        )
    assert p.returncode == 1 and "no tag was written" in p.stderr and "Traceback" not in p.stderr
    assert not list(root.rglob("tags/*/current/link"))
    assert not list(root.rglob("*.tmp"))


def _hostile(tmp_path: Path, bundle: Path, mutate: str) -> Path:
    """A copy of ``bundle`` whose index or members an attacker changed."""
    with tarfile.open(bundle) as tf:
        members = [(ti, tf.extractfile(ti).read()) for ti in tf.getmembers()]  # type: ignore[union-attr]
    index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(members[0][1]))
    if mutate == "traversal":
        index["repositories"][0]["name"] = "../../../escape"
    elif mutate == "bad-digest":
        d = index["order"][0]
        index["blobs"]["sha256:../../../../etc/passwd"] = index["blobs"].pop(d)
    data = zstandard.ZstdCompressor().compress(msgpack.packb(index))
    out = tmp_path / f"{mutate}.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for i, (ti, body) in enumerate(members):
            if i == 0:
                body = data
            ti.size = len(body)
            if mutate == "symlink" and ti.name.startswith("blobs/") and i == 3:
                sym = tarfile.TarInfo(ti.name)
                sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(sym)
                continue
            tf.addfile(ti, io.BytesIO(body))
    return out


@pytest.mark.parametrize("mutate", ["traversal", "bad-digest", "symlink"])
def test_hostile_bundle_writes_nothing(bundle: Path, tmp_path: Path, mutate: str) -> None:
    evil = _hostile(tmp_path, bundle, mutate)
    target = tmp_path / "t" / "root"
    with pytest.raises(BundleFormatError):
        restore(RestoreOptions(bundle=str(evil), root=target, owner=None))
    assert not (tmp_path / "t").exists()
    assert not (tmp_path / "escape").exists()
    # the same from a stream: refused when the index is read or the bad member arrives, nothing escapes
    with open(evil, "rb") as f:
        p = subprocess.run(
            ["ferry", "restore", "-", "--root", str(target), "--owner", "keep", "-q"],
            stdin=f,
            capture_output=True,
            text=True,
        )
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert not list(tmp_path.rglob("escape")) and not list(tmp_path.rglob("passwd"))
    assert (
        not [p for p in (tmp_path / "t").rglob("*") if p.is_symlink()] if (tmp_path / "t").exists() else True
    )


def test_dry_run_writes_nothing_and_plans(zoo: Zoo, bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(zoo.root, root)
    before = sorted(str(p) for p in root.rglob("*"))
    r = restore(RestoreOptions(bundle=str(bundle), root=root, dry_run=True))
    assert r.dry_run and r.plan.blobs_to_write == 0 and r.plan.blobs_present > 0 and r.blobs_written == 0
    assert sorted(str(p) for p in root.rglob("*")) == before
    empty = restore(RestoreOptions(bundle=str(bundle), root=tmp_path / "new", dry_run=True))
    assert empty.plan.blobs_to_write == r.plan.blobs_present and not (tmp_path / "new").exists()


def test_non_root_cannot_chown_and_says_so(bundle: Path) -> None:
    if os.geteuid() != 0:
        unavailable("switching to an unprivileged user needs root")
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="ferry-nonroot-", dir="/tmp"))
    try:
        os.chmod(work, 0o777)
        public = work / "b.tar"
        shutil.copy(bundle, public)
        os.chmod(public, 0o644)
        p = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                shutil.which("ferry") or "ferry",
                "restore",
                str(public),
                "--root",
                str(work / "r"),
            ],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 2 and "not root" in p.stderr and "--owner keep" in p.stderr, p.stderr
        assert not (work / "r").exists()
    finally:
        shutil.rmtree(work)


def test_owner_must_be_parseable() -> None:
    from ferry.cli import parse_owner

    assert parse_owner("10000:10000") == Owner(10000, 10000) and parse_owner("keep") is None
    assert parse_owner("33") == Owner(33, 33)
    with pytest.raises(UsageError):
        parse_owner("harbor")


def test_redis_cache_db1_flushed_db0_kept(bundle: Path, tmp_path: Path) -> None:
    import redis

    from tests.support.registry import free_port

    port = free_port()
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        r0 = redis.Redis(port=port, db=0)
        for _ in range(100):
            try:
                r0.ping()
                break
            except redis.ConnectionError:
                import time

                time.sleep(0.05)
        r1 = redis.Redis(port=port, db=1)
        r0.set("session:abc", "core")  # Harbor core's own data in DB 0
        r1.hset("blobs::sha256:" + "a" * 64, mapping={"size": 1})
        r1.sadd("repository::team/app::blobs", "x")
        r1.set("upload:1234:size", 5)
        r1.set("unrelated", 1)
        r = restore(
            RestoreOptions(
                bundle=str(bundle), root=tmp_path / "root", owner=None, redis_url=f"redis://127.0.0.1:{port}"
            )
        )
        assert r.redis_keys_deleted == 3
        assert sorted(r1.keys()) == [b"unrelated"] and r0.get("session:abc") == b"core"
    finally:
        srv.terminate()
        srv.wait()
    dump = tmp_path / "dump.rdb"
    dump.write_bytes(b"REDIS0009")
    r = restore(RestoreOptions(bundle=str(bundle), root=tmp_path / "root", owner=None, redis_dump=dump))
    assert r.redis_dump_removed is True and not dump.exists()


def test_harbor_stand_in_gets_projects_and_sync(bundle: Path, tmp_path: Path) -> None:
    harbor = HarborStandIn().start()
    try:
        harbor.projects.add("charts")  # exists already: 409 is fine
        r = restore(
            RestoreOptions(
                bundle=str(bundle),
                root=tmp_path / "root",
                owner=None,
                harbor=HarborAccess(harbor.url, "admin", "Harbor12345"),
            )
        )
        # one-level names land under library/ (Harbor 1.x cannot serve them), and say so
        assert ("multi", "library/multi") in r.renamed
        assert r.harbor is not None and set(r.harbor.created) == {"team", "docker"}
        assert set(r.harbor.existing) == {"charts", "library"} and r.harbor.synced_quota
        posts = [c[1] for c in harbor.calls if c[0] == "POST"]
        assert posts[-2:] == ["/api/internal/syncregistry", "/api/internal/syncquota"]
        assert {c[2]["project_name"] for c in harbor.calls if c[1] == "/api/projects"} == {
            "team",
            "docker",
            "charts",
            "library",
        }  # type: ignore[index]
        assert harbor.cookies_seen == []  # ferry never sends Harbor's session cookie back
        assert not r.orphans and not r.next_steps
        assert (tmp_path / "root/docker/registry/v2/repositories/library/multi/_manifests").is_dir()
        # a wrong password is one clear error
        p = subprocess.run(
            [
                "ferry",
                "restore",
                str(bundle),
                "--root",
                str(tmp_path / "root"),
                "--owner",
                "keep",
                "--harbor-url",
                harbor.url,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "FERRY_HARBOR_PASSWORD": "wrong"},
        )
        assert (
            p.returncode == 1 and "needs a system administrator" in p.stderr and "Traceback" not in p.stderr
        )
    finally:
        harbor.stop()
