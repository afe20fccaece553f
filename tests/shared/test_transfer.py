"""The copy algorithm's contract with sinks (ferry.shared.transfer.copy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ferry.shared.errors import DiskFull
from ferry.shared.memory import MemoryRegistry, MemorySource, sample_layer
from ferry.shared.model import Catalog, Manifest
from ferry.shared.store import BlobContent, SinkResult
from ferry.shared.transfer import copy


class _FailingBegin:
    """A sink that creates its partial output in ``begin`` and then fails there, as a bundle sink does
    when the disk fills while it writes the index."""

    def __init__(self, partial: Path) -> None:
        self.partial = partial
        self.aborted = False

    def begin(self, catalog: Catalog) -> None:
        self.partial.write_bytes(b"half an index")
        raise DiskFull(f"{self.partial}: no space left on device")

    def put_blob(self, repos: Sequence[str], content: BlobContent) -> None:
        raise AssertionError("put_blob after a failed begin")

    def put_manifest(self, repos: Sequence[str], manifest: Manifest, content: BlobContent) -> None:
        raise AssertionError("put_manifest after a failed begin")

    def tag(self, repo: str, tag: str, digest: str) -> None:
        raise AssertionError("tag after a failed begin")

    def commit(self) -> SinkResult:
        raise AssertionError("commit after a failed begin")

    def abort(self) -> None:
        self.aborted = True
        self.partial.unlink(missing_ok=True)


def test_a_begin_that_fails_is_followed_by_abort(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    registry.image("app", [sample_layer(1)], tag="v1")
    sink = _FailingBegin(tmp_path / "b.tar.partial")
    with pytest.raises(DiskFull):
        copy(MemorySource(registry), sink)
    assert sink.aborted and list(tmp_path.iterdir()) == []
