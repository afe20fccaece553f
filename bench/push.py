"""Push side by side, each into a fresh real docker-registry, on the same images:

* seed: the existing scheme 4 — hard-link the storage tree into skopeo ``dir:`` folders (one per tag), then
  ``skopeo sync --src dir --dest docker`` per namespace;
* ferry: ``ferry export`` + ``ferry push``;
* floor: a minimal client (this file) that uploads each blob once, mounts it into the other repositories that
  need it, and PUTs the manifests by tag — no HEAD, no verification, no retries: what the target can ingest.

The target registry's own CPU dominates on this machine, so ferry's client CPU seconds are reported too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ferry.localregistry import Registry

JOBS = 8


def _images(v2: Path) -> list[tuple[str, str, str]]:
    """(repo, tag, manifest digest) for every tag of a generated tree."""
    out = []
    for tags_dir in sorted((v2 / "repositories").glob("**/_manifests/tags")):
        repo = str(tags_dir.parent.parent.relative_to(v2 / "repositories"))
        for t in sorted(tags_dir.iterdir()):
            out.append((repo, t.name, (t / "current/link").read_text()))
    return out


def _blob(v2: Path, d: str) -> Path:
    return v2 / "blobs/sha256" / d[7:9] / d[7:] / "data"


def seed(v2: Path, work: Path, reg: Registry) -> float:
    t0 = time.perf_counter()
    dirs = work / "dirs"
    for repo, tag, d in _images(v2):
        out = dirs / f"{repo}:{tag}"
        out.mkdir(parents=True)
        os.link(_blob(v2, d), out / "manifest.json")
        m = json.loads(_blob(v2, d).read_bytes())
        for b in [m["config"], *m["layers"]]:
            if not (out / b["digest"][7:]).exists():
                os.link(_blob(v2, b["digest"]), out / b["digest"][7:])
        (out / "version").write_text("Directory Transport Version: 1.1\n")
    for ns in sorted(p.name for p in dirs.iterdir()):
        subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "sync",
                "--src",
                "dir",
                "--dest",
                "docker",
                "--dest-tls-verify=false",
                str(dirs / ns),
                f"{reg.host}/{ns}",
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - t0


def floor(v2: Path, reg: Registry) -> float:
    images = _images(v2)
    t0 = time.perf_counter()
    manifests = {d: _blob(v2, d).read_bytes() for _, _, d in images}
    needs: dict[str, list[str]] = {}  # blob -> repositories, first one uploads
    for repo, _, d in images:
        m = json.loads(manifests[d])
        for b in [m["config"], *m["layers"]]:
            repos = needs.setdefault(b["digest"], [])
            if repo not in repos:
                repos.append(repo)
    with httpx.Client(base_url=reg.url, limits=httpx.Limits(max_connections=JOBS * 2), timeout=300) as c:

        def blob(item: tuple[str, list[str]]) -> None:
            d, repos = item
            r = c.post(f"/v2/{repos[0]}/blobs/uploads/")
            loc = httpx.URL(r.headers["Location"]).copy_merge_params({"digest": d})
            c.put(
                loc, content=_blob(v2, d).read_bytes(), headers={"Content-Type": "application/octet-stream"}
            )
            for other in repos[1:]:
                c.post(f"/v2/{other}/blobs/uploads/", params={"mount": d, "from": repos[0]})

        def manifest(item: tuple[str, str, str]) -> None:
            repo, tag, d = item
            c.put(
                f"/v2/{repo}/manifests/{tag}",
                content=manifests[d],
                headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
            )

        with ThreadPoolExecutor(JOBS) as pool:
            list(pool.map(blob, needs.items()))
            list(pool.map(manifest, images))
    return time.perf_counter() - t0


def ferry(tree: Path, work: Path, reg: Registry) -> tuple[float, float, float]:
    exe = shutil.which("ferry") or "ferry"
    bundle = work / "bundle.tar"
    t0 = time.perf_counter()
    subprocess.run([exe, "export", str(tree), "-o", str(bundle), "-q"], check=True)
    t1 = time.perf_counter()
    p = subprocess.Popen(
        [exe, "push", str(bundle), "--registry", reg.url, "-q", "--no-harbor", "-j", str(JOBS)]
    )
    _, status, ru = os.wait4(p.pid, 0)
    t2 = time.perf_counter()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("ferry push failed in the bench")
    return t1 - t0, t2 - t1, ru.ru_utime + ru.ru_stime


def check(reg: Registry, images: list[tuple[str, str, str]], *, digests: bool = True) -> int:
    """Every tag is served; returns how many sampled tags changed digest (must be 0 unless ``digests``)."""
    changed = 0
    sample = images[:: max(1, len(images) // 50)]
    for repo, tag, d in sample:
        status, got, _ = reg.manifest(repo, tag)
        assert status == 200, (repo, tag, status)
        if got != d:
            assert not digests, (repo, tag, got, d)
            changed += 1
    return changed


def run(tree: Path, work: Path) -> dict[str, float]:
    v2 = tree / "docker/registry/v2"
    images = _images(v2)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict[str, float] = {"images": len(images)}
    with Registry(work / "reg-seed") as reg:
        result["seed_s"] = round(seed(v2, work, reg), 2)
        # skopeo re-serializes manifests it reads from dir: — digests change; ferry's never do
        result["seed_digests_changed_of_50"] = check(reg, images, digests=False)
    with Registry(work / "reg-floor") as reg:
        result["floor_s"] = round(floor(v2, reg), 2)
        check(reg, images)
    with Registry(work / "reg-ferry") as reg:
        exp, push, cpu = ferry(tree, work, reg)
        check(reg, images)
    result.update(
        ferry_export_s=round(exp, 2),
        ferry_push_s=round(push, 2),
        ferry_push_cpu_s_per_1000=round(cpu / len(images) * 1000, 2),
        push_vs_floor=round(push / result["floor_s"], 3),
        end_to_end_vs_seed=round((exp + push) / result["seed_s"], 3),
    )
    shutil.rmtree(work, ignore_errors=True)
    return result
