"""Runs killed at several points (SIGKILL, SIGTERM), then run again: no process left behind (checked by
pid), no half-written file under a final name, and the rerun completes with every digest exact."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.trees import TreeWriter
from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.importer.push import PushOptions
from ferry.importer.push import run as push
from ferry.shared.bundle.reader import Bundle
from tests.support.catch import stopped_when
from tests.support.checks import assert_tree_consistent, validate_bundle
from tests.support.proxy import Proxy
from tests.support.registry import Registry


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: nothing in it runs or holds a file)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _wait_for_child(pid: int, seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids = _children(pid)
        if kids:
            return kids
        time.sleep(0.005)
    return []


def _read_to_eof(fd: int, seconds: float) -> bool:
    """Drain ``fd``; True once every writer closed it (EOF) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready and not os.read(fd, 1 << 20):
            return True
    return False


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough small files that the walk and the copy each take a moment."""
    root = tmp_path_factory.mktemp("kills") / "src"
    w = TreeWriter(root)
    base = os.urandom(2 << 20)
    for r in range(30):
        for t in range(10):
            w.image(
                f"team/app-{r}",
                f"v{t}",
                [base, os.urandom(8 << 10), os.urandom(150 << 10)],
                b'{"%d":%d}' % (r, t),
            )
    return root


@pytest.fixture(scope="module")
def bundle(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kills-bundle") / "b.tar"
    export(ExportOptions(root=tree, output=out))
    return out


@pytest.mark.parametrize("point", ["walk", "copy", "late-copy"])
def test_export_to_a_pipe_killed_leaves_no_process_and_the_reader_sees_eof(tree: Path, point: str) -> None:
    """``ferry export -o - | ssh …``: after kill -9 of ferry, its hashing child used to live on, holding
    the pipe open, and the reader waited forever."""
    r, w = os.pipe()
    p = subprocess.Popen(["ferry", "export", str(tree), "-o", "-", "-q"], stdout=w, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        kids = _wait_for_child(p.pid)
        assert kids, "export forks a hashing child"
        if point != "walk":
            got, want = 0, 200 << 10 if point == "copy" else 20 << 20
            while got < want:
                chunk = os.read(r, 1 << 16)
                assert chunk, "export ended before the kill"
                got += len(chunk)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert _read_to_eof(r, 10), "something still holds the export's stdout"
        assert _wait_gone(kids) == [], "a child of the killed export is still running"
    finally:
        os.close(r)
        if p.poll() is None:
            p.kill()


def test_export_killed_then_run_again_gives_a_valid_bundle(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    p = subprocess.Popen(["ferry", "export", str(tree), "-o", str(out), "-q"])
    kids = _wait_for_child(p.pid)
    partial = out.with_name("b.tar.partial")
    stopped_when(p, lambda: partial.exists() and partial.stat().st_size > 1 << 20, timeout=30)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert _wait_gone(kids) == []
    assert not out.exists(), "a killed export left a file under the final name"
    export(ExportOptions(root=tree, output=out))
    validate_bundle(out)
    assert not out.with_name("b.tar.partial").exists()


def test_sigterm_ends_export_with_one_line_and_exit_143(tree: Path, tmp_path: Path) -> None:
    r, w = os.pipe()
    p = subprocess.Popen(
        ["ferry", "export", str(tree), "-o", "-"], stdout=w, stderr=subprocess.PIPE, text=True
    )
    os.close(w)
    try:
        kids = _wait_for_child(p.pid)
        os.read(r, 1 << 16)  # the copy has begun, and now blocks on the pipe
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 143, err
        assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM)"), err
        assert "Traceback" not in err
        assert _wait_gone(kids) == []
    finally:
        os.close(r)


def _feed(bundle: Path, root: Path, stop_at: int) -> subprocess.Popen[bytes]:
    """A stream restore that got ``stop_at`` bytes of the bundle and waits for more."""
    p = subprocess.Popen(
        ["ferry", "restore", "-", "--root", str(root), "--owner", "keep", "-q"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin is not None
    with open(bundle, "rb") as f:
        left = stop_at
        while left:
            chunk = f.read(min(left, 1 << 20))
            p.stdin.write(chunk)
            left -= len(chunk)
    p.stdin.flush()
    return p


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.95])
def test_restore_killed_midway_then_run_again(bundle: Path, tmp_path: Path, fraction: float) -> None:
    root = tmp_path / "root"
    p = _feed(bundle, root, int(bundle.stat().st_size * fraction))
    kids = _wait_for_child(p.pid)
    time.sleep(0.5)  # let it write what it has
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert _wait_gone(kids) == [], "restore's link writer outlived it"
    # what landed under a final name is exact; no tag is visible yet
    for data in root.rglob("blobs/sha256/*/*/data"):
        assert hashlib.sha256(data.read_bytes()).hexdigest() == data.parent.name
    assert not list(root.rglob("current/link"))
    subprocess.run(
        ["ferry", "restore", str(bundle), "--root", str(root), "--owner", "keep", "-q"], check=True
    )
    assert not list(root.rglob(".ferry-*.tmp")), "the rerun did not sweep the killed run's temp files"
    catalog = validate_bundle(bundle)
    assert_tree_consistent(root, catalog)
    with Registry(root) as reg:
        for repo in catalog.repositories[:3]:
            for tag, digest in repo.tags.items():
                assert reg.manifest(repo.name, tag)[:2] == (200, digest)


def test_sigterm_ends_restore_cleanly(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    p = _feed(bundle, root, bundle.stat().st_size // 2)
    kids = _wait_for_child(p.pid)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 143, err
    assert b"terminated (SIGTERM)" in err and b"Traceback" not in err, err
    assert _wait_gone(kids) == []
    assert not list(root.rglob(".ferry-*.tmp")) and not (root / ".ferry-restore").exists()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 images: a push of it takes a few hundred requests."""
    work = tmp_path_factory.mktemp("kills-small")
    w = TreeWriter(work / "src")
    base = os.urandom(1 << 20)
    for r in range(6):
        for t in range(10):
            w.image(f"team/svc-{r}", f"v{t}", [base, os.urandom(64 << 10)], b'{"%d":%d}' % (r, t))
    export(ExportOptions(root=work / "src", output=work / "small.tar"))
    return work / "small.tar"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Registry, Proxy]]:
    with Registry(tmp_path / "target") as reg:
        proxy = Proxy(reg.host).start()
        try:
            yield reg, proxy
        finally:
            proxy.stop()


@pytest.mark.parametrize("after", [10, 100, 220])
def test_push_killed_midway_then_run_again(small: Path, target: tuple[Registry, Proxy], after: int) -> None:
    bundle = small
    reg, proxy = target
    p = subprocess.Popen(["ferry", "push", str(bundle), "--registry", proxy.url, "-q"])
    deadline = time.monotonic() + 60
    while proxy.requests < after:
        assert time.monotonic() < deadline and p.poll() is None, "push ended before the kill"
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert _children(p.pid) == []
    r = push(PushOptions(bundle=str(bundle), registry=reg.url))
    assert not r.failed
    catalog = Bundle.open(bundle).catalog
    for repo in catalog.repositories:
        for tag, digest in repo.tags.items():
            assert reg.manifest(repo.name, tag)[:2] == (200, digest)
    for data in (reg.root / "docker/registry/v2/blobs").rglob("data"):
        assert hashlib.sha256(data.read_bytes()).hexdigest() == data.parent.name
