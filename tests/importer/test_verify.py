"""ferry verify and inspect: damage is found, located (member, volume) and tied to the images it breaks."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import msgpack
import pytest
import zstandard

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.importer.inspect import run as inspect
from ferry.importer.verify import VerifyOptions
from ferry.importer.verify import run as verify
from ferry.shared.bundle.format import blob_member
from ferry.shared.bundle.reader import Bundle, plan_from_trailer
from ferry.shared.bundle.volumes import find_volumes
from ferry.shared.errors import BundleDamaged, BundleFormatError, BundleVersionError, SourceNotFound
from ferry.shared.storage.reader import Selection
from tests.support.zoo import Zoo


@pytest.fixture(scope="module")
def bundle(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "zoo.tar"
    export(ExportOptions(root=zoo.root, output=out, selection=Selection(untagged=True)))
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _member_offset(path: Path, digest: str) -> tuple[int, int]:
    with Bundle.open(path) as b:
        b.scan()
        m = next(m for m in b.members if m.name == blob_member(digest))
        return m.offset, m.size


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_intact_bundle_verifies_full_and_quick(bundle: Path) -> None:
    r = verify(VerifyOptions(path=bundle))
    assert r.members > 20 and r.images > 15 and not r.quick
    assert verify(VerifyOptions(path=bundle, quick=True, jobs=1)).quick


@pytest.mark.parametrize("quick", [False, True])
def test_flipped_byte_names_the_blob_and_the_images_it_breaks(
    zoo: Zoo, bundle: Path, tmp_path: Path, quick: bool
) -> None:
    bad = _copy(bundle, tmp_path / "bad.tar")
    with Bundle.open(bad) as b:
        base = b.catalog.manifests[zoo.served["team/app"]["v1"]].blobs[1]  # the shared base layer
    off, size = _member_offset(bad, base)
    _flip(bad, off + size // 2)
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=bad, quick=quick))
    problems = e.value.problems
    assert {p["member"] for p in problems} == {blob_member(base)}
    images = set(problems[0]["images"])  # type: ignore[arg-type]
    assert {"team/app:v1", "team/app:v2", "multi:latest", "docker/app:v1", "old:s1"} <= images
    assert "charts/c:1.0" not in images
    assert problems[0]["volumes"] == ["bad.tar"]


@pytest.mark.parametrize("which", [0, -1])
def test_a_flipped_byte_is_found_by_whichever_process_hashes_the_blob(
    bundle: Path, tmp_path: Path, which: int
) -> None:
    # the trailer's plan lets a child process hash the first blobs before the index is read; the rest is
    # hashed here, on the index's plan: a damaged first blob and a damaged last blob are both named
    with Bundle.open(bundle) as b:
        planned = plan_from_trailer(b.data)
        assert planned is not None and planned == b.plan()  # both plans agree on an intact bundle
        blob = [m for m in planned if m.name.startswith("blobs/")][which]
    bad = _copy(bundle, tmp_path / "bad.tar")
    _flip(bad, blob.offset + blob.size // 2)
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=bad))
    assert {p["member"] for p in e.value.problems} == {blob.name}
    assert str(e.value.problems[0]["problem"]).startswith("content hashes to sha256:")


def test_flipped_byte_in_the_index_is_caught(bundle: Path, tmp_path: Path) -> None:
    bad = _copy(bundle, tmp_path / "bad.tar")
    _flip(bad, 512 + 100)  # inside the compressed index: it no longer decodes, or no longer matches
    with pytest.raises((BundleDamaged, BundleFormatError)):
        verify(VerifyOptions(path=bad))


def test_damaged_tar_header_is_named(zoo: Zoo, bundle: Path, tmp_path: Path) -> None:
    # a flipped byte in a header's mtime: name and size still read right, so only the headers checksum of
    # the trailer (or the tar checksum) can notice; tar itself would stop there
    bad = _copy(bundle, tmp_path / "bad.tar")
    digest = zoo.served["team/app"]["v1"]
    off, _ = _member_offset(bad, digest)
    _flip(bad, off - 512 + 136)
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=bad))
    reasons = [str(p["problem"]) for p in e.value.problems]
    assert f"the tar header of {blob_member(digest)} is damaged at byte {off - 512}" in reasons


def test_bundle_without_headers_checksum_still_verifies(
    zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a format 1.0 trailer has no headers_xxh3: every header is then checked on its own
    import ferry.shared.bundle.writer as writer

    real = writer.encode_trailer

    def v10(index_xxh3: str, members: list[tuple[str, int, str]], headers_xxh3: str) -> bytes:
        doc = msgpack.unpackb(real(index_xxh3, members, headers_xxh3))
        del doc["headers_xxh3"]
        doc["version"] = [1, 0]
        return bytes(msgpack.packb(doc))

    monkeypatch.setattr(writer, "encode_trailer", v10)
    old = tmp_path / "v10.tar"
    export(ExportOptions(root=zoo.root, output=old))
    with Bundle.open(old) as b:
        b.scan()
        assert b.trailer is not None and b.trailer.headers_xxh3 is None
    assert verify(VerifyOptions(path=old)).images > 15
    off, size = _member_offset(old, zoo.served["team/app"]["v1"])
    _flip(old, off + size // 2)
    with pytest.raises(BundleDamaged):
        verify(VerifyOptions(path=old))


def test_truncated_bundle_names_the_missing_members(bundle: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with Bundle.open(cut) as b:
        assert plan_from_trailer(b.data) is None  # no trailer to plan from: all is hashed on the index's
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=cut))
    reasons = " ".join(str(p["problem"]) for p in e.value.problems)
    assert "trailer missing" in reasons and "missing" in reasons


def test_foreign_and_absent_files_get_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello" * 1000)
    with pytest.raises(BundleFormatError, match="not a ferry bundle"):
        verify(VerifyOptions(path=junk))
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tf:
        tf.addfile(tarfile.TarInfo("README"), io.BytesIO(b""))
    with pytest.raises(BundleFormatError, match="first member is 'README'"):
        verify(VerifyOptions(path=other))
    with pytest.raises(SourceNotFound):
        verify(VerifyOptions(path=tmp_path / "nope.tar"))
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(BundleFormatError, match="empty"):
        verify(VerifyOptions(path=empty))


def test_unknown_major_version_is_refused(tmp_path: Path) -> None:
    doc = {"format": "ferry-bundle", "version": [3, 0]}
    data = zstandard.ZstdCompressor().compress(msgpack.packb(doc))
    future = tmp_path / "future.tar"
    with tarfile.open(future, "w") as tf:
        ti = tarfile.TarInfo("ferry/index.msgpack.zst")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with pytest.raises(BundleVersionError, match=r"version 3\.0 is newer"):
        inspect(future)


def test_damaged_volume_is_named(zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "v.tar"
    export(ExportOptions(root=zoo.root, output=out, volume_size=16_384))
    vols = find_volumes(out)
    assert verify(VerifyOptions(path=vols[0])).volumes == tuple(str(v) for v in vols)
    # a byte of a member that lies in the third volume (tar padding between members carries nothing)
    with Bundle.open(out) as b:
        b.scan()
        inside = next(m for m in b.members if m.offset // 16_384 == 2 and m.size > 8)
    at = inside.offset % 16_384
    _flip(vols[2], at)
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=out))
    assert {v for p in e.value.problems for v in p["volumes"]} <= {vols[2].name, vols[1].name, vols[3].name}  # type: ignore[attr-defined]
    assert any(vols[2].name in p["volumes"] for p in e.value.problems)  # type: ignore[operator]
    # a short middle volume is named even though the set still parses as far as it goes
    _flip(vols[2], at)
    vols[1].write_bytes(vols[1].read_bytes()[:-100])
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=out))
    assert any(
        p["volumes"] == [vols[1].name] and "expected 16384" in str(p["problem"]) for p in e.value.problems
    )
    # the last volume lost: the trailer is missing
    vols[1].write_bytes(vols[1].read_bytes() + b"\0" * 100)
    vols[-1].unlink()
    with pytest.raises(BundleDamaged, match="damaged") as e:
        verify(VerifyOptions(path=out))
    assert any("trailer missing" in str(p["problem"]) for p in e.value.problems)


def test_inspect_json(zoo: Zoo, bundle: Path) -> None:
    p = subprocess.run(["ferry", "inspect", str(bundle), "--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    images = {(i["repository"], i["tag"]): i for i in doc["images"]}
    for repo, tags in zoo.served.items():
        for tag, digest in tags.items():
            assert images[(repo, tag)]["digest"] == digest
    (sbom,) = zoo.untagged["team/app"]
    assert images[("team/app", None)]["digest"] == sbom
    assert images[("multi", "latest")]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert images[("multi", "latest")]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert all(set(i) >= {"repository", "tag", "digest", "mediaType", "size"} for i in doc["images"])
    assert doc["blobCount"] > 0 and doc["bytes"] > 0 and doc["source"]["kind"] == "directory"


def test_verify_cli_exit_codes_and_json(bundle: Path, tmp_path: Path) -> None:
    ok = subprocess.run(["ferry", "verify", str(bundle), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    bad = _copy(bundle, tmp_path / "bad.tar")
    _flip(bad, bad.stat().st_size // 2)
    p = subprocess.run(["ferry", "verify", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "bundle-damaged" in p.stderr or "bundle-format" in p.stderr
    pj = subprocess.run(["ferry", "verify", str(bad), "--json"], capture_output=True, text=True)
    assert pj.returncode == 1 and json.loads(pj.stdout)["ok"] is False
