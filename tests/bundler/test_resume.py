"""``ferry export --resume``: an export killed (SIGKILL) or stopped by a full disk at several points, then
resumed, gives byte for byte the bundle an uninterrupted export with the same identity (bundle id,
creation time) writes; a damaged member of the partial is written again; a source that changed since
starts again from zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ferry.bundler.export as export_mod
from bench.trees import TreeWriter
from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import app
from ferry.shared.bundle.format import blob_member
from ferry.shared.bundle.reader import Bundle
from ferry.shared.bundle.resume import Partial, find_partial, partial_name
from ferry.shared.bundle.volumes import find_volumes, volume_name
from tests.support.catch import resume, stopped_when
from tests.support.checks import validate_bundle
from tests.support.mounts import tmpfs

runner = CliRunner()
VOLUME = 8 << 20


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 100 MB: enough that a copy can be caught midway."""
    root = tmp_path_factory.mktemp("resume") / "src"
    w = TreeWriter(root)
    base = os.urandom(4 << 20)
    for r in range(12):
        for t in range(5):
            w.image(f"team/app-{r}", f"v{t}", [base, os.urandom(1536 << 10), os.urandom(64 << 10)], b"{}")
    return root


def _partial_of(out: Path, volumes: bool) -> Path:
    return partial_name(volume_name(out, 0) if volumes else out)


def _partial_bytes(out: Path, volumes: bool) -> int:
    if not volumes:
        p = partial_name(out)
        return p.stat().st_size if p.exists() else 0
    n, total = 0, 0
    while partial_name(volume_name(out, n)).exists():
        total += partial_name(volume_name(out, n)).stat().st_size
        n += 1
    return total


def _kill_at(tree: Path, out: Path, at: int, volumes: bool) -> Partial:
    cmd = ["ferry", "export", str(tree), "-o", str(out), "-q"]
    if volumes:
        cmd += ["--volume-size", str(VOLUME)]
    p = subprocess.Popen(cmd)
    try:
        stopped_when(p, lambda: _partial_bytes(out, volumes) >= at)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    partial = find_partial(out, VOLUME if volumes else None)
    assert partial is not None, "a killed export left its partial"
    return partial


def _reference(
    tree: Path, out: Path, partial: Partial, monkeypatch: pytest.MonkeyPatch, volumes: bool
) -> list[Path]:
    """What an uninterrupted export with the partial's identity writes."""
    assert partial.info.bundle_id is not None
    ident = export_mod._Identity(partial.info.bundle_id, partial.info.created, partial.mtime)
    with monkeypatch.context() as m:
        m.setattr(export_mod._Identity, "new", classmethod(lambda cls: ident))
        r = export(ExportOptions(root=tree, output=out, volume_size=VOLUME if volumes else None))
    return list(r.files)


