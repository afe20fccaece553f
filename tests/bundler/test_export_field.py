"""Export as it meets the field: storage trees that are broken, hostile or changing while ferry reads them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.trees import TreeWriter
from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.restore import RestoreOptions
from ferry.importer.restore import run as restore
from ferry.shared.digest import Digest
from ferry.shared.errors import BrokenImages, SourceChanged
from ferry.shared.progress import Progress
from ferry.shared.storage.paths import BlobData, ManifestRevisionLink, TagCurrentLink
from tests.support.checks import assert_tree_consistent, validate_bundle
from tests.support.mounts import unavailable

runner = CliRunner()
INDEX = "application/vnd.oci.image.index.v1+json"


def _tag(w: TreeWriter, repo: str, tag: str, manifest: bytes) -> str:
    """A manifest of any bytes, linked in ``repo`` and tagged."""
    d = w.blob(manifest)
    for spec in (ManifestRevisionLink(repo, Digest.parse(d)), TagCurrentLink(repo, tag)):
        w._file(w.layout.path(spec), d.encode())
    return d


def test_tags_no_reader_accepts_are_skipped_with_their_reason(zoo_copy: Path, tmp_path: Path) -> None:
    """A tag folder named '.hidden', 'bad tag', 'v1\\n' or 200 characters long used to go into the bundle,
    which every reader then refused whole after the air gap."""
    tags = zoo_copy / "docker/registry/v2/repositories/team/app/_manifests/tags"
    bad = [".hidden", "bad tag", "v1\n", "a" * 200]
    for name in bad:
        shutil.copytree(tags / "v1", tags / name)
    out = tmp_path / "b.tar"
    r = runner.invoke(app, ["export", str(zoo_copy), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    catalog = validate_bundle(out)  # every reader accepts it
    app_tags = next(x for x in catalog.repositories if x.name == "team/app").tags
    assert "v1" in app_tags and not set(bad) & set(app_tags)
    skipped = {s.tag: s.reason for s in catalog.skipped if s.repository == "team/app"}
    assert set(bad) <= set(skipped) and all("invalid tag name" in skipped[t] for t in bad)
    # printed, each on its own line, the newline written out
    assert "skipped team/app:v1\\x0a: invalid tag name" in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("skipped team/app:")]) == 4


def test_a_repository_nested_1200_folders_deep_is_skipped_not_a_crash(zoo_copy: Path, tmp_path: Path) -> None:
    deep = zoo_copy / "docker/registry/v2/repositories" / "/".join(["a"] * 1200)
    d = str(deep.parents[1199])
    for _ in range(1200):  # one level at a time: pathlib's own mkdir(parents=True) recurses
        d += "/a"
        os.mkdir(d)
    w = TreeWriter(zoo_copy)
    rel = str(deep.relative_to(zoo_copy / "docker/registry/v2/repositories"))
    w.image(rel, "v1", [b"layer"], b"{}")
    out = tmp_path / "b.tar"
    try:
        r = runner.invoke(app, ["export", str(zoo_copy), "-o", str(out)])
        assert r.exit_code == 0, r.stderr
        assert "invalid repository name (longer than 255 characters)" in r.stderr
        validate_bundle(out)
    finally:  # by hand: shutil.rmtree (and so pytest's clean-up) and os.walk recurse per level
        order, stack = [], [str(deep.parents[1199])]
        while stack:
            d = stack.pop()
            order.append(d)
            for e in os.scandir(d):
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    os.unlink(e.path)
        for d in reversed(order):
            os.rmdir(d)


def test_1500_nested_indexes_export_and_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    w = TreeWriter(src)
    top = w.image("deep/nest", "base", [b"layer-bytes"], b'{"os":"linux"}')
    size = len(Path(w.layout.path(BlobData(Digest.parse(top)))).read_bytes())
    for _ in range(1500):
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [{"mediaType": INDEX, "digest": top, "size": size}],
            }
        ).encode()
        top = _tag(w, "deep/nest", "top", raw)
        size = len(raw)
    out = tmp_path / "b.tar"
    export(ExportOptions(root=src, output=out))
    catalog = validate_bundle(out)
    assert len(catalog.manifests) == 1501
    restore(RestoreOptions(bundle=str(out), root=tmp_path / "dst", owner=None))
    assert_tree_consistent(tmp_path / "dst", catalog)


def test_json_nested_200000_deep_is_a_broken_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    w = TreeWriter(src)
    w.image("ok/app", "v1", [b"fine"], b"{}")
    bad = _tag(w, "bad/app", "v1", b"[" * 200_000 + b"]" * 200_000)
    r = runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "b.tar")])
    assert r.exit_code == 1 and r.stderr.startswith("error (broken-images)"), r.stderr
    assert "bad/app:v1" in r.stderr and "nested too deeply" in r.stderr and bad in r.stderr
    assert not list(tmp_path.glob("b.tar*"))


@pytest.mark.parametrize("what", ["manifest", "blob", "tag link", "repository folder"])
def test_unreadable_files_make_a_broken_image_not_an_internal_error(tmp_path: Path, what: str) -> None:
    """root reads every file: ferry runs with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped, as a
    registry's files look to an operator's account, and a file it may not read is a broken image."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        unavailable("dropping root's DAC override needs root and setpriv (util-linux)")
    src = tmp_path / "src"
    w = TreeWriter(src)
    w.image("ok/app", "v1", [b"fine"], b"{}")
    md = w.image("locked/app", "v1", [b"secret layer"], b'{"a":1}')
    v2 = src / "docker/registry/v2"
    manifest = json.loads(Path(w.layout.path(BlobData(Digest.parse(md)))).read_bytes())
    target = {
        "manifest": Path(w.layout.path(BlobData(Digest.parse(md)))),
        "blob": Path(w.layout.path(BlobData(Digest.parse(manifest["layers"][0]["digest"])))),
        "tag link": Path(w.layout.path(TagCurrentLink("locked/app", "v1"))),
        "repository folder": v2 / "repositories/locked/app/_manifests/tags",
    }[what]
    target.chmod(0)
    out = tmp_path / "out"
    out.mkdir()
    try:
        p = subprocess.run(
            [
                "setpriv",
                "--bounding-set",
                "-dac_override,-dac_read_search",
                "--",
                "ferry",
                "export",
                str(src),
                "-o",
                str(out / "b.tar"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        target.chmod(0o755 if target.is_dir() else 0o644)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("error (broken-images)") and "Traceback" not in p.stderr, p.stderr
    assert "locked/app" in p.stderr and "Permission denied" in p.stderr, p.stderr
    assert "ok/app" not in p.stderr
    assert not list(out.iterdir())


def test_a_blob_deleted_while_the_copy_runs_is_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    w = TreeWriter(src)
    layer = os.urandom(300 << 10)  # not kept in memory by the scan: the copy reads it again
    w.image("team/app", "v1", [layer], b"{}")
    data = Path(w.layout.path(BlobData(Digest.parse(w.blob(layer)))))

    def on_progress(ev: Progress) -> None:
        if ev.phase == "copy" and ev.done == 0 and data.exists():
            data.unlink()  # the registry's garbage collector, at the worst moment

    out = tmp_path / "b.tar"
    with pytest.raises((SourceChanged, BrokenImages)) as e:
        export(ExportOptions(root=src, output=out), on_progress=on_progress)
    assert str(data) in e.value.message or data.parent.name in str(e.value.to_dict())
    assert not list(tmp_path.glob("b.tar*"))
