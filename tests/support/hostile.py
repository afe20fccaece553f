"""Build hostile bundles from a good one: take it apart, change one thing, put it back together.

Everything is generated in the tests (no stored binaries).  A rebuilt bundle gets a trailer that is true
to its members (so the one defect under test is the only one) unless a case edits the trailer itself.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
import xxhash
import zstandard

from ferry.shared.bundle.format import INDEX_MEMBER, TRAILER_FORMAT, TRAILER_MEMBER


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


@dataclass
class Parts:
    """A bundle taken apart: its members in order (the trailer left out), the index as a plain document."""

    entries: list[Entry]
    index: dict[str, Any]
    trailer: dict[str, Any] = field(default_factory=dict)

    def blob_names(self) -> list[str]:
        return [e.name for e in self.entries if e.name.startswith("blobs/")]

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)

    def replace_entry(self, name: str, **changes: Any) -> None:
        self.entries = [replace(e, **changes) if e.name == name else e for e in self.entries]


def load(bundle: Path) -> Parts:
    entries: list[Entry] = []
    trailer: dict[str, Any] = {}
    with tarfile.open(bundle) as tf:
        for ti in tf:
            f = tf.extractfile(ti)
            data = f.read() if f is not None else b""
            if ti.name == TRAILER_MEMBER:
                trailer = msgpack.unpackb(data, raw=False)
                continue
            entries.append(Entry(ti.name, data))
    index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(entries[0].data), raw=False)
    return Parts(entries, index, trailer)


def encode_index(doc: dict[str, Any]) -> bytes:
    packed = msgpack.packb(doc, use_bin_type=True)
    return bytes(zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compress(packed))


TrailerEdit = Callable[[list[list[Any]]], list[list[Any]]]


def write(
    parts: Parts,
    out: Path,
    *,
    index_raw: bytes | None = None,
    keep_index: bool = False,
    trailer_edit: TrailerEdit | None = None,
    fmt: int = tarfile.USTAR_FORMAT,
) -> Path:
    """Put the bundle together again: the index re-encoded from ``parts.index`` (or ``index_raw``, or the
    original bytes with ``keep_index``), and a trailer true to the members, then ``trailer_edit``."""
    entries = list(parts.entries)
    if entries and entries[0].name == INDEX_MEMBER and not keep_index:
        entries[0] = replace(
            entries[0], data=index_raw if index_raw is not None else encode_index(parts.index)
        )
    listed = [
        [e.name, len(e.data), xxhash.xxh3_128_hexdigest(e.data)] for e in entries if e.type == tarfile.REGTYPE
    ]
    if trailer_edit is not None:
        listed = trailer_edit(listed)
    index_data = entries[0].data if entries else b""
    trailer = msgpack.packb(
        {
            "format": TRAILER_FORMAT,
            "version": [1, 1],
            "index_xxh3": xxhash.xxh3_128_hexdigest(index_data),
            "members": listed,
        },
        use_bin_type=True,
    )
    with tarfile.open(out, "w", format=fmt) as tf:
        for e in [*entries, Entry(TRAILER_MEMBER, trailer)]:
            ti = tarfile.TarInfo(e.name)
            ti.type = e.type
            ti.linkname = e.linkname
            ti.mode = 0o644
            ti.uname = ti.gname = "root"
            if e.type == tarfile.REGTYPE:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return out


def _frame(head: bytes, byte: bytes, count: int, *, declare: bool) -> bytes:
    """One zstd frame of ``head`` and ``count`` times ``byte``, compressed as a stream (never in memory
    whole); ``declare`` writes the content size into the frame header."""
    buf = io.BytesIO()
    size = len(head) + count if declare else -1
    with zstandard.ZstdCompressor(level=1, write_content_size=declare).stream_writer(
        buf, size=size, closefd=False
    ) as w:
        w.write(head)
        chunk = byte * (1 << 20)
        left = count
        while left:
            n = min(left, len(chunk))
            w.write(chunk[:n])
            left -= n
    return buf.getvalue()


def nil_bomb(count: int) -> bytes:
    """A zstd frame of a msgpack array of ``count`` nils: a few KB that decode to ``count`` objects."""
    return _frame(b"\xdd" + count.to_bytes(4, "big"), b"\xc0", count, declare=False)


def zero_frame(size: int) -> bytes:
    """One zstd frame that declares (and holds) ``size`` zero bytes."""
    return _frame(b"", b"\0", size, declare=True)


__all__ = ["Entry", "Parts", "encode_index", "load", "nil_bomb", "write", "zero_frame"]