def _same_bytes(a: list[Path], b: list[Path]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes(), f"{x} differs from {y}"


def _resume(tree: Path, out: Path, volumes: bool) -> dict[str, object]:
    args = ["export", str(tree), "-o", str(out), "--resume", "--json"]
    if volumes:
        args += ["--volume-size", str(VOLUME)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc: dict[str, object] = json.loads(r.stdout)
    return doc


@pytest.mark.parametrize(("at", "volumes"), [(6 << 20, False), (60 << 20, False), (30 << 20, True)])
def test_a_killed_export_resumes_to_the_same_bytes(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, volumes: bool
) -> None:
    out = tmp_path / "b.tar"
    partial = _kill_at(tree, out, at, volumes)
    doc = _resume(tree, out, volumes)
    assert doc["resumed"] and int(doc["resumedBytes"]) >= at // 2, doc  # type: ignore[call-overload]
    files = [Path(str(f)) for f in doc["files"]]  # type: ignore[attr-defined]
    assert not _partial_of(out, volumes).exists()
    validate_bundle(files[0] if volumes else out)
    _same_bytes(files, _reference(tree, tmp_path / "ref.tar", partial, monkeypatch, volumes))


def test_a_damaged_member_of_the_partial_is_written_again(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b.tar"
    partial = _kill_at(tree, out, 40 << 20, False)
    path = partial_name(out)
    # damage a byte inside a blob member about halfway through what was written
    with Bundle.open(path) as b:
        order = b.order
        catalog = b.catalog
    pos, target = 0, None
    offsets = {}
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    assert head  # the index is there
    from ferry.shared.bundle.resume import _plan  # the plan the partial follows
    from ferry.shared.bundle.tario import tar_header

    for name, size in _plan(catalog, order, partial.index):
        header = tar_header(name, size, partial.mtime)
        offsets[name] = (pos + len(header), size)
        pos += len(header) + size + (-size % 512)
        if pos > (20 << 20) and target is None and name.startswith("blobs/") and size > 1000:
            target = name
    assert target is not None
    at, _ = offsets[target]
    with open(path, "r+b") as f:
        f.seek(at + 100)
        byte = f.read(1)
        f.seek(at + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    doc = _resume(tree, out, False)
    kept_names = [blob_member(d) for d in order][: int(doc["resumed"])]  # type: ignore[call-overload]
    assert target not in kept_names, "the damaged member was kept"
    assert 0 < int(doc["resumed"]) < len(order)  # type: ignore[call-overload]
    validate_bundle(out)
    _same_bytes([out], _reference(tree, tmp_path / "ref.tar", partial, monkeypatch, False))


def test_a_full_disk_keeps_the_partial_and_resume_finishes(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "small", "24m") as disk:
        out = disk / "b.tar"
        r = runner.invoke(app, ["export", str(tree), "-o", str(out)])
        assert r.exit_code == 1 and "disk-full" in r.stderr and "--resume" in r.stderr, r.stderr
        partial = find_partial(out, None)
        assert partial is not None and partial_name(out).stat().st_size > 16 << 20
        assert not out.exists()
        subprocess.run(["mount", "-o", "remount,size=400m", str(disk)], check=True)
        doc = _resume(tree, out, False)
        assert int(doc["resumedBytes"]) > 16 << 20  # type: ignore[call-overload]
        validate_bundle(out)
        _same_bytes([out], _reference(tree, disk / "ref.tar", partial, monkeypatch, False))


def test_a_source_that_changed_starts_again(tree: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    subprocess.run(["cp", "-a", str(tree), str(src)], check=True)
    out = tmp_path / "b.tar"
    partial = _kill_at(src, out, 20 << 20, False)
    TreeWriter(src).image("team/new", "v1", [os.urandom(4096)], b'{"new":1}')
    doc = _resume(src, out, False)
    assert doc["resumed"] == 0 and doc["bundleId"] != partial.info.bundle_id
    catalog = validate_bundle(out)
    assert any(r.name == "team/new" for r in catalog.repositories)


def test_resume_without_a_partial_is_a_plain_export_and_not_for_a_stream(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    doc = _resume(tree, out, False)
    assert doc["resumed"] == 0
    validate_bundle(out)
    r = runner.invoke(app, ["export", str(tree), "-o", "-", "--resume"])
    assert r.exit_code == 2 and "--resume" in r.stderr


def test_ctrl_c_keeps_the_partial(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    # Ctrl-C as a terminal delivers it: a suite started in the background (`pytest &` from a script)
    # runs with SIGINT ignored, which its children inherit, and ferry rightly keeps an ignored SIGINT
    p = subprocess.Popen(
        ["ferry", "export", str(tree), "-o", str(out), "-q"],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        stopped_when(p, lambda: _partial_bytes(out, False) >= 10 << 20)
        masks = [x for x in Path(f"/proc/{p.pid}/status").read_text().splitlines() if x.startswith("Sig")]
        p.send_signal(signal.SIGINT)
        resume(p)
        assert p.wait(20) == 130, masks
    finally:
        if p.poll() is None:
            p.kill()
    assert partial_name(out).exists() and not out.exists()
    doc = _resume(tree, out, False)
    assert doc["resumed"]
    assert find_volumes(out) == [out]
    validate_bundle(out)
