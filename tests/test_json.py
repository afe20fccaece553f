"""--json: one stable shape per command (specs/cli.md, "JSON"): every document has ``ok``, one key has one
type in every command's output, and errors (usage errors too) are JSON."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

from ferry.localregistry import Registry
from tests.support.zoo import Zoo


def run_json(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(["ferry", *args, "--json"], capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout)


def _types(doc: object, out: dict[str, set[str]], where: str) -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if v is not None:
                out[k].add(f"{type(v).__name__}")
            _types(v, out, where)
    elif isinstance(doc, list):
        for v in doc:
            _types(v, out, where)


def test_every_command_has_ok_and_one_type_per_key(zoo: Zoo, tmp_path: Path) -> None:
    b, root = tmp_path / "b.tar", tmp_path / "root"
    docs: dict[str, tuple[int, dict[str, object]]] = {}
    docs["export"] = run_json("export", str(zoo.root), "-o", str(b), "--untagged")
    docs["verify"] = run_json("verify", str(b))
    docs["inspect"] = run_json("inspect", str(b))
    docs["receipt"] = run_json("receipt", str(b), "-o", str(tmp_path / "r.idx"))
    docs["restore"] = run_json("restore", str(b), "--root", str(root), "--owner", "keep")
    docs["diff-root"] = run_json("diff", str(b), "--root", str(root))
    with Registry(tmp_path / "target") as reg:
        docs["push"] = run_json("push", str(b), "--registry", reg.url)
        docs["diff-registry"] = run_json("diff", str(b), "--registry", reg.url)
        docs["copy"] = run_json("copy", str(b), reg.url)
    docs["error"] = run_json("verify", str(tmp_path / "missing.tar"))
    docs["usage-error"] = run_json("push", str(b))  # no --registry
    for name, (code, doc) in docs.items():
        assert isinstance(doc.get("ok"), bool), name
        assert doc["ok"] == (code == 0), (name, code)
    assert docs["error"][1]["error"]["code"] == "source-not-found"  # type: ignore[index]
    assert docs["usage-error"][0] == 2 and docs["usage-error"][1]["error"]["code"] == "usage"  # type: ignore[index]
    types: dict[str, set[str]] = defaultdict(set)
    for name, (_, doc) in docs.items():
        _types(doc, types, name)
    mixed = {k: t for k, t in types.items() if len(t) > 1 and not t <= {"int", "float"}}
    assert mixed == {}
    # counts are numbers named ...Count, lists keep the plain plural
    assert isinstance(docs["export"][1]["tagCount"], int) and isinstance(
        docs["inspect"][1]["repositories"], list
    )
