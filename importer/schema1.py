"""Schema 1 → Docker schema 2, for ``ferry push --convert-schema1``.

A registry only accepts a schema 1 manifest signed, and the bundle holds it as stored, so the image can only
travel converted.  The conversion follows what Docker's pull and containers/image do
(``convertToManifestSchema2`` / ``ToSchema2Config``): ``fsLayers`` and ``history`` run top layer first, so both
are reversed; entries whose ``v1Compatibility`` says ``throwaway`` are history without a layer; consecutive
entries with the same v1 ``id`` collapse into one.  The config is the top entry's ``v1Compatibility`` without
the v1-only fields, plus ``rootfs.diff_ids`` (the sha256 of each layer *uncompressed*, which only the layer
bytes can tell, see :func:`diff_id`) and a ``history`` rebuilt from every entry.

The bytes are what containers/image would write (compact JSON, the config's top-level keys sorted, Go's
escaping), so ``skopeo copy --format v2s2`` of the same image gives the same digests.  The result has a new
digest; the caller reports old → new.  Layers keep their digests: only the config blob
and the manifest are new.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.shared.manifest import ManifestError, MediaType

CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # what containers/image writes for a missing time
_V1_ONLY = ("id", "parent", "parent_id", "layer_id", "throwaway", "Size")


@dataclass(frozen=True)
class Converted:
    manifest: bytes
    digest: str
    config: bytes
    config_digest: str


@dataclass(frozen=True)
class _Entry:
    blob: str
    compat: dict[str, Any]
    raw_compat: str


def _entries(raw: bytes) -> list[_Entry]:
    """The (layer, v1Compatibility) pairs, base layer first, consecutive duplicates removed."""
    try:
        doc = json.loads(raw)
        layers, history = doc["fsLayers"], doc["history"]
        if not layers or len(layers) != len(history):
            raise ManifestError(f"{len(history)} history entries for {len(layers)} fsLayers")
        entries = [
            _Entry(str(fs["blobSum"]), json.loads(h["v1Compatibility"]), h["v1Compatibility"])
            for fs, h in zip(layers, history)
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise ManifestError(f"schema 1 manifest cannot be converted: {err}") from None
    kept: list[_Entry] = []
    for i, e in enumerate(entries):
        if (
            i + 1 < len(entries)
            and e.compat.get("id")
            and e.compat.get("id") == entries[i + 1].compat.get("id")
        ):
            continue  # Docker wrote the same v1 image twice in a row: keep the older entry
        kept.append(e)
    return kept[::-1]


def layers(raw: bytes) -> list[str]:
    """The layer digests the converted image has, base first (throwaway entries have none)."""
    return [e.blob for e in _entries(raw) if not e.compat.get("throwaway")]


def convert(raw: bytes, sizes: Mapping[str, int], diff_ids: Mapping[str, str]) -> Converted:
    """``sizes`` and ``diff_ids`` must hold every digest :func:`layers` returns."""
    entries = _entries(raw)
    descriptors, diffs, history = [], [], []
    for e in entries:
        c = e.compat
        cmd = (c.get("container_config") or {}).get("Cmd") or []
        item: dict[str, Any] = {"created": c.get("created") or GO_ZERO_TIME}
        for key, value in (
            ("author", c.get("author")),
            ("created_by", " ".join(cmd) if isinstance(cmd, list) else str(cmd)),
            ("comment", c.get("comment")),
            ("empty_layer", bool(c.get("throwaway"))),
        ):
            if value:
                item[key] = value
        history.append(item)
        if c.get("throwaway"):
            continue
        descriptors.append(
            {"mediaType": MediaType.DOCKER_LAYER.value, "size": sizes[e.blob], "digest": e.blob}
        )
        diffs.append(diff_ids[e.blob])
    top = dict(entries[-1].compat)
    for key in _V1_ONLY:
        top.pop(key, None)
    top["rootfs"] = {"type": "layers", "diff_ids": diffs}
    top["history"] = history
    config = _dump({k: top[k] for k in sorted(top)})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = _dump(
        {
            "schemaVersion": 2,
            "mediaType": MediaType.DOCKER_MANIFEST.value,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": config_digest},
            "layers": descriptors,
        }
    )
    return Converted(manifest, "sha256:" + hashlib.sha256(manifest).hexdigest(), config, config_digest)


def _dump(doc: object) -> bytes:
    """Compact JSON escaped as Go's encoding/json does, so the digests match what skopeo's conversion makes."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in _GO_ESCAPES:
        text = text.replace(ch, esc)  # these characters only occur inside strings
    return text.encode()


_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def diff_id(chunks: Iterable[bytes]) -> str:
    """sha256 of a layer's uncompressed tar: gunzipped (every gzip member), or as is when not gzip."""
    h = hashlib.sha256()
    d: Any = None
    for chunk in chunks:
        if d is None:
            d = zlib.decompressobj(31) if chunk[:2] == b"\x1f\x8b" else False
        if d is False:
            h.update(chunk)
            continue
        data = chunk
        while data:
            h.update(d.decompress(data))
            if not d.eof:
                break
            data = d.unused_data  # another gzip member follows
            d = zlib.decompressobj(31)
    return "sha256:" + h.hexdigest()


__all__ = ["CONFIG_TYPE", "Converted", "convert", "diff_id", "layers"]
