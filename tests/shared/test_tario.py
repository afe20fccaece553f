"""Tar headers ferry builds itself are byte for byte what tarfile writes, and tar reads them back."""

from __future__ import annotations

import io
import tarfile

import pytest

from ferry.shared.bundle.tario import tar_header


def _tarfile_header(name: str, size: int, mtime: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, mtime, 0o644
    ti.uname = ti.gname = "root"
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


@pytest.mark.parametrize(
    ("name", "size", "mtime"),
    [
        ("blobs/sha256/" + "0123456789abcdef" * 4, 123_456_789, 1_795_000_000),
        ("oci-layout", 0, 0),
        ("n" * 100, 8**11 - 1, 8**11 - 1),  # the largest a plain ustar block holds
        ("n" * 101, 5, 5),  # too long for ustar: pax
        ("blobs/sha256/é", 3, 3),  # not ASCII: pax
        ("big", 8**11, 7),  # 8 GiB: pax
    ],
)
def test_header_matches_tarfile(name: str, size: int, mtime: int) -> None:
    header = tar_header(name, size, mtime)
    assert header == _tarfile_header(name, size, mtime)
    data = header + b"x" * min(size, 16)
    with tarfile.open(fileobj=io.BytesIO(data + b"\0" * 2048), mode="r:") as tf:
        ti = tf.next()
        assert ti is not None and (ti.name, ti.size, ti.mtime) == (name, size, mtime)
