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
from ferry.shared.registry.client import NoCookies

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


def seed(v2: Path, work: Path, host: str, creds: str | None = None) -> float:
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
    login = ["--dest-creds", creds] if creds else []
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
                *login,
                str(dirs / ns),
                f"{host}/{ns}",
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - t0


def floor(v2: Path, url: str, auth: tuple[str, str] | None = None) -> float:
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
    limits = httpx.Limits(max_connections=JOBS * 2)
    with httpx.Client(base_url=url, auth=auth, limits=limits, timeout=300) as c:
        # Harbor answers with a session cookie; a client that sends it back is held to CSRF checks
        c.cookies.jar.set_policy(NoCookies())

        def blob(item: tuple[str, list[str]]) -> None:
            d, repos = item
            r = c.post(f"/v2/{repos[0]}/blobs/uploads/")
            loc = httpx.URL(url).join(r.headers["Location"]).copy_merge_params({"digest": d})
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
        result["seed_s"] = round(seed(v2, work, reg.host), 2)
        # skopeo re-serializes manifests it reads from dir: — digests change; ferry's never do
        result["seed_digests_changed_of_50"] = check(reg, images, digests=False)
    with Registry(work / "reg-floor") as reg:
        result["floor_s"] = round(floor(v2, reg.url), 2)
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


# ---------------------------------------------------------------------------------------------------
# into a real Harbor 2.9.5 (../shared/harbor): the same three schemes, each into a Harbor of its own


HARBOR = Path(__file__).resolve().parents[1].parent / "shared" / "harbor" / "v2.9.5"


class _Harbor:
    """A fresh real Harbor for one scheme: started from ../shared/harbor, stopped by its pids."""

    def __init__(self, work: Path) -> None:
        self.work = work
        work.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["bash", str(HARBOR / "start.sh"), str(work)], check=True, capture_output=True, timeout=900
        )
        env = dict(line.split("=", 1) for line in (work / "env").read_text().splitlines() if "=" in line)
        self.url, self.user, self.password = env["URL"], env["USERNAME"], env["PASSWORD"]
        self.host = self.url.split("://", 1)[1]
        self.url_api = f"{self.url}/api/v2.0"

    def projects(self, names: set[str]) -> None:
        for p in sorted(names):
            r = httpx.post(
                f"{self.url_api}/projects",
                json={"project_name": p, "metadata": {"public": "false"}, "storage_limit": -1},
                auth=(self.user, self.password),
            )
            assert r.status_code in (201, 409), r.text

    def serves(self, images: list[tuple[str, str, str]], *, digests: bool = True) -> int:
        changed = 0
        accept = "application/vnd.docker.distribution.manifest.v2+json"
        with httpx.Client(auth=(self.user, self.password), timeout=60) as c:
            for repo, tag, d in images[:: max(1, len(images) // 50)]:
                r = c.head(f"{self.url}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
                assert r.status_code == 200, (repo, tag, r.status_code)
                if r.headers.get("Docker-Content-Digest") != d:
                    assert not digests, (repo, tag)
                    changed += 1
        return changed

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(HARBOR / "stop.sh"), str(self.work), "--wipe"], check=False, capture_output=True
        )


def run_harbor(tree: Path, work: Path) -> dict[str, float]:
    """200 images into a fresh real Harbor per scheme; ferry creates its projects itself (the others are
    given them, untimed)."""
    v2 = tree / "docker/registry/v2"
    images = _images(v2)
    projects = {repo.split("/", 1)[0] for repo, _, _ in images}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict[str, float] = {"images": len(images)}
    h = _Harbor(work / "harbor-seed")
    try:
        h.projects(projects)
        result["seed_s"] = round(seed(v2, work, h.host, f"{h.user}:{h.password}"), 2)
        result["seed_digests_changed_of_50"] = h.serves(images, digests=False)
    finally:
        h.stop()
    h = _Harbor(work / "harbor-floor")
    try:
        h.projects(projects)
        result["floor_s"] = round(floor(v2, h.url, (h.user, h.password)), 2)
        h.serves(images)
    finally:
        h.stop()
    h = _Harbor(work / "harbor-ferry")
    try:
        exe = shutil.which("ferry") or "ferry"
        bundle = work / "bundle.tar"
        t0 = time.perf_counter()
        subprocess.run([exe, "export", str(tree), "-o", str(bundle), "-q"], check=True)
        t1 = time.perf_counter()
        env = dict(os.environ, FERRY_REGISTRY_USERNAME=h.user, FERRY_REGISTRY_PASSWORD=h.password)
        p = subprocess.Popen([exe, "push", str(bundle), "--registry", h.url, "-q", "-j", str(JOBS)], env=env)
        _, status, ru = os.wait4(p.pid, 0)
        t2 = time.perf_counter()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("ferry push into Harbor failed in the bench")
        h.serves(images)
    finally:
        h.stop()
    exp, push = t1 - t0, t2 - t1
    result.update(
        ferry_export_s=round(exp, 2),
        ferry_push_s=round(push, 2),
        ferry_push_cpu_s=round(ru.ru_utime + ru.ru_stime, 2),
        ferry_vs_seed=round((exp + push) / result["seed_s"], 3),
        # as for the registry: the floor client only pushes (it reads the tree in place), so its
        # counterpart is ferry's push; end to end is reported beside it
        push_vs_floor=round(push / result["floor_s"], 3),
        ferry_vs_floor_end_to_end=round((exp + push) / result["floor_s"], 3),
    )
    shutil.rmtree(work, ignore_errors=True)
    return result
