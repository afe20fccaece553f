"""ferry export against real registry storage trees (built by docker-registry from skopeo pushes)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ferry.bundler.export import ExportOptions, run
from ferry.shared.bundle.reader import Bundle
from ferry.shared.bundle.volumes import find_volumes
from ferry.shared.errors import BrokenImages, NotAStorageTree, OutputError, UsageError
from ferry.shared.manifest import MediaType
from ferry.shared.progress import Progress
from ferry.shared.storage import reader
from ferry.shared.storage.reader import Selection
from tests.support.checks import tags_of, validate_bundle
from tests.support.mounts import tmpfs
from tests.support.registry import skopeo
from tests.support.zoo import Zoo


def export(root: Path, out: Path, **kw: object) -> Path:
    run(ExportOptions(root=root, output=out, **kw))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def full(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(zoo.root, tmp_path_factory.mktemp("full") / "zoo.tar", selection=Selection(untagged=True))


def test_every_served_tag_is_exported_with_the_registrys_digest(zoo: Zoo, full: Path) -> None:
    catalog = validate_bundle(full)
    assert tags_of(catalog) == zoo.served


def test_nested_and_prefix_repositories(full: Path) -> None:
    with Bundle.open(full) as b:
        names = {r.name for r in b.catalog.repositories}
    assert {"team/app", "team/sub", "team/sub/app", "charts/c", "docker/app"} <= names


def test_tags_named_like_layout_words(zoo: Zoo, full: Path) -> None:
    with Bundle.open(full) as b:
        weird = next(r for r in b.catalog.repositories if r.name == "weird")
    assert dict(weird.tags) == zoo.served["weird"]
    assert set(weird.tags) == {"current", "index", "link"}


def test_index_children_and_their_blobs_are_bundled(zoo: Zoo, full: Path) -> None:
    with Bundle.open(full) as b:
        c = b.catalog
        idx = c.manifests[zoo.served["multi"]["latest"]]
        assert [ch.digest for ch in idx.children] == zoo.index_children["multi:latest"]
        assert {ch.platform for ch in idx.children} == {"linux/amd64", "linux/arm64"}
        multi = next(r for r in c.repositories if r.name == "multi")
        for child in idx.children:
            assert child.digest in multi.manifests  # revision link in the same repository
            for blob in c.manifests[child.digest].blobs:
                assert blob in c.blobs
        dl = c.manifests[zoo.served["dockerlist"]["latest"]]
        assert dl.media_type == MediaType.DOCKER_LIST and len(dl.children) == 2


def test_schema1_docker_and_artifacts(zoo: Zoo, full: Path) -> None:
    with Bundle.open(full) as b:
        c = b.catalog
        s1 = c.manifests[zoo.served["old"]["s1"]]
        assert s1.media_type == MediaType.DOCKER_SCHEMA1 and s1.blobs  # the stored payload, with its fsLayers
        assert c.manifests[zoo.served["docker/app"]["v1"]].media_type == MediaType.DOCKER_MANIFEST
        chart = c.manifests[zoo.served["charts/c"]["1.0"]]
        assert chart.artifact_type == "application/vnd.cncf.helm.config.v1+json"
        sig_tags = [t for t in zoo.served["team/app"] if t.endswith(".sig")]
        assert sig_tags and all(
            t in next(r for r in c.repositories if r.name == "team/app").tags for t in sig_tags
        )


def test_untagged_subject_manifest_exported_only_with_untagged(zoo: Zoo, full: Path, tmp_path: Path) -> None:
    (sbom,) = zoo.untagged["team/app"]
    with Bundle.open(full) as b:
        app = next(r for r in b.catalog.repositories if r.name == "team/app")
        assert app.untagged == (sbom,)
        assert b.catalog.manifests[sbom].subject == zoo.served["team/app"]["v1"]
    plain = export(zoo.root, tmp_path / "tagged.tar")
    with Bundle.open(plain) as b:
        assert sbom not in b.catalog.manifests
        assert all(not r.untagged for r in b.catalog.repositories)


def test_deleted_manifest_does_not_come_back(zoo: Zoo, full: Path) -> None:
    repo, digest = zoo.deleted
    assert (zoo.v2 / "repositories" / repo / "_manifests/revisions/sha256" / digest.split(":")[1]).is_dir()
    with Bundle.open(full) as b:
        assert digest not in b.catalog.manifests
        gone = next(r for r in b.catalog.repositories if r.name == repo)
        assert set(gone.tags) == {"keep"}


def test_foreign_layer_recorded_not_bundled(zoo: Zoo, full: Path) -> None:
    with Bundle.open(full) as b:
        m = b.catalog.manifests[zoo.served["foreign"]["1"]]
        assert [f.digest for f in m.foreign] == [zoo.foreign_digest]
        assert m.foreign[0].urls == ("https://example.com/layer.tgz",)
        assert zoo.foreign_digest not in b.catalog.blobs
        assert not b.catalog.skipped


def test_every_blob_once_and_uncompressed(zoo: Zoo, full: Path) -> None:
    names = subprocess.run(
        ["tar", "-tf", str(full)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(names) == len(set(names))
    blob_bytes = sum(p.stat().st_size for p in (zoo.v2 / "blobs").rglob("data"))
    # the bundle is the referenced blobs plus tar headers: never compressed, never larger than all blobs + overhead
    assert full.stat().st_size <= blob_bytes + 512 * (len(names) + 2) * 2 + 64 * 1024


def test_skopeo_reads_the_bundle_as_an_oci_archive(zoo: Zoo, full: Path) -> None:
    for repo, tag in [("team/app", "v1"), ("multi", "latest"), ("team/sub/app", "1"), ("charts/c", "1.0")]:
        raw = skopeo("inspect", "--raw", f"oci-archive:{full}:{repo}:{tag}").stdout.encode()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == zoo.served[repo][tag]
    # Docker-format images are listed too (skopeo's layout reader only picks OCI media types)
    with tarfile.open(full) as tf:
        f = tf.extractfile("index.json")
        assert f is not None
        refs = {
            m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
            for m in json.load(f)["manifests"]
        }
    assert refs["docker/app:v1"] == zoo.served["docker/app"]["v1"]
    assert "old:s1" not in refs  # schema 1 has no OCI form


def test_tar_of_the_storage_tree_is_read_in_place(zoo: Zoo, tmp_path: Path) -> None:
    tree_tar = tmp_path / "registry.tar"
    subprocess.run(["tar", "-cf", str(tree_tar), "-C", str(zoo.root), "docker"], check=True)
    from_tar = validate_bundle(export(tree_tar, tmp_path / "b.tar"))
    assert tags_of(from_tar) == zoo.served
    # the v2 directory itself works as ROOT too
    v2tar = tmp_path / "v2.tar"
    subprocess.run(["tar", "-cf", str(v2tar), "-C", str(zoo.v2), "."], check=True)
    assert tags_of(validate_bundle(export(v2tar, tmp_path / "c.tar"))) == zoo.served
    assert tags_of(validate_bundle(export(zoo.v2, tmp_path / "d.tar"))) == zoo.served


def test_compressed_tar_is_refused_clearly(zoo: Zoo, tmp_path: Path) -> None:
    tgz = tmp_path / "registry.tar.gz"
    subprocess.run(
        ["tar", "-czf", str(tgz), "-C", str(zoo.root), "docker/registry/v2/repositories/weird"], check=True
    )
    with pytest.raises(NotAStorageTree, match="gzip-compressed"):
        export(tgz, tmp_path / "b.tar")
    with pytest.raises(NotAStorageTree):
        export(tmp_path, tmp_path / "b.tar")


def test_filters(zoo: Zoo, tmp_path: Path) -> None:
    c = validate_bundle(export(zoo.root, tmp_path / "a.tar", selection=Selection(include=("team/*",))))
    assert set(tags_of(c)) == {"team/app", "team/sub", "team/sub/app"}
    c = validate_bundle(
        export(
            zoo.root,
            tmp_path / "b.tar",
            selection=Selection(include=("team/*",), exclude=("team/sub*", "*:*.sig")),
        )
    )
    assert tags_of(c) == {
        "team/app": {t: d for t, d in zoo.served["team/app"].items() if not t.endswith(".sig")}
    }
    c = validate_bundle(export(zoo.root, tmp_path / "c.tar", selection=Selection(include=("weird:i*",))))
    assert tags_of(c) == {"weird": {"index": zoo.served["weird"]["index"]}}


def _break(root: Path, digest: str, how: str) -> None:
    data = root / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    if how == "delete":
        data.unlink()
    else:
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))


def test_broken_image_stops_export_and_names_every_broken_image(
    zoo: Zoo, zoo_copy: Path, tmp_path: Path
) -> None:
    with Bundle.open(_bundle_of(zoo, tmp_path)) as b:
        chart = b.catalog.manifests[zoo.served["charts/c"]["1.0"]]
        single_layer = b.catalog.manifests[zoo.served["weird"]["link"]].blobs[1]
    _break(zoo_copy, chart.blobs[1], "delete")  # a missing layer
    _break(zoo_copy, single_layer, "flip")  # bytes that no longer match their digest
    out = tmp_path / "broken.tar"
    with pytest.raises(BrokenImages) as e:
        export(zoo_copy, out)
    broken = {b.ref: b for b in e.value.broken}
    assert set(broken) == {"charts/c:1.0", "weird:link", "team/app:tmp", "gone:keep"}
    assert broken["charts/c:1.0"].missing == (chart.blobs[1],)
    assert "blob missing" in broken["charts/c:1.0"].reason
    assert single_layer in broken["weird:link"].missing and "hash to" in broken["weird:link"].reason
    assert not out.exists() and not list(tmp_path.glob("broken.tar*"))

    # --skip-broken: the rest is exported, the broken ones are recorded in the bundle
    c = validate_bundle(export(zoo_copy, out, skip_broken=True))
    assert {s.ref for s in c.skipped} == set(broken)
    assert "charts/c" not in tags_of(c)
    assert tags_of(c)["team/app"] == {t: d for t, d in zoo.served["team/app"].items() if t != "tmp"}


@pytest.mark.parametrize(("jobs", "defer_min"), [(0, None), (0, 0), (1, None)])
def test_a_blob_found_wrong_while_copying_leaves_no_bundle(
    zoo: Zoo,
    zoo_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jobs: int,
    defer_min: int | None,
) -> None:
    # only a flipped byte: the walk sees nothing wrong, so the export writes while blobs are hashed (small
    # ones by the background process, large ones on threads just ahead of the copy: defer_min=0 makes
    # every zoo blob large) and learns of it at the end; the half-written bundle must go, and
    # --skip-broken must export again without the image.  -j 1 hashes after the walk, before writing.
    if defer_min is not None:
        monkeypatch.setattr(reader, "DEFER_MIN", defer_min)
    with Bundle.open(_bundle_of(zoo, tmp_path)) as b:
        layer = b.catalog.manifests[zoo.served["weird"]["link"]].blobs[1]
        affected = {i.ref for i in b.catalog.images() if layer in b.catalog.closure(i.digest)}
    _break(zoo_copy, layer, "flip")
    out = tmp_path / "late.tar"
    with pytest.raises(BrokenImages) as e:
        export(zoo_copy, out, jobs=jobs)
    assert {b.ref for b in e.value.broken} == affected and all(b.missing == (layer,) for b in e.value.broken)
    assert "hash to" in e.value.broken[0].reason
    assert not list(tmp_path.glob("late.tar*"))  # neither the bundle nor its .partial
    c = validate_bundle(export(zoo_copy, out, skip_broken=True, jobs=jobs))
    assert {s.ref for s in c.skipped} == affected and layer not in c.blobs


def _bundle_of(zoo: Zoo, tmp_path: Path) -> Path:
    return export(zoo.root, tmp_path / "ref.tar")


def test_missing_manifest_and_unreadable_manifest(zoo: Zoo, zoo_copy: Path, tmp_path: Path) -> None:
    _break(zoo_copy, zoo.served["docker/app"]["v1"], "delete")
    child = zoo.index_children["multi:latest"][1]
    _break(zoo_copy, child, "flip")
    with pytest.raises(BrokenImages) as e:
        export(zoo_copy, tmp_path / "x.tar")
    by_ref = {b.ref: b for b in e.value.broken}
    assert "manifest data missing" in by_ref["docker/app:v1"].reason
    assert by_ref["multi:latest"].missing == (child,)
    assert "do not match" in by_ref["multi:latest"].reason


def test_volumes_cat_to_the_single_file_bundle(zoo: Zoo, full: Path, tmp_path: Path) -> None:
    out = tmp_path / "vol.tar"
    run(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True), volume_size=20_000))
    vols = find_volumes(out)
    assert len(vols) > 3 and all(v.stat().st_size == 20_000 for v in vols[:-1])
    assert not out.exists()
    validate_bundle(out)  # the base name opens the set
    validate_bundle(vols[0])  # and so does the first volume
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join(v.read_bytes() for v in vols))
    assert tags_of(validate_bundle(joined)) == zoo.served
    # a second export into the same name is refused without force; with it, a shorter one leaves no
    # stale volume behind
    with pytest.raises(OutputError, match=r"vol\.tar\.000 exists: refusing to overwrite"):
        run(ExportOptions(root=zoo.root, output=out, volume_size=20_000))
    assert tags_of(validate_bundle(out)) == zoo.served
    run(
        ExportOptions(
            root=zoo.root, output=out, selection=Selection(include=("weird",)), volume_size=20_000, force=True
        )
    )
    assert tags_of(validate_bundle(out)) == {"weird": zoo.served["weird"]}


def test_stdout_output_is_the_same_bundle(zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "piped.tar"
    with open(out, "wb") as f:
        p = subprocess.run(
            [shutil.which("ferry") or "ferry", "export", str(zoo.root), "-o", "-", "--quiet"],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert p.returncode == 0, p.stderr
    assert tags_of(validate_bundle(out)) == zoo.served
    # through a real pipe (sendfile to a pipe, not copy_file_range to a file)
    p2 = subprocess.run(
        f"{shutil.which('ferry')} export {zoo.root} -o - -q | cat > {tmp_path / 'pipe.tar'}",
        shell=True,
        check=True,
    )
    assert p2.returncode == 0
    assert tags_of(validate_bundle(tmp_path / "pipe.tar")) == zoo.served


def test_interrupted_export_leaves_no_finished_looking_file(
    zoo: Zoo, zoo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cut.tar"
    # every zoo blob is small enough to be kept from the scan: copy them from disk instead
    monkeypatch.setattr(reader, "KEEP_MAX", 0)

    def vanish(ev: Progress) -> None:
        # a blob disappears after the scan checked it: the write fails midway
        if ev.phase == "copy" and ev.files == 2:
            for data in (zoo_copy / "docker/registry/v2/blobs").rglob("data"):
                data.write_bytes(b"")

    # the copy finds the first emptied blob; export then checks every blob again and names every image
    # they break, with no output
    with pytest.raises(BrokenImages, match="broken images in the source") as e:
        run(ExportOptions(root=zoo_copy, output=out), on_progress=vanish)
    assert e.value.broken and all(b.missing for b in e.value.broken)
    assert list(tmp_path.glob("cut.tar*")) == []


def test_manifests_are_written_from_the_bytes_the_scan_verified(
    zoo: Zoo, zoo_copy: Path, tmp_path: Path
) -> None:
    # manifests are read once, checked and parsed, and written from memory: emptying their files after
    # the scan changes nothing in the bundle (small blobs too are kept, when the background hashing had
    # returned them by the time the copy starts; that is a race, so only manifests are emptied here)
    out = tmp_path / "kept.tar"
    with Bundle.open(_bundle_of(zoo, tmp_path)) as b:
        manifests = list(b.catalog.manifests)

    def vanish(ev: Progress) -> None:
        if ev.phase == "copy" and ev.files == 2:
            for d in manifests:
                (zoo_copy / "docker/registry/v2/blobs/sha256" / d[7:9] / d[7:] / "data").write_bytes(b"")

    run(ExportOptions(root=zoo_copy, output=out), on_progress=vanish)
    assert tags_of(validate_bundle(out)) == zoo.served


def test_full_disk_is_a_clear_error(zoo: Zoo, tmp_path: Path) -> None:
    from ferry.shared.errors import DiskFull

    with tmpfs(tmp_path / "tiny", "64k") as mnt:
        with pytest.raises(DiskFull, match="no space left") as e:
            export(zoo.root, mnt / "b.tar")
        # nothing under the final name; what was written is kept for --resume, and the hint says so
        assert [p.name for p in mnt.iterdir()] == ["b.tar.partial"]
        assert "--resume" in e.value.hint


def test_json_summary_from_the_cli(zoo: Zoo, tmp_path: Path) -> None:
    p = subprocess.run(
        ["ferry", "export", str(zoo.root), "-o", str(tmp_path / "j.tar"), "--json", "--include", "multi"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (
        doc["ok"] is True
        and doc["repositoryCount"] == 1
        and doc["tagCount"] == 1
        and doc["manifestCount"] == 3
    )
    assert doc["files"] == [str(tmp_path / "j.tar")]


def test_every_bundle_gets_its_own_id(zoo: Zoo, tmp_path: Path) -> None:
    """Format 1.2: a unique bundle id at export, which later waves name their bases by; inspect shows it."""
    from ferry.importer.inspect import run as inspect

    ids = []
    for name in ("a.tar", "b.tar"):
        run(ExportOptions(root=zoo.root, output=tmp_path / name))
        d = inspect(tmp_path / name).to_dict()
        assert d["formatVersion"] == "1.2"
        ids.append(d["bundleId"])
    assert all(isinstance(i, str) and len(i) == 32 and int(i, 16) >= 0 for i in ids) and ids[0] != ids[1]


def test_a_pattern_that_matches_nothing_is_named_before_anything_is_written(zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    with pytest.raises(UsageError) as e:
        run(
            ExportOptions(
                root=zoo.root,
                output=out,
                selection=Selection(include=("weird", "tema/*"), exclude=("nope:*",)),
            )
        )
    assert "--include 'tema/*' matches no image" in e.value.message
    assert "--exclude 'nope:*' matches no image" in e.value.message
    assert "weird" not in e.value.message
    assert not out.exists() and not list(tmp_path.iterdir())


def test_images_from_a_list_file_and_the_untagged_note(zoo: Zoo, tmp_path: Path) -> None:
    repo, tags = next((r, t) for r, t in sorted(zoo.served.items()) if len(t) > 1)
    tag = sorted(tags)[0]
    listing = tmp_path / "images.list"
    listing.write_text(f"# the seed's images.list\n{repo}:{tag}\n\nweird   # a whole repository\n")
    out = tmp_path / "b.tar"
    done = subprocess.run(
        ["ferry", "export", str(zoo.root), "-o", str(out), "--images-from", str(listing), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert tags_of(validate_bundle(out)) == {repo: {tag: tags[tag]}, "weird": zoo.served["weird"]}
    listing.write_text(f"{repo}:no-such-tag\n")
    done = subprocess.run(
        ["ferry", "export", str(zoo.root), "-o", str(tmp_path / "c.tar"), "--images-from", str(listing)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and f"'{repo}:no-such-tag' matches no image" in done.stderr
    # without --untagged, the manifests no tag reaches are counted in a note, with the way to include them
    r = run(ExportOptions(root=zoo.root, output=tmp_path / "all.tar"))
    with_untagged = validate_bundle(export(zoo.root, tmp_path / "u.tar", selection=Selection(untagged=True)))
    loose = sum(len(x.untagged) for x in with_untagged.repositories)
    assert loose > 0
    (note,) = [n for n in r.notes if "untagged" in n]
    assert int(note.split()[0]) >= loose and "--untagged" in note
