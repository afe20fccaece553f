"""Restore as it meets the field: two file systems, a full disk, a killed run before this one, a second
restore at the same time, and Harbor's Redis gone after the storage was written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.importer.restore import RestoreOptions
from ferry.importer.restore import run as restore
from ferry.shared.errors import DiskFull, OutputError
from ferry.shared.storage.writer import CLAIM_NAME, SMALL_BLOB, RootClaim
from tests.support.checks import assert_tree_consistent, validate_bundle
from tests.support.images import Layout, make_layer
from tests.support.mounts import tmpfs
from tests.support.registry import Registry, push_layout

runner = CliRunner()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a layer over the writer's small-blob size, which the kernel copies."""
    work = tmp_path_factory.mktemp("big")
    lay = Layout(work / "layout")
    image = lay.image([make_layer(40, SMALL_BLOB + (2 << 20)), make_layer(41)], label="big")
    lay.name(image, "v1")
    with Registry(work / "registry") as reg:
        push_layout(lay.path, "v1", reg, "team/big:v1")
        push_layout(lay.path, "v1", reg, "team/other:v1")
    out = work / "big.tar"
    export(ExportOptions(root=work / "registry", output=out))
    return out


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("where", ["bundle-on-tmpfs", "root-on-tmpfs"])
def test_restore_across_two_file_systems(big: Path, tmp_path: Path, where: str, jobs: int) -> None:
    """The normal case in the field (a bundle on a USB disk, the root in /data): copy_file_range
    refuses to cross file systems (EXDEV); restore must step down, not fail."""
    with tmpfs(tmp_path / "mnt", "64m") as mnt:
        if where == "bundle-on-tmpfs":
            bundle = Path(shutil.copy(big, mnt / "b.tar"))
            root = tmp_path / "root"
        else:
            bundle, root = big, mnt / "root"
        assert os.stat(bundle).st_dev != os.stat(root.parent).st_dev
        restore(RestoreOptions(bundle=str(bundle), root=root, owner=None, jobs=jobs))
        assert_tree_consistent(root, validate_bundle(big))


def test_a_full_file_system_is_named_and_leaves_nothing_half_written(big: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "3m") as mnt:
        root = mnt / "root"
        with pytest.raises(DiskFull, match="no space left"):
            restore(RestoreOptions(bundle=str(big), root=root, owner=None))
        assert not list(root.rglob(".ferry-*.tmp"))
        assert not list(root.rglob("current/link"))
        assert not (root / CLAIM_NAME).exists()  # cleaned up: the next run need not sweep
        # the same through the CLI: the code scripts see is disk-full
        r = runner.invoke(app, ["restore", str(big), "--root", str(root), "--owner", "keep", "-q"])
        assert r.exit_code == 1 and r.stderr.startswith("error (disk-full)"), r.stderr


def test_a_rerun_sweeps_the_temp_files_a_killed_run_left(big: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    restore(RestoreOptions(bundle=str(big), root=root, owner=None))
    # what a run killed with SIGKILL leaves: its claim marker, and temp files beside the files they were for
    blob_dir = next((root / "docker/registry/v2/blobs/sha256").glob("*/*"))
    stale = [
        blob_dir / ".ferry-data-140-999.tmp",
        next(root.rglob("_layers/sha256/*")) / ".ferry-link-1-2.tmp",
    ]
    for s in stale:
        s.write_bytes(b"x" * 1000)
    (root / CLAIM_NAME).write_text("999999")
    restore(RestoreOptions(bundle=str(big), root=root, owner=None))
    assert not any(s.exists() for s in stale)
    assert not (root / CLAIM_NAME).exists()
    assert_tree_consistent(root, validate_bundle(big))
    # a temp file without a marker belongs to nobody ferry knows of: a finished run does not walk the tree
    stale[0].write_bytes(b"y")
    restore(RestoreOptions(bundle=str(big), root=root, owner=None))
    assert stale[0].exists()


def test_a_second_restore_into_the_same_root_is_refused(big: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    claim = RootClaim(str(root)).acquire()
    try:
        with pytest.raises(OutputError, match=rf"another ferry restore \(pid {os.getpid()}\)"):
            restore(RestoreOptions(bundle=str(big), root=root, owner=None))
    finally:
        claim.release()
    restore(RestoreOptions(bundle=str(big), root=root, owner=None))


def test_redis_failing_after_the_restore_says_the_restore_finished(big: Path, tmp_path: Path) -> None:
    from tests.support.registry import free_port

    root = tmp_path / "root"
    r = runner.invoke(
        app,
        [
            "restore",
            str(big),
            "--root",
            str(root),
            "--owner",
            "keep",
            "-q",
            "--redis-url",
            f"redis://127.0.0.1:{free_port()}",
        ],
    )
    assert r.exit_code == 1, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("error (redis)") and "the restore itself finished" in first, r.stderr
    assert "again writes nothing new" in r.stderr
    assert_tree_consistent(root, validate_bundle(big))
