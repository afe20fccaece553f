"""A second wave on the 5000-tag tree: 5 % of the images get a new top layer, 100 tags are added.

Reported: the delta's bytes against the minimum (the bytes of blobs and manifests wave 1 did not carry:
the goal is exactly 1.00), against a full export, and against what a by-reference differential ships
(zarf's ``--differential``: every new or changed tag's whole image, deduplicated); the delta export's
time against the full export's (goal <= 0.2x); ``ferry diff`` over the 5000 tags against a real
docker-registry serving the result of both waves (goal <= 10 s here).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

from bench.trees import LAYER, TreeWriter, _config
from ferry.localregistry import Registry
from ferry.shared.bundle.reader import Bundle
from ferry.shared.digest import Digest
from ferry.shared.model import Catalog
from ferry.shared.storage.paths import BlobData


class _Writer(TreeWriter):
    """Writes by temp file and rename: the tree is a hard-linked copy, whose files must not change."""

    def _file(self, path: object, data: bytes) -> None:
        p = Path(str(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".bench-tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)


def change(tree: Path, *, share: float = 0.05, new_tags: int = 100, seed: int = 7) -> dict[str, int]:
    """New top layers for ``share`` of the tags, and ``new_tags`` new tags, in place."""
    rnd = random.Random(seed)
    w = _Writer(tree)
    v2 = tree / "docker/registry/v2"
    tags = sorted(
        (str(t.parent.parent.parent.relative_to(v2 / "repositories")), t.name)
        for t in (v2 / "repositories").glob("*/*/_manifests/tags/*")
    )
    chosen = rnd.sample(tags, int(len(tags) * share))
    for repo, tag in chosen:
        current = (v2 / "repositories" / repo / "_manifests/tags" / tag / "current/link").read_text()
        m = json.loads(Path(w.layout.path(BlobData(Digest.parse(current)))).read_bytes())
        layers = [Path(w.layout.path(BlobData(Digest.parse(x["digest"])))).read_bytes() for x in m["layers"]]
        layers.append(os.urandom(rnd.randint(64, 256) << 10))
        w.image(repo, tag, layers, _config(rnd, f"{repo}-{tag}-wave2"))
    repos = sorted({r for r, _ in tags})
    for i in range(new_tags):
        repo = repos[i % len(repos)]
        first = next(t for r, t in tags if r == repo)
        current = (v2 / "repositories" / repo / "_manifests/tags" / first / "current/link").read_text()
        m = json.loads(Path(w.layout.path(BlobData(Digest.parse(current)))).read_bytes())
        layers = [
            Path(w.layout.path(BlobData(Digest.parse(x["digest"])))).read_bytes() for x in m["layers"][:2]
        ]
        layers.append(os.urandom(rnd.randint(64, 256) << 10))
        w.image(repo, f"2.{i}.0", layers, _config(rnd, f"{repo}-new-{i}"))
    assert LAYER  # the generator's layer type: the new images are shaped as the old ones
    return {"changed": len(chosen), "added": new_tags}


def _catalog(bundle: Path) -> Catalog:
    with Bundle.open(bundle) as b:
        return b.catalog


def _timed(cmd: list[str]) -> float:
    """One run, into an output that does not exist yet (replacing a file makes ext4 flush it first)."""
    out = Path(cmd[cmd.index("-o") + 1]) if "-o" in cmd else None
    if out is not None:
        out.unlink(missing_ok=True)
        subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(tree: Path, work: Path, runs: int = 3) -> dict[str, object]:
    ferry = shutil.which("ferry") or "ferry"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "src"
    subprocess.run(["cp", "-al", str(tree), str(src)], check=True)
    (src / ".facts.json").unlink(missing_ok=True)
    wave1, receipt = work / "wave1.tar", work / "wave1.receipt"
    full1_s = min(
        _timed([ferry, "export", str(src), "-o", str(wave1), "-q", "--receipt", str(receipt)])
        for _ in range(runs)
    )
    facts = change(src)
    wave2, full2 = work / "wave2.tar", work / "full2.tar"
    delta_s = min(
        _timed([ferry, "export", str(src), "-o", str(wave2), "-q", "--since", str(receipt)])
        for _ in range(runs)
    )
    full2_s = min(_timed([ferry, "export", str(src), "-o", str(full2), "-q"]) for _ in range(runs))
    c1, c2, cd = _catalog(wave1), _catalog(full2), _catalog(wave2)
    first = set(c1.blobs) | set(c1.manifests)
    minimum = sum(c2.size_of(d) for d in (*c2.blobs, *c2.manifests) if d not in first)
    old_tags = {(r.name, t): d for r in c1.repositories for t, d in r.tags.items()}
    by_ref: set[str] = set()
    for r in c2.repositories:
        for t, d in r.tags.items():
            if old_tags.get((r.name, t)) != d:
                by_ref.update(c2.closure(d))
    by_ref_bytes = sum(c2.size_of(d) for d in by_ref)
    delta_bytes = cd.member_bytes
    # ferry diff over every tag: the target holds both waves (restored, then served by docker-registry)
    root = work / "target"
    for b in (wave1, wave2):
        subprocess.run([ferry, "restore", str(b), "--root", str(root), "--owner", "keep", "-q"], check=True)
    with Registry(root) as reg:
        diff_s = min(_timed([ferry, "diff", str(wave2), "--registry", reg.url, "-q"]) for _ in range(runs))
    result: dict[str, object] = {
        "tags": sum(len(r.tags) for r in c2.repositories),
        **facts,
        "delta_bytes": delta_bytes,
        "minimum_bytes": minimum,
        "delta_vs_minimum": round(delta_bytes / minimum, 4),
        "full_bytes": c2.total_bytes,
        "delta_vs_full": round(delta_bytes / c2.total_bytes, 4),
        "by_reference_bytes": by_ref_bytes,
        "delta_vs_by_reference": round(delta_bytes / by_ref_bytes, 4),
        "delta_bundle_file_bytes": wave2.stat().st_size,
        "full_export_s": round(full2_s, 3),
        "wave1_export_s": round(full1_s, 3),
        "delta_export_s": round(delta_s, 3),
        "delta_vs_full_export_time": round(delta_s / full2_s, 3),
        "diff_5000_s": round(diff_s, 3),
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


__all__ = ["change", "run"]
