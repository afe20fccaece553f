"""Receipts: a bundle's index alone, so a later wave can be exported against it without the bundle.

A receipt is the bundle's index member byte for byte (one zstandard frame with a checksum holding the
msgpack index, specs/bundle-format.md §9): its XXH3-128 equals the trailer's ``index_xxh3``, and it
describes everything the bundle described, including what that bundle's own bases carried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..delta import Earlier
from ..digest import xxh3_of
from ..errors import BundleDamaged, BundleFormatError, OutputError, SourceNotFound, UsageError
from .format import INDEX_MAX, decode_index
from .reader import Bundle
from .volumes import volume_name

#: a zstandard frame starts so; a tar (a bundle) starts with a member name
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def read_earlier(path: Path) -> Earlier:
    """An earlier bundle (file or volume set) or its receipt, as a base for a delta export."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        if not volume_name(path, 0).is_file():
            raise SourceNotFound(f"--since {path}: no such bundle or receipt") from None
        head = b""
    except IsADirectoryError:
        raise UsageError(f"--since {path}: a directory, not a bundle or receipt") from None
    if head == ZSTD_MAGIC:
        size = path.stat().st_size
        if size > INDEX_MAX:
            raise BundleFormatError(f"--since {path}: {size} bytes, far too large for a receipt")
        try:
            catalog, info, _ = decode_index(path.read_bytes())
        except BundleFormatError as e:
            raise BundleFormatError(f"--since {path}: not a usable receipt ({e.message})") from None
    else:
        try:
            with Bundle.open(path) as b:
                catalog, info = b.catalog, b.info
        except BundleFormatError as e:
            raise BundleFormatError(f"--since {path}: not a usable bundle ({e.message})") from None
    if info.bundle_id is None:
        raise UsageError(
            f"--since {path}: this bundle has no bundle id (written by ferry before bundle format 1.2), "
            "so a later wave cannot name it",
            hint="Export the first wave again with this ferry, or export in full (without --since).",
        )
    return Earlier(info.bundle_id, info.created, catalog, str(path))


def index_bytes(bundle: Path) -> bytes:
    """The index member of a complete bundle, checked against its trailer."""
    with Bundle.open(bundle) as b:
        b.scan()
        if b.trailer is None:
            raise BundleDamaged(
                f"{bundle}: the trailer is missing: the bundle is truncated or still being copied",
                ({"member": None, "problem": "trailer missing", "volumes": []},),
            )
        data = b.data.read_exact(b.index_member.offset, b.index_member.size)
        if xxh3_of(data) != b.trailer.index_xxh3:
            raise BundleDamaged(
                f"{bundle}: the index does not match the trailer's checksum",
                ({"member": "ferry/index.msgpack.zst", "problem": "checksum mismatch", "volumes": []},),
            )
        return data


def write_receipt(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temp file and a rename: a receipt is never half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the receipt ({e.strerror})") from None


@dataclass(frozen=True)
class ReceiptResult:
    bundle_id: str | None
    created: str
    output: str
    bytes: int
    tags: int
    manifests: int
    blobs: int

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "bundleId": self.bundle_id,
            "created": self.created,
            "output": self.output,
            "bytes": self.bytes,
            "tagCount": self.tags,
            "manifestCount": self.manifests,
            "blobCount": self.blobs,
        }


def extract(bundle: Path, output: Path) -> ReceiptResult:
    """``ferry receipt``: write ``bundle``'s receipt to ``output``."""
    data = index_bytes(bundle)
    catalog, info, _ = decode_index(data)
    if info.bundle_id is None:
        raise UsageError(
            f"{bundle}: this bundle has no bundle id (written by ferry before bundle format 1.2); its receipt "
            "could not serve as a base",
            hint="Export it again with this ferry.",
        )
    write_receipt(output, data)
    return ReceiptResult(
        info.bundle_id,
        info.created,
        str(output),
        len(data),
        sum(len(r.tags) for r in catalog.repositories),
        len(catalog.manifests),
        len(catalog.blobs),
    )


__all__ = ["ZSTD_MAGIC", "ReceiptResult", "extract", "index_bytes", "read_earlier", "write_receipt"]
