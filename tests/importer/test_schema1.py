"""Schema 1 → schema 2 conversion rules that the zoo's one schema 1 image does not exercise."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from ferry.importer import schema1
from ferry.shared.manifest import ManifestError

A, B, C = ("sha256:" + c * 64 for c in "abc")


def s1(entries: list[tuple[str, dict[str, object]]]) -> bytes:
    """A schema 1 payload; ``entries`` top layer first, as schema 1 lists them."""
    return json.dumps(
        {
            "schemaVersion": 1,
            "name": "x",
            "tag": "t",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": d} for d, _ in entries],
            "history": [{"v1Compatibility": json.dumps(c)} for _, c in entries],
        }
    ).encode()


def test_throwaway_entries_are_history_without_layers_and_order_is_reversed() -> None:
    raw = s1(
        [
            (
                C,
                {
                    "id": "3" * 64,
                    "parent": "2" * 64,
                    "os": "linux",
                    "container_config": {"Cmd": ["run", "<x>"]},
                },
            ),
            (B, {"id": "2" * 64, "parent": "1" * 64, "throwaway": True, "comment": "env"}),
            (A, {"id": "1" * 64, "created": "2020-01-01T00:00:00Z"}),
        ]
    )
    assert schema1.layers(raw) == [A, C]
    out = schema1.convert(raw, {A: 10, C: 30}, {A: "sha256:" + "d" * 64, C: "sha256:" + "e" * 64})
    m, cfg = json.loads(out.manifest), json.loads(out.config)
    assert [(x["digest"], x["size"]) for x in m["layers"]] == [(A, 10), (C, 30)]
    assert m["config"]["digest"] == out.config_digest == "sha256:" + hashlib.sha256(out.config).hexdigest()
    assert out.digest == "sha256:" + hashlib.sha256(out.manifest).hexdigest()
    assert cfg["rootfs"]["diff_ids"] == ["sha256:" + "d" * 64, "sha256:" + "e" * 64]
    assert [h.get("empty_layer", False) for h in cfg["history"]] == [False, True, False]
    assert cfg["history"][2]["created_by"] == "run <x>" and b"\\u003cx\\u003e" in out.config  # Go's escaping
    assert "id" not in cfg and "parent" not in cfg and cfg["os"] == "linux"


def test_consecutive_duplicate_ids_collapse() -> None:
    raw = s1([(B, {"id": "2" * 64, "parent": "1" * 64}), (B, {"id": "2" * 64}), (A, {"id": "1" * 64})])
    assert schema1.layers(raw) == [A, B]


def test_inconsistent_manifest_is_refused() -> None:
    doc = json.loads(s1([(A, {"id": "1" * 64})]))
    doc["history"].append(doc["history"][0])
    with pytest.raises(ManifestError, match="history entries"):
        schema1.layers(json.dumps(doc).encode())


def test_diff_id_gunzips_every_member_and_passes_plain_tars_through() -> None:
    tar = b"x" * 100_000 + b"y" * 50_000
    two_members = gzip.compress(tar[:70_000]) + gzip.compress(tar[70_000:])
    chunks = [two_members[i : i + 777] for i in range(0, len(two_members), 777)]
    want = "sha256:" + hashlib.sha256(tar).hexdigest()
    assert schema1.diff_id(chunks) == want
    assert schema1.diff_id([tar[:10], tar[10:]]) == want
