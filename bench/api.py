"""Reading a registry over the V2 API, and registry to registry.

* API export: ``ferry export http://REGISTRY -o B`` against ``skopeo sync --all --preserve-digests`` from
  the registry into ``dir:`` folders (the nearest thing users have) and against ferry's storage-tree
  export of the same tree; MB/s and peak RSS.
* copy: ``ferry copy http://SRC http://DST`` against ``skopeo sync --all --preserve-digests`` registry to
  registry, each into a fresh registry (goal <= 0.5x skopeo's time).

The source is a real docker-registry serving the generated tree (read only).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ferry.localregistry import Registry


def _repos(tree: Path) -> list[str]:
    base = tree / "docker/registry/v2/repositories"
    return sorted(str(p.parent.relative_to(base)) for p in base.glob("**/_manifests"))


def _sync_yaml(work: Path, host: str, repos: list[str]) -> Path:
    lines = [f"{host}:", "  tls-verify: false", "  images:"]
    lines += [f"    {r}: []" for r in repos]  # every tag
    path = work / "sync.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(cmd: list[str], budget: float | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MiB of the process tree's largest member).  stderr goes to a file: skopeo
    writes a line per blob, which fills a pipe nobody reads until it exits.  With ``budget`` the command
    is stopped (its process group killed) once that many seconds have passed, and (budget, RSS) returned:
    the caller reports a lower bound then."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        while True:
            pid, status, ru = os.wait4(p.pid, 0 if budget is None else os.WNOHANG)
            if pid:
                break
            assert budget is not None
            if time.perf_counter() - t0 >= budget:
                os.killpg(p.pid, signal.SIGKILL)
                _, _, ru = os.wait4(p.pid, 0)
                p.returncode = -9
                return budget, ru.ru_maxrss / 1024
            time.sleep(0.5)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise SystemExit(f"bench command failed: {' '.join(cmd)}\n{err.read().decode()[-3000:]}")
    return dt, ru.ru_maxrss / 1024


def skopeo_sync_dir(
    cfg: Path, dirs: Path, tags: int, budget: float | None
) -> tuple[dict[str, object], float]:
    """``skopeo sync --all --preserve-digests`` of every tag in ``cfg`` into ``dir:`` folders, within
    ``budget`` seconds: its figures, and its time (a lower bound when it did not finish: the budget).  Its
    pace so far (images whose manifest.json it wrote) projects the whole."""
    s, m = _run(
        ["skopeo", "--insecure-policy", "sync", "--all", "--preserve-digests", "--src", "yaml",
         "--dest", "dir", str(cfg), str(dirs)],
        budget,
    )  # fmt: skip
    if budget is None or s < budget:
        return {"skopeo_s": round(s, 3), "skopeo_peak_MiB": round(m, 1), "skopeo_finished": True}, s
    done = sum(1 for _ in dirs.rglob("manifest.json")) if dirs.exists() else 0
    return {
        "skopeo_s": None,
        "skopeo_at_least_s": round(s, 3),
        "skopeo_images_done": done,
        "skopeo_projected_s": round(s * tags / done) if done else None,
        "skopeo_peak_MiB": round(m, 1),
        "skopeo_finished": False,
    }, s


def skopeo_budget() -> float:
    """Seconds a 5000-tag skopeo run may take (FERRY_BENCH_SKOPEO_BUDGET, default 1500): through a
    registry on S3 it would take hours."""
    return float(os.environ.get("FERRY_BENCH_SKOPEO_BUDGET", "1500"))


def _tags(tree: Path) -> int:
    return sum(1 for _ in (tree / "docker/registry/v2/repositories").glob("**/_manifests/tags/*"))


def run(
    tree: Path,
    work: Path,
    *,
    runs: int = 3,
    skopeo: bool = True,
    copy: bool = True,
    budget: float | None = None,
) -> dict[str, object]:
    ferry = shutil.which("ferry") or "ferry"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    repos = _repos(tree)
    size = sum(p.stat().st_size for p in (tree / "docker/registry/v2/blobs").glob("**/data"))
    result: dict[str, object] = {"repositories": len(repos), "bytes": size}
    out = work / "b.tar"

    def fresh(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        subprocess.run(["sync"], check=True)

    with Registry(tree) as src:
        api, rss = [], []
        for _ in range(runs):
            fresh(out)
            s, m = _run([ferry, "export", src.url, "-o", str(out), "-q"])
            api.append(s)
            rss.append(m)
        tree_s = []
        for _ in range(runs):
            fresh(out)
            tree_s.append(_run([ferry, "export", str(tree), "-o", str(out), "-q"])[0])
        result.update(
            api_export_s=round(min(api), 3),
            api_export_MBps=round(size / 1e6 / min(api), 1),
            api_export_peak_MiB=round(max(rss), 1),
            tree_export_s=round(min(tree_s), 3),
            api_vs_tree_export=round(min(api) / min(tree_s), 3),
        )
        if skopeo:
            dirs = work / "dirs"
            fresh(dirs)
            cfg = _sync_yaml(work, src.host, repos)
            sk, took = skopeo_sync_dir(cfg, dirs, _tags(tree), budget)
            fresh(dirs)
            result.update({f"skopeo_sync_dir_{k[len('skopeo_') :]}": v for k, v in sk.items()})
            # a lower bound of skopeo's time gives an upper bound of this ratio
            result["api_export_vs_skopeo" if sk["skopeo_finished"] else "api_export_vs_skopeo_at_most"] = (
                round(min(api) / took, 3)
            )
        if copy:
            with Registry(work / "dst-ferry") as dst:
                s, m = _run([ferry, "copy", src.url, dst.url, "-q", "--no-harbor"])
            with Registry(work / "dst-skopeo") as dst:
                cfg = _sync_yaml(work, src.host, repos)
                t, _ = _run(
                    ["skopeo", "--insecure-policy", "sync", "--all", "--preserve-digests", "--src", "yaml",
                     "--dest", "docker", "--dest-tls-verify=false", str(cfg), dst.host]
                )  # fmt: skip
            result.update(
                copy_s=round(s, 3),
                copy_peak_MiB=round(m, 1),
                skopeo_sync_registry_s=round(t, 3),
                copy_vs_skopeo=round(s / t, 3),
            )
    shutil.rmtree(work, ignore_errors=True)
    return result


__all__ = ["run"]
